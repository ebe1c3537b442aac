// Per-ISA paths of the spmm family (spmm.cpp dispatches): value types,
// the scalar bodies, and the kernel pointers each path provides.
#pragma once

#include <algorithm>

#include "slimtorch/spmm.h"

namespace slimtorch::spmm_paths {

// Gather paths handle kMaxGatherBatch columns per pass (scalar/AVX2: one).
using GemvFn = void (*)(const SparseMatrix&, const float*, int64_t, const float*, float*, int64_t,
                        int64_t, int64_t);
// A panel kernel call covers all of w's columns (the default carry) or one
// block of them (forward's column blocks in spmm.cpp). Then `sums` holds
// the raw row sums of the blocks before ([r1 - r0][W] floats): a call starts
// from them when `resume`, and unless `finish` leaves its own there instead
// of finishing them (row scale, bias) into y.
struct PanelCarry {
  float* sums = nullptr;
  bool resume = false;
  bool finish = true;
  // The W sums of row r0 + i (nullptr without carried sums).
  float* row(int64_t i, int width) const { return sums == nullptr ? nullptr : sums + i * width; }
};
// The panel is [cols][W] floats (bfloat16 bit patterns for the AVX-512 bf16-panel kernels).
using PanelFn = void (*)(const SparseMatrix&, const void*, int64_t, int64_t, const float*, float*,
                         int64_t, int64_t, int64_t, const PanelCarry&);

// Columns of x handled by one gather pass, and the batch below which the
// gather paths beat the transposed panels (a panel costs about as much for
// 1 column as for 16; a gather pass costs about one gather per nonzero per column).
constexpr int kMaxGatherBatch = 3;

// One path's kernels for w's value and index types: a gather pass over
// `columns` (1..kMaxGatherBatch) batch columns, a panel kernel of nv vectors,
// the bitmap gather (batch 1).
using BitmapGemvFn = void (*)(const SparseMatrix&, const float*, const float*, float*, int64_t, int64_t);
GemvFn pick_gemv_avx2(const SparseMatrix& w);
PanelFn pick_panel_avx2(const SparseMatrix& w, int nv);
GemvFn pick_gemv_avx512(const SparseMatrix& w, int columns);
PanelFn pick_panel_avx512(const SparseMatrix& w, int nv);
// Panels of bfloat16 x kept in bfloat16 (half the bytes per nonzero; nv 2 or 4).
PanelFn pick_panel_bf16_avx512(const SparseMatrix& w, int nv);
BitmapGemvFn pick_gemv_bitmap_avx512(const SparseMatrix& w);
GemvFn pick_gemv_neon(const SparseMatrix& w);
PanelFn pick_panel_neon(const SparseMatrix& w, int nv);

// build_panels (spmm.cpp) for AVX-512: columns [c0, c1) of every panel,
// float32 x into float32 panels or bfloat16 x into bfloat16 panels.
void build_panels_avx512(const float* x, int64_t batch, int64_t ldx, int64_t cols, int width, float* xt,
                         int64_t c0, int64_t c1);
void build_panels_avx512(const uint16_t* x, int64_t batch, int64_t ldx, int64_t cols, int width, uint16_t* xt,
                         int64_t c0, int64_t c1);

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

constexpr int kDynamicTile = 64;

// Batch row of the tile held by lane l of accumulator j.
constexpr int dynamic_row(int j, int l) { return 16 * (l / 4) + 4 * j + l % 4; }

// Rows [r0, r1) of one tile of nb batch rows starting at b0 (see above).
void dynamic_rows_vnni(const SparseMatrix& w, const uint8_t* xt, const int32_t* zero_points, const float* scales,
                       const int32_t* rowsum, const float* bias, float* y, int64_t b0, int64_t nb, int64_t r0,
                       int64_t r1);
// Tile of the transposed codes: xt[c][b] = a[b0 + b][c] for the tile's nb
// rows, zero for the rows past the batch.
void transpose_tile(const uint8_t* a, int64_t cols, int64_t b0, int64_t nb, uint8_t* tile);

// Unnamed namespace: every translation unit keeps its own copy, compiled
// with its own flags (no shared inline copy the linker could pick).
namespace {

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
// b0..b0+nb of y ([batch][ldy]); carry as PanelCarry says.
template <class V, class I>
void panel_scalar(const SparseMatrix& w, const void* panel, int64_t b0, int64_t nb, const float* bias,
                  float* y, int64_t ldy, int64_t r0, int64_t r1, const PanelCarry& carry) {
  const float* xt = static_cast<const float*>(panel);
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
    float* carried = carry.row(r - r0, kW);
    for (int j = 0; j < kW; ++j) {
      const float row_sum = (acc[0][j] + acc[1][j]) + (acc[2][j] + acc[3][j]);
      const float total = carry.resume ? carried[j] + row_sum : row_sum;
      if (!carry.finish) carried[j] = total;
      else if (j < nb) y[(b0 + j) * ldy + r] = finish_row(w, bias, r, total);
    }
  }
}

// Adapter: the scalar gather handles one column (ldx, ldy unused).
template <class V, class I>
void gemv_scalar_cols(const SparseMatrix& w, const float* x, int64_t, const float* bias, float* y,
                      int64_t, int64_t r0, int64_t r1) {
  gemv_scalar<V, I>(w, x, bias, y, r0, r1);
}

// Pointer to the instantiation kernel<V, I> of a path's kernel template for
// w's types; P::template of<V, I> names it.
template <class P>
auto pick_typed(const SparseMatrix& w) {
  auto fn = P::template of<float, uint16_t>;
  with_types(w, [&](auto value_tag, auto index_tag) {
    fn = P::template of<decltype(value_tag), decltype(index_tag)>;
  });
  return fn;
}

// The panel kernel of nv (1, 2 or 4) vectors for w's types, from a path P
// that names its panel kernels P::template panel<V, I, NV>.
template <class P, int NV>
struct PanelOf {
  template <class V, class I>
  static constexpr PanelFn of = P::template panel<V, I, NV>;
};
template <class P>
PanelFn pick_panel_of(const SparseMatrix& w, int nv) {
  if (nv == 4) return pick_typed<PanelOf<P, 4>>(w);
  if (nv == 2) return pick_typed<PanelOf<P, 2>>(w);
  return pick_typed<PanelOf<P, 1>>(w);
}

// ---- vector skeletons ----------------------------------------------------------------
//
// The row loops that the AVX2 and NEON paths share, written once over an ISA's
// primitives. Ops (defined in the ISA's own file, so its intrinsics never
// reach a generic file) provides:
//   Vec, kLanes                         vector type and its float lanes
//   zero(), broadcast(s)                 all lanes 0, all lanes s
//   load(p), store(p, v)                 kLanes floats (store: aligned)
//   add(a, b), sum(v)                    lane-wise a + b, horizontal sum
//   fma(a, b, c)                         a * b + c, one rounding
//   gather_fma(acc, v, i, x)             acc + widen(v[l]) * x[i[l]] for the kLanes lanes
//   kFmaChains                           independent FMA chains that keep the FMA units busy
//   panel_step<NV, C>(acc, v, i, xt)     for kLanes nonzeros j, with W = kLanes * NV:
//                                        acc[j % C][u] += widen(v[j]) * xt[i[j] * W + kLanes * u ...]
// x86 skeletons carry no target attribute: they are always inlined into an
// ISA file's kernel, which has one, and its primitives are inlined there.

// Batch 1 through gathers: two accumulators of kLanes nonzeros each per step,
// then one vector, then a scalar remainder (ldx, ldy unused).
template <class Ops, class V, class I>
__attribute__((always_inline)) inline void gather_rows(const SparseMatrix& w, const float* x, int64_t,
                                                       const float* bias, float* y, int64_t, int64_t r0,
                                                       int64_t r1) {
  constexpr int kLanes = Ops::kLanes;
  const V* val = static_cast<const V*>(w.values);
  const I* idx = static_cast<const I*>(w.col_idx);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t end = w.row_ptr[r + 1];
    int64_t k = w.row_ptr[r];
    typename Ops::Vec acc0 = Ops::zero(), acc1 = Ops::zero();
    for (; k + 2 * kLanes <= end; k += 2 * kLanes) {
      acc0 = Ops::gather_fma(acc0, val + k, idx + k, x);
      acc1 = Ops::gather_fma(acc1, val + k + kLanes, idx + k + kLanes, x);
    }
    if (k + kLanes <= end) {
      acc0 = Ops::gather_fma(acc0, val + k, idx + k, x);
      k += kLanes;
    }
    float tail = 0.0f;
    for (; k < end; ++k) tail += widen(val[k]) * x[idx[k]];
    y[r] = finish_row(w, bias, r, Ops::sum(Ops::add(acc0, acc1)) + tail);
  }
}

// Batched rows with W = kLanes * NV batch columns per panel (xt is [cols][W]):
// each nonzero times its x^T row into NV accumulators, kLanes nonzeros per
// step, then the remainder one by one. Rows go in blocks of kPanelRowBlock,
// whose results collect in a tile before they go to y as runs of consecutive
// outputs per batch row: one store per output straight into y (stride
// ldy * 4 bytes, a multiple of 4 KiB for the usual widths) lands a row's
// outputs in one L1 set: twice the time of a 768->3072 layer (AVX2, Zen 4).
constexpr int kPanelRowBlock = 16;

template <class Ops, class V, class I, int NV>
__attribute__((always_inline)) inline void panel_rows(const SparseMatrix& w, const void* panel, int64_t b0,
                                                      int64_t nb, const float* bias, float* y, int64_t ldy,
                                                      int64_t r0, int64_t r1, const PanelCarry& carry) {
  using Vec = typename Ops::Vec;
  constexpr int kLanes = Ops::kLanes, kW = kLanes * NV, kChains = std::max(1, Ops::kFmaChains / NV);
  const V* val = static_cast<const V*>(w.values);
  const I* idx = static_cast<const I*>(w.col_idx);
  const float* xt = static_cast<const float*>(panel);
  alignas(sizeof(Vec)) float tile[kPanelRowBlock][kW];
  for (int64_t rb = r0; rb < r1; rb += kPanelRowBlock) {
    const int rows = int(std::min<int64_t>(kPanelRowBlock, r1 - rb));
    for (int i = 0; i < rows; ++i) {
      const int64_t r = rb + i;
      // Narrow panels spread a row's nonzeros over several accumulator sets,
      // else each waits on the previous FMA's latency.
      Vec acc[kChains][NV];
      for (int c = 0; c < kChains; ++c)
        for (int u = 0; u < NV; ++u) acc[c][u] = Ops::zero();
      float* carried = carry.row(r - r0, kW);
      if (carry.resume)
        for (int u = 0; u < NV; ++u) acc[0][u] = Ops::load(carried + kLanes * u);
      const int64_t end = w.row_ptr[r + 1];
      int64_t k = w.row_ptr[r];
      for (; k + kLanes <= end; k += kLanes) Ops::template panel_step<NV, kChains>(acc, val + k, idx + k, xt);
      for (; k < end; ++k) {
        const Vec v = Ops::broadcast(widen(val[k]));
        const float* xr = xt + int64_t(idx[k]) * kW;
        for (int u = 0; u < NV; ++u) acc[0][u] = Ops::fma(v, Ops::load(xr + kLanes * u), acc[0][u]);
      }
      for (int c = 1; c < kChains; ++c)
        for (int u = 0; u < NV; ++u) acc[0][u] = Ops::add(acc[0][u], acc[c][u]);
      if (!carry.finish) {
        for (int u = 0; u < NV; ++u) Ops::store(carried + kLanes * u, acc[0][u]);
        continue;
      }
      const Vec scale = Ops::broadcast(w.row_scales != nullptr ? w.row_scales[r] : 1.0f);
      const Vec shift = Ops::broadcast(bias != nullptr ? bias[r] : 0.0f);
      for (int u = 0; u < NV; ++u) Ops::store(tile[i] + kLanes * u, Ops::fma(acc[0][u], scale, shift));
    }
    if (!carry.finish) continue;
    for (int64_t j = 0; j < nb; ++j) {
      float* out = y + (b0 + j) * ldy + rb;
      for (int i = 0; i < rows; ++i) out[i] = tile[i][j];
    }
  }
}

}  // namespace
}  // namespace slimtorch::spmm_paths
