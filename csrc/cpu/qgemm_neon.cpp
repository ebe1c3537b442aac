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

template <int R, int B>
void float_tile_neon_kernel(const float* x, int64_t ldx, int64_t k, const int8_t* b, int64_t,
                            float* acc) {
  static_assert(B == 1, "one block of 16 channels");
  const uint8x16_t k_major = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};
  float32x4_t c[R][4];
  SLIMTORCH_UNROLL
  for (int r = 0; r < R; ++r)
    SLIMTORCH_UNROLL
    for (int q = 0; q < 4; ++q) c[r][q] = vdupq_n_f32(0.0f);
  const int64_t groups = k / 4;  // k is a multiple of 4 (see FloatTileFn)
  for (int64_t g = 0; g < groups; ++g) {
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
  SLIMTORCH_UNROLL
  for (int r = 0; r < R; ++r)
    SLIMTORCH_UNROLL
    for (int q = 0; q < 4; ++q) vst1q_f32(acc + r * kMaxTileCols + 4 * q, c[r][q]);
}

}  // namespace

IntTileFn int_tile_neon(int rows, int) {
  static const IntTileFn table[kMaxTileRows] = {int_tile_neon_kernel<1, 1>, int_tile_neon_kernel<2, 1>,
                                                int_tile_neon_kernel<3, 1>, int_tile_neon_kernel<4, 1>,
                                                int_tile_neon_kernel<5, 1>, int_tile_neon_kernel<6, 1>};
  return table[rows - 1];
}

FloatTileFn float_tile_neon(int rows, int) {
  static const FloatTileFn table[kMaxTileRows] = {float_tile_neon_kernel<1, 1>, float_tile_neon_kernel<2, 1>,
                                                  float_tile_neon_kernel<3, 1>, float_tile_neon_kernel<4, 1>,
                                                  float_tile_neon_kernel<5, 1>, float_tile_neon_kernel<6, 1>};
  return table[rows - 1];
}

void linear_epilogue_neon(const LinearEpilogue& e, const int32_t* acc, int64_t m0, int rows, int64_t c0,
                          int64_t cols) {
  const int64_t vec = cols / 4 * 4;
  for (int r = 0; r < rows; ++r) {
    const int32x4_t zp = vdupq_n_s32(e.zero_point[m0 + r]);
    const float32x4_t rs = vdupq_n_f32(e.row_scale[m0 + r]);
    float* out = e.y + (m0 + r) * e.ldy + c0;
    for (int64_t c = 0; c < vec; c += 4) {
      const int32x4_t a = vld1q_s32(acc + r * kMaxTileCols + c);
      // Wraps to the true value (see qgemm.h), as the scalar epilogue's int64.
      const int32x4_t v = vmlsq_s32(a, zp, vld1q_s32(e.colsum + c0 + c));
      const float32x4_t scale = vmulq_f32(rs, vld1q_f32(e.w_scale + c0 + c));
      float32x4_t p = vmulq_f32(vcvtq_f32_s32(v), scale);
      if (e.bias) p = vaddq_f32(p, vld1q_f32(e.bias + c0 + c));
      vst1q_f32(out + c, p);
    }
  }
  // acc + vec: the scalar epilogue indexes acc by (row, column - vec).
  if (vec < cols) linear_epilogue_scalar(e, acc + vec, m0, rows, c0 + vec, cols - vec);
}

void quantize_row_neon(const float* x, int64_t k, float inv, int32_t zp, bool fused, uint8_t* a) {
  const float32x4_t scale = vdupq_n_f32(inv), zpv = vdupq_n_f32(float(zp));
  const float32x4_t lo = vdupq_n_f32(0.0f), hi = vdupq_n_f32(255.0f);
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    uint32x4_t levels[4];
    for (int u = 0; u < 4; ++u) {
      const float32x4_t v = vld1q_f32(x + i + 4 * u);
      const float32x4_t t = fused ? vfmaq_f32(zpv, v, scale) : vaddq_f32(vmulq_f32(v, scale), zpv);
      levels[u] = vcvtnq_u32_f32(vminq_f32(vmaxq_f32(t, lo), hi));  // half to even
    }
    const uint16x8_t w0 = vcombine_u16(vmovn_u32(levels[0]), vmovn_u32(levels[1]));
    const uint16x8_t w1 = vcombine_u16(vmovn_u32(levels[2]), vmovn_u32(levels[3]));
    vst1q_u8(a + i, vcombine_u8(vmovn_u16(w0), vmovn_u16(w1)));
  }
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
