// Spmm paths for AVX-512 (x86-64; per-function target attributes), and the
// int8 x dynamically quantized activations kernel (AVX-512 VNNI).
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "spmm_paths.h"

// GCC 12 reports its own masked-load intrinsics (maskz_loadu with an undefined
// pass-through operand) as "maybe uninitialized" once inlined; false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace slimtorch::spmm_paths {
namespace {

// ---- AVX-512 paths -------------------------------------------------------------------

#define SLIMTORCH_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

SLIMTORCH_AVX512 inline __mmask16 first_lanes(int64_t n) {
  return n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1);
}
SLIMTORCH_AVX512 inline __m512 load16(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
SLIMTORCH_AVX512 inline __m512 load16(const F16* p, __mmask16 m) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}
SLIMTORCH_AVX512 inline __m512 load16(const BF16* p, __mmask16 m) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}
SLIMTORCH_AVX512 inline __m512 load16(const int8_t* p, __mmask16 m) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, p)));
}
// One value, widened exactly, in every lane.
SLIMTORCH_AVX512 inline __m512 broadcast1(const float* p) { return _mm512_set1_ps(*p); }
SLIMTORCH_AVX512 inline __m512 broadcast1(const F16* p) { return _mm512_set1_ps(_cvtsh_ss(p->bits)); }
SLIMTORCH_AVX512 inline __m512 broadcast1(const BF16* p) { return _mm512_set1_ps(bf16_to_float(p->bits)); }
SLIMTORCH_AVX512 inline __m512 broadcast1(const int8_t* p) { return _mm512_set1_ps(float(*p)); }
SLIMTORCH_AVX512 inline __m512i index16(const uint16_t* p, __mmask16 m) {
  return _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p));
}
SLIMTORCH_AVX512 inline __m512i index16(const int32_t* p, __mmask16 m) {
  return _mm512_maskz_loadu_epi32(m, p);
}

// NB (1..3) batch columns at once: the indices and values of a chunk are
// loaded once and serve NB gathers (x[b] = x + b * ldx, y[b] = y + b * ldy).
template <class V, class I, int NB>
SLIMTORCH_AVX512 void gemv_avx512(const SparseMatrix& w, const float* x, int64_t ldx, const float* bias,
                                  float* y, int64_t ldy, int64_t r0, int64_t r1) {
  const V* val = static_cast<const V*>(w.values);
  const I* idx = static_cast<const I*>(w.col_idx);
  const __mmask16 all = 0xffff;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t end = w.row_ptr[r + 1];
    int64_t k = w.row_ptr[r];
    __m512 acc0[NB], acc1[NB];
    for (int b = 0; b < NB; ++b) acc0[b] = acc1[b] = _mm512_setzero_ps();
    for (; k + 32 <= end; k += 32) {
      const __m512 v0 = load16(val + k, all), v1 = load16(val + k + 16, all);
      const __m512i i0 = index16(idx + k, all), i1 = index16(idx + k + 16, all);
      for (int b = 0; b < NB; ++b) {
        acc0[b] = _mm512_fmadd_ps(v0, _mm512_i32gather_ps(i0, x + b * ldx, 4), acc0[b]);
        acc1[b] = _mm512_fmadd_ps(v1, _mm512_i32gather_ps(i1, x + b * ldx, 4), acc1[b]);
      }
    }
    // At most two masked steps finish the row: no scalar remainder.
    for (; k < end; k += 16) {
      const __mmask16 m = first_lanes(end - k);
      const __m512 v = load16(val + k, m);
      const __m512i i = index16(idx + k, m);
      for (int b = 0; b < NB; ++b) {
        const __m512 xs = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, i, x + b * ldx, 4);
        acc0[b] = _mm512_fmadd_ps(v, xs, acc0[b]);
      }
    }
    for (int b = 0; b < NB; ++b)
      y[b * ldy + r] = finish_row(w, bias, r, _mm512_reduce_add_ps(_mm512_add_ps(acc0[b], acc1[b])));
  }
}

#define SLIMTORCH_VBMI2 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi2,avx2,fma,f16c")))

// The next n = popcount(m) values of a row, widened and expanded into the
// lanes m selects (the others zero). float32 expands straight from memory;
// the other types are loaded with a mask (never past the row's values) first.
template <class V>
SLIMTORCH_AVX512 inline __m512 expand16(const V* v, __mmask16 m, int n) {
  // The lanes below n (n <= 16), without a branch.
  return _mm512_maskz_expand_ps(m, load16(v, __mmask16(0xffffu >> (16 - n))));
}
SLIMTORCH_AVX512 inline __m512 expand16(const float* v, __mmask16 m, int) {
  return _mm512_maskz_expandloadu_ps(m, v);
}
// With AVX512_VBMI2, bfloat16 values expand straight from memory too
// (vpexpandw), then widen. (float16 and int8 values measured 2-3x slower
// that way on Zen 4 than with the masked load above.)
SLIMTORCH_VBMI2 inline __m512 expand16_vbmi2(const BF16* v, __mmask16 m, int) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_maskz_expandloadu_epi16(m, v));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

// Batch 1 through the column bitmap (see spmm.h): the values of a row are
// consecutive and column-ordered, so each 16-column block takes the next
// popcount(mask) of them, expanded into the lanes its mask selects. One
// loop for both expansions; a macro because their target attributes differ.
#define SLIMTORCH_BITMAP_GEMV(NAME, TARGET, EXPAND)                                                       \
  template <class V>                                                                                      \
  TARGET void NAME(const SparseMatrix& w, const float* x, const float* bias, float* y, int64_t r0,        \
                   int64_t r1) {                                                                          \
    const int64_t blocks = (w.cols + 15) / 16;                                                            \
    for (int64_t r = r0; r < r1; ++r) {                                                                   \
      const V* v = static_cast<const V*>(w.values) + w.row_ptr[r];                                        \
      const uint16_t* masks = w.bitmap + r * blocks;                                                      \
      /* Two accumulators (alternate blocks). Four measured no faster for float32 and ~30% slower */     \
      /* for int8 values (AMD Zen 4). */                                                                  \
      __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();                                      \
      int64_t b = 0;                                                                                      \
      /* Four blocks per step: their value offsets come from popcounts of one 64-bit load of the */     \
      /* masks, so the loads do not wait on each other. */                                                \
      for (; b + 4 <= blocks; b += 4) {                                                                   \
        uint64_t m;                                                                                       \
        std::memcpy(&m, masks + b, sizeof m);                                                             \
        if (m == 0) continue;                                                                             \
        const int n0 = __builtin_popcountll(m & 0xffffu), n01 = __builtin_popcountll(m & 0xffffffffu);    \
        const int n012 = __builtin_popcountll(m & 0xffffffffffffull), n = __builtin_popcountll(m);        \
        const __mmask16 m0 = __mmask16(m), m1 = __mmask16(m >> 16), m2 = __mmask16(m >> 32),              \
                        m3 = __mmask16(m >> 48);                                                          \
        const float* xb = x + 16 * b;                                                                     \
        /* Masked x loads: never past x's end, and no 0 * inf from pruned columns. */                    \
        acc0 = _mm512_fmadd_ps(EXPAND(v, m0, n0), _mm512_maskz_loadu_ps(m0, xb), acc0);                   \
        acc1 = _mm512_fmadd_ps(EXPAND(v + n0, m1, n01 - n0), _mm512_maskz_loadu_ps(m1, xb + 16), acc1);    \
        acc0 = _mm512_fmadd_ps(EXPAND(v + n01, m2, n012 - n01), _mm512_maskz_loadu_ps(m2, xb + 32), acc0); \
        acc1 = _mm512_fmadd_ps(EXPAND(v + n012, m3, n - n012), _mm512_maskz_loadu_ps(m3, xb + 48), acc1);  \
        v += n;                                                                                           \
      }                                                                                                   \
      for (; b < blocks; ++b) {                                                                           \
        const __mmask16 m = masks[b];                                                                     \
        const int n = __builtin_popcount(m);                                                              \
        acc0 = _mm512_fmadd_ps(EXPAND(v, m, n), _mm512_maskz_loadu_ps(m, x + 16 * b), acc0);               \
        v += n;                                                                                           \
      }                                                                                                   \
      y[r] = finish_row(w, bias, r, _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)));                     \
    }                                                                                                     \
  }

SLIMTORCH_BITMAP_GEMV(gemv_bitmap_avx512, SLIMTORCH_AVX512, expand16)
SLIMTORCH_BITMAP_GEMV(gemv_bitmap_vbmi2, SLIMTORCH_VBMI2, expand16_vbmi2)
#undef SLIMTORCH_BITMAP_GEMV

// In-register 16x16 transpose: afterwards m[j] lane i holds what m[i] lane j
// held. 32-bit then 64-bit interleaves within 128-bit lanes, then a 4x4
// transpose of the 128-bit lanes (64 shuffles for 256 floats).
SLIMTORCH_AVX512 inline void transpose16x16(__m512 (&m)[16]) {
  __m512 a[16];
  for (int i = 0; i < 16; i += 2) {
    a[i] = _mm512_unpacklo_ps(m[i], m[i + 1]);
    a[i + 1] = _mm512_unpackhi_ps(m[i], m[i + 1]);
  }
  __m512 b[16];  // b[4g + q], 128-bit lane L: rows 4g..4g+3 of column 4L + q
  for (int g = 0; g < 16; g += 4) {
    const __m512d a0 = _mm512_castps_pd(a[g]), a1 = _mm512_castps_pd(a[g + 1]);
    const __m512d a2 = _mm512_castps_pd(a[g + 2]), a3 = _mm512_castps_pd(a[g + 3]);
    b[g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, a2));
    b[g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, a2));
    b[g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, a3));
    b[g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, a3));
  }
  for (int q = 0; q < 4; ++q) {
    const __m512 t0 = _mm512_shuffle_f32x4(b[q], b[4 + q], 0x44), t1 = _mm512_shuffle_f32x4(b[q], b[4 + q], 0xEE);
    const __m512 t2 = _mm512_shuffle_f32x4(b[8 + q], b[12 + q], 0x44);
    const __m512 t3 = _mm512_shuffle_f32x4(b[8 + q], b[12 + q], 0xEE);
    m[q] = _mm512_shuffle_f32x4(t0, t2, 0x88);
    m[4 + q] = _mm512_shuffle_f32x4(t0, t2, 0xDD);
    m[8 + q] = _mm512_shuffle_f32x4(t1, t3, 0x88);
    m[12 + q] = _mm512_shuffle_f32x4(t1, t3, 0xDD);
  }
}

// acc[u] += value * xr[16u .. 16u + 15] for the NV vectors of a panel row.
template <int NV, class V>
SLIMTORCH_AVX512 inline void add_nonzero(__m512 (&acc)[NV], const V& value, const float* xr) {
  const __m512 v = broadcast1(&value);
  for (int u = 0; u < NV; ++u) acc[u] = _mm512_fmadd_ps(v, _mm512_load_ps(xr + 16 * u), acc[u]);
}
// The same for a bfloat16 panel row: each 64-byte load holds 32 batch
// columns as 16 pairs; a bfloat16 is the high half of its float32, so the
// even columns widen by a shift and the odd ones by a mask, both exact.
// acc[2h + e] lane l holds batch column 32h + 2l + e (see panel_column).
template <int NV, class V>
SLIMTORCH_AVX512 inline void add_nonzero(__m512 (&acc)[NV], const V& value, const BF16* xr) {
  static_assert(NV % 2 == 0, "bfloat16 panel rows come in pairs of vectors");
  const __m512 v = broadcast1(&value);
  const __m512i high = _mm512_set1_epi32(int32_t(0xffff0000u));
  for (int h = 0; h < NV / 2; ++h) {
    const __m512i pairs = _mm512_loadu_si512(xr + 32 * h);
    acc[2 * h] = _mm512_fmadd_ps(v, _mm512_castsi512_ps(_mm512_slli_epi32(pairs, 16)), acc[2 * h]);
    acc[2 * h + 1] = _mm512_fmadd_ps(v, _mm512_castsi512_ps(_mm512_and_si512(pairs, high)), acc[2 * h + 1]);
  }
}

// The batch column (within the panel) of tile column t: float32 panels keep
// the order, bfloat16 ones interleave even and odd columns (see add_nonzero).
template <class X>
constexpr int64_t panel_column(int64_t t) {
  return std::is_same_v<X, BF16> ? 32 * (t / 32) + 2 * (t % 16) + (t / 16) % 2 : t;
}

// Batched rows with W = 16 * NV batch columns per panel of X (float or
// BF16) elements (see panel_rows in spmm_paths.h).
// Rows go in blocks of 16: their W-wide results collect in a tile, which is
// transposed 16x16 at a time into y (16 consecutive outputs of one batch row
// per store, where one scalar store per output was half the time of a very
// sparse layer).
template <class V, class I, int NV, class X>
SLIMTORCH_AVX512 void panel_avx512(const SparseMatrix& w, const void* panel, int64_t b0, int64_t nb,
                                   const float* bias, float* y, int64_t ldy, int64_t r0, int64_t r1,
                                   const PanelCarry& carry) {
  constexpr int kW = 16 * NV, kChains = 4 / NV;
  const V* val = static_cast<const V*>(w.values);
  const I* idx = static_cast<const I*>(w.col_idx);
  const X* xt = static_cast<const X*>(panel);
  alignas(64) float tile[16][kW] = {};  // rows of a block past r1 stay zero and are not stored
  for (int64_t rb = r0; rb < r1; rb += 16) {
    const int rows = int(std::min<int64_t>(16, r1 - rb));
    for (int i = 0; i < rows; ++i) {
      const int64_t r = rb + i;
      // kChains nonzeros at a time into separate accumulators: at least
      // four independent FMA chains, as narrow panels would otherwise wait
      // on the FMA latency (16 rows of 4096->4096: 1.65x, Zen 4).
      __m512 acc[kChains][NV];
      for (int c = 0; c < kChains; ++c)
        for (int u = 0; u < NV; ++u) acc[c][u] = _mm512_setzero_ps();
      float* carried = carry.row(r - r0, kW);
      if (carry.resume)
        for (int u = 0; u < NV; ++u) acc[0][u] = _mm512_load_ps(carried + 16 * u);
      const int64_t end = w.row_ptr[r + 1];
      int64_t k = w.row_ptr[r];
      for (; k + kChains <= end; k += kChains)
        for (int c = 0; c < kChains; ++c) add_nonzero(acc[c], val[k + c], xt + int64_t(idx[k + c]) * kW);
      for (; k < end; ++k) add_nonzero(acc[0], val[k], xt + int64_t(idx[k]) * kW);
      for (int c = 1; c < kChains; ++c)
        for (int u = 0; u < NV; ++u) acc[0][u] = _mm512_add_ps(acc[0][u], acc[c][u]);
      if (!carry.finish) {
        for (int u = 0; u < NV; ++u) _mm512_store_ps(carried + 16 * u, acc[0][u]);
        continue;
      }
      const __m512 scale = _mm512_set1_ps(w.row_scales != nullptr ? w.row_scales[r] : 1.0f);
      const __m512 shift = _mm512_set1_ps(bias != nullptr ? bias[r] : 0.0f);
      for (int u = 0; u < NV; ++u) _mm512_store_ps(tile[i] + 16 * u, _mm512_fmadd_ps(acc[0][u], scale, shift));
    }
    if (!carry.finish) continue;
    const __mmask16 live = first_lanes(rows);
    for (int t0 = 0; t0 < kW; t0 += 16) {
      if (panel_column<X>(t0) >= nb) continue;  // the group's first column: past the batch, so are the rest
      __m512 m[16];
      for (int i = 0; i < 16; ++i) m[i] = _mm512_load_ps(tile[i] + t0);
      transpose16x16(m);
      for (int t = 0; t < 16; ++t) {
        const int64_t j = panel_column<X>(t0 + t);
        if (j < nb) _mm512_mask_storeu_ps(y + (b0 + j) * ldy + rb, live, m[t]);
      }
    }
  }
}

template <int NB>
struct GemvAvx512 {
  template <class V, class I>
  static constexpr GemvFn of = gemv_avx512<V, I, NB>;
};
struct PanelAvx512 {
  template <class V, class I, int NV>
  static constexpr PanelFn panel = panel_avx512<V, I, NV, float>;
};
template <int NV>
struct PanelBf16Avx512 {
  template <class V, class I>
  static constexpr PanelFn of = panel_avx512<V, I, NV, BF16>;
};
struct BitmapAvx512 {
  template <class V, class I>
  static constexpr BitmapGemvFn of = gemv_bitmap_avx512<V>;
};

#define SLIMTORCH_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

SLIMTORCH_VNNI inline void dynamic_step(const uint8_t* c0, const uint8_t* c1, const uint8_t* c2,
                                        const uint8_t* c3, int32_t weights, __m512i acc[4]) {
  const __m512i a = _mm512_load_si512(c0), b = _mm512_load_si512(c1);
  const __m512i c = _mm512_load_si512(c2), d = _mm512_load_si512(c3);
  const __m512i ab_lo = _mm512_unpacklo_epi8(a, b), ab_hi = _mm512_unpackhi_epi8(a, b);
  const __m512i cd_lo = _mm512_unpacklo_epi8(c, d), cd_hi = _mm512_unpackhi_epi8(c, d);
  const __m512i w = _mm512_set1_epi32(weights);
  acc[0] = _mm512_dpbusd_epi32(acc[0], _mm512_unpacklo_epi16(ab_lo, cd_lo), w);
  acc[1] = _mm512_dpbusd_epi32(acc[1], _mm512_unpackhi_epi16(ab_lo, cd_lo), w);
  acc[2] = _mm512_dpbusd_epi32(acc[2], _mm512_unpacklo_epi16(ab_hi, cd_hi), w);
  acc[3] = _mm512_dpbusd_epi32(acc[3], _mm512_unpackhi_epi16(ab_hi, cd_hi), w);
}

// Rows [r0, r1) for one tile of nb batch rows starting at b0. zero_points and
// scales are the tile's per-row parameters in accumulator lane order. Results
// of 16 consecutive rows gather in a small buffer before they go to y as one
// 64-byte store per batch row: storing each row's 64 values straight into y
// (stride out_features * 4 bytes, a multiple of 4 KiB for the usual widths)
// lands them all in one L1 set, which is several times slower.
constexpr int kDynamicRowBlock = 16;

}  // namespace

SLIMTORCH_VNNI void dynamic_rows_vnni(const SparseMatrix& w, const uint8_t* xt, const int32_t* zero_points,
                                      const float* scales, const int32_t* rowsum, const float* bias,
                                      float* y, int64_t b0, int64_t nb, int64_t r0, int64_t r1) {
  const int8_t* val = static_cast<const int8_t*>(w.values);
  const uint16_t* idx = static_cast<const uint16_t*>(w.col_idx);
  alignas(64) float out[kDynamicTile];
  alignas(64) float block[kDynamicTile * kDynamicRowBlock];
  for (int64_t rb = r0; rb < r1; rb += kDynamicRowBlock) {
    const int rows = int(std::min<int64_t>(kDynamicRowBlock, r1 - rb));
    for (int rr = 0; rr < rows; ++rr) {
      const int64_t r = rb + rr;
      __m512i acc[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                        _mm512_setzero_si512()};
      int64_t k = w.row_ptr[r];
      const int64_t end = w.row_ptr[r + 1];
      for (; k + 4 <= end; k += 4) {
        int32_t weights;
        std::memcpy(&weights, val + k, 4);
        dynamic_step(xt + idx[k] * kDynamicTile, xt + idx[k + 1] * kDynamicTile, xt + idx[k + 2] * kDynamicTile,
                     xt + idx[k + 3] * kDynamicTile, weights, acc);
      }
      if (k < end) {
        int8_t padded[4] = {0, 0, 0, 0};
        const uint8_t* column[4];
        for (int i = 0; i < 4; ++i) {
          const bool live = k + i < end;
          padded[i] = live ? val[k + i] : int8_t(0);
          column[i] = xt + idx[live ? k + i : k] * kDynamicTile;
        }
        int32_t weights;
        std::memcpy(&weights, padded, 4);
        dynamic_step(column[0], column[1], column[2], column[3], weights, acc);
      }
      const __m512i sum = _mm512_set1_epi32(rowsum[r]);
      const __m512 row_scale = _mm512_set1_ps(w.row_scales[r]);
      const __m512 shift = _mm512_set1_ps(bias != nullptr ? bias[r] : 0.0f);
      for (int j = 0; j < 4; ++j) {
        const __m512i exact =
            _mm512_sub_epi32(acc[j], _mm512_mullo_epi32(_mm512_load_si512(zero_points + 16 * j), sum));
        const __m512 scale = _mm512_mul_ps(_mm512_load_ps(scales + 16 * j), row_scale);
        _mm512_store_ps(out + 16 * j, _mm512_fmadd_ps(_mm512_cvtepi32_ps(exact), scale, shift));
      }
      for (int j = 0; j < 4; ++j)
        for (int l = 0; l < 16; ++l) block[dynamic_row(j, l) * kDynamicRowBlock + rr] = out[16 * j + l];
    }
    const __mmask16 live = __mmask16((1u << rows) - 1);
    for (int64_t b = 0; b < nb; ++b)
      _mm512_mask_storeu_ps(y + (b0 + b) * w.rows + rb, live, _mm512_load_ps(block + b * kDynamicRowBlock));
  }
}

// 16 rows of 16 bytes (src + i * ld) transposed into 16 columns of 16 bytes
// (dst + c * kDynamicTile). Four rounds of "vector i pairs with vector i + 8,
// bytes interleaved": each rotates the 8-bit (vector, byte) position of every
// element left by one bit, so four swap row and column (SSE2).
namespace {

inline void transpose16x16(const uint8_t* src, int64_t ld, uint8_t* dst) {
  __m128i v[16], w[16];
  for (int i = 0; i < 16; ++i) v[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i * ld));
  for (int round = 0; round < 4; ++round) {
    for (int i = 0; i < 8; ++i) {
      w[2 * i] = _mm_unpacklo_epi8(v[i], v[i + 8]);
      w[2 * i + 1] = _mm_unpackhi_epi8(v[i], v[i + 8]);
    }
    std::memcpy(v, w, sizeof v);
  }
  for (int c = 0; c < 16; ++c) _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + c * kDynamicTile), v[c]);
}

// Tile t of the transposed codes: xt[c][b] = a[b0 + b][c] for the tile's nb
// rows, zero for the rows past the batch.
}  // namespace

void transpose_tile(const uint8_t* a, int64_t cols, int64_t b0, int64_t nb, uint8_t* tile) {
  const int64_t full = nb / 16 * 16, vec_cols = cols / 16 * 16;
  for (int64_t b = 0; b < full; b += 16)
    for (int64_t c = 0; c < vec_cols; c += 16) transpose16x16(a + (b0 + b) * cols + c, cols, tile + c * kDynamicTile + b);
  for (int64_t c = 0; c < cols; ++c) {
    uint8_t* dst = tile + c * kDynamicTile;
    for (int64_t b = c < vec_cols ? full : 0; b < nb; ++b) dst[b] = a[(b0 + b) * cols + c];
    for (int64_t b = nb; b < kDynamicTile; ++b) dst[b] = 0;
  }
}

GemvFn pick_gemv_avx512(const SparseMatrix& w, int columns) {
  if (columns == 1) return pick_typed<GemvAvx512<1>>(w);
  if (columns == 2) return pick_typed<GemvAvx512<2>>(w);
  return pick_typed<GemvAvx512<3>>(w);
}

PanelFn pick_panel_avx512(const SparseMatrix& w, int nv) { return pick_panel_of<PanelAvx512>(w, nv); }

PanelFn pick_panel_bf16_avx512(const SparseMatrix& w, int nv) {
  return nv == 4 ? pick_typed<PanelBf16Avx512<4>>(w) : pick_typed<PanelBf16Avx512<2>>(w);
}

BitmapGemvFn pick_gemv_bitmap_avx512(const SparseMatrix& w) {
  if (w.value_type == SparseValues::kBFloat16 && cpu_has_avx512_vbmi2()) return gemv_bitmap_vbmi2<BF16>;
  return pick_typed<BitmapAvx512>(w);
}

namespace {

// 16 values of a row of x as the 32-bit lanes of a vector (masked), and
// back: float32 as they are, bfloat16 bit patterns zero-extended / narrowed.
SLIMTORCH_AVX512 inline __m512 load_lanes(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
SLIMTORCH_AVX512 inline __m512 load_lanes(const uint16_t* p, __mmask16 m) {
  return _mm512_castsi512_ps(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)));
}
SLIMTORCH_AVX512 inline void store_lanes(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
SLIMTORCH_AVX512 inline void store_lanes(uint16_t* p, __m512 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(_mm512_castps_si512(v)));
}

// build_panels for AVX-512: 16 batch rows x 16 columns at a time, loaded as
// rows, transposed in registers (bits moved, never changed) and stored as
// 16 panel rows.
template <class T>
SLIMTORCH_AVX512 void build_panels_lanes(const T* x, int64_t batch, int64_t ldx, int64_t cols, int width, T* xt,
                                         int64_t c0, int64_t c1) {
  const int64_t panels = (batch + width - 1) / width;
  for (int64_t p = 0; p < panels; ++p) {
    T* dst = xt + p * cols * width;
    for (int64_t c = c0; c < c1; c += 16) {
      const int64_t n = std::min<int64_t>(16, c1 - c);
      const __mmask16 m = first_lanes(n);
      for (int64_t j0 = 0; j0 < width; j0 += 16) {
        __m512 t[16];
        for (int i = 0; i < 16; ++i) {
          const int64_t b = p * width + j0 + i;
          t[i] = b < batch ? load_lanes(x + b * ldx + c, m) : _mm512_setzero_ps();
        }
        transpose16x16(t);
        for (int64_t k = 0; k < n; ++k) store_lanes(dst + (c + k) * width + j0, t[k]);
      }
    }
  }
}

}  // namespace

void build_panels_avx512(const float* x, int64_t batch, int64_t ldx, int64_t cols, int width, float* xt,
                         int64_t c0, int64_t c1) {
  build_panels_lanes(x, batch, ldx, cols, width, xt, c0, c1);
}
void build_panels_avx512(const uint16_t* x, int64_t batch, int64_t ldx, int64_t cols, int width, uint16_t* xt,
                         int64_t c0, int64_t c1) {
  build_panels_lanes(x, batch, ldx, cols, width, xt, c0, c1);
}

}  // namespace slimtorch::spmm_paths
