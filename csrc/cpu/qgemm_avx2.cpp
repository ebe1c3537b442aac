// qgemm paths for AVX2 (x86-64; per-function target attributes).
#include "qgemm_paths.h"

#include <immintrin.h>

namespace slimtorch::qgemm_paths {
namespace {

template <int R, int B>
__attribute__((target("avx2,fma"))) void int_tile_avx2_kernel(const uint8_t* a, int64_t lda, int64_t k,
                                                              const int8_t* b, int64_t block_stride,
                                                              int32_t* acc, bool accumulate) {
  // Each 16-lane block is two ymm halves of 8 lanes.
  __m256i c[R][2 * B];
  SLIMTORCH_UNROLL
  for (int r = 0; r < R; ++r)
    SLIMTORCH_UNROLL
    for (int h = 0; h < 2 * B; ++h)
      c[r][h] = accumulate ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + r * kMaxTileCols + h * 8))
                           : _mm256_setzero_si256();
  const int64_t groups = k / 4;
  for (int64_t g = 0; g < groups; ++g) {
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
    for (int h = 0; h < 2 * B; ++h) {
      const __m256i w = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(b + (h / 2) * block_stride + g * kGroupBytes + (h % 2) * 32));
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
  SLIMTORCH_UNROLL
  for (int r = 0; r < R; ++r)
    SLIMTORCH_UNROLL
    for (int h = 0; h < 2 * B; ++h)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + r * kMaxTileCols + h * 8), c[r][h]);
}

template <int R, int B>
__attribute__((target("avx2,fma"))) void float_tile_avx2_kernel(const float* x, int64_t ldx, int64_t k,
                                                                const int8_t* b, int64_t block_stride,
                                                                float* acc) {
  __m256 c[R][2 * B];
  SLIMTORCH_UNROLL
  for (int r = 0; r < R; ++r)
    SLIMTORCH_UNROLL
    for (int h = 0; h < 2 * B; ++h) c[r][h] = _mm256_setzero_ps();
  const int64_t groups = k / 4;  // k is a multiple of 4 (see FloatTileFn)
  for (int64_t g = 0; g < groups; ++g) {
    __m256i w[2 * B];
    SLIMTORCH_UNROLL
    for (int h = 0; h < 2 * B; ++h)
      w[h] = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(b + (h / 2) * block_stride + g * kGroupBytes + (h % 2) * 32));
    SLIMTORCH_UNROLL
    for (int i = 0; i < 4; ++i) {
      __m256 wf[2 * B];
      SLIMTORCH_UNROLL
      for (int h = 0; h < 2 * B; ++h) {
        // Byte i of each lane to the top, then back with sign: int8 -> int32.
        __m256i v = w[h];
        if (i == 0) v = _mm256_slli_epi32(v, 24);
        else if (i == 1) v = _mm256_slli_epi32(v, 16);
        else if (i == 2) v = _mm256_slli_epi32(v, 8);
        wf[h] = _mm256_cvtepi32_ps(_mm256_srai_epi32(v, 24));
      }
      SLIMTORCH_UNROLL
      for (int r = 0; r < R; ++r) {
        const __m256 xv = _mm256_set1_ps(x[r * ldx + 4 * g + i]);
        SLIMTORCH_UNROLL
        for (int h = 0; h < 2 * B; ++h) c[r][h] = _mm256_fmadd_ps(xv, wf[h], c[r][h]);
      }
    }
  }
  SLIMTORCH_UNROLL
  for (int r = 0; r < R; ++r)
    SLIMTORCH_UNROLL
    for (int h = 0; h < 2 * B; ++h) _mm256_storeu_ps(acc + r * kMaxTileCols + h * 8, c[r][h]);
}

}  // namespace

IntTileFn int_tile_avx2(int rows, int blocks) {
  static const IntTileFn table[kMaxTileRows][kMaxTileBlocks] = SLIMTORCH_TILE_TABLE(int_tile_avx2_kernel);
  return table[rows - 1][blocks - 1];
}

FloatTileFn float_tile_avx2(int rows, int blocks) {
  static const FloatTileFn table[kMaxTileRows][kMaxTileBlocks] = SLIMTORCH_TILE_TABLE(float_tile_avx2_kernel);
  return table[rows - 1][blocks - 1];
}

__attribute__((target("avx2,fma"))) void linear_epilogue_avx2(const LinearEpilogue& e,
                                                             const int32_t* acc, int64_t m0,
                                                             int rows, int64_t c0, int64_t cols) {
  const int64_t vec = cols / 8 * 8;
  for (int r = 0; r < rows; ++r) {
    const __m256i zp = _mm256_set1_epi32(e.zero_point[m0 + r]);
    const __m256 rs = _mm256_set1_ps(e.row_scale[m0 + r]);
    float* out = e.y + (m0 + r) * e.ldy + c0;
    for (int64_t c = 0; c < vec; c += 8) {
      const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + r * kMaxTileCols + c));
      const __m256i cs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(e.colsum + c0 + c));
      const __m256i v = _mm256_sub_epi32(a, _mm256_mullo_epi32(zp, cs));  // wraps to the true value
      const __m256 scale = _mm256_mul_ps(rs, _mm256_loadu_ps(e.w_scale + c0 + c));
      __m256 p = _mm256_mul_ps(_mm256_cvtepi32_ps(v), scale);
      if (e.bias) p = _mm256_add_ps(p, _mm256_loadu_ps(e.bias + c0 + c));
      _mm256_storeu_ps(out + c, p);
    }
  }
  // acc + vec: the scalar epilogue indexes acc by (row, column - vec).
  if (vec < cols) linear_epilogue_scalar(e, acc + vec, m0, rows, c0 + vec, cols - vec);
}

__attribute__((target("avx2,fma"))) void quantize_row_avx2(const float* x, int64_t k, float inv,
                                                          int32_t zp, bool fused, uint8_t* a) {
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

__attribute__((target("avx2,fma"))) void minmax_avx2(const float* x, int64_t k, float* lo,
                                                    float* hi, bool* finite) {
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
