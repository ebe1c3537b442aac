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

template <class V, class I>
void gemv_neon(const SparseMatrix& w, const float* x, int64_t, const float* bias, float* y, int64_t,
               int64_t r0, int64_t r1) {
  const V* val = static_cast<const V*>(w.values);
  const I* idx = static_cast<const I*>(w.col_idx);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t end = w.row_ptr[r + 1];
    int64_t k = w.row_ptr[r];
    float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
    for (; k + 8 <= end; k += 8) {
      acc0 = vfmaq_f32(acc0, load4(val + k), gather4(x, idx + k));
      acc1 = vfmaq_f32(acc1, load4(val + k + 4), gather4(x, idx + k + 4));
    }
    if (k + 4 <= end) {
      acc0 = vfmaq_f32(acc0, load4(val + k), gather4(x, idx + k));
      k += 4;
    }
    float tail = 0.0f;
    for (; k < end; ++k) tail += widen(val[k]) * x[idx[k]];
    y[r] = finish_row(w, bias, r, vaddvq_f32(vaddq_f32(acc0, acc1)) + tail);
  }
}

// Batched rows with W = 4 * NV batch columns per panel (xt is [cols][W]).
template <class V, class I, int NV>
void panel_neon(const SparseMatrix& w, const float* xt, int64_t b0, int64_t nb, const float* bias, float* y,
                int64_t ldy, int64_t r0, int64_t r1) {
  constexpr int kW = 4 * NV;
  const V* val = static_cast<const V*>(w.values);
  const I* idx = static_cast<const I*>(w.col_idx);
  alignas(16) float out[kW];
  for (int64_t r = r0; r < r1; ++r) {
    float32x4_t acc[NV];
    for (int u = 0; u < NV; ++u) acc[u] = vdupq_n_f32(0.0f);
    const int64_t end = w.row_ptr[r + 1];
    int64_t k = w.row_ptr[r];
    for (; k + 4 <= end; k += 4) {
      const float32x4_t v = load4(val + k);
      const float* x0 = xt + int64_t(idx[k]) * kW;
      const float* x1 = xt + int64_t(idx[k + 1]) * kW;
      const float* x2 = xt + int64_t(idx[k + 2]) * kW;
      const float* x3 = xt + int64_t(idx[k + 3]) * kW;
      for (int u = 0; u < NV; ++u) {
        acc[u] = vfmaq_laneq_f32(acc[u], vld1q_f32(x0 + 4 * u), v, 0);
        acc[u] = vfmaq_laneq_f32(acc[u], vld1q_f32(x1 + 4 * u), v, 1);
        acc[u] = vfmaq_laneq_f32(acc[u], vld1q_f32(x2 + 4 * u), v, 2);
        acc[u] = vfmaq_laneq_f32(acc[u], vld1q_f32(x3 + 4 * u), v, 3);
      }
    }
    for (; k < end; ++k) {
      const float v = widen(val[k]);
      const float* xr = xt + int64_t(idx[k]) * kW;
      for (int u = 0; u < NV; ++u) acc[u] = vfmaq_n_f32(acc[u], vld1q_f32(xr + 4 * u), v);
    }
    const float32x4_t scale = vdupq_n_f32(w.row_scales != nullptr ? w.row_scales[r] : 1.0f);
    const float32x4_t shift = vdupq_n_f32(bias != nullptr ? bias[r] : 0.0f);
    for (int u = 0; u < NV; ++u) vst1q_f32(out + 4 * u, vfmaq_f32(shift, acc[u], scale));
    for (int64_t j = 0; j < nb; ++j) y[(b0 + j) * ldy + r] = out[j];
  }
}

struct GemvNeon {
  template <class V, class I>
  static constexpr GemvFn of = gemv_neon<V, I>;
};
template <int NV>
struct PanelNeon {
  template <class V, class I>
  static constexpr PanelFn of = panel_neon<V, I, NV>;
};

}  // namespace

GemvFn pick_gemv_neon(const SparseMatrix& w) { return pick_typed<GemvNeon>(w); }

PanelFn pick_panel_neon(const SparseMatrix& w, int nv) {
  if (nv == 4) return pick_typed<PanelNeon<4>>(w);
  if (nv == 2) return pick_typed<PanelNeon<2>>(w);
  return pick_typed<PanelNeon<1>>(w);
}

}  // namespace slimtorch::spmm_paths
