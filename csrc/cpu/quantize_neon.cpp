// Quantize paths for ARM64 Advanced SIMD, 16 elements per step. Compiled
// with -ffp-contract=off like the whole family: vmulq + vaddq stay two
// roundings (per channel), vfmaq is the one rounding of the per-tensor
// formula. FCVTNS rounds half to even, FCVTL/FCVTN convert half exactly /
// to nearest even, as the scalar bodies do.
#include <arm_neon.h>

#include "quantize_loops.h"
#include "quantize_paths.h"

namespace slimtorch::quantize_paths {
namespace {

// The lanes type of the shared loops (quantize_loops.h): 4 floats.
struct NeonLanes : FullSteps {
  static constexpr int64_t kWidth = 4;
  template <DType D>
  static float32x4_t load_as(const void* x, int64_t i, Live) {
    if constexpr (D == DType::kFloat32) {
      return vld1q_f32(static_cast<const float*>(x) + i);
    } else {
      const uint16x4_t h = vld1_u16(static_cast<const uint16_t*>(x) + i);
      if constexpr (D == DType::kFloat16) return vcvt_f32_f16(vreinterpret_f16_u16(h));
      else return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
    }
  }
  static float32x4_t load(const float* p, Live) { return vld1q_f32(p); }
  static void store(float* p, Live, float32x4_t v) { vst1q_f32(p, v); }
  static float32x4_t broadcast(float f) { return vdupq_n_f32(f); }
  static float32x4_t min(float32x4_t a, float32x4_t b) { return vminq_f32(a, b); }
  static float32x4_t max(float32x4_t a, float32x4_t b) { return vmaxq_f32(a, b); }
  static float32x4_t fold_min(float32x4_t acc, Live, float32x4_t v) { return vminq_f32(acc, v); }
  static float32x4_t fold_max(float32x4_t acc, Live, float32x4_t v) { return vmaxq_f32(acc, v); }
  static uint32x4_t abs_bits(float32x4_t v) { return vandq_u32(vreinterpretq_u32_f32(v), vdupq_n_u32(0x7fffffffu)); }
  static uint32x4_t zero_bits() { return vdupq_n_u32(0); }
  static uint32x4_t max_bits(uint32x4_t acc, Live, uint32x4_t bits) { return vmaxq_u32(acc, bits); }
  static float reduce_min(float32x4_t v) { return vminvq_f32(v); }
  static float reduce_max(float32x4_t v) { return vmaxvq_f32(v); }
  static void fold_max_bits(uint32_t* worst, uint32x4_t bits) { *worst = std::max(*worst, vmaxvq_u32(bits)); }

  static constexpr int kStoreParts = 4;
  template <bool kFma>
  static int32x4_t quantize(float32x4_t v, float32x4_t inv, float32x4_t zp, float32x4_t lo, float32x4_t hi) {
    float32x4_t t = kFma ? vfmaq_f32(zp, v, inv) : vaddq_f32(vmulq_f32(v, inv), zp);
    t = vbslq_f32(vceqq_f32(t, t), t, zp);  // NaN -> zero point
    return vcvtnq_s32_f32(vminq_f32(vmaxq_f32(t, lo), hi));
  }
  static void store_bytes(uint8_t* p, const int32x4_t* levels, bool is_signed) {
    // Levels lie in [-128, 255]: exact as int16, then saturated to the byte type.
    const int16x8_t w0 = vcombine_s16(vmovn_s32(levels[0]), vmovn_s32(levels[1]));
    const int16x8_t w1 = vcombine_s16(vmovn_s32(levels[2]), vmovn_s32(levels[3]));
    const uint8x16_t bytes = is_signed ? vreinterpretq_u8_s8(vcombine_s8(vqmovn_s16(w0), vqmovn_s16(w1)))
                                       : vcombine_u8(vqmovun_s16(w0), vqmovun_s16(w1));
    vst1q_u8(p, bytes);
  }

  static uint16x4_t to_fp16(float32x4_t v) { return vreinterpret_u16_f16(vcvt_f16_f32(v)); }
  // Round to nearest even on the bits (inputs are never NaN here).
  static uint16x4_t to_bf16(float32x4_t v) {
    const uint32x4_t bits = vreinterpretq_u32_f32(v);
    const uint32x4_t odd = vandq_u32(vshrq_n_u32(bits, 16), vdupq_n_u32(1));
    return vshrn_n_u32(vaddq_u32(bits, vaddq_u32(odd, vdupq_n_u32(0x7fff))), 16);
  }
  static void store_halves(uint16_t* p, Live, uint16x4_t h) { vst1_u16(p, h); }
};

struct NeonPath {
  template <DType D, bool kFma, bool kArrays>
  static void quantize(const void* x, int64_t i, int64_t n, RunParams p, float qlo, float qhi, uint8_t* q) {
    quantize_run_vector<NeonLanes, D, kFma, kArrays>(x, i, n, p, qlo, qhi, q);
  }

  template <bool kSigned, DType O, bool kArrays>
  static void dequantize(const uint8_t* q, int64_t i, int64_t n, RunParams p, void* out) {
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
        const float32x4_t v = vmulq_f32(vsubq_f32(level, zp[u]), scale[u]);
        store_as<NeonLanes, O>(out, i + j + 4 * u, NeonLanes::Live{}, v);
      }
    }
    const RunParams rest = kArrays ? RunParams{p.mul + j, p.zp + j} : p;
    ScalarPath::dequantize<kSigned, O, kArrays>(q, i + j, n - j, rest, out);
  }

  template <DType D, bool kArrays>
  static void minmax(const void* x, int64_t i, int64_t n, float* lo, float* hi, uint32_t* worst) {
    minmax_run_vector<NeonLanes, D, kArrays>(x, i, n, lo, hi, worst);
  }
};

}  // namespace

PathRuns neon_path() { return path_runs<NeonPath>(); }

}  // namespace slimtorch::quantize_paths
