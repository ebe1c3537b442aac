// qgemm paths for AVX-512 (x86-64; per-function target attributes).
#include "narrow.h"
#include "qgemm_paths.h"

// GCC 12 reports its own _mm512_undefined_*() placeholders inside the
// AVX-512 intrinsic headers as uninitialized; the warning is a known false
// positive (GCC bug 105593) and would drown real ones.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

namespace slimtorch::qgemm_paths {
namespace {

template <int R, int B>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) void int_tile_vnni_kernel(
    const uint8_t* a, int64_t lda, int64_t k, const int8_t* b, int64_t block_stride,
    int32_t* acc, bool accumulate) {
  __m512i c[R][B];
  SLIMTORCH_UNROLL
  for (int r = 0; r < R; ++r)
    SLIMTORCH_UNROLL
    for (int blk = 0; blk < B; ++blk)
      c[r][blk] = accumulate ? _mm512_loadu_si512(acc + r * kMaxTileCols + blk * kQgemmBlockN)
                             : _mm512_setzero_si512();
  const int64_t groups = k / 4;  // k is a multiple of 4 (see IntTileFn)
  for (int64_t g = 0; g < groups; ++g) {
    __m512i w[B];
    SLIMTORCH_UNROLL
    for (int blk = 0; blk < B; ++blk)
      w[blk] = _mm512_loadu_si512(b + blk * block_stride + g * kGroupBytes);
    SLIMTORCH_UNROLL
    for (int r = 0; r < R; ++r) {
      int32_t v;
      std::memcpy(&v, a + r * lda + 4 * g, 4);
      const __m512i av = _mm512_set1_epi32(v);
      SLIMTORCH_UNROLL
      for (int blk = 0; blk < B; ++blk) c[r][blk] = _mm512_dpbusd_epi32(c[r][blk], av, w[blk]);
    }
  }
  SLIMTORCH_UNROLL
  for (int r = 0; r < R; ++r)
    SLIMTORCH_UNROLL
    for (int blk = 0; blk < B; ++blk)
      _mm512_storeu_si512(acc + r * kMaxTileCols + blk * kQgemmBlockN, c[r][blk]);
}

template <int R, int B>
__attribute__((target("avx512f,avx512bw,avx512vl"))) void float_tile_avx512_kernel(
    const float* x, int64_t ldx, int64_t k, const int8_t* b, int64_t block_stride, float* acc) {
  __m512 c[R][B];
  SLIMTORCH_UNROLL
  for (int r = 0; r < R; ++r)
    SLIMTORCH_UNROLL
    for (int blk = 0; blk < B; ++blk) c[r][blk] = _mm512_setzero_ps();
  const int64_t groups = k / 4;  // k is a multiple of 4 (see FloatTileFn)
  for (int64_t g = 0; g < groups; ++g) {
    __m512i w[B];
    SLIMTORCH_UNROLL
    for (int blk = 0; blk < B; ++blk)
      w[blk] = _mm512_loadu_si512(b + blk * block_stride + g * kGroupBytes);
    SLIMTORCH_UNROLL
    for (int i = 0; i < 4; ++i) {
      __m512 wf[B];
      SLIMTORCH_UNROLL
      for (int blk = 0; blk < B; ++blk) {
        __m512i v = w[blk];
        if (i == 0) v = _mm512_slli_epi32(v, 24);
        else if (i == 1) v = _mm512_slli_epi32(v, 16);
        else if (i == 2) v = _mm512_slli_epi32(v, 8);
        wf[blk] = _mm512_cvtepi32_ps(_mm512_srai_epi32(v, 24));
      }
      SLIMTORCH_UNROLL
      for (int r = 0; r < R; ++r) {
        const __m512 xv = _mm512_set1_ps(x[r * ldx + 4 * g + i]);
        SLIMTORCH_UNROLL
        for (int blk = 0; blk < B; ++blk) c[r][blk] = _mm512_fmadd_ps(xv, wf[blk], c[r][blk]);
      }
    }
  }
  SLIMTORCH_UNROLL
  for (int r = 0; r < R; ++r)
    SLIMTORCH_UNROLL
    for (int blk = 0; blk < B; ++blk)
      _mm512_storeu_ps(acc + r * kMaxTileCols + blk * kQgemmBlockN, c[r][blk]);
}

// One row (GEMV), AVX-512: the cheaper conversion. A 16-byte quarter of a
// packed group holds 4 channels x 4 k; vpmovsxbd widens it to 16 int32 lanes
// (channel-major), and the FMA pairs them with x[4g..4g+3] broadcast 4 times.
// Each quarter keeps its own accumulator of (channel, k mod 4) partial sums,
// added across k mod 4 once at the end: 3 ops per 16 weights instead of 4.
template <int R, int B>
__attribute__((target("avx512f,avx512bw,avx512vl"))) void float_row_avx512(
    const float* x, int64_t, int64_t k, const int8_t* b, int64_t block_stride, float* acc) {
  static_assert(R == 1, "one row");
  __m512 c[B][4];
  SLIMTORCH_UNROLL
  for (int blk = 0; blk < B; ++blk)
    SLIMTORCH_UNROLL
    for (int q = 0; q < 4; ++q) c[blk][q] = _mm512_setzero_ps();
  const int64_t groups = k / 4;
  for (int64_t g = 0; g < groups; ++g) {
    const __m512 xv = _mm512_broadcast_f32x4(_mm_loadu_ps(x + 4 * g));
    SLIMTORCH_UNROLL
    for (int blk = 0; blk < B; ++blk) {
      const int8_t* w = b + blk * block_stride + g * kGroupBytes;
      SLIMTORCH_UNROLL
      for (int q = 0; q < 4; ++q) {
        const __m512i wi = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 16 * q)));
        c[blk][q] = _mm512_fmadd_ps(xv, _mm512_cvtepi32_ps(wi), c[blk][q]);
      }
    }
  }
  alignas(64) float partial[16];
  for (int blk = 0; blk < B; ++blk)
    for (int q = 0; q < 4; ++q) {
      _mm512_store_ps(partial, c[blk][q]);
      for (int ch = 0; ch < 4; ++ch)
        acc[blk * kQgemmBlockN + 4 * q + ch] =
            (partial[4 * ch] + partial[4 * ch + 1]) + (partial[4 * ch + 2] + partial[4 * ch + 3]);
    }
}

}  // namespace

IntTileFn int_tile_vnni(int rows, int blocks) {
  static const IntTileFn table[kMaxTileRows][kMaxTileBlocks] = SLIMTORCH_TILE_TABLE(int_tile_vnni_kernel);
  return table[rows - 1][blocks - 1];
}

// One row takes the GEMV kernel (float_row_avx512).
FloatTileFn float_tile_avx512(int rows, int blocks) {
  static const FloatTileFn table[kMaxTileRows][kMaxTileBlocks] = SLIMTORCH_TILE_TABLE(float_tile_avx512_kernel);
  static const FloatTileFn row[kMaxTileBlocks] = {float_row_avx512<1, 1>, float_row_avx512<1, 2>,
                                                  float_row_avx512<1, 3>, float_row_avx512<1, 4>};
  return rows == 1 ? row[blocks - 1] : table[rows - 1][blocks - 1];
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) void linear_epilogue_avx512(
    const LinearEpilogue& e, const int32_t* acc, int64_t m0, int rows, int64_t c0, int64_t cols) {
  for (int r = 0; r < rows; ++r) {
    const __m512i zp = _mm512_set1_epi32(e.zero_point[m0 + r]);
    const __m512 rs = _mm512_set1_ps(e.row_scale[m0 + r]);
    float* out = e.y + (m0 + r) * e.ldy + c0;
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 live = cols - c >= 16 ? __mmask16(0xffff) : __mmask16((1u << (cols - c)) - 1);
      const __m512i a = _mm512_loadu_si512(acc + r * kMaxTileCols + c);
      const __m512i cs = _mm512_maskz_loadu_epi32(live, e.colsum + c0 + c);
      const __m512i v = _mm512_sub_epi32(a, _mm512_mullo_epi32(zp, cs));
      const __m512 scale = _mm512_mul_ps(rs, _mm512_maskz_loadu_ps(live, e.w_scale + c0 + c));
      __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(v), scale);
      if (e.bias) p = _mm512_add_ps(p, _mm512_maskz_loadu_ps(live, e.bias + c0 + c));
      _mm512_mask_storeu_ps(out + c, live, p);
    }
  }
}

// y[r][c] = acc * w_scale[c] + bias[c]
__attribute__((target("avx512f,avx512bw,avx512vl"))) void float_epilogue_avx512(
    const float* acc, const float* w_scale, const float* bias, float* y, int64_t ldy, int rows,
    int64_t cols) {
  for (int r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 live = cols - c >= 16 ? __mmask16(0xffff) : __mmask16((1u << (cols - c)) - 1);
      __m512 p = _mm512_mul_ps(_mm512_loadu_ps(acc + r * kMaxTileCols + c),
                               _mm512_maskz_loadu_ps(live, w_scale + c));
      if (bias) p = _mm512_add_ps(p, _mm512_maskz_loadu_ps(live, bias + c));
      _mm512_mask_storeu_ps(y + r * ldy + c, live, p);
    }
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) void quantize_row_avx512(
    const float* x, int64_t k, float inv, int32_t zp, bool fused, uint8_t* a) {
  const __m512 scale = _mm512_set1_ps(inv), zpv = _mm512_set1_ps(float(zp));
  const __m512 lo = _mm512_setzero_ps(), hi = _mm512_set1_ps(255.0f);
  int64_t i = 0;
  // 64 at a time: the rows are finite here, so only the top needs a float
  // clamp; the saturating packs take care of the bottom (see narrow.h).
  for (; i + 64 <= k; i += 64) {
    __m512i levels[4];
    for (int u = 0; u < 4; ++u) {
      const __m512 v = _mm512_loadu_ps(x + i + 16 * u);
      const __m512 t = fused ? _mm512_fmadd_ps(v, scale, zpv) : _mm512_add_ps(_mm512_mul_ps(v, scale), zpv);
      levels[u] = _mm512_cvtps_epi32(_mm512_min_ps(t, hi));
    }
    _mm512_storeu_si512(a + i, narrow_to_bytes64<false>(levels));
  }
  for (; i < k; i += 16) {
    const __mmask16 live = k - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (k - i)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(live, x + i);
    __m512 t = fused ? _mm512_fmadd_ps(v, scale, zpv) : _mm512_add_ps(_mm512_mul_ps(v, scale), zpv);
    t = _mm512_min_ps(_mm512_max_ps(t, lo), hi);
    _mm_mask_storeu_epi8(a + i, live, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(t)));
  }
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) void minmax_avx512(const float* x, int64_t k,
                                                                       float* lo, float* hi,
                                                                       bool* finite) {
  __m512 mn = _mm512_setzero_ps(), mx = _mm512_setzero_ps();
  __mmask16 bad = 0;
  for (int64_t i = 0; i < k; i += 16) {
    const __mmask16 live = k - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (k - i)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(live, x + i);  // dead lanes read as 0
    bad |= _mm512_cmp_ps_mask(_mm512_sub_ps(v, v), _mm512_setzero_ps(), _CMP_NEQ_UQ);
    mn = _mm512_min_ps(mn, v);
    mx = _mm512_max_ps(mx, v);
  }
  *lo = _mm512_reduce_min_ps(mn);
  *hi = _mm512_reduce_max_ps(mx);
  *finite = bad == 0;
}

}  // namespace slimtorch::qgemm_paths
