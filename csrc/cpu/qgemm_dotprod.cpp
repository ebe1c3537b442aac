// qgemm integer tile for ARM64 with the dot product extension (UDOT;
// compiled with -march=armv8-a+dotprod). UDOT multiplies unsigned bytes
// only, and the weights are signed: w + 128 (w ^ 0x80 as a byte) is
// unsigned, and
//   sum a * w = sum a * (w + 128) - 128 * sum a,
// computed modulo 2^32 (the true value fits int32, see qgemm.h). A packed
// quarter (4 channels x 4 k) is UDOT's operand as is; the row's bytes for
// four groups sit in one register, and UDOT by element picks the group.
#include <arm_neon.h>

#include "qgemm_paths.h"

namespace slimtorch::qgemm_paths {
namespace {

// Group `kLane` of the loaded activation rows av times the group's weights.
template <int R, int kLane>
inline void dot_group(const int8_t* group, const uint8x16_t (&av)[R], uint32x4_t (&c)[R][4]) {
  const uint8x16_t flip = vdupq_n_u8(0x80);
  uint8x16_t w[4];
  SLIMTORCH_UNROLL
  for (int q = 0; q < 4; ++q) w[q] = veorq_u8(vld1q_u8(reinterpret_cast<const uint8_t*>(group) + 16 * q), flip);
  SLIMTORCH_UNROLL
  for (int r = 0; r < R; ++r)
    SLIMTORCH_UNROLL
    for (int q = 0; q < 4; ++q) c[r][q] = vdotq_laneq_u32(c[r][q], w[q], av[r], kLane);
}

template <int R, int B>
void int_tile_dotprod_kernel(const uint8_t* a, int64_t lda, int64_t k, const int8_t* b, int64_t,
                             int32_t* acc, bool accumulate) {
  static_assert(B == 1, "one block of 16 channels");
  const uint8x16_t ones = vdupq_n_u8(1);
  uint32x4_t c[R][4], row_sums[R];
  uint32_t tail_sums[R];
  SLIMTORCH_UNROLL
  for (int r = 0; r < R; ++r) {
    row_sums[r] = vdupq_n_u32(0);
    tail_sums[r] = 0;
    SLIMTORCH_UNROLL
    for (int q = 0; q < 4; ++q) c[r][q] = vdupq_n_u32(0);
  }
  const int64_t groups = k / 4;  // k is a multiple of 4 (see IntTileFn)
  int64_t g = 0;
  for (; g + 4 <= groups; g += 4) {
    uint8x16_t av[R];
    SLIMTORCH_UNROLL
    for (int r = 0; r < R; ++r) {
      av[r] = vld1q_u8(a + r * lda + 4 * g);
      row_sums[r] = vdotq_u32(row_sums[r], av[r], ones);
    }
    const int8_t* group = b + g * kGroupBytes;
    dot_group<R, 0>(group, av, c);
    dot_group<R, 1>(group + kGroupBytes, av, c);
    dot_group<R, 2>(group + 2 * kGroupBytes, av, c);
    dot_group<R, 3>(group + 3 * kGroupBytes, av, c);
  }
  for (; g < groups; ++g) {
    uint8x16_t av[R];
    SLIMTORCH_UNROLL
    for (int r = 0; r < R; ++r) {
      const uint8_t* p = a + r * lda + 4 * g;
      uint32_t four;
      std::memcpy(&four, p, 4);
      av[r] = vreinterpretq_u8_u32(vdupq_n_u32(four));
      tail_sums[r] += uint32_t(p[0]) + p[1] + p[2] + p[3];
    }
    dot_group<R, 0>(b + g * kGroupBytes, av, c);
  }
  SLIMTORCH_UNROLL
  for (int r = 0; r < R; ++r) {
    const uint32x4_t shift = vdupq_n_u32(128u * (vaddvq_u32(row_sums[r]) + tail_sums[r]));
    SLIMTORCH_UNROLL
    for (int q = 0; q < 4; ++q) {
      int32_t* out = acc + r * kMaxTileCols + 4 * q;
      uint32x4_t sums = vsubq_u32(c[r][q], shift);
      if (accumulate) sums = vaddq_u32(sums, vreinterpretq_u32_s32(vld1q_s32(out)));
      vst1q_s32(out, vreinterpretq_s32_u32(sums));
    }
  }
}

}  // namespace

const IntTiles int_tiles_dotprod = SLIMTORCH_ONE_BLOCK_TILE_TABLE(int_tile_dotprod_kernel);

}  // namespace slimtorch::qgemm_paths
