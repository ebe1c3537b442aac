// qgemm paths for ARM64 Advanced SIMD (no dot product): the integer tile,
// the weight-only float tile, the linear epilogue and the row quantization.
//
// Integer tile: u8 x s8 products fit int16 (255 * 128 < 2^15), so both
// operands are widened to int16, multiplied exactly (MUL) and added in
// pairs into int32 (SADALP). One 16-byte quarter of a packed group holds 4
// channels x 4 k; widened, each half is [channel c: k0..k3 | c + 1: k0..k3],
// multiplied with the row's [a0..a3 | a0..a3], so an accumulator holds
// (k0 + k1, k2 + k3) of two channels; a final pairwise add gives 4 channels.
//
// Float tile: TBL transposes a quarter to [k0: ch0..3 | k1 | k2 | k3], which
// is widened to float and multiplied (FMLA by lane) with x[4g + i].
#include <arm_neon.h>

#include "qgemm_paths.h"

namespace slimtorch::qgemm_paths {
namespace {

template <int R, int B>
void int_tile_neon_kernel(const uint8_t* a, int64_t lda, int64_t k, const int8_t* b, int64_t,
                          int32_t* acc, bool accumulate) {
  static_assert(B == 1, "one block of 16 channels");
  int32x4_t c[R][8];
  SLIMTORCH_UNROLL
  for (int r = 0; r < R; ++r)
    SLIMTORCH_UNROLL
    for (int p = 0; p < 8; ++p) c[r][p] = vdupq_n_s32(0);
  const int64_t groups = k / 4;  // k is a multiple of 4 (see IntTileFn)
  for (int64_t g = 0; g < groups; ++g) {
    int16x8_t w[8];
    SLIMTORCH_UNROLL
    for (int q = 0; q < 4; ++q) {
      const int8x16_t raw = vld1q_s8(b + g * kGroupBytes + 16 * q);
      w[2 * q] = vmovl_s8(vget_low_s8(raw));
      w[2 * q + 1] = vmovl_high_s8(raw);
    }
    SLIMTORCH_UNROLL
    for (int r = 0; r < R; ++r) {
      uint32_t four;
      std::memcpy(&four, a + r * lda + 4 * g, 4);
      const int16x8_t av = vreinterpretq_s16_u16(vmovl_u8(vreinterpret_u8_u32(vdup_n_u32(four))));
      SLIMTORCH_UNROLL
      for (int p = 0; p < 8; ++p) c[r][p] = vpadalq_s16(c[r][p], vmulq_s16(w[p], av));
    }
  }
  SLIMTORCH_UNROLL
  for (int r = 0; r < R; ++r)
    SLIMTORCH_UNROLL
    for (int q = 0; q < 4; ++q) {
      int32_t* out = acc + r * kMaxTileCols + 4 * q;
      int32x4_t sums = vpaddq_s32(c[r][2 * q], c[r][2 * q + 1]);
      if (accumulate) sums = vaddq_s32(sums, vld1q_s32(out));
      vst1q_s32(out, sums);
    }
}

// The primitives of the skeletons in qgemm_paths.h.
struct Neon {
  static constexpr int kLanes = 4;
  static inline int32x4_t load(const int32_t* p) { return vld1q_s32(p); }
  static inline float32x4_t load(const float* p) { return vld1q_f32(p); }
  static inline void store(float* p, float32x4_t v) { vst1q_f32(p, v); }
  static inline int32x4_t splat(int32_t v) { return vdupq_n_s32(v); }
  static inline float32x4_t splat(float v) { return vdupq_n_f32(v); }
  static inline int32x4_t minus_product(int32x4_t a, int32x4_t b, int32x4_t c) { return vmlsq_s32(a, b, c); }
  static inline float32x4_t to_float(int32x4_t v) { return vcvtq_f32_s32(v); }
  static inline float32x4_t mul(float32x4_t a, float32x4_t b) { return vmulq_f32(a, b); }
  static inline float32x4_t add(float32x4_t a, float32x4_t b) { return vaddq_f32(a, b); }
  static inline float32x4_t affine(float32x4_t v, float32x4_t scale, float32x4_t zp, bool fused) {
    return fused ? vfmaq_f32(zp, v, scale) : vaddq_f32(vmulq_f32(v, scale), zp);
  }
  static inline uint32x4_t levels(float32x4_t t) {  // half to even
    return vcvtnq_u32_f32(vminq_f32(vmaxq_f32(t, vdupq_n_f32(0.0f)), vdupq_n_f32(255.0f)));
  }
  static inline void store_bytes(uint8_t* a, uint32x4_t (&levels)[4]) {
    const uint16x8_t w0 = vcombine_u16(vmovn_u32(levels[0]), vmovn_u32(levels[1]));
    const uint16x8_t w1 = vcombine_u16(vmovn_u32(levels[2]), vmovn_u32(levels[3]));
    vst1q_u8(a, vcombine_u8(vmovn_u16(w0), vmovn_u16(w1)));
  }
};

// The weight-only group step: TBL puts a packed quarter in k-major order.
struct NeonFloatStep {
  template <int R, int V>
  static inline void run(float32x4_t (&c)[R][V], const float* x, int64_t ldx, const int8_t* b, int64_t, int64_t g) {
    static_assert(V == 4, "one block of 16 channels");
    const uint8x16_t k_major = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};
    float32x4_t xv[R];
    SLIMTORCH_UNROLL
    for (int r = 0; r < R; ++r) xv[r] = vld1q_f32(x + r * ldx + 4 * g);
    SLIMTORCH_UNROLL
    for (int q = 0; q < 4; ++q) {
      const int8x16_t t = vqtbl1q_s8(vld1q_s8(b + g * kGroupBytes + 16 * q), k_major);
      const int16x8_t lo = vmovl_s8(vget_low_s8(t)), hi = vmovl_high_s8(t);
      const float32x4_t w0 = vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo)));
      const float32x4_t w1 = vcvtq_f32_s32(vmovl_high_s16(lo));
      const float32x4_t w2 = vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi)));
      const float32x4_t w3 = vcvtq_f32_s32(vmovl_high_s16(hi));
      SLIMTORCH_UNROLL
      for (int r = 0; r < R; ++r) {
        c[r][q] = vfmaq_laneq_f32(c[r][q], w0, xv[r], 0);
        c[r][q] = vfmaq_laneq_f32(c[r][q], w1, xv[r], 1);
        c[r][q] = vfmaq_laneq_f32(c[r][q], w2, xv[r], 2);
        c[r][q] = vfmaq_laneq_f32(c[r][q], w3, xv[r], 3);
      }
    }
  }
};

template <int R, int B>
__attribute__((flatten)) void float_tile_neon_kernel(const float* x, int64_t ldx, int64_t k, const int8_t* b,
                                                     int64_t block_stride, float* acc) {
  tile_loop<Neon, NeonFloatStep, R, B>(x, ldx, k, b, block_stride, acc, false);
}

}  // namespace

const IntTiles int_tiles_neon = SLIMTORCH_ONE_BLOCK_TILE_TABLE(int_tile_neon_kernel);
const FloatTiles float_tiles_neon = SLIMTORCH_ONE_BLOCK_TILE_TABLE(float_tile_neon_kernel);

__attribute__((flatten)) void linear_epilogue_neon(const LinearEpilogue& e, const int32_t* acc, int64_t m0, int rows,
                                                   int64_t c0, int64_t cols) {
  linear_epilogue_loop<Neon>(e, acc, m0, rows, c0, cols);
}

__attribute__((flatten)) void quantize_row_neon(const float* x, int64_t k, float inv, int32_t zp, bool fused,
                                                uint8_t* a) {
  const int64_t i = quantize_row_loop<Neon>(x, k, inv, zp, fused, a);
  quantize_row_scalar(x + i, k - i, inv, zp, fused, a + i);
}

void minmax_neon(const float* x, int64_t k, float* lo, float* hi, bool* finite) {
  const float32x4_t zero = vdupq_n_f32(0.0f);
  float32x4_t mn = zero, mx = zero;
  uint32x4_t ok = vdupq_n_u32(~0u);
  int64_t i = 0;
  for (; i + 4 <= k; i += 4) {
    const float32x4_t v = vld1q_f32(x + i);
    ok = vandq_u32(ok, vceqq_f32(vsubq_f32(v, v), zero));  // v - v is NaN for NaN/Inf
    mn = vminq_f32(mn, v);
    mx = vmaxq_f32(mx, v);
  }
  float tail_lo, tail_hi;
  bool tail_ok;
  minmax_scalar(x + i, k - i, &tail_lo, &tail_hi, &tail_ok);
  *lo = std::min(tail_lo, vminvq_f32(mn));
  *hi = std::max(tail_hi, vmaxvq_f32(mx));
  *finite = tail_ok && vminvq_u32(ok) != 0;
}

}  // namespace slimtorch::qgemm_paths
