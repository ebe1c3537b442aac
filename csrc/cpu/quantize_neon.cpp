// Quantize paths for ARM64 Advanced SIMD, 16 elements per step. Compiled
// with -ffp-contract=off like the whole family: vmulq + vaddq stay two
// roundings (per channel), vfmaq is the one rounding of the per-tensor
// formula. FCVTNS rounds half to even, FCVTL/FCVTN convert half exactly /
// to nearest even, as the scalar bodies do.
#include <arm_neon.h>

#include "quantize_paths.h"

namespace slimtorch::quantize_paths {
namespace {

template <DType D>
inline float32x4_t load4(const void* x, int64_t i) {
  if constexpr (D == DType::kFloat32) {
    return vld1q_f32(static_cast<const float*>(x) + i);
  } else {
    const uint16x4_t h = vld1_u16(static_cast<const uint16_t*>(x) + i);
    if constexpr (D == DType::kFloat16) return vcvt_f32_f16(vreinterpret_f16_u16(h));
    else return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
  }
}

template <bool kFma>
inline int32x4_t quantize4(float32x4_t v, float32x4_t inv, float32x4_t zp, float32x4_t lo, float32x4_t hi) {
  float32x4_t t = kFma ? vfmaq_f32(zp, v, inv) : vaddq_f32(vmulq_f32(v, inv), zp);
  t = vbslq_f32(vceqq_f32(t, t), t, zp);  // NaN -> zero point
  return vcvtnq_s32_f32(vminq_f32(vmaxq_f32(t, lo), hi));
}

template <DType D, bool kFma, bool kArrays>
void quantize_run_neon(const void* x, int64_t i, int64_t n, RunParams p, float qlo, float qhi, uint8_t* q) {
  const float32x4_t lo = vdupq_n_f32(qlo), hi = vdupq_n_f32(qhi);
  float32x4_t inv[4], zp[4];
  for (int u = 0; u < 4; ++u) inv[u] = vdupq_n_f32(p.mul[0]), zp[u] = vdupq_n_f32(p.zp[0]);
  const bool is_signed = qlo < 0.0f;
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    int32x4_t levels[4];
    for (int u = 0; u < 4; ++u) {
      if (kArrays) inv[u] = vld1q_f32(p.mul + j + 4 * u), zp[u] = vld1q_f32(p.zp + j + 4 * u);
      levels[u] = quantize4<kFma>(load4<D>(x, i + j + 4 * u), inv[u], zp[u], lo, hi);
    }
    // Levels lie in [-128, 255]: exact as int16, then saturated to the byte type.
    const int16x8_t w0 = vcombine_s16(vmovn_s32(levels[0]), vmovn_s32(levels[1]));
    const int16x8_t w1 = vcombine_s16(vmovn_s32(levels[2]), vmovn_s32(levels[3]));
    const uint8x16_t bytes = is_signed
                                 ? vreinterpretq_u8_s8(vcombine_s8(vqmovn_s16(w0), vqmovn_s16(w1)))
                                 : vcombine_u8(vqmovun_s16(w0), vqmovun_s16(w1));
    vst1q_u8(q + i + j, bytes);
  }
  const RunParams rest = kArrays ? RunParams{p.mul + j, p.zp + j} : p;
  quantize_run_scalar<D, kFma, kArrays>(x, i + j, n - j, rest, qlo, qhi, q);
}

template <DType O>
inline void store4(void* out, int64_t i, float32x4_t v) {
  if constexpr (O == DType::kFloat32) {
    vst1q_f32(static_cast<float*>(out) + i, v);
  } else if constexpr (O == DType::kFloat16) {
    vst1_u16(static_cast<uint16_t*>(out) + i, vreinterpret_u16_f16(vcvt_f16_f32(v)));
  } else {
    // bfloat16, round to nearest even on the bits (inputs are never NaN here).
    const uint32x4_t bits = vreinterpretq_u32_f32(v);
    const uint32x4_t odd = vandq_u32(vshrq_n_u32(bits, 16), vdupq_n_u32(1));
    vst1_u16(static_cast<uint16_t*>(out) + i,
             vshrn_n_u32(vaddq_u32(bits, vaddq_u32(odd, vdupq_n_u32(0x7fff))), 16));
  }
}

template <bool kSigned, DType O, bool kArrays>
void dequantize_run_neon(const uint8_t* q, int64_t i, int64_t n, RunParams p, void* out) {
  float32x4_t scale[4], zp[4];
  for (int u = 0; u < 4; ++u) scale[u] = vdupq_n_f32(p.mul[0]), zp[u] = vdupq_n_f32(p.zp[0]);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const uint8x16_t bytes = vld1q_u8(q + i + j);
    int16x8_t words[2];
    if (kSigned) {
      const int8x16_t s = vreinterpretq_s8_u8(bytes);
      words[0] = vmovl_s8(vget_low_s8(s)), words[1] = vmovl_s8(vget_high_s8(s));
    } else {
      words[0] = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(bytes)));
      words[1] = vreinterpretq_s16_u16(vmovl_u8(vget_high_u8(bytes)));
    }
    for (int u = 0; u < 4; ++u) {
      const int16x4_t half = (u % 2 == 0) ? vget_low_s16(words[u / 2]) : vget_high_s16(words[u / 2]);
      if (kArrays) scale[u] = vld1q_f32(p.mul + j + 4 * u), zp[u] = vld1q_f32(p.zp + j + 4 * u);
      const float32x4_t level = vcvtq_f32_s32(vmovl_s16(half));
      store4<O>(out, i + j + 4 * u, vmulq_f32(vsubq_f32(level, zp[u]), scale[u]));
    }
  }
  const RunParams rest = kArrays ? RunParams{p.mul + j, p.zp + j} : p;
  dequantize_run_scalar<kSigned, O, kArrays>(q, i + j, n - j, rest, out);
}

template <DType D, bool kArrays>
void minmax_run_neon(const void* x, int64_t i, int64_t n, float* lo, float* hi, uint32_t* worst) {
  const uint32x4_t abs_mask = vdupq_n_u32(0x7fffffffu);
  float32x4_t vlo = vdupq_n_f32(lo[0]), vhi = vdupq_n_f32(hi[0]);
  uint32x4_t vworst = vdupq_n_u32(0);
  int64_t j = 0;
  // NaN makes FMIN/FMAX results NaN; lo/hi are then unused (worst reports it).
  for (; j + 4 <= n; j += 4) {
    const float32x4_t v = load4<D>(x, i + j);
    vworst = vmaxq_u32(vworst, vandq_u32(vreinterpretq_u32_f32(v), abs_mask));
    if (kArrays) {
      vst1q_f32(lo + j, vminq_f32(vld1q_f32(lo + j), v));
      vst1q_f32(hi + j, vmaxq_f32(vld1q_f32(hi + j), v));
    } else {
      vlo = vminq_f32(vlo, v), vhi = vmaxq_f32(vhi, v);
    }
  }
  if (!kArrays) lo[0] = vminvq_f32(vlo), hi[0] = vmaxvq_f32(vhi);
  *worst = std::max(*worst, vmaxvq_u32(vworst));
  minmax_run_scalar<D, kArrays>(x, i + j, n - j, kArrays ? lo + j : lo, kArrays ? hi + j : hi, worst);
}

struct NeonPath {
  template <DType D, bool kFma, bool kArrays>
  static constexpr QuantizeRun quantize = quantize_run_neon<D, kFma, kArrays>;
  template <bool kSigned, DType O, bool kArrays>
  static constexpr DequantizeRun dequantize = dequantize_run_neon<kSigned, O, kArrays>;
  template <DType D, bool kArrays>
  static constexpr MinmaxRun minmax = minmax_run_neon<D, kArrays>;
};

}  // namespace

QuantizeRun pick_quantize_neon(DType dtype, bool fma, bool arrays) {
  return pick_quantize_of<NeonPath>(dtype, fma, arrays);
}
DequantizeRun pick_dequantize_neon(QType qtype, DType out, bool arrays) {
  return pick_dequantize_of<NeonPath>(qtype, out, arrays);
}
MinmaxRun pick_minmax_neon(DType dtype, bool arrays) { return pick_minmax_of<NeonPath>(dtype, arrays); }
QuantizeRun pick_quantize_stream_neon(DType, bool) { return nullptr; }
DequantizeRun pick_dequantize_stream_neon(QType) { return nullptr; }

}  // namespace slimtorch::quantize_paths
