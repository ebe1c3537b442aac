// Spmm paths for AVX2 (x86-64; per-function target attributes).
#include <immintrin.h>

#include <algorithm>
#include <cstring>

// The vector skeletons of spmm_paths.h pass __m256 values but carry no target
// attribute of their own; they are always inlined into this file's AVX2
// kernels, so no call ever crosses the ABI the warning is about.
#pragma GCC diagnostic ignored "-Wpsabi"
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
// One value, widened exactly, in every lane.
SLIMTORCH_AVX2 inline __m256 broadcast1(const float* p) { return _mm256_set1_ps(*p); }
SLIMTORCH_AVX2 inline __m256 broadcast1(const F16* p) { return _mm256_set1_ps(_cvtsh_ss(p->bits)); }
SLIMTORCH_AVX2 inline __m256 broadcast1(const BF16* p) { return _mm256_set1_ps(bf16_to_float(p->bits)); }
SLIMTORCH_AVX2 inline __m256 broadcast1(const int8_t* p) { return _mm256_set1_ps(float(*p)); }
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

// The skeletons' primitives (spmm_paths.h) for 8-lane AVX2 vectors.
struct Avx2Ops {
  using Vec = __m256;
  static constexpr int kLanes = 8;
  // Two FMA units x 4 cycles' latency (4 measured the same on Zen 4).
  static constexpr int kFmaChains = 8;
  SLIMTORCH_AVX2 static inline __m256 zero() { return _mm256_setzero_ps(); }
  SLIMTORCH_AVX2 static inline __m256 broadcast(float s) { return _mm256_set1_ps(s); }
  SLIMTORCH_AVX2 static inline __m256 load(const float* p) { return _mm256_loadu_ps(p); }
  SLIMTORCH_AVX2 static inline void store(float* p, __m256 v) { _mm256_store_ps(p, v); }
  SLIMTORCH_AVX2 static inline __m256 add(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
  SLIMTORCH_AVX2 static inline float sum(__m256 v) { return sum8(v); }
  SLIMTORCH_AVX2 static inline __m256 fma(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
  template <class V, class I>
  SLIMTORCH_AVX2 static inline __m256 gather_fma(__m256 acc, const V* v, const I* i, const float* x) {
    return _mm256_fmadd_ps(load8(v), _mm256_i32gather_ps(x, index8(i), 4), acc);
  }
  // Each of eight nonzeros is widened and broadcast straight from memory
  // (no round trip through a buffer) and multiplied into its chain's NV
  // accumulators with its x^T row.
  template <int NV, int C, class V, class I>
  SLIMTORCH_AVX2 static inline void panel_step(__m256 (&acc)[C][NV], const V* v, const I* i, const float* xt) {
    constexpr int kW = kLanes * NV;
    for (int j = 0; j < 8; ++j) {
      const __m256 value = broadcast1(v + j);
      const float* xr = xt + int64_t(i[j]) * kW;
      for (int u = 0; u < NV; ++u) acc[j % C][u] = _mm256_fmadd_ps(value, _mm256_loadu_ps(xr + 8 * u), acc[j % C][u]);
    }
  }
};

// The kernels: the skeletons instantiated inside functions compiled for AVX2.
// `of` is the gather kernel (as pick_typed names it), `panel` the panel kernels.
struct Avx2 {
  template <class V, class I>
  SLIMTORCH_AVX2 static void gemv_kernel(const SparseMatrix& w, const float* x, int64_t ldx, const float* bias,
                                         float* y, int64_t ldy, int64_t r0, int64_t r1) {
    gather_rows<Avx2Ops, V, I>(w, x, ldx, bias, y, ldy, r0, r1);
  }
  template <class V, class I, int NV>
  SLIMTORCH_AVX2 static void panel_kernel(const SparseMatrix& w, const void* xt, int64_t b0, int64_t nb,
                                          const float* bias, float* y, int64_t ldy, int64_t r0, int64_t r1,
                                          const PanelCarry& carry) {
    panel_rows<Avx2Ops, V, I, NV>(w, xt, b0, nb, bias, y, ldy, r0, r1, carry);
  }
  template <class V, class I>
  static constexpr GemvFn of = gemv_kernel<V, I>;
  template <class V, class I, int NV>
  static constexpr PanelFn panel = panel_kernel<V, I, NV>;
};

}  // namespace

GemvFn pick_gemv_avx2(const SparseMatrix& w) { return pick_typed<Avx2>(w); }
PanelFn pick_panel_avx2(const SparseMatrix& w, int nv) { return pick_panel_of<Avx2>(w, nv); }

}  // namespace slimtorch::spmm_paths
