// Spmm paths for AVX2 (x86-64; per-function target attributes).
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "spmm_paths.h"

// GCC 12 reports its own masked-load intrinsics (maskz_loadu with an undefined
// pass-through operand) as "maybe uninitialized" once inlined; false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace slimtorch::spmm_paths {
namespace {

// ---- AVX2 paths ----------------------------------------------------------------------

#define SLIMTORCH_AVX2 __attribute__((target("avx2,fma,f16c")))

SLIMTORCH_AVX2 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
SLIMTORCH_AVX2 inline __m256 load8(const F16* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
SLIMTORCH_AVX2 inline __m256 load8(const BF16* p) {
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}
SLIMTORCH_AVX2 inline __m256 load8(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
SLIMTORCH_AVX2 inline __m256i index8(const uint16_t* p) {
  return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
SLIMTORCH_AVX2 inline __m256i index8(const int32_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}
SLIMTORCH_AVX2 inline float sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <class V, class I>
SLIMTORCH_AVX2 void gemv_avx2(const SparseMatrix& w, const float* x, const float* bias, float* y,
                              int64_t r0, int64_t r1) {
  const V* val = static_cast<const V*>(w.values);
  const I* idx = static_cast<const I*>(w.col_idx);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t end = w.row_ptr[r + 1];
    int64_t k = w.row_ptr[r];
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (; k + 16 <= end; k += 16) {
      acc0 = _mm256_fmadd_ps(load8(val + k), _mm256_i32gather_ps(x, index8(idx + k), 4), acc0);
      acc1 = _mm256_fmadd_ps(load8(val + k + 8), _mm256_i32gather_ps(x, index8(idx + k + 8), 4), acc1);
    }
    if (k + 8 <= end) {
      acc0 = _mm256_fmadd_ps(load8(val + k), _mm256_i32gather_ps(x, index8(idx + k), 4), acc0);
      k += 8;
    }
    float tail = 0.0f;
    for (; k < end; ++k) tail += widen(val[k]) * x[idx[k]];
    y[r] = finish_row(w, bias, r, sum8(_mm256_add_ps(acc0, acc1)) + tail);
  }
}

// Batched rows with W = 8 * NV batch columns per panel. Eight nonzeros at a
// time are widened into a small buffer, then each one is broadcast and
// multiplied into NV accumulators with its x^T row.
template <class V, class I, int NV>
SLIMTORCH_AVX2 void panel_avx2(const SparseMatrix& w, const float* xt, int64_t b0, int64_t nb,
                               const float* bias, float* y, int64_t ldy, int64_t r0, int64_t r1) {
  constexpr int kW = 8 * NV;
  const V* val = static_cast<const V*>(w.values);
  const I* idx = static_cast<const I*>(w.col_idx);
  alignas(32) float vbuf[8];
  alignas(32) int32_t ibuf[8];
  alignas(32) float out[kW];
  for (int64_t r = r0; r < r1; ++r) {
    __m256 acc[NV];
    for (int u = 0; u < NV; ++u) acc[u] = _mm256_setzero_ps();
    const int64_t end = w.row_ptr[r + 1];
    int64_t k = w.row_ptr[r];
    for (; k + 8 <= end; k += 8) {
      _mm256_store_ps(vbuf, load8(val + k));
      _mm256_store_si256(reinterpret_cast<__m256i*>(ibuf), index8(idx + k));
      for (int j = 0; j < 8; ++j) {
        const __m256 v = _mm256_set1_ps(vbuf[j]);
        const float* xr = xt + int64_t(ibuf[j]) * kW;
        for (int u = 0; u < NV; ++u) acc[u] = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr + 8 * u), acc[u]);
      }
    }
    for (; k < end; ++k) {
      const __m256 v = _mm256_set1_ps(widen(val[k]));
      const float* xr = xt + int64_t(idx[k]) * kW;
      for (int u = 0; u < NV; ++u) acc[u] = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr + 8 * u), acc[u]);
    }
    const __m256 scale = _mm256_set1_ps(w.row_scales != nullptr ? w.row_scales[r] : 1.0f);
    const __m256 shift = _mm256_set1_ps(bias != nullptr ? bias[r] : 0.0f);
    for (int u = 0; u < NV; ++u) _mm256_store_ps(out + 8 * u, _mm256_fmadd_ps(acc[u], scale, shift));
    for (int64_t j = 0; j < nb; ++j) y[(b0 + j) * ldy + r] = out[j];
  }
}

// Adapter: the AVX2 gather handles one column (ldx, ldy unused).
template <class V, class I>
void gemv_avx2_cols(const SparseMatrix& w, const float* x, int64_t, const float* bias, float* y, int64_t,
                    int64_t r0, int64_t r1) {
  gemv_avx2<V, I>(w, x, bias, y, r0, r1);
}

struct GemvAvx2 {
  template <class V, class I>
  static constexpr GemvFn of = gemv_avx2_cols<V, I>;
};
template <int NV>
struct PanelAvx2 {
  template <class V, class I>
  static constexpr PanelFn of = panel_avx2<V, I, NV>;
};

}  // namespace

GemvFn pick_gemv_avx2(const SparseMatrix& w) { return pick_typed<GemvAvx2>(w); }

PanelFn pick_panel_avx2(const SparseMatrix& w, int nv) {
  if (nv == 4) return pick_typed<PanelAvx2<4>>(w);
  if (nv == 2) return pick_typed<PanelAvx2<2>>(w);
  return pick_typed<PanelAvx2<1>>(w);
}

}  // namespace slimtorch::spmm_paths
