// qgemm integer tile for ARM64 with the int8 matrix multiply extension
// (USMMLA: unsigned x signed, no correction needed; compiled with
// -march=armv8-a+dotprod+i8mm). USMMLA adds a 2x8 (rows x k) u8 block times
// an 8x2 (k x channels) s8 block into a 2x2 int32 block
//   [row0.ch0, row0.ch1, row1.ch0, row1.ch1].
// Two consecutive packed groups (4 k each) give the weight blocks: zipping
// their quarters by 32-bit lanes puts channel c's k0..k7 next to channel
// c + 1's. The activations of two rows, 8 bytes each, make the u8 block.
// An odd last row pairs with itself (its second result is dropped); an odd
// last group pairs with zeros.
#include <arm_neon.h>

#include "qgemm_paths.h"

namespace slimtorch::qgemm_paths {
namespace {

// The 8 channel-pair blocks of group g (k 4g..4g+3) and, when second is not
// null, group g + 1 (else zeros).
inline void weight_pairs(const int8_t* first, const int8_t* second, int8x16_t (&w)[8]) {
  SLIMTORCH_UNROLL
  for (int q = 0; q < 4; ++q) {
    const int32x4_t lo = vreinterpretq_s32_s8(vld1q_s8(first + 16 * q));
    const int32x4_t hi = second ? vreinterpretq_s32_s8(vld1q_s8(second + 16 * q)) : vdupq_n_s32(0);
    w[2 * q] = vreinterpretq_s8_s32(vzip1q_s32(lo, hi));
    w[2 * q + 1] = vreinterpretq_s8_s32(vzip2q_s32(lo, hi));
  }
}

template <int R, int B>
void int_tile_i8mm_kernel(const uint8_t* a, int64_t lda, int64_t k, const int8_t* b, int64_t,
                          int32_t* acc, bool accumulate) {
  static_assert(B == 1, "one block of 16 channels");
  constexpr int kPairs = (R + 1) / 2;
  int32x4_t c[kPairs][8];
  SLIMTORCH_UNROLL
  for (int p = 0; p < kPairs; ++p)
    SLIMTORCH_UNROLL
    for (int j = 0; j < 8; ++j) c[p][j] = vdupq_n_s32(0);
  const auto row = [&](int r) { return a + (r < R ? r : r - 1) * lda; };
  const int64_t groups = k / 4;  // k is a multiple of 4 (see IntTileFn)
  int64_t g = 0;
  for (; g + 2 <= groups; g += 2) {
    int8x16_t w[8];
    weight_pairs(b + g * kGroupBytes, b + (g + 1) * kGroupBytes, w);
    SLIMTORCH_UNROLL
    for (int p = 0; p < kPairs; ++p) {
      const uint8x16_t av = vcombine_u8(vld1_u8(row(2 * p) + 4 * g), vld1_u8(row(2 * p + 1) + 4 * g));
      SLIMTORCH_UNROLL
      for (int j = 0; j < 8; ++j) c[p][j] = vusmmlaq_s32(c[p][j], av, w[j]);
    }
  }
  if (g < groups) {
    int8x16_t w[8];
    weight_pairs(b + g * kGroupBytes, nullptr, w);
    SLIMTORCH_UNROLL
    for (int p = 0; p < kPairs; ++p) {
      uint32_t four0, four1;
      std::memcpy(&four0, row(2 * p) + 4 * g, 4);
      std::memcpy(&four1, row(2 * p + 1) + 4 * g, 4);
      const uint8x16_t av = vcombine_u8(vcreate_u8(four0), vcreate_u8(four1));  // k 4..7 are zero
      SLIMTORCH_UNROLL
      for (int j = 0; j < 8; ++j) c[p][j] = vusmmlaq_s32(c[p][j], av, w[j]);
    }
  }
  SLIMTORCH_UNROLL
  for (int p = 0; p < kPairs; ++p)
    SLIMTORCH_UNROLL
    for (int j = 0; j < 8; ++j)
      SLIMTORCH_UNROLL
      for (int half = 0; half < 2; ++half) {
        if (2 * p + half >= R) continue;
        int32_t* out = acc + (2 * p + half) * kMaxTileCols + 2 * j;
        int32x2_t sums = half == 0 ? vget_low_s32(c[p][j]) : vget_high_s32(c[p][j]);
        if (accumulate) sums = vadd_s32(sums, vld1_s32(out));
        vst1_s32(out, sums);
      }
}

}  // namespace

const IntTiles int_tiles_i8mm = SLIMTORCH_ONE_BLOCK_TILE_TABLE(int_tile_i8mm_kernel);

}  // namespace slimtorch::qgemm_paths
