// Per-ISA paths of the qgemm family (qgemm.cpp dispatches): packed-layout
// constants, the micro-kernel and epilogue types, and the scalar bodies.
// Every file of the family is compiled with -ffp-contract=off (see qgemm.cpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>

#include "slimtorch/qgemm.h"

namespace slimtorch::qgemm_paths {

constexpr int64_t kGroupBytes = kQgemmBlockN * kQgemmGroupK;  // 64
constexpr int kMaxTileRows = 6;
constexpr int kMaxTileBlocks = 4;
constexpr int kMaxTileCols = kMaxTileBlocks * int(kQgemmBlockN);

// Register tiles live in arrays of vectors indexed by compile-time loop
// counters; GCC keeps them in registers only when these loops are fully unrolled.
#define SLIMTORCH_UNROLL _Pragma("GCC unroll 16")

// ---- integer micro-kernels: acc[r * kMaxTileCols + c] for a rows x (blocks*16) tile

// k must be a multiple of 4: callers pad activation rows to whole groups
// (the pad meets zero weights), which keeps a tail path out of the hot loop.
// With accumulate, the tile adds to the values already in acc (K blocking).
using IntTileFn = void (*)(const uint8_t* a, int64_t lda, int64_t k, const int8_t* b,
                           int64_t block_stride, int32_t* acc, bool accumulate);

// ---- weight-only (float) micro-kernels -----------------------------------------

// As IntTileFn, k must be a multiple of 4 (callers pad x rows with zeros).
using FloatTileFn = void (*)(const float* x, int64_t ldx, int64_t k, const int8_t* b,
                             int64_t block_stride, float* acc);

// y[r][c] = float(acc - zp[r] * colsum[c]) * (row_scale[r] * w_scale[c]) + bias[c]
struct LinearEpilogue {
  const int32_t* zero_point;  // per row of the whole problem
  const float* row_scale;
  const float* w_scale;
  const int32_t* colsum;
  const float* bias;  // may be null
  float* y;
  int64_t ldy;
  uint16_t* y_bf16 = nullptr;  // bfloat16 output in place of y (bf16 epilogues; ldy applies)
};

// Per ISA: the micro-kernels, tiles[rows - 1][blocks - 1] for a tile of
// rows x blocks (at most the path's tile shape, see qgemm.cpp; paths one
// block wide fill column 0 only), the epilogues, and the row quantization
// (quantize_value below) and min/max/finiteness scan of one float row.
using IntTiles = IntTileFn[kMaxTileRows][kMaxTileBlocks];
using FloatTiles = FloatTileFn[kMaxTileRows][kMaxTileBlocks];
extern const IntTiles int_tiles_avx2, int_tiles_vnni, int_tiles_neon, int_tiles_dotprod, int_tiles_i8mm;
extern const FloatTiles float_tiles_avx2, float_tiles_avx512, float_tiles_neon;
void linear_epilogue_avx2(const LinearEpilogue& e, const int32_t* acc, int64_t m0, int rows, int64_t c0, int64_t cols);
void linear_epilogue_avx512(const LinearEpilogue& e, const int32_t* acc, int64_t m0, int rows, int64_t c0,
                            int64_t cols);
void linear_epilogue_neon(const LinearEpilogue& e, const int32_t* acc, int64_t m0, int rows, int64_t c0, int64_t cols);
void linear_epilogue_bf16_avx512(const LinearEpilogue& e, const int32_t* acc, int64_t m0, int rows, int64_t c0,
                                 int64_t cols);
void float_epilogue_avx512(const float* acc, const float* w_scale, const float* bias, float* y, int64_t ldy,
                           int rows, int64_t cols);
void quantize_row_avx2(const float* x, int64_t k, float inv, int32_t zp, bool fused, uint8_t* a);
void quantize_row_avx512(const float* x, int64_t k, float inv, int32_t zp, bool fused, uint8_t* a);
void quantize_row_neon(const float* x, int64_t k, float inv, int32_t zp, bool fused, uint8_t* a);
void minmax_avx2(const float* x, int64_t k, float* lo, float* hi, bool* finite);
void minmax_avx512(const float* x, int64_t k, float* lo, float* hi, bool* finite);
void minmax_neon(const float* x, int64_t k, float* lo, float* hi, bool* finite);
void to_bf16_avx512(const float* in, int64_t n, uint16_t* out);
// bf16 output on CPUs with AVX512-BF16, the AMX ones included (VCVTNEPS2BF16;
// results identical to the avx512 ones).
void to_bf16_avx512bf16(const float* in, int64_t n, uint16_t* out);
void linear_epilogue_bf16_avx512bf16(const LinearEpilogue& e, const int32_t* acc, int64_t m0, int rows, int64_t c0,
                                     int64_t cols);
// float_epilogue_avx512 into bfloat16 y, rounded as to_bf16_avx512bf16.
void float_epilogue_bf16_avx512bf16(const float* acc, const float* w_scale, const float* bias, uint16_t* y,
                                    int64_t ldy, int rows, int64_t cols);
void bf16_to_float_avx512(const uint16_t* in, int64_t n, float* out);

// ---- weight-only on bf16 pairs (AVX512-BF16; the AMX tiles use the same staging) ----------
// The compiler's AVX512-BF16 support comes with its AMX support (CMake checks both).
#if defined(SLIMTORCH_HAVE_AMX)
#define SLIMTORCH_HAVE_AVX512_BF16 1
#endif
// A staged weight row: 16 channels x one bf16 pair (k = 2p, 2p + 1).
constexpr int64_t kBf16PairBytes = 64;
// acc[r * kMaxTileCols + c] = sum over p < pairs of the pair products of bf16
// row r of xb (row stride ldb elements) and the staged rows of block c / 16
// (wb + block * w_stride + p * kBf16PairBytes).
using BF16TileFn = void (*)(const uint16_t* xb, int64_t ldb, int64_t pairs, const uint8_t* wb, int64_t w_stride,
                            float* acc);
using BF16Tiles = BF16TileFn[kMaxTileRows][kMaxTileBlocks];
extern const BF16Tiles bf16_tiles_avx512;
// x rows [begin, end) -> bf16 rows of `width` values (a multiple of 16; zero
// past k): float32 and float16 rounded to nearest even, bfloat16 copied.
void rows_to_bf16_avx512(const void* x, DType dtype, int64_t ldx, int64_t k, int64_t width, uint16_t* xb,
                         int64_t begin, int64_t end);
// Packed k-groups [g0, g0 + count) of one 16-channel block -> 2 * count
// staged rows at out (zeros for groups >= groups).
void weight_groups_to_bf16_avx512(const int8_t* block, int64_t g0, int64_t count, int64_t groups, uint8_t* out);

// ---- kernel tables (IntTiles, FloatTiles) of a kernel template fn<rows, blocks> ---------

#define SLIMTORCH_TILE_ROW(fn, R) {fn<R, 1>, fn<R, 2>, fn<R, 3>, fn<R, 4>}
#define SLIMTORCH_TILE_TABLE(fn)                                                        \
  {SLIMTORCH_TILE_ROW(fn, 1), SLIMTORCH_TILE_ROW(fn, 2), SLIMTORCH_TILE_ROW(fn, 3),     \
   SLIMTORCH_TILE_ROW(fn, 4), SLIMTORCH_TILE_ROW(fn, 5), SLIMTORCH_TILE_ROW(fn, 6)}
// Paths whose tiles are one block wide: column 0.
#define SLIMTORCH_ONE_BLOCK_TILE_TABLE(fn) {{fn<1, 1>}, {fn<2, 1>}, {fn<3, 1>}, {fn<4, 1>}, {fn<5, 1>}, {fn<6, 1>}}

// Unnamed namespace: every translation unit keeps its own copy, compiled
// with its own flags (no shared inline copy the linker could pick).
namespace {

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

inline void linear_epilogue_scalar(const LinearEpilogue& e, const int32_t* acc, int64_t m0, int rows,
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

inline void float_epilogue_scalar(const float* acc, const float* w_scale, const float* bias, float* y,
                           int64_t ldy, int rows, int64_t cols) {
  for (int r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const float p = acc[r * kMaxTileCols + c] * w_scale[c];
      y[r * ldy + c] = bias ? p + bias[c] : p;
    }
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

inline void quantize_row_scalar(const float* x, int64_t k, float inv, int32_t zp, bool fused, uint8_t* a) {
  for (int64_t i = 0; i < k; ++i) a[i] = quantize_value(x[i], inv, float(zp), fused);
}

inline void bf16_to_float_scalar(const uint16_t* in, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_float(in[i]);
}

inline void to_bf16_scalar(const float* in, int64_t n, uint16_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = float_to_bf16(in[i]);
}

inline void minmax_scalar(const float* x, int64_t k, float* lo, float* hi, bool* finite) {
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

// ---- loop skeletons of the vector paths -----------------------------------------
//
// Written once and instantiated in each ISA file with that file's primitives
// (Ops: static inline functions on its vector types, overloaded by element
// type: load/store of int32_t, float and int8_t weights, splat, ...). They
// name no intrinsic. On x86 the instantiating function carries the ISA's
// target attribute and `flatten`, which inlines skeleton and primitives into it.

// The packed weights of group g for vector h of a tile row (Ops::kLanes
// columns each; a vector narrower than a 16-column block takes part of the
// block's 64-byte group).
template <class Ops>
inline const int8_t* vector_weights(const int8_t* b, int64_t block_stride, int64_t g, int h) {
  return b + (h * Ops::kLanes / kQgemmBlockN) * block_stride + g * kGroupBytes +
         (h * Ops::kLanes % kQgemmBlockN) * kQgemmGroupK;
}

// One micro-kernel (IntTileFn or FloatTileFn): an R x (B * 16) tile in
// vectors of Ops::kLanes, zeroed or loaded (accumulate), updated by
// Step::run for every 4-k group g, stored.
template <class Ops, class Step, int R, int B, class In, class Out>
inline void tile_loop(const In* a, int64_t lda, int64_t k, const int8_t* b, int64_t block_stride, Out* acc,
                      bool accumulate) {
  using Acc = decltype(Ops::load(acc));
  constexpr int V = B * int(kQgemmBlockN) / Ops::kLanes;
  Acc c[R][V];
  SLIMTORCH_UNROLL
  for (int r = 0; r < R; ++r)
    SLIMTORCH_UNROLL
    for (int h = 0; h < V; ++h) c[r][h] = accumulate ? Ops::load(acc + r * kMaxTileCols + h * Ops::kLanes) : Acc{};
  const int64_t groups = k / 4;  // k is a multiple of 4 (see IntTileFn)
  for (int64_t g = 0; g < groups; ++g) Step::template run<R, V>(c, a, lda, b, block_stride, g);
  SLIMTORCH_UNROLL
  for (int r = 0; r < R; ++r)
    SLIMTORCH_UNROLL
    for (int h = 0; h < V; ++h) Ops::store(acc + r * kMaxTileCols + h * Ops::kLanes, c[r][h]);
}

// The weight-only group step of the x86 paths: byte i of every 32-bit lane
// goes to the top (Ops::shift_left), comes back down with its sign and
// becomes a float (Ops::top_byte_to_float), which meets each row's x[4g + i].
template <class Ops>
struct LaneWidenedFloatStep {
  template <int R, int V, class Acc>
  static inline void run(Acc (&c)[R][V], const float* x, int64_t ldx, const int8_t* b, int64_t block_stride,
                         int64_t g) {
    decltype(Ops::load(b)) w[V];
    SLIMTORCH_UNROLL
    for (int h = 0; h < V; ++h) w[h] = Ops::load(vector_weights<Ops>(b, block_stride, g, h));
    SLIMTORCH_UNROLL
    for (int i = 0; i < 4; ++i) {
      Acc wf[V];
      SLIMTORCH_UNROLL
      for (int h = 0; h < V; ++h) wf[h] = Ops::top_byte_to_float(i == 3 ? w[h] : Ops::shift_left(w[h], 24 - 8 * i));
      SLIMTORCH_UNROLL
      for (int r = 0; r < R; ++r) {
        const Acc xv = Ops::splat(x[r * ldx + 4 * g + i]);
        SLIMTORCH_UNROLL
        for (int h = 0; h < V; ++h) c[r][h] = Ops::fma(xv, wf[h], c[r][h]);
      }
    }
  }
};

// The linear epilogue's whole vectors of columns [c0, c0 + vec). Column
// vectors outermost: a column's colsum, scale and bias stay in registers for
// all rows (the stores to y may alias e's arrays as far as the compiler
// knows, so in the other order it reloads them for every vector).
template <class Ops, bool kBias>
inline void linear_epilogue_columns(const LinearEpilogue& e, const int32_t* acc, int64_t m0, int rows, int64_t c0,
                                    int64_t vec) {
  const int32_t* const zero_point = e.zero_point + m0;
  const float* const row_scale = e.row_scale + m0;
  const int64_t ldy = e.ldy;
  for (int64_t c = 0; c < vec; c += Ops::kLanes) {
    const auto cs = Ops::load(e.colsum + c0 + c);
    const auto ws = Ops::load(e.w_scale + c0 + c);
    const auto b = kBias ? Ops::load(e.bias + c0 + c) : Ops::splat(0.0f);
    const int32_t* a = acc + c;
    float* out = e.y + m0 * ldy + c0 + c;
    for (int r = 0; r < rows; ++r, a += kMaxTileCols, out += ldy) {
      // Wraps to the true value (see qgemm.h), as the scalar epilogue's int64.
      const auto v = Ops::minus_product(Ops::load(a), Ops::splat(zero_point[r]), cs);
      auto p = Ops::mul(Ops::to_float(v), Ops::mul(Ops::splat(row_scale[r]), ws));
      if (kBias) p = Ops::add(p, b);
      Ops::store(out, p);
    }
  }
}

// The linear epilogue with a scalar tail (paths without masked loads).
template <class Ops>
inline void linear_epilogue_loop(const LinearEpilogue& e, const int32_t* acc, int64_t m0, int rows, int64_t c0,
                                 int64_t cols) {
  const int64_t vec = cols / Ops::kLanes * Ops::kLanes;
  if (e.bias) {
    linear_epilogue_columns<Ops, true>(e, acc, m0, rows, c0, vec);
  } else {
    linear_epilogue_columns<Ops, false>(e, acc, m0, rows, c0, vec);
  }
  // acc + vec: the scalar epilogue indexes acc by (row, column - vec).
  if (vec < cols) linear_epilogue_scalar(e, acc + vec, m0, rows, c0 + vec, cols - vec);
}

// The main loop of the row quantization, four vectors a step: t = x * inv +
// zp (fused: one rounding), Ops::levels(t) the clamped int32 levels, packed
// to bytes by Ops::store_bytes. Returns how many elements it did.
template <class Ops>
inline int64_t quantize_row_loop(const float* x, int64_t k, float inv, int32_t zp, bool fused, uint8_t* a) {
  constexpr int64_t kStep = 4 * Ops::kLanes;
  const auto scale = Ops::splat(inv), zpv = Ops::splat(float(zp));
  int64_t i = 0;
  for (; i + kStep <= k; i += kStep) {
    decltype(Ops::levels(scale)) levels[4];
    for (int u = 0; u < 4; ++u)
      levels[u] = Ops::levels(Ops::affine(Ops::load(x + i + Ops::kLanes * u), scale, zpv, fused));
    Ops::store_bytes(a + i, levels);
  }
  return i;
}

}  // namespace
}  // namespace slimtorch::qgemm_paths
