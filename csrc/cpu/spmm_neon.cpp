// Spmm paths for ARM64 Advanced SIMD. NEON has no gather: the batch-1 path
// loads x[col] lane by lane, four nonzeros per vector, two vectors per step;
// the panel path multiplies each nonzero (widened four at a time) with its
// row of the transposed x panel. Values are widened exactly (FCVTL for fp16,
// a shift for bf16, SXTL + SCVTF for int8); every sum is float32 (FMLA).
#include <arm_neon.h>

#include <cstring>

#include "spmm_paths.h"

namespace slimtorch::spmm_paths {
namespace {

inline float32x4_t load4(const float* p) { return vld1q_f32(p); }
inline float32x4_t load4(const F16* p) {
  return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const uint16_t*>(p))));
}
inline float32x4_t load4(const BF16* p) {
  return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(reinterpret_cast<const uint16_t*>(p)), 16));
}
inline float32x4_t load4(const int8_t* p) {
  int32_t bytes;
  std::memcpy(&bytes, p, 4);  // exactly the 4 values: never past the row's end
  const int16x8_t wide = vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(bytes)));
  return vcvtq_f32_s32(vmovl_s16(vget_low_s16(wide)));
}

template <class I>
inline float32x4_t gather4(const float* x, const I* idx) {
  float32x4_t g = vld1q_dup_f32(x + idx[0]);
  g = vld1q_lane_f32(x + idx[1], g, 1);
  g = vld1q_lane_f32(x + idx[2], g, 2);
  return vld1q_lane_f32(x + idx[3], g, 3);
}

// The skeletons' primitives (spmm_paths.h) for 4-lane NEON vectors.
struct NeonOps {
  using Vec = float32x4_t;
  static constexpr int kLanes = 4;
  static constexpr int kFmaChains = 4;  // two FMA pipes x 2-4 cycles' latency (Cortex-A76)
  static inline float32x4_t zero() { return vdupq_n_f32(0.0f); }
  static inline float32x4_t broadcast(float s) { return vdupq_n_f32(s); }
  static inline float32x4_t load(const float* p) { return vld1q_f32(p); }
  static inline void store(float* p, float32x4_t v) { vst1q_f32(p, v); }
  static inline float32x4_t add(float32x4_t a, float32x4_t b) { return vaddq_f32(a, b); }
  static inline float sum(float32x4_t v) { return vaddvq_f32(v); }
  static inline float32x4_t fma(float32x4_t a, float32x4_t b, float32x4_t c) { return vfmaq_f32(c, a, b); }
  template <class V, class I>
  static inline float32x4_t gather_fma(float32x4_t acc, const V* v, const I* i, const float* x) {
    return vfmaq_f32(acc, load4(v), gather4(x, i));
  }
  // Four nonzeros widened at once, each multiplied by lane into its chain's
  // NV accumulators with its x^T row.
  template <int NV, int C, class V, class I>
  __attribute__((always_inline)) static inline void panel_step(float32x4_t (&acc)[C][NV], const V* v, const I* i,
                                                               const float* xt) {
    constexpr int kW = kLanes * NV;
    const float32x4_t values = load4(v);
    const float* x0 = xt + int64_t(i[0]) * kW;
    const float* x1 = xt + int64_t(i[1]) * kW;
    const float* x2 = xt + int64_t(i[2]) * kW;
    const float* x3 = xt + int64_t(i[3]) * kW;
    for (int u = 0; u < NV; ++u) {
      acc[0][u] = vfmaq_laneq_f32(acc[0][u], vld1q_f32(x0 + 4 * u), values, 0);
      acc[1 % C][u] = vfmaq_laneq_f32(acc[1 % C][u], vld1q_f32(x1 + 4 * u), values, 1);
      acc[2 % C][u] = vfmaq_laneq_f32(acc[2 % C][u], vld1q_f32(x2 + 4 * u), values, 2);
      acc[3 % C][u] = vfmaq_laneq_f32(acc[3 % C][u], vld1q_f32(x3 + 4 * u), values, 3);
    }
  }
};

// The kernels: the skeletons instantiated for NEON (this file's flags).
// `of` is the gather kernel (as pick_typed names it), `panel` the panel kernels.
struct Neon {
  template <class V, class I>
  static constexpr GemvFn of = gather_rows<NeonOps, V, I>;
  template <class V, class I, int NV>
  static constexpr PanelFn panel = panel_rows<NeonOps, V, I, NV>;
};

}  // namespace

GemvFn pick_gemv_neon(const SparseMatrix& w) { return pick_typed<Neon>(w); }
PanelFn pick_panel_neon(const SparseMatrix& w, int nv) { return pick_panel_of<Neon>(w, nv); }

}  // namespace slimtorch::spmm_paths
