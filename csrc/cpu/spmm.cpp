// Sparse (packed CSR) x dense products on the CPU. Layout and paths: see
// slimtorch/spmm.h. Every path accumulates in float32; half and int8 values
// are widened exactly before the multiply, int8 rows are scaled once at the end.
#include "slimtorch/spmm.h"

#include "slimtorch/qgemm.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

// GCC 12 reports its own masked-load intrinsics (maskz_loadu with an undefined
// pass-through operand) as "maybe uninitialized" once inlined; false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace slimtorch {
namespace {

// Per-row work that does not depend on the nonzero count (loop setup, the
// horizontal reduction, the store), in units of one nonzero. Used to balance
// threads on matrices with many short or empty rows.
constexpr int64_t kRowCost = 8;
// Work (nonzeros x batch columns) below which one more thread costs more than
// it saves, about the time one core needs for 2^18 multiply-adds through
// gathers. Re-measured on torch's OpenMP team (see parallel.cpp), 95%-sparse
// 64-300-100-10 MLP against nn.Linear: 2^18 gives 1.12x at batch 16 and 1.2x at
// batch 256; 2^16 gave 0.91x and 1.04x.
constexpr int64_t kMinWorkPerThread = int64_t(1) << 18;
// The same for the gather kernels (batch 1 to kMaxGatherBatch, bitmap or
// not), where one nonzero costs about 0.6 ns per core, some 10x a panel
// kernel's multiply-add: 2^13 is ~5 us of one core's work, above the ~2-3 us
// it takes to start torch's OpenMP team. Measured at batch 1, 2 threads,
// float32 values, median us with 2^18 / 2^13: 1024->1024 at 10% 66.8 / 29.2,
// 768->3072 at 5% 51.4 / 34.6, at 20% 206 / 126, 4096->4096 at 2% 132 / 82;
// 64->300 at 5% (3.4k work, one thread either way) 5.9 / 5.8.
constexpr int64_t kMinGatherWorkPerThread = int64_t(1) << 13;
// Target size of one transposed X panel (cols x W floats): half of a 1 MiB L2,
// so the panel and the streamed weights share L2.
constexpr int64_t kPanelBytes = int64_t(512) << 10;

// Value element types. fp16 and bf16 are both 16-bit patterns; distinct types
// select the right widening.
struct F16 { uint16_t bits; };
struct BF16 { uint16_t bits; };

inline float widen(float v) { return v; }
inline float widen(F16 v) { return fp16_to_float(v.bits); }
inline float widen(BF16 v) { return bf16_to_float(v.bits); }
inline float widen(int8_t v) { return float(v); }

// Applies the int8 row scale and the bias to a finished row sum.
inline float finish_row(const SparseMatrix& w, const float* bias, int64_t r, float acc) {
  if (w.row_scales != nullptr) acc *= w.row_scales[r];
  if (bias != nullptr) acc += bias[r];
  return acc;
}

// Calls f(V{}, I{}) with the value and index element types of w.
template <class F>
void with_types(const SparseMatrix& w, F&& f) {
  auto by_index = [&](auto value_tag) {
    if (w.wide_idx) f(value_tag, int32_t{});
    else f(value_tag, uint16_t{});
  };
  switch (w.value_type) {
    case SparseValues::kFloat32: by_index(float{}); break;
    case SparseValues::kFloat16: by_index(F16{}); break;
    case SparseValues::kBFloat16: by_index(BF16{}); break;
    case SparseValues::kInt8: by_index(int8_t{}); break;
  }
}

// ---- thread split by nonzeros ------------------------------------------------

inline int64_t cost_before(const SparseMatrix& w, int64_t r) { return w.row_ptr[r] + r * kRowCost; }

// The first row r with cost_before(r) >= target; cost_before is non-decreasing.
int64_t split_row(const SparseMatrix& w, int64_t target) {
  int64_t lo = 0, hi = w.rows;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (cost_before(w, mid) < target) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// Runs body(r0, r1) over a partition of the rows into ranges of about equal
// cost, on up to n_threads threads (fewer when the work is too small to
// share). Each thread takes kChunksPerThread ranges on average, pulled from a
// shared counter: on a busy machine a thread that starts late (or is
// descheduled) leaves its share to the others instead of holding up the call.
constexpr int kChunksPerThread = 8;

template <class Body>
void for_row_ranges(const SparseMatrix& w, int64_t batch, int n_threads, const Body& body,
                    int chunks_per_thread = kChunksPerThread, int64_t min_work = kMinWorkPerThread) {
  const int64_t total = cost_before(w, w.rows);
  const int64_t by_work = std::max<int64_t>(1, total * batch / min_work);
  const int parts = int(std::max<int64_t>(1, std::min<int64_t>({int64_t(n_threads), by_work, w.rows})));
  if (parts == 1) {
    body(int64_t(0), w.rows);
    return;
  }
  const int64_t chunks = std::min<int64_t>(w.rows, int64_t(parts) * chunks_per_thread);
  std::atomic<int64_t> next{0};
  parallel_for(parts, parts, 1, [&](int64_t, int64_t, int) {
    for (int64_t c = next.fetch_add(1, std::memory_order_relaxed); c < chunks;
         c = next.fetch_add(1, std::memory_order_relaxed)) {
      const int64_t r0 = c == 0 ? 0 : split_row(w, total * c / chunks);
      const int64_t r1 = c + 1 == chunks ? w.rows : split_row(w, total * (c + 1) / chunks);
      if (r0 < r1) body(r0, r1);
    }
  });
}

// ---- scalar paths ------------------------------------------------------------------

template <class V, class I>
void gemv_scalar(const SparseMatrix& w, const float* x, const float* bias, float* y, int64_t r0,
                 int64_t r1) {
  const V* val = static_cast<const V*>(w.values);
  const I* idx = static_cast<const I*>(w.col_idx);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t end = w.row_ptr[r + 1];
    int64_t k = w.row_ptr[r];
    // Eight independent partial sums, like the vector paths' lanes: they
    // hide the multiply-add latency and keep each running sum short.
    float a[8] = {};
    for (; k + 8 <= end; k += 8)
      for (int j = 0; j < 8; ++j) a[j] += widen(val[k + j]) * x[idx[k + j]];
    for (; k < end; ++k) a[0] += widen(val[k]) * x[idx[k]];
    const float a0 = a[0] + a[4], a1 = a[1] + a[5], a2 = a[2] + a[6], a3 = a[3] + a[7];
    y[r] = finish_row(w, bias, r, (a0 + a1) + (a2 + a3));
  }
}

// Rows r0..r1 of one panel: xt is [cols][8], the panel covers batch columns
// b0..b0+nb of y ([batch][ldy]).
template <class V, class I>
void panel_scalar(const SparseMatrix& w, const float* xt, int64_t b0, int64_t nb, const float* bias,
                  float* y, int64_t ldy, int64_t r0, int64_t r1) {
  constexpr int kW = 8;
  const V* val = static_cast<const V*>(w.values);
  const I* idx = static_cast<const I*>(w.col_idx);
  for (int64_t r = r0; r < r1; ++r) {
    // Four partial sums per column (nonzero k goes to sum k % 4): without a
    // fused multiply-add every product is rounded, and short sums keep the
    // total error near that of torch's float32 product.
    float acc[4][kW] = {};
    const int64_t begin = w.row_ptr[r];
    for (int64_t k = begin; k < w.row_ptr[r + 1]; ++k) {
      const float v = widen(val[k]);
      const float* xr = xt + int64_t(idx[k]) * kW;
      float* sum = acc[(k - begin) & 3];
      for (int j = 0; j < kW; ++j) sum[j] += v * xr[j];
    }
    for (int64_t j = 0; j < nb; ++j)
      y[(b0 + j) * ldy + r] = finish_row(w, bias, r, (acc[0][j] + acc[1][j]) + (acc[2][j] + acc[3][j]));
  }
}

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

// Batch 1 through the column bitmap (see spmm.h): the values of a row are
// consecutive and column-ordered, so each 16-column block takes the next
// popcount(mask) of them, expanded into the lanes its mask selects.
template <class V>
SLIMTORCH_AVX512 void gemv_bitmap_avx512(const SparseMatrix& w, const float* x, const float* bias,
                                         float* y, int64_t r0, int64_t r1) {
  const int64_t blocks = (w.cols + 15) / 16;
  for (int64_t r = r0; r < r1; ++r) {
    const V* v = static_cast<const V*>(w.values) + w.row_ptr[r];
    const uint16_t* masks = w.bitmap + r * blocks;
    // Two accumulators (alternate blocks). Four measured no faster for
    // float32 and ~30% slower for int8 values (AMD Zen 4).
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int64_t b = 0;
    // Four blocks per step: their value offsets come from popcounts of one
    // 64-bit load of the masks, so the loads do not wait on each other.
    for (; b + 4 <= blocks; b += 4) {
      uint64_t m;
      std::memcpy(&m, masks + b, sizeof m);
      if (m == 0) continue;
      const int n0 = __builtin_popcountll(m & 0xffffu), n01 = __builtin_popcountll(m & 0xffffffffu);
      const int n012 = __builtin_popcountll(m & 0xffffffffffffull), n = __builtin_popcountll(m);
      const __mmask16 m0 = __mmask16(m), m1 = __mmask16(m >> 16), m2 = __mmask16(m >> 32), m3 = __mmask16(m >> 48);
      const float* xb = x + 16 * b;
      // Masked x loads: never past x's end, and no 0 * inf from pruned columns.
      acc0 = _mm512_fmadd_ps(expand16(v, m0, n0), _mm512_maskz_loadu_ps(m0, xb), acc0);
      acc1 = _mm512_fmadd_ps(expand16(v + n0, m1, n01 - n0), _mm512_maskz_loadu_ps(m1, xb + 16), acc1);
      acc0 = _mm512_fmadd_ps(expand16(v + n01, m2, n012 - n01), _mm512_maskz_loadu_ps(m2, xb + 32), acc0);
      acc1 = _mm512_fmadd_ps(expand16(v + n012, m3, n - n012), _mm512_maskz_loadu_ps(m3, xb + 48), acc1);
      v += n;
    }
    for (; b < blocks; ++b) {
      const __mmask16 m = masks[b];
      const int n = __builtin_popcount(m);
      acc0 = _mm512_fmadd_ps(expand16(v, m, n), _mm512_maskz_loadu_ps(m, x + 16 * b), acc0);
      v += n;
    }
    y[r] = finish_row(w, bias, r, _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)));
  }
}

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

// Batched rows with W = 16 * NV batch columns per panel (see panel_avx2).
// Rows go in blocks of 16: their W-wide results collect in a tile, which is
// transposed 16x16 at a time into y (16 consecutive outputs of one batch row
// per store, where one scalar store per output was half the time of a very
// sparse layer).
template <class V, class I, int NV>
SLIMTORCH_AVX512 void panel_avx512(const SparseMatrix& w, const float* xt, int64_t b0, int64_t nb,
                                   const float* bias, float* y, int64_t ldy, int64_t r0, int64_t r1) {
  constexpr int kW = 16 * NV;
  const V* val = static_cast<const V*>(w.values);
  const I* idx = static_cast<const I*>(w.col_idx);
  alignas(64) float vbuf[16];
  alignas(64) int32_t ibuf[16];
  alignas(64) float tile[16][kW] = {};  // rows of a block past r1 stay zero and are not stored
  for (int64_t rb = r0; rb < r1; rb += 16) {
    const int rows = int(std::min<int64_t>(16, r1 - rb));
    for (int i = 0; i < rows; ++i) {
      const int64_t r = rb + i;
      __m512 acc[NV];
      for (int u = 0; u < NV; ++u) acc[u] = _mm512_setzero_ps();
      const int64_t end = w.row_ptr[r + 1];
      for (int64_t k = w.row_ptr[r]; k < end; k += 16) {
        const int64_t n = std::min<int64_t>(16, end - k);
        const __mmask16 m = first_lanes(n);
        _mm512_store_ps(vbuf, load16(val + k, m));
        _mm512_store_si512(ibuf, index16(idx + k, m));
        for (int64_t j = 0; j < n; ++j) {
          const __m512 v = _mm512_set1_ps(vbuf[j]);
          const float* xr = xt + int64_t(ibuf[j]) * kW;
          for (int u = 0; u < NV; ++u) acc[u] = _mm512_fmadd_ps(v, _mm512_loadu_ps(xr + 16 * u), acc[u]);
        }
      }
      const __m512 scale = _mm512_set1_ps(w.row_scales != nullptr ? w.row_scales[r] : 1.0f);
      const __m512 shift = _mm512_set1_ps(bias != nullptr ? bias[r] : 0.0f);
      for (int u = 0; u < NV; ++u) _mm512_store_ps(tile[i] + 16 * u, _mm512_fmadd_ps(acc[u], scale, shift));
    }
    const __mmask16 live = first_lanes(rows);
    for (int64_t j0 = 0; j0 < nb; j0 += 16) {
      __m512 m[16];
      for (int i = 0; i < 16; ++i) m[i] = _mm512_load_ps(tile[i] + j0);
      transpose16x16(m);
      const int64_t cols = std::min<int64_t>(16, nb - j0);
      for (int64_t j = 0; j < cols; ++j) _mm512_mask_storeu_ps(y + (b0 + j0 + j) * ldy + rb, live, m[j]);
    }
  }
}

// build_panels for AVX-512: 16 batch rows x 16 columns at a time, loaded as
// rows, transposed in registers and stored as 16 panel rows.
SLIMTORCH_AVX512 void build_panels_avx512(const float* x, int64_t batch, int64_t ldx, int64_t cols, int width,
                                          float* xt, int64_t c0, int64_t c1) {
  const int64_t panels = (batch + width - 1) / width;
  for (int64_t p = 0; p < panels; ++p) {
    float* dst = xt + p * cols * width;
    for (int64_t c = c0; c < c1; c += 16) {
      const int64_t n = std::min<int64_t>(16, c1 - c);
      const __mmask16 m = first_lanes(n);
      for (int64_t j0 = 0; j0 < width; j0 += 16) {
        __m512 t[16];
        for (int i = 0; i < 16; ++i) {
          const int64_t b = p * width + j0 + i;
          t[i] = b < batch ? _mm512_maskz_loadu_ps(m, x + b * ldx + c) : _mm512_setzero_ps();
        }
        transpose16x16(t);
        for (int64_t k = 0; k < n; ++k) _mm512_storeu_ps(dst + (c + k) * width + j0, t[k]);
      }
    }
  }
}

// ---- drivers ---------------------------------------------------------------------------

// Gather paths handle kMaxGatherBatch columns per pass (scalar/AVX2: one).
using GemvFn = void (*)(const SparseMatrix&, const float*, int64_t, const float*, float*, int64_t,
                        int64_t, int64_t);
using PanelFn = void (*)(const SparseMatrix&, const float*, int64_t, int64_t, const float*, float*,
                         int64_t, int64_t, int64_t);

// Columns of x handled by one gather pass, and the batch below which the
// gather paths beat the transposed panels (a panel costs about as much for
// 1 column as for 16; a gather pass costs about one gather per nonzero per column).
constexpr int kMaxGatherBatch = 3;

template <class V, class I>
void gemv_scalar_cols(const SparseMatrix& w, const float* x, int64_t, const float* bias, float* y,
                      int64_t, int64_t r0, int64_t r1) {
  gemv_scalar<V, I>(w, x, bias, y, r0, r1);
}
template <class V, class I>
void gemv_avx2_cols(const SparseMatrix& w, const float* x, int64_t, const float* bias, float* y,
                    int64_t, int64_t r0, int64_t r1) {
  gemv_avx2<V, I>(w, x, bias, y, r0, r1);
}

// The gather kernel for up to `batch` columns; *columns says how many it takes.
template <class V, class I>
GemvFn pick_gemv(Isa isa, int64_t batch, int* columns) {
  if (isa >= Isa::kAvx512) {
    *columns = int(std::min<int64_t>(batch, kMaxGatherBatch));
    switch (*columns) {
      case 1: return gemv_avx512<V, I, 1>;
      case 2: return gemv_avx512<V, I, 2>;
      default: return gemv_avx512<V, I, 3>;
    }
  }
  *columns = 1;
  if (isa >= Isa::kAvx2) return gemv_avx2_cols<V, I>;
  return gemv_scalar_cols<V, I>;
}

// The panel kernel and its width W for this batch: the fewest vectors that
// cover the batch, capped so a panel (cols x W floats) stays near kPanelBytes.
template <class V, class I>
PanelFn pick_panel(Isa isa, int64_t batch, int64_t cols, int* width) {
  if (isa == Isa::kScalar) {
    *width = 8;
    return panel_scalar<V, I>;
  }
  const int lanes = isa >= Isa::kAvx512 ? 16 : 8;
  int nv = 1;
  while (nv < 4 && int64_t(nv) * lanes < batch && int64_t(2 * nv) * lanes * cols * 4 <= kPanelBytes) nv *= 2;
  *width = nv * lanes;
  if (isa >= Isa::kAvx512) {
    if (nv == 4) return panel_avx512<V, I, 4>;
    if (nv == 2) return panel_avx512<V, I, 2>;
    return panel_avx512<V, I, 1>;
  }
  if (nv == 4) return panel_avx2<V, I, 4>;
  if (nv == 2) return panel_avx2<V, I, 2>;
  return panel_avx2<V, I, 1>;
}

// Transposes x ([batch][ldx]) into panels: panel p is [cols][W] floats holding
// batch columns p*W .. p*W+W-1, zero past the batch. Threads split the columns.
void build_panels(const float* x, int64_t batch, int64_t ldx, int64_t cols, int width, float* xt,
                  int n_threads) {
  if (active_isa() >= Isa::kAvx512 && width % 16 == 0) {
    // Blocks of 16 columns; a thread gets at least 32 of them (one thread below 512 columns, as before).
    parallel_for(n_threads, (cols + 15) / 16, 32, [&](int64_t k0, int64_t k1, int) {
      build_panels_avx512(x, batch, ldx, cols, width, xt, 16 * k0, std::min<int64_t>(cols, 16 * k1));
    });
    return;
  }
  const int64_t panels = (batch + width - 1) / width;
  parallel_for(n_threads, cols, 512, [&](int64_t c0, int64_t c1, int) {
    for (int64_t p = 0; p < panels; ++p) {
      float* dst = xt + p * cols * width;
      const int64_t b0 = p * width, nb = std::min<int64_t>(width, batch - b0);
      for (int64_t j = 0; j < nb; ++j) {
        const float* src = x + (b0 + j) * ldx;
        for (int64_t c = c0; c < c1; ++c) dst[c * width + j] = src[c];
      }
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t j = nb; j < width; ++j) dst[c * width + j] = 0.0f;
    }
  });
}

// Per-calling-thread scratch (transposed panels or tiles), 64-byte aligned;
// grows, never shrinks, so a steady stream of calls does not pay for fresh
// pages each time. One call uses it at a time.
uint8_t* scratch_bytes(int64_t bytes) {
  static thread_local std::vector<uint8_t> buffer;
  const size_t need = size_t(bytes) + 64;  // room to align to 64 bytes
  if (buffer.size() < need) buffer.assign(need, 0);
  const uintptr_t address = reinterpret_cast<uintptr_t>(buffer.data());
  return reinterpret_cast<uint8_t*>((address + 63) & ~uintptr_t(63));
}

// Batch 1 without a bitmap, average nonzeros per row below which the 8-lane
// AVX2 gathers beat the 16-lane AVX-512 ones (which also pay a longer
// horizontal sum per row). Measured on Zen 4, 2 threads, int8 values, AVX2 vs
// AVX-512 us: 3 nnz/row (64->300) 1.6 vs 3.6; 15 (768->3072) 24 vs 41;
// 41 (4096->4096) 73 vs 100; 77 (768->3072) 95 vs 114; from 307 a tie.
constexpr int64_t kShortRowNnz = 128;

template <class V, class I>
void forward_typed(const SparseMatrix& w, const float* x, int64_t batch, int64_t ldx,
                   const float* bias, float* y, int n_threads) {
  Isa isa = active_isa();
  if (batch == 1 && isa >= Isa::kAvx512 && w.bitmap == nullptr && w.row_ptr[w.rows] < kShortRowNnz * w.rows)
    isa = Isa::kAvx2;
  if (batch == 1 && isa >= Isa::kAvx512 && w.bitmap != nullptr) {
    for_row_ranges(w, 1, n_threads, [&](int64_t r0, int64_t r1) {
      gemv_bitmap_avx512<V>(w, x, bias, y, r0, r1);
    }, kChunksPerThread, kMinGatherWorkPerThread);
    return;
  }
  if (batch == 1 || (isa >= Isa::kAvx512 && batch <= kMaxGatherBatch)) {
    for_row_ranges(w, batch, n_threads, [&](int64_t r0, int64_t r1) {
      for (int64_t b = 0; b < batch;) {
        int columns = 1;
        const GemvFn gemv = pick_gemv<V, I>(isa, batch - b, &columns);
        gemv(w, x + b * ldx, ldx, bias, y + b * w.rows, w.rows, r0, r1);
        b += columns;
      }
    }, kChunksPerThread, kMinGatherWorkPerThread);
    return;
  }
  int width = 0;
  const PanelFn panel = pick_panel<V, I>(isa, batch, w.cols, &width);
  const int64_t panels = (batch + width - 1) / width;
  float* xt = reinterpret_cast<float*>(scratch_bytes(panels * w.cols * width * int64_t(sizeof(float))));
  build_panels(x, batch, ldx, w.cols, width, xt, n_threads);
  for_row_ranges(w, batch, n_threads, [&](int64_t r0, int64_t r1) {
    for (int64_t p = 0; p < panels; ++p) {
      const int64_t b0 = p * width;
      panel(w, xt + p * w.cols * width, b0, std::min<int64_t>(width, batch - b0), bias, y, w.rows, r0, r1);
    }
  });
}

template <class V, class I>
void backward_typed(const SparseMatrix& w, const float* grad_y, int64_t batch, float* grad_x,
                    int n_threads) {
  const V* val = static_cast<const V*>(w.values);
  const I* idx = static_cast<const I*>(w.col_idx);
  const int64_t work_per_row = (w.rows > 0 ? cost_before(w, w.rows) : 0) + w.cols;
  const int64_t grain = std::max<int64_t>(1, kMinWorkPerThread / std::max<int64_t>(1, work_per_row));
  parallel_for(n_threads, batch, grain, [&](int64_t b0, int64_t b1, int) {
    for (int64_t b = b0; b < b1; ++b) {
      float* gx = grad_x + b * w.cols;
      const float* gy = grad_y + b * w.rows;
      std::fill(gx, gx + w.cols, 0.0f);
      for (int64_t r = 0; r < w.rows; ++r) {
        const float g = w.row_scales != nullptr ? gy[r] * w.row_scales[r] : gy[r];
        for (int64_t k = w.row_ptr[r]; k < w.row_ptr[r + 1]; ++k) gx[idx[k]] += g * widen(val[k]);
      }
    }
  });
}

// ---- int8 values x dynamically quantized activations (AVX-512 VNNI) ------------------
//
// Each row of x is quantized to uint8 with its own scale and zero point
// (quantize_rows_u8, as Int8Linear's dynamic mode) and the result transposed
// into tiles xt[tile][col][64]: the 64 batch rows of one column fill one zmm.
// A weight row's nonzeros are taken four at a time. Their 4 int8 values are
// one dword; the 4 tile rows of their columns are interleaved into dwords
// (x[b][c1], x[b][c2], x[b][c3], x[b][c4]) by 8 byte and word unpacks, and 4
// vpdpbusd add the 4 products for all 64 batch rows. The unpacks work inside
// 128-bit lanes, so lane 4L + i of accumulator j holds batch row 16L + 4j + i.
// A row's last 1-3 nonzeros are padded with zero weights (on the first
// column of the group). Exact int32 sums (cols <= kQgemmMaxK), then
//   y[b][r] = float(acc - zp[b] * rowsum[r]) * (x_scale[b] * row_scale[r]) + bias[r].

#define SLIMTORCH_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

constexpr int kDynamicTile = 64;

// Batch row of the tile held by lane l of accumulator j.
constexpr int dynamic_row(int j, int l) { return 16 * (l / 4) + 4 * j + l % 4; }

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
// lands them all in one L1 set and measured 5x slower.
constexpr int kDynamicRowBlock = 16;

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

void forward_dynamic(const SparseMatrix& w, const float* x, int64_t batch, int64_t ldx, const float* bias,
                     float* y, int n_threads) {
  const int64_t cols = w.cols, tiles = (batch + kDynamicTile - 1) / kDynamicTile;
  const int64_t padded = tiles * kDynamicTile;
  // One scratch block: quantized rows, the transposed tiles, then the
  // per-row parameters in lane order and the weight row sums.
  const int64_t rows_bytes = batch * cols, tile_bytes = padded * cols;
  uint8_t* scratch = scratch_bytes(rows_bytes + tile_bytes + 16 * padded + 4 * w.rows + 64);
  uint8_t* a = scratch;
  uint8_t* xt = a + ((rows_bytes + 63) & ~int64_t(63));
  auto* lane_zp = reinterpret_cast<int32_t*>(xt + tile_bytes);
  auto* lane_scale = reinterpret_cast<float*>(lane_zp + padded);
  auto* row_zp = reinterpret_cast<int32_t*>(lane_scale + padded);
  auto* row_scale = reinterpret_cast<float*>(row_zp + padded);
  auto* rowsum = reinterpret_cast<int32_t*>(row_scale + padded);
  quantize_rows_u8(x, batch, cols, ldx, a, cols, row_scale, row_zp, n_threads);
  parallel_for(n_threads, tiles, 1, [&](int64_t t0, int64_t t1, int) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b0 = t * kDynamicTile, nb = std::min<int64_t>(kDynamicTile, batch - b0);
      transpose_tile(a, cols, b0, nb, xt + t * cols * kDynamicTile);
      for (int j = 0; j < 4; ++j)
        for (int l = 0; l < 16; ++l) {
          const int64_t b = dynamic_row(j, l);
          lane_zp[b0 + 16 * j + l] = b < nb ? row_zp[b0 + b] : 0;
          lane_scale[b0 + 16 * j + l] = b < nb ? row_scale[b0 + b] : 0.0f;
        }
    }
  });
  const int8_t* val = static_cast<const int8_t*>(w.values);
  for (int64_t r = 0; r < w.rows; ++r) {
    int32_t sum = 0;
    for (int64_t k = w.row_ptr[r]; k < w.row_ptr[r + 1]; ++k) sum += val[k];
    rowsum[r] = sum;
  }
  // Two ranges per thread, not eight: every range reads every tile (cols x 64
  // bytes) once more from L3, which costs more than the balance gained.
  for_row_ranges(w, batch, n_threads, [&](int64_t r0, int64_t r1) {
    for (int64_t t = 0; t < tiles; ++t)
      dynamic_rows_vnni(w, xt + t * cols * kDynamicTile, lane_zp + t * kDynamicTile, lane_scale + t * kDynamicTile,
                        rowsum, bias, y, t * kDynamicTile, std::min<int64_t>(kDynamicTile, batch - t * kDynamicTile),
                        r0, r1);
  }, 2);
}

// Sizes and pointers only: the contents were validated by the op layer.
bool valid_matrix(const SparseMatrix& w) {
  if (w.rows < 0 || w.cols < 0) return false;
  if (w.rows > 0 && w.row_ptr == nullptr) return false;
  if (int(w.value_type) < 0 || int(w.value_type) > 3) return false;
  if ((w.value_type == SparseValues::kInt8) != (w.row_scales != nullptr) && w.rows > 0) return false;
  if (!w.wide_idx && w.cols > 65536) return false;
  if (w.cols > int64_t(INT32_MAX)) return false;
  const int64_t nnz = w.rows > 0 ? w.row_ptr[w.rows] : 0;
  if (nnz < 0 || (nnz > 0 && (w.values == nullptr || w.col_idx == nullptr))) return false;
  return true;
}

// Every index the kernels form (b * ldx + c, b * rows + r, panel offsets
// rounded up to a whole panel) fits int64: sizes whose products overflow are
// rejected, whatever buffers the caller holds.
bool batch_fits(const SparseMatrix& w, int64_t batch, int64_t ldx) {
  constexpr int64_t kPanelSlack = 64;  // the widest panel rounds batch up by less
  int64_t product = 0;
  const int64_t widest = std::max<int64_t>({ldx, w.cols, w.rows, 1});
  return batch <= INT64_MAX - kPanelSlack && !__builtin_mul_overflow(batch + kPanelSlack, widest, &product);
}

}  // namespace

Status spmm_forward(const SparseMatrix& w, const float* x, int64_t batch, int64_t ldx,
                    const float* bias, float* y, int n_threads) {
  if (!valid_matrix(w) || batch < 0 || n_threads < 1 || !batch_fits(w, batch, ldx))
    return Status::kInvalidArgument;
  if (batch == 0 || w.rows == 0) return Status::kOk;
  if (y == nullptr || (w.cols > 0 && x == nullptr) || (batch > 1 && ldx < w.cols))
    return Status::kInvalidArgument;
  with_types(w, [&](auto value_tag, auto index_tag) {
    forward_typed<decltype(value_tag), decltype(index_tag)>(w, x, batch, ldx, bias, y, n_threads);
  });
  return Status::kOk;
}

Status spmm_backward_input(const SparseMatrix& w, const float* grad_y, int64_t batch,
                           float* grad_x, int n_threads) {
  if (!valid_matrix(w) || batch < 0 || n_threads < 1 || !batch_fits(w, batch, 0))
    return Status::kInvalidArgument;
  if (batch == 0 || w.cols == 0) return Status::kOk;
  if (grad_x == nullptr || (w.rows > 0 && grad_y == nullptr)) return Status::kInvalidArgument;
  with_types(w, [&](auto value_tag, auto index_tag) {
    backward_typed<decltype(value_tag), decltype(index_tag)>(w, grad_y, batch, grad_x, n_threads);
  });
  return Status::kOk;
}

bool spmm_dynamic_supported(const SparseMatrix& w) {
  return w.value_type == SparseValues::kInt8 && !w.wide_idx && w.row_scales != nullptr &&
         w.cols <= kQgemmMaxK && active_isa() >= Isa::kAvx512 && cpu_has_avx512_vnni();
}

Status spmm_forward_dynamic(const SparseMatrix& w, const float* x, int64_t batch, int64_t ldx,
                            const float* bias, float* y, int n_threads) {
  if (!valid_matrix(w) || !spmm_dynamic_supported(w) || batch < 0 || n_threads < 1 ||
      !batch_fits(w, batch, ldx))
    return Status::kInvalidArgument;
  if (batch == 0 || w.rows == 0) return Status::kOk;
  if (y == nullptr || (w.cols > 0 && x == nullptr) || (batch > 1 && ldx < w.cols))
    return Status::kInvalidArgument;
  forward_dynamic(w, x, batch, ldx, bias, y, n_threads);
  return Status::kOk;
}

}  // namespace slimtorch
