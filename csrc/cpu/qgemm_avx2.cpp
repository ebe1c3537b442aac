// qgemm paths for AVX2 (x86-64; per-function target attributes).
// -Wpsabi: the skeletons of qgemm_paths.h pass vectors between inline
// functions that `flatten` merges into one target function, so no vector
// crosses a real call and GCC's note on the vector ABI does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
#include "qgemm_paths.h"

#include <immintrin.h>

#define SLIMTORCH_AVX2 __attribute__((target("avx2,fma")))
// Kernels built from the skeletons of qgemm_paths.h (see there).
#define SLIMTORCH_AVX2_KERNEL __attribute__((target("avx2,fma"), flatten))

namespace slimtorch::qgemm_paths {
namespace {

// The primitives of the skeletons in qgemm_paths.h. A 16-lane block is two
// ymm halves of 8 lanes.
struct Avx2 {
  static constexpr int kLanes = 8;
  SLIMTORCH_AVX2 static inline __m256i load(const int32_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  }
  SLIMTORCH_AVX2 static inline __m256i load(const int8_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  }
  SLIMTORCH_AVX2 static inline __m256 load(const float* p) { return _mm256_loadu_ps(p); }
  SLIMTORCH_AVX2 static inline void store(int32_t* p, __m256i v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v);
  }
  SLIMTORCH_AVX2 static inline void store(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
  SLIMTORCH_AVX2 static inline __m256i splat(int32_t v) { return _mm256_set1_epi32(v); }
  SLIMTORCH_AVX2 static inline __m256 splat(float v) { return _mm256_set1_ps(v); }
  SLIMTORCH_AVX2 static inline __m256i shift_left(__m256i v, int bits) { return _mm256_slli_epi32(v, bits); }
  SLIMTORCH_AVX2 static inline __m256 top_byte_to_float(__m256i v) {
    return _mm256_cvtepi32_ps(_mm256_srai_epi32(v, 24));
  }
  SLIMTORCH_AVX2 static inline __m256 fma(__m256 x, __m256 w, __m256 c) { return _mm256_fmadd_ps(x, w, c); }
  SLIMTORCH_AVX2 static inline __m256i minus_product(__m256i a, __m256i b, __m256i c) {
    return _mm256_sub_epi32(a, _mm256_mullo_epi32(b, c));
  }
  SLIMTORCH_AVX2 static inline __m256 to_float(__m256i v) { return _mm256_cvtepi32_ps(v); }
  SLIMTORCH_AVX2 static inline __m256 mul(__m256 a, __m256 b) { return _mm256_mul_ps(a, b); }
  SLIMTORCH_AVX2 static inline __m256 add(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
};

// The integer group step: vpdpbusd's 8-bit pairs would saturate, so both
// operands are widened to int16 pairs for vpmaddwd (see qgemm.cpp).
struct Avx2IntStep {
  template <int R, int V>
  SLIMTORCH_AVX2 static inline void run(__m256i (&c)[R][V], const uint8_t* a, int64_t lda, const int8_t* b,
                                        int64_t block_stride, int64_t g) {
    // Activation pairs as int16: even = (a0, a2), odd = (a1, a3) per 32-bit lane.
    __m256i even[R], odd[R];
    SLIMTORCH_UNROLL
    for (int r = 0; r < R; ++r) {
      int32_t v;
      std::memcpy(&v, a + r * lda + 4 * g, 4);
      even[r] = _mm256_set1_epi32(v & 0x00ff00ff);
      odd[r] = _mm256_set1_epi32((int32_t(uint32_t(v) >> 8)) & 0x00ff00ff);
    }
    SLIMTORCH_UNROLL
    for (int h = 0; h < V; ++h) {
      const __m256i w = Avx2::load(vector_weights<Avx2>(b, block_stride, g, h));
      // Sign-extended weight bytes (0, 2) and (1, 3) of each 32-bit lane as int16 pairs.
      const __m256i w_even = _mm256_srai_epi16(_mm256_slli_epi16(w, 8), 8);
      const __m256i w_odd = _mm256_srai_epi16(w, 8);
      SLIMTORCH_UNROLL
      for (int r = 0; r < R; ++r) {
        c[r][h] = _mm256_add_epi32(c[r][h], _mm256_madd_epi16(w_even, even[r]));
        c[r][h] = _mm256_add_epi32(c[r][h], _mm256_madd_epi16(w_odd, odd[r]));
      }
    }
  }
};

template <int R, int B>
SLIMTORCH_AVX2_KERNEL void int_tile_avx2_kernel(const uint8_t* a, int64_t lda, int64_t k, const int8_t* b,
                                                int64_t block_stride, int32_t* acc, bool accumulate) {
  tile_loop<Avx2, Avx2IntStep, R, B>(a, lda, k, b, block_stride, acc, accumulate);
}

template <int R, int B>
SLIMTORCH_AVX2_KERNEL void float_tile_avx2_kernel(const float* x, int64_t ldx, int64_t k, const int8_t* b,
                                                  int64_t block_stride, float* acc) {
  tile_loop<Avx2, LaneWidenedFloatStep<Avx2>, R, B>(x, ldx, k, b, block_stride, acc, false);
}

}  // namespace

const IntTiles int_tiles_avx2 = SLIMTORCH_TILE_TABLE(int_tile_avx2_kernel);
const FloatTiles float_tiles_avx2 = SLIMTORCH_TILE_TABLE(float_tile_avx2_kernel);

SLIMTORCH_AVX2_KERNEL void linear_epilogue_avx2(const LinearEpilogue& e, const int32_t* acc, int64_t m0, int rows,
                                                int64_t c0, int64_t cols) {
  linear_epilogue_loop<Avx2>(e, acc, m0, rows, c0, cols);
}

SLIMTORCH_AVX2 void quantize_row_avx2(const float* x, int64_t k, float inv, int32_t zp, bool fused, uint8_t* a) {
  const __m256 scale = _mm256_set1_ps(inv), zpv = _mm256_set1_ps(float(zp));
  const __m256 lo = _mm256_setzero_ps(), hi = _mm256_set1_ps(255.0f);
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    __m256 t = fused ? _mm256_fmadd_ps(v, scale, zpv) : _mm256_add_ps(_mm256_mul_ps(v, scale), zpv);
    t = _mm256_min_ps(_mm256_max_ps(t, lo), hi);  // max(NaN, 0) = 0 (second operand)
    const __m256i q = _mm256_cvtps_epi32(t);      // round half to even
    const __m128i q16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(a + i), _mm_packus_epi16(q16, q16));
  }
  quantize_row_scalar(x + i, k - i, inv, zp, fused, a + i);
}

SLIMTORCH_AVX2 void minmax_avx2(const float* x, int64_t k, float* lo, float* hi, bool* finite) {
  __m256 mn = _mm256_setzero_ps(), mx = _mm256_setzero_ps();
  __m256 bad = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    // v - v is 0 for finite v and NaN for NaN/Inf.
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_sub_ps(v, v), _mm256_setzero_ps(), _CMP_NEQ_UQ));
    mn = _mm256_min_ps(mn, v);
    mx = _mm256_max_ps(mx, v);
  }
  alignas(32) float mns[8], mxs[8];
  _mm256_store_ps(mns, mn);
  _mm256_store_ps(mxs, mx);
  float tail_lo, tail_hi;
  bool tail_ok;
  minmax_scalar(x + i, k - i, &tail_lo, &tail_hi, &tail_ok);
  for (int j = 0; j < 8; ++j) {
    tail_lo = std::min(tail_lo, mns[j]);
    tail_hi = std::max(tail_hi, mxs[j]);
  }
  *lo = tail_lo;
  *hi = tail_hi;
  *finite = tail_ok && _mm256_movemask_ps(bad) == 0;
}

}  // namespace slimtorch::qgemm_paths
