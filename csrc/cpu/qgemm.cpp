// int8 GEMM / linear kernels (layout and contracts: slimtorch/qgemm.h).
//
// Structure: the output is cut into tiles of at most kRows[isa] rows x
// kBlocks[isa] * 16 columns. A micro-kernel computes one tile's accumulators
// over the whole K into a small stack buffer; an epilogue turns them into
// int32 or float output. Tiles are spread over threads column-tile-major, so
// each thread streams its own slice of the packed weight once per row panel.
//
// Integer paths (u8 activations x s8 weights, exact int32):
//   AVX-512 VNNI: vpdpbusd on the packed 16x4 groups, one broadcast per row.
//   AVX2: vpdpbusd's 8-bit pairs would saturate in vpmaddubsw's int16 sums
//     (255 * 127 * 2 > 32767), so both operands are widened to int16 and
//     multiplied with vpmaddwd (int16 x int16 -> int32 pair sums), which is
//     exact for these ranges.
//   scalar: plain loops over the same layout.
// Weight-only path (float activations): each 32-bit lane of a packed group
// holds 4 int8 weights; shifting lane i into the top byte and shifting back
// arithmetically sign-extends it, cvtdq2ps makes it float, and an FMA with
// the broadcast activation accumulates. The float weight exists only in
// registers.
#include "slimtorch/qgemm.h"

#include "narrow.h"
#if defined(SLIMTORCH_HAVE_AMX)
#include "qgemm_amx.h"
#endif

// GCC 12 reports its own _mm512_undefined_*() placeholders inside the
// AVX-512 intrinsic headers as uninitialized; the warning is a known false
// positive (GCC bug 105593) and would drown real ones.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <memory>

namespace slimtorch {
namespace {

constexpr int64_t kGroupBytes = kQgemmBlockN * kQgemmGroupK;  // 64
// Below this many multiply-adds a chunk is not worth a thread wake-up.
constexpr int64_t kMinMacsPerChunk = int64_t(1) << 18;
// Row elements per chunk of the row-quantization pass.
constexpr int64_t kMinQuantizeElements = int64_t(1) << 15;

constexpr int kMaxTileRows = 6;
constexpr int kMaxTileBlocks = 4;
constexpr int kMaxTileCols = kMaxTileBlocks * int(kQgemmBlockN);

// Register tiles live in arrays of vectors indexed by compile-time loop
// counters; GCC keeps them in registers only when these loops are fully unrolled.
#define SLIMTORCH_UNROLL _Pragma("GCC unroll 16")

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Sizes whose element offsets (row * stride, rounded up to whole blocks)
// overflow int64 are rejected before any index is formed.
constexpr int64_t kMaxDim = INT64_MAX / 4;
inline bool offsets_fit(int64_t rows, int64_t stride) {
  int64_t product = 0;
  return rows <= kMaxDim && stride <= kMaxDim && !__builtin_mul_overflow(rows + 64, stride + 64, &product);
}

// ---- tile shapes per path ----------------------------------------------------

struct TileShape {
  int rows;
  int blocks;
};

// ---- integer micro-kernels: acc[r * kMaxTileCols + c] for a rows x (blocks*16) tile

// k must be a multiple of 4: callers pad activation rows to whole groups
// (the pad meets zero weights), which keeps a tail path out of the hot loop.
// With accumulate, the tile adds to the values already in acc (K blocking).
using IntTileFn = void (*)(const uint8_t* a, int64_t lda, int64_t k, const int8_t* b,
                           int64_t block_stride, int32_t* acc, bool accumulate);

template <int R, int B>
void int_tile_scalar(const uint8_t* a, int64_t lda, int64_t k, const int8_t* b,
                     int64_t block_stride, int32_t* acc, bool accumulate) {
  SLIMTORCH_UNROLL
  for (int r = 0; r < R; ++r) {
    SLIMTORCH_UNROLL
    for (int blk = 0; blk < B; ++blk) {
      for (int j = 0; j < kQgemmBlockN; ++j) {
        // |sum| <= 255 * 127 * K < 2^31 for K <= kQgemmMaxK: no overflow.
        int32_t& out = acc[r * kMaxTileCols + blk * kQgemmBlockN + j];
        int32_t sum = accumulate ? out : 0;
        for (int64_t kk = 0; kk < k; ++kk) {
          const int8_t w = b[blk * block_stride + (kk / 4) * kGroupBytes + j * 4 + kk % 4];
          sum += int32_t(a[r * lda + kk]) * int32_t(w);
        }
        out = sum;
      }
    }
  }
}

template <int R, int B>
__attribute__((target("avx2,fma"))) void int_tile_avx2(const uint8_t* a, int64_t lda, int64_t k,
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
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) void int_tile_vnni(
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

// ---- weight-only (float) micro-kernels -----------------------------------------

// As IntTileFn, k must be a multiple of 4 (callers pad x rows with zeros).
using FloatTileFn = void (*)(const float* x, int64_t ldx, int64_t k, const int8_t* b,
                             int64_t block_stride, float* acc);

template <int R, int B>
void float_tile_scalar(const float* x, int64_t ldx, int64_t k, const int8_t* b,
                       int64_t block_stride, float* acc) {
  SLIMTORCH_UNROLL
  for (int r = 0; r < R; ++r)
    SLIMTORCH_UNROLL
    for (int blk = 0; blk < B; ++blk)
      for (int j = 0; j < kQgemmBlockN; ++j) {
        float sum = 0.0f;
        for (int64_t kk = 0; kk < k; ++kk)
          sum += x[r * ldx + kk] *
                 float(b[blk * block_stride + (kk / 4) * kGroupBytes + j * 4 + kk % 4]);
        acc[r * kMaxTileCols + blk * kQgemmBlockN + j] = sum;
      }
}

template <int R, int B>
__attribute__((target("avx2,fma"))) void float_tile_avx2(const float* x, int64_t ldx, int64_t k,
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

template <int R, int B>
__attribute__((target("avx512f,avx512bw,avx512vl"))) void float_tile_avx512(
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

// ---- kernel tables: [rows - 1][blocks - 1] ---------------------------------------

#define SLIMTORCH_TILE_ROW(fn, R) {fn<R, 1>, fn<R, 2>, fn<R, 3>, fn<R, 4>}
#define SLIMTORCH_TILE_TABLE(fn)                                                        \
  {SLIMTORCH_TILE_ROW(fn, 1), SLIMTORCH_TILE_ROW(fn, 2), SLIMTORCH_TILE_ROW(fn, 3),     \
   SLIMTORCH_TILE_ROW(fn, 4), SLIMTORCH_TILE_ROW(fn, 5), SLIMTORCH_TILE_ROW(fn, 6)}

const IntTileFn kIntScalar[kMaxTileRows][kMaxTileBlocks] = SLIMTORCH_TILE_TABLE(int_tile_scalar);
const IntTileFn kIntAvx2[kMaxTileRows][kMaxTileBlocks] = SLIMTORCH_TILE_TABLE(int_tile_avx2);
const IntTileFn kIntVnni[kMaxTileRows][kMaxTileBlocks] = SLIMTORCH_TILE_TABLE(int_tile_vnni);
const FloatTileFn kFloatScalar[kMaxTileRows][kMaxTileBlocks] = SLIMTORCH_TILE_TABLE(float_tile_scalar);
const FloatTileFn kFloatAvx2[kMaxTileRows][kMaxTileBlocks] = SLIMTORCH_TILE_TABLE(float_tile_avx2);
const FloatTileFn kFloatAvx512[kMaxTileRows][kMaxTileBlocks] = SLIMTORCH_TILE_TABLE(float_tile_avx512);
const FloatTileFn kFloatRowAvx512[kMaxTileBlocks] = {float_row_avx512<1, 1>, float_row_avx512<1, 2>,
                                                     float_row_avx512<1, 3>, float_row_avx512<1, 4>};

#undef SLIMTORCH_TILE_TABLE
#undef SLIMTORCH_TILE_ROW

enum class IntPath { kScalar, kAvx2, kVnni };

IntPath int_path() {
  const Isa isa = active_isa();
  if (isa >= Isa::kAvx512 && cpu_has_avx512_vnni()) return IntPath::kVnni;
  if (isa >= Isa::kAvx2) return IntPath::kAvx2;  // also AVX-512 CPUs without VNNI
  return IntPath::kScalar;
}

// Register budgets: VNNI 6x4 = 24 zmm accumulators + 4 weights + 1 broadcast;
// AVX2 2x2 blocks = 8 ymm accumulators + 4 activation pairs + 2 weights (16 ymm);
// float AVX-512 4x4 = 16 accumulators + 4 raw + 4 converted weights + 1.
TileShape int_shape(IntPath path) {
  switch (path) {
    case IntPath::kVnni: return {6, 4};
    case IntPath::kAvx2: return {2, 2};
    case IntPath::kScalar: return {1, 1};
  }
  return {1, 1};
}

IntTileFn int_tile(IntPath path, int rows, int blocks) {
  switch (path) {
    case IntPath::kVnni: return kIntVnni[rows - 1][blocks - 1];
    case IntPath::kAvx2: return kIntAvx2[rows - 1][blocks - 1];
    case IntPath::kScalar: break;
  }
  return kIntScalar[rows - 1][blocks - 1];
}

TileShape float_shape(Isa isa) {
  if (isa >= Isa::kAvx512) return {4, 4};
  if (isa >= Isa::kAvx2) return {3, 1};
  return {1, 1};
}

FloatTileFn float_tile(Isa isa, int rows, int blocks) {
  if (isa >= Isa::kAvx512 && rows == 1) return kFloatRowAvx512[blocks - 1];
  if (isa >= Isa::kAvx512) return kFloatAvx512[rows - 1][blocks - 1];
  if (isa >= Isa::kAvx2) return kFloatAvx2[rows - 1][blocks - 1];
  return kFloatScalar[rows - 1][blocks - 1];
}

// ---- tiling over threads ------------------------------------------------------------

// Calls body(first_row_tile, last_row_tile, nb0, blocks) for every work item:
// (column tile, row panel) pairs in column-tile-major order; rows are split
// into panels only when there are too few column tiles to feed every thread.
template <typename Body>
void for_each_panel(int64_t m, int64_t n, int64_t k, TileShape shape, int n_threads,
                    const Body& body) {
  if (m <= 0 || n <= 0) return;
  const int64_t n_blocks = ceil_div(n, kQgemmBlockN);
  const int64_t col_tiles = ceil_div(n_blocks, shape.blocks);
  const int64_t row_tiles = ceil_div(m, shape.rows);
  int64_t panels = 1;
  if (col_tiles < 2 * int64_t(n_threads))
    panels = std::min(row_tiles, ceil_div(2 * int64_t(n_threads), col_tiles));
  const int64_t items = col_tiles * panels;
  const int64_t macs_per_item =
      ceil_div(m, panels) * shape.blocks * kQgemmBlockN * std::max<int64_t>(k, 1);
  const int64_t grain = std::max<int64_t>(1, kMinMacsPerChunk / macs_per_item);
  parallel_for(n_threads, items, grain, [&](int64_t begin, int64_t end, int) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t col_tile = item / panels, panel = item % panels;
      const int64_t nb0 = col_tile * shape.blocks;
      const int blocks = int(std::min<int64_t>(shape.blocks, n_blocks - nb0));
      body(row_tiles * panel / panels, row_tiles * (panel + 1) / panels, nb0, blocks);
    }
  });
}

// Calls body(m0, rows, nb0, blocks) for every output tile.
template <typename Body>
void for_each_tile(int64_t m, int64_t n, int64_t k, TileShape shape, int n_threads,
                   const Body& body) {
  for_each_panel(m, n, k, shape, n_threads, [&](int64_t first, int64_t last, int64_t nb0, int blocks) {
    for (int64_t t = first; t < last; ++t) {
      const int64_t m0 = t * shape.rows;
      body(m0, int(std::min<int64_t>(shape.rows, m - m0)), nb0, blocks);
    }
  });
}

constexpr int kTileAcc = kMaxTileRows * kMaxTileCols;
// K block of the integer GEMM: with long rows the 64-column weight panel
// (64 * K bytes) and the activation panel stop fitting in L2 together; in
// K blocks of this many bytes the weight sub-panel (64 KB) stays in L2 while
// every row tile of the panel passes over it.
constexpr int64_t kIntKBlock = 1024;

// Integer GEMM over all tiles: a is [m][k] with k a multiple of 4 (row stride
// lda); calls finish(m0, rows, c0, cols, acc) with each tile's accumulators.
template <typename Finish>
void int_gemm(const uint8_t* a, int64_t m, int64_t k, int64_t lda, const int8_t* packed, int64_t n,
              int n_threads, const Finish& finish) {
#if defined(SLIMTORCH_HAVE_AMX)
  static_assert(kAmxAccStride == kMaxTileCols, "AMX blocks hand over accumulators as the tiles do");
  if (amx_int_gemm_wanted(m)) return amx_int_gemm(a, m, k, lda, packed, n, n_threads, finish);
#endif
  const IntPath path = int_path();
  const TileShape shape = int_shape(path);
  const int64_t block_stride = k / kQgemmGroupK * kGroupBytes;
  for_each_panel(m, n, k, shape, n_threads, [&](int64_t first, int64_t last, int64_t nb0, int blocks) {
    const int64_t c0 = nb0 * kQgemmBlockN;
    const int64_t cols = std::min<int64_t>(blocks * kQgemmBlockN, n - c0);
    const int8_t* b = packed + nb0 * block_stride;
    const auto rows_of = [&](int64_t t) { return int(std::min<int64_t>(shape.rows, m - t * shape.rows)); };
    if (k <= kIntKBlock || last - first == 1) {
      alignas(64) int32_t acc[kTileAcc];
      for (int64_t t = first; t < last; ++t) {
        const int64_t m0 = t * shape.rows;
        int_tile(path, rows_of(t), blocks)(a + m0 * lda, lda, k, b, block_stride, acc, false);
        finish(m0, rows_of(t), c0, cols, acc);
      }
      return;
    }
    std::unique_ptr<int32_t[]> acc(new int32_t[size_t((last - first) * kTileAcc)]);
    for (int64_t k0 = 0; k0 < k; k0 += kIntKBlock) {
      const int64_t kc = std::min(kIntKBlock, k - k0);
      for (int64_t t = first; t < last; ++t)
        int_tile(path, rows_of(t), blocks)(a + t * shape.rows * lda + k0, lda, kc,
                                            b + k0 / kQgemmGroupK * kGroupBytes, block_stride,
                                            acc.get() + (t - first) * kTileAcc, k0 > 0);
    }
    for (int64_t t = first; t < last; ++t)
      finish(t * shape.rows, rows_of(t), c0, cols, acc.get() + (t - first) * kTileAcc);
  });
}

// ---- epilogues ---------------------------------------------------------------------

// y[r][c] = float(acc - zp[r] * colsum[c]) * (row_scale[r] * w_scale[c]) + bias[c]
struct LinearEpilogue {
  const int32_t* zero_point;  // per row of the whole problem
  const float* row_scale;
  const float* w_scale;
  const int32_t* colsum;
  const float* bias;  // may be null
  float* y;
  int64_t ldy;
};

void linear_epilogue_scalar(const LinearEpilogue& e, const int32_t* acc, int64_t m0, int rows,
                            int64_t c0, int64_t cols) {
  for (int r = 0; r < rows; ++r) {
    const int64_t zp = e.zero_point[m0 + r];
    const float rs = e.row_scale[m0 + r];
    float* out = e.y + (m0 + r) * e.ldy + c0;
    for (int64_t c = 0; c < cols; ++c) {
      // The true value fits int32 (see qgemm.h); int64 keeps the intermediate defined.
      const int32_t v = int32_t(int64_t(acc[r * kMaxTileCols + c]) - zp * e.colsum[c0 + c]);
      const float p = float(v) * (rs * e.w_scale[c0 + c]);
      out[c] = e.bias ? p + e.bias[c0 + c] : p;
    }
  }
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

void float_epilogue_scalar(const float* acc, const float* w_scale, const float* bias, float* y,
                           int64_t ldy, int rows, int64_t cols) {
  for (int r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const float p = acc[r * kMaxTileCols + c] * w_scale[c];
      y[r * ldy + c] = bias ? p + bias[c] : p;
    }
}

// ---- row quantization -----------------------------------------------------------------

// Quantization follows the quantize op family (csrc/cpu/quantize.cpp,
// python/slimtorch/reference/quantize.py). This file is compiled with
// -ffp-contract=off (CMakeLists.txt) so that "x * inv + zp" below is two
// roundings exactly where the reference rounds twice.
constexpr float kMinScale = FLT_EPSILON;  // smallest scale choose_qparams returns

struct RowParams {
  float scale;     // NaN for a row with NaN/Inf
  int32_t zp;
  bool finite;
};

// choose_qparams, asymmetric uint8: scale and zero point computed in double.
RowParams dynamic_params(float lo, float hi, bool finite) {
  if (!finite) return {std::numeric_limits<float>::quiet_NaN(), 0, false};
  const double lo_d = std::min(double(lo), 0.0), hi_d = std::max(double(hi), 0.0);
  const float scale = std::max(float((hi_d - lo_d) / 255.0), kMinScale);
  const double zp = std::clamp(-std::nearbyint(lo_d / double(scale)), 0.0, 255.0);
  return {scale, int32_t(zp), true};
}

// t = float32(float32(x * inv) + zp) per row (per-channel quantize), or one
// rounding of fma(x, inv, zp) (per-tensor quantize, the static mode); then
// clamp to [0, 255] and round half to even. NaN gives 0 (such rows are
// replaced anyway).
inline uint8_t quantize_value(float x, float inv, float zp, bool fused) {
  float t = fused ? std::fma(x, inv, zp) : x * inv + zp;
  if (!(t >= 0.0f)) t = 0.0f;
  if (t > 255.0f) t = 255.0f;
  return uint8_t(std::nearbyint(t));
}

void quantize_row_scalar(const float* x, int64_t k, float inv, int32_t zp, bool fused, uint8_t* a) {
  for (int64_t i = 0; i < k; ++i) a[i] = quantize_value(x[i], inv, float(zp), fused);
}

void minmax_scalar(const float* x, int64_t k, float* lo, float* hi, bool* finite) {
  float mn = 0.0f, mx = 0.0f;
  bool ok = true;
  for (int64_t i = 0; i < k; ++i) {
    ok &= std::isfinite(x[i]);
    mn = std::min(mn, x[i]);
    mx = std::max(mx, x[i]);
  }
  *lo = mn;
  *hi = mx;
  *finite = ok;
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

void minmax_row(Isa isa, const float* x, int64_t k, float* lo, float* hi, bool* finite) {
  if (isa >= Isa::kAvx512) return minmax_avx512(x, k, lo, hi, finite);
  if (isa >= Isa::kAvx2) return minmax_avx2(x, k, lo, hi, finite);
  minmax_scalar(x, k, lo, hi, finite);
}

void quantize_row(Isa isa, const float* x, int64_t k, float inv, int32_t zp, bool fused, uint8_t* a) {
  if (isa >= Isa::kAvx512) return quantize_row_avx512(x, k, inv, zp, fused, a);
  if (isa >= Isa::kAvx2) return quantize_row_avx2(x, k, inv, zp, fused, a);
  quantize_row_scalar(x, k, inv, zp, fused, a);
}

// Quantizes rows [0, m): dynamic (static_scale == nullptr) or static. Writes
// per-row scale (NaN for non-finite rows) and zero point.
void quantize_rows(const float* x, int64_t m, int64_t k, int64_t ldx, uint8_t* a, int64_t lda,
                   float* scale, int32_t* zero_point, const float* static_scale,
                   int32_t static_zp, int n_threads) {
  const Isa isa = active_isa();
  const int64_t grain = std::max<int64_t>(1, kMinQuantizeElements / std::max<int64_t>(k, 1));
  parallel_for(n_threads, m, grain, [&](int64_t begin, int64_t end, int) {
    for (int64_t r = begin; r < end; ++r) {
      const float* row = x + r * ldx;
      uint8_t* out = a + r * lda;
      float lo, hi;
      bool finite;
      RowParams params;
      if (static_scale == nullptr) {
        minmax_row(isa, row, k, &lo, &hi, &finite);
        params = dynamic_params(lo, hi, finite);
      } else {
        minmax_row(isa, row, k, &lo, &hi, &finite);  // only the finiteness is used
        params = {finite ? *static_scale : std::numeric_limits<float>::quiet_NaN(),
                  finite ? static_zp : 0, finite};
      }
      scale[r] = params.scale;
      zero_point[r] = params.zp;
      if (params.finite)
        quantize_row(isa, row, k, 1.0f / params.scale, params.zp, static_scale != nullptr, out);
      else if (k > 0) std::memset(out, 0, size_t(k));
    }
  });
}

}  // namespace

int64_t qgemm_packed_bytes(int64_t n, int64_t k) {
  return ceil_div(n, kQgemmBlockN) * ceil_div(k, kQgemmGroupK) * kGroupBytes;
}

Status qgemm_pack(const int8_t* q, int64_t n, int64_t k, int64_t ldq, int8_t* packed,
                  int32_t* colsum) {
  if (n < 0 || k < 0 || ldq < k || (n > 0 && k > 0 && (q == nullptr || packed == nullptr)) ||
      !offsets_fit(n, ldq))
    return Status::kInvalidArgument;
  const int64_t groups = ceil_div(k, kQgemmGroupK);
  const int64_t blocks = ceil_div(n, kQgemmBlockN);
  for (int64_t nb = 0; nb < blocks; ++nb)
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t j = 0; j < kQgemmBlockN; ++j)
        for (int64_t i = 0; i < kQgemmGroupK; ++i) {
          const int64_t row = nb * kQgemmBlockN + j, col = g * kQgemmGroupK + i;
          packed[((nb * groups + g) * kQgemmBlockN + j) * kQgemmGroupK + i] =
              row < n && col < k ? q[row * ldq + col] : int8_t(0);
        }
  if (colsum != nullptr)
    for (int64_t row = 0; row < n; ++row) {
      int32_t sum = 0;
      for (int64_t col = 0; col < k; ++col) sum += q[row * ldq + col];
      colsum[row] = sum;
    }
  return Status::kOk;
}

Status quantize_rows_u8(const float* x, int64_t m, int64_t k, int64_t ldx, uint8_t* a,
                        int64_t lda, float* scale, int32_t* zero_point, int n_threads) {
  if (m < 0 || k < 0 || ldx < k || lda < k ||
      (m > 0 && (scale == nullptr || zero_point == nullptr || (k > 0 && (x == nullptr || a == nullptr)))) ||
      !offsets_fit(m, ldx) || !offsets_fit(m, lda))
    return Status::kInvalidArgument;
  quantize_rows(x, m, k, ldx, a, lda, scale, zero_point, nullptr, 0, n_threads);
  return Status::kOk;
}

Status qgemm_u8s8s32(const uint8_t* a, int64_t m, int64_t k, int64_t lda, const int8_t* packed,
                     int64_t n, int32_t* c, int64_t ldc, int n_threads) {
  if (m < 0 || n < 0 || k < 0 || k > kQgemmMaxK || lda < k || ldc < n ||
      (m > 0 && n > 0 && (c == nullptr || (k > 0 && (a == nullptr || packed == nullptr)))))
    return Status::kInvalidArgument;
  if (m == 0 || n == 0) return Status::kOk;
  // Rows whose length is not a whole number of 4-byte groups are copied into
  // a zero-padded buffer (see IntTileFn).
  const int64_t k_pad = ceil_div(k, kQgemmGroupK) * kQgemmGroupK;
  std::unique_ptr<uint8_t[]> padded;
  if (k_pad != k) {
    padded.reset(new uint8_t[size_t(m * k_pad)]);
    for (int64_t r = 0; r < m; ++r) {
      std::memcpy(padded.get() + r * k_pad, a + r * lda, size_t(k));
      std::memset(padded.get() + r * k_pad + k, 0, size_t(k_pad - k));
    }
    a = padded.get();
    lda = k_pad;
  }
  int_gemm(a, m, k_pad, lda, packed, n, n_threads,
           [&](int64_t m0, int rows, int64_t c0, int64_t cols, const int32_t* acc) {
             for (int r = 0; r < rows; ++r)
               std::memcpy(c + (m0 + r) * ldc + c0, acc + r * kMaxTileCols, size_t(cols) * sizeof(int32_t));
           });
  return Status::kOk;
}

Status qlinear_u8s8(const float* x, int64_t m, int64_t k, int64_t ldx, const int8_t* packed,
                    const float* w_scale, const int32_t* colsum, const float* bias, int64_t n,
                    float* y, int64_t ldy, const float* x_scale, int32_t x_zero_point,
                    int n_threads) {
  if (m < 0 || n < 0 || k < 0 || k > kQgemmMaxK || ldx < k || ldy < n ||
      (m > 0 && n > 0 && (y == nullptr || w_scale == nullptr || colsum == nullptr ||
                          (k > 0 && (x == nullptr || packed == nullptr)))))
    return Status::kInvalidArgument;
  if (x_scale != nullptr && (!(*x_scale > 0.0f) || !std::isfinite(*x_scale) ||
                             x_zero_point < 0 || x_zero_point > 255))
    return Status::kInvalidArgument;
  if (m == 0 || n == 0) return Status::kOk;
  // Quantized rows, padded to whole 4-byte groups so the micro-kernels never
  // take the partial-group path; the pad bytes meet zero weights. The AMX
  // path reads whole 64-byte rows (see qgemm_amx.h).
  int64_t lda = ceil_div(k, kQgemmGroupK) * kQgemmGroupK;
#if defined(SLIMTORCH_HAVE_AMX)
  if (amx_int_gemm_wanted(m)) lda = ceil_div(k, kAmxRowAlign) * kAmxRowAlign;
#endif
  // Rows start on cache lines (+63: room to align the first).
  std::unique_ptr<uint8_t[]> a_storage(new uint8_t[size_t(std::max<int64_t>(m * lda, 1)) + 63]);
  uint8_t* const a = a_storage.get() + (-reinterpret_cast<uintptr_t>(a_storage.get()) & 63);
  std::unique_ptr<float[]> row_scale(new float[size_t(m)]);
  std::unique_ptr<int32_t[]> row_zp(new int32_t[size_t(m)]);
  if (lda > k)
    for (int64_t r = 0; r < m; ++r) std::memset(a + r * lda + k, 0, size_t(lda - k));
  quantize_rows(x, m, k, ldx, a, lda, row_scale.get(), row_zp.get(), x_scale, x_zero_point,
                n_threads);

  const Isa isa = active_isa();
  const LinearEpilogue epilogue{row_zp.get(), row_scale.get(), w_scale, colsum, bias, y, ldy};
  int_gemm(a, m, ceil_div(k, kQgemmGroupK) * kQgemmGroupK, lda, packed, n, n_threads,
           [&](int64_t m0, int rows, int64_t c0, int64_t cols, const int32_t* acc) {
             if (isa >= Isa::kAvx512) linear_epilogue_avx512(epilogue, acc, m0, rows, c0, cols);
             else if (isa >= Isa::kAvx2) linear_epilogue_avx2(epilogue, acc, m0, rows, c0, cols);
             else linear_epilogue_scalar(epilogue, acc, m0, rows, c0, cols);
           });
  return Status::kOk;
}

Status qlinear_weight_only(const float* x, int64_t m, int64_t k, int64_t ldx,
                           const int8_t* packed, const float* w_scale, const float* bias,
                           int64_t n, float* y, int64_t ldy, int n_threads) {
  if (m < 0 || n < 0 || k < 0 || ldx < k || ldy < n ||
      (m > 0 && n > 0 && (y == nullptr || w_scale == nullptr ||
                          (k > 0 && (x == nullptr || packed == nullptr)))))
    return Status::kInvalidArgument;
  if (m == 0 || n == 0) return Status::kOk;
#if defined(SLIMTORCH_HAVE_AMX)
  if (amx_weight_only_wanted(m, k)) {
    amx_weight_only(x, m, k, ldx, packed, w_scale, bias, n, y, ldy, n_threads);
    return Status::kOk;
  }
#endif
  const int64_t k_pad = ceil_div(k, kQgemmGroupK) * kQgemmGroupK;
  std::unique_ptr<float[]> padded;
  if (k_pad != k) {
    padded.reset(new float[size_t(m * k_pad)]);
    for (int64_t r = 0; r < m; ++r) {
      std::memcpy(padded.get() + r * k_pad, x + r * ldx, size_t(k) * sizeof(float));
      std::fill(padded.get() + r * k_pad + k, padded.get() + (r + 1) * k_pad, 0.0f);
    }
    x = padded.get();
    ldx = k_pad;
  }
  const Isa isa = active_isa();
  const int64_t block_stride = k_pad / kQgemmGroupK * kGroupBytes;
  for_each_tile(m, n, k_pad, float_shape(isa), n_threads, [&](int64_t m0, int rows, int64_t nb0, int blocks) {
    alignas(64) float acc[kMaxTileRows * kMaxTileCols];
    float_tile(isa, rows, blocks)(x + m0 * ldx, ldx, k_pad, packed + nb0 * block_stride, block_stride, acc);
    const int64_t c0 = nb0 * kQgemmBlockN;
    const int64_t cols = std::min<int64_t>(blocks * kQgemmBlockN, n - c0);
    const float* b = bias ? bias + c0 : nullptr;
    if (isa >= Isa::kAvx512)
      float_epilogue_avx512(acc, w_scale + c0, b, y + m0 * ldy + c0, ldy, rows, cols);
    else
      float_epilogue_scalar(acc, w_scale + c0, b, y + m0 * ldy + c0, ldy, rows, cols);
  });
  return Status::kOk;
}

}  // namespace slimtorch
