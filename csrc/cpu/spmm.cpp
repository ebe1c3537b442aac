// Sparse (packed CSR) x dense products on the CPU. Layout and paths: see
// slimtorch/spmm.h. Every path accumulates in float32; half and int8 values
// are widened exactly before the multiply, int8 rows are scaled once at the end.
#include "slimtorch/spmm.h"

#include "slimtorch/qgemm.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "dispatch.h"
#include "half_rows.h"
#include "spmm_paths.h"

namespace slimtorch {
namespace {

using namespace spmm_paths;

// Per-row work that does not depend on the nonzero count (loop setup, the
// horizontal reduction, the store), in units of one nonzero. Used to balance
// threads on matrices with many short or empty rows.
constexpr int64_t kRowCost = 8;
// Work (nonzeros x batch columns) below which one more thread costs more than
// it saves, about the time one core needs for 2^18 multiply-adds through
// gathers (chosen with the spmm benchmark against nn.Linear on small MLPs).
constexpr int64_t kMinWorkPerThread = int64_t(1) << 18;
// The same for the gather kernels (batch 1 to kMaxGatherBatch, bitmap or
// not), where one nonzero costs about ten times a panel kernel's
// multiply-add: 2^13 nonzeros are a few times the cost of starting torch's
// OpenMP team (chosen with the spmm benchmark at batch 1).
constexpr int64_t kMinGatherWorkPerThread = int64_t(1) << 13;
// Target size of one transposed X panel (cols x W floats): half of a 1 MiB L2,
// so the panel and the streamed weights share L2.
constexpr int64_t kPanelBytes = int64_t(512) << 10;
// Panels (64-row tiles for int8_dynamic) per thread from which the batch
// goes panel-major (see panel_major).
constexpr int64_t kPanelsPerThread = 2;

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

// Runs body(i) for every i in [0, items) on up to n_threads threads that
// pull items from a shared counter: on a busy machine a thread that starts
// late (or is descheduled) leaves its share to the others instead of holding
// up the call.
template <class Body>
void pull_items(int n_threads, int64_t items, const Body& body) {
  const int parts = int(std::max<int64_t>(1, std::min<int64_t>(n_threads, items)));
  if (parts == 1) {
    for (int64_t i = 0; i < items; ++i) body(i);
    return;
  }
  std::atomic<int64_t> next{0};
  parallel_for(parts, parts, 1, [&](int64_t, int64_t, int) {
    for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < items;
         i = next.fetch_add(1, std::memory_order_relaxed))
      body(i);
  });
}

// Runs body(r0, r1) over a partition of the rows into ranges of about equal
// cost, on up to n_threads threads (fewer when the work is too small to
// share), kChunksPerThread ranges per thread on average (see pull_items).
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
  pull_items(parts, chunks, [&](int64_t c) {
    const int64_t r0 = c == 0 ? 0 : split_row(w, total * c / chunks);
    const int64_t r1 = c + 1 == chunks ? w.rows : split_row(w, total * (c + 1) / chunks);
    if (r0 < r1) body(r0, r1);
  });
}

struct GemvScalar {
  template <class V, class I>
  static constexpr GemvFn of = gemv_scalar_cols<V, I>;
};
struct PanelScalar {
  template <class V, class I>
  static constexpr PanelFn of = panel_scalar<V, I>;
};

// The gather kernel for up to `batch` columns; *columns says how many it takes.
GemvFn pick_gemv(const SparseMatrix& w, Isa isa, int64_t batch, int* columns) {
  *columns = 1;
#if SLIMTORCH_X86
  if (isa >= Isa::kAvx512) {
    *columns = int(std::min<int64_t>(batch, kMaxGatherBatch));
    return pick_gemv_avx512(w, *columns);
  }
  if (isa >= Isa::kAvx2) return pick_gemv_avx2(w);
#elif SLIMTORCH_ARM64
  if (isa >= Isa::kNeon) return pick_gemv_neon(w);
#endif
  (void)isa, (void)batch;
  return pick_typed<GemvScalar>(w);
}

// How x goes into panels for one call: W batch columns per panel, float32
// elements or (AVX-512, bfloat16 x, W >= 32) bfloat16 ones, and the kernel
// that reads them. bfloat16 panels hold the same values (x is widened
// exactly either way) in half the bytes each nonzero reads.
struct PanelPlan {
  PanelFn kernel = nullptr;
  int width = 0;
  bool bf16 = false;
  int64_t element_bytes() const { return bf16 ? 2 : 4; }
  int64_t panel_bytes(int64_t cols) const { return cols * width * element_bytes(); }
};

// The panels for this batch: the fewest vectors that cover the batch,
// capped so a panel (cols x W floats) stays near kPanelBytes.
PanelPlan pick_panel(const SparseMatrix& w, [[maybe_unused]] Isa isa, [[maybe_unused]] DType x_dtype,
                     int64_t batch, int64_t cols) {
  int lanes = 0;  // floats per vector; 0: the scalar panel
#if SLIMTORCH_X86
  if (isa >= Isa::kAvx2) lanes = isa >= Isa::kAvx512 ? 16 : 8;
#elif SLIMTORCH_ARM64
  if (isa >= Isa::kNeon) lanes = 4;
#endif
  if (lanes == 0) return {pick_typed<PanelScalar>(w), 8};
  int nv = 1;
  while (nv < 4 && int64_t(nv) * lanes < batch && int64_t(2 * nv) * lanes * cols * 4 <= kPanelBytes) nv *= 2;
  const int width = nv * lanes;
#if SLIMTORCH_X86
  if (isa >= Isa::kAvx512) {
    if (x_dtype == DType::kBFloat16 && nv >= 2) return {pick_panel_bf16_avx512(w, nv), width, true};
    return {pick_panel_avx512(w, nv), width};
  }
  return {pick_panel_avx2(w, nv), width};
#elif SLIMTORCH_ARM64
  return {pick_panel_neon(w, nv), width};
#else
  return {};  // unreachable: no vector lanes here
#endif
}

// Transposes columns [c0, c1) of float32 x ([batch][ldx]) into panels: panel
// p is [cols][W] floats holding batch columns p*W .. p*W+W-1, zero past the batch.
void build_panel_columns(const float* x, int64_t batch, int64_t ldx, int64_t cols, int width, float* xt,
                         int64_t c0, int64_t c1) {
#if SLIMTORCH_X86
  if (active_isa() >= Isa::kAvx512 && width % 16 == 0) {
    build_panels_avx512(x, batch, ldx, cols, width, xt, c0, c1);
    return;
  }
#endif
  const int64_t panels = (batch + width - 1) / width;
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
}

// Per-thread scratch, 64-byte aligned; grows, never shrinks, so a steady
// stream of calls does not pay for fresh pages each time. One call uses it at
// a time; buffers alive together take different slots.
enum ScratchSlot { kPanelSlot, kSumsSlot, kWidenedSlot, kBlocksSlot, kCarrySlot, kScratchSlots };
uint8_t* scratch_bytes(int64_t bytes, ScratchSlot slot = kPanelSlot) {
  static thread_local std::vector<uint8_t> buffers[kScratchSlots];
  std::vector<uint8_t>& buffer = buffers[slot];
  const size_t need = size_t(bytes) + 64;  // room to align to 64 bytes
  if (buffer.size() < need) buffer.assign(need, 0);
  const uintptr_t address = reinterpret_cast<uintptr_t>(buffer.data());
  return reinterpret_cast<uint8_t*>((address + 63) & ~uintptr_t(63));
}

// Batch 1 without a bitmap, average nonzeros per row below which the 8-lane
// AVX2 gathers beat the 16-lane AVX-512 ones (which also pay a longer
// horizontal sum per row); above it the two tie (spmm benchmark, int8 values).
constexpr int64_t kShortRowNnz = 128;

// Columns [c0, c1) of rows [r0, r1) of a 16-bit x, widened exactly, into
// rows of `out` (row stride ld_out, same column positions).
void widen_rows(const HalfConversions& half, const void* x, int64_t ldx, int64_t r0, int64_t r1, int64_t c0,
                int64_t c1, float* out, int64_t ld_out) {
  for (int64_t r = r0; r < r1; ++r)
    half.widen(static_cast<const uint16_t*>(x) + r * ldx + c0, c1 - c0, out + (r - r0) * ld_out + c0);
}

// Transposes x ([batch][ldx] of any float dtype, widened exactly) into the
// panels of build_panel_columns, or a bfloat16 x into bfloat16 panels
// (plan.bf16). Threads split the columns; a thread widens its columns of one
// panel's rows at a time (16-bit x into float32 panels).
void build_panels(const void* x, DType dtype, int64_t batch, int64_t ldx, int64_t cols, const PanelPlan& plan,
                  void* panels, int n_threads) {
  const HalfConversions half = half_conversions(dtype);  // 16-bit x
  const int width = plan.width;
  float* xt = static_cast<float*>(panels);
  // Blocks of 16 columns; a thread gets at least 32 of them (one thread below 512 columns).
  parallel_for(n_threads, (cols + 15) / 16, 32, [&](int64_t k0, int64_t k1, int) {
    const int64_t c0 = 16 * k0, c1 = std::min<int64_t>(cols, 16 * k1);
#if SLIMTORCH_X86
    if (plan.bf16) {
      build_panels_avx512(static_cast<const uint16_t*>(x), batch, ldx, cols, width, static_cast<uint16_t*>(panels),
                          c0, c1);
      return;
    }
#endif
    if (dtype == DType::kFloat32) {
      build_panel_columns(static_cast<const float*>(x), batch, ldx, cols, width, xt, c0, c1);
      return;
    }
    float* rows = reinterpret_cast<float*>(scratch_bytes(width * cols * int64_t(sizeof(float)), kWidenedSlot));
    for (int64_t b0 = 0; b0 < batch; b0 += width) {
      const int64_t nb = std::min<int64_t>(width, batch - b0);
      widen_rows(half, x, ldx, b0, b0 + nb, c0, c1, rows, cols);
      build_panel_columns(rows, nb, cols, cols, width, xt + b0 * cols, c0, c1);
    }
  });
}

// The output in y's dtype: float32 results go straight to y; for a 16-bit y
// they go to a float32 buffer and each row range is rounded once (nearest
// even) as soon as its sums are done, while they are still in cache.
class Output {
 public:
  Output(void* y, DType dtype, int64_t batch, int64_t rows)
      : y_(y),
        dtype_(dtype),
        half_(half_conversions(dtype)),
        batch_(batch),
        rows_(rows),
        sums_(dtype == DType::kFloat32
                  ? static_cast<float*>(y)
                  : reinterpret_cast<float*>(scratch_bytes(batch * rows * int64_t(sizeof(float)), kSumsSlot))) {}
  float* sums() const { return sums_; }
  // Batch rows [b0, b1) are final.
  void finish_batch(int64_t b0, int64_t b1) const {
    if (dtype_ == DType::kFloat32) return;
    half_.round(sums_ + b0 * rows_, (b1 - b0) * rows_, static_cast<uint16_t*>(y_) + b0 * rows_);
  }
  // Output rows [r0, r1) of every batch column are final.
  void finish(int64_t r0, int64_t r1) const {
    if (dtype_ == DType::kFloat32) return;
    for (int64_t b = 0; b < batch_; ++b)
      half_.round(sums_ + b * rows_ + r0, r1 - r0, static_cast<uint16_t*>(y_) + b * rows_ + r0);
  }

 private:
  void* y_;
  DType dtype_;
  HalfConversions half_;  // a 16-bit y's rounding
  int64_t batch_, rows_;
  float* sums_;  // y itself for float32 y
};

// ---- column blocks -------------------------------------------------------------
//
// Each nonzero reads a W-float row of the panel at its column. A wide layer's
// panel (cols x W floats: 768 KB at 3072 inputs and W = 64) is read from L2,
// and the multiply-adds wait on it. Cut into blocks of kBlockBytes, a panel
// block stays near the core while the nonzeros of every row in that block
// stream past it; row sums carry from block to block (PanelCarry). 90%
// sparse, 2 threads, Zen 4: 3072->768 at 2048 rows 1.15-1.2x, 4096->4096 at
// 1024 rows 1.2-1.4x.
constexpr int64_t kBlockBytes = int64_t(64) << 10;
// Fewest nonzeros per row and block, on average, for blocks to pay: each
// row of each block also loads and stores its W carried sums.
constexpr int64_t kMinBlockNonzeros = 8;
// Nonzeros below which one more thread costs more than it saves in the
// regrouping (a few times the cost of starting torch's OpenMP team).
constexpr int64_t kMinRegroupPerThread = int64_t(1) << 15;
// Panels per thread from which blocks pay for the regrouping (0.3 ms for a
// 90% sparse 768x3072 layer, Zen 4): about 0.15 ms saved per panel.
constexpr int64_t kBlockPanelsPerThread = 4;
// Columns per block that leave room for the widest panel (64 floats).
constexpr int64_t kNarrowBlockCols = kBlockBytes / (64 * int64_t(sizeof(float)));
// Columns from which the widest panel outgrows its share of L2 and blocks
// pay (at 768 columns they measured no faster, Zen 4).
constexpr int64_t kMinBlockedCols = kPanelBytes / (64 * int64_t(sizeof(float)));

// w's nonzeros regrouped by blocks of 2^block_shift columns, once per call:
// block b is a matrix of its own over columns [b << block_shift, ...)
// (renumbered from 0), each row's nonzeros in their order in w. One block,
// w itself, where blocks do not pay.
class ColumnBlocks {
 public:
  explicit ColumnBlocks(const SparseMatrix& w) : blocks_{w} {}
  ColumnBlocks(const SparseMatrix& w, int block_shift, int n_threads) : block_shift_(block_shift) {
    const int64_t count = ((w.cols - 1) >> block_shift) + 1;
    const int64_t nnz = w.row_ptr[w.rows];
    if (count < 2 || nnz / count < kMinBlockNonzeros * w.rows) {  // (also bounds the row_ptr copies by nnz)
      blocks_.push_back(w);
      return;
    }
    with_types(w, [&](auto value_tag, auto index_tag) {
      regroup<decltype(value_tag), decltype(index_tag)>(w, count, n_threads);
    });
  }
  int64_t count() const { return int64_t(blocks_.size()); }
  const SparseMatrix& operator[](int64_t b) const { return blocks_[b]; }
  int64_t first_column(int64_t b) const { return b << block_shift_; }

 private:
  // Counts each row's nonzeros per block (into the blocks' row_ptr), turns
  // the counts into offsets, then copies every row's nonzeros to their block.
  // Rows with ascending columns (all that slimtorch builds) find their block
  // boundaries by binary search and move as runs; others go one by one.
  template <class V, class I>
  void regroup(const SparseMatrix& w, int64_t count, int n_threads) {
    const int64_t nnz = w.row_ptr[w.rows], stride = w.rows + 1;
    const int64_t ptr_bytes = count * stride * int64_t(sizeof(int64_t));
    const int64_t val_bytes = (nnz * int64_t(sizeof(V)) + 63) & ~int64_t(63);
    uint8_t* scratch = scratch_bytes(ptr_bytes + val_bytes + nnz * int64_t(sizeof(I)), kBlocksSlot);
    auto* ptr = reinterpret_cast<int64_t*>(scratch);
    V* val = reinterpret_cast<V*>(scratch + ptr_bytes);
    I* idx = reinterpret_cast<I*>(scratch + ptr_bytes + val_bytes);
    const V* src_val = static_cast<const V*>(w.values);
    const I* src_idx = static_cast<const I*>(w.col_idx);
    std::vector<uint8_t> ascending(w.rows);
    const int64_t grain = std::max<int64_t>(1, kMinRegroupPerThread * w.rows / std::max<int64_t>(1, nnz));
    parallel_for(n_threads, w.rows, grain, [&](int64_t r0, int64_t r1, int) {
      for (int64_t r = r0; r < r1; ++r) {
        const I* begin = src_idx + w.row_ptr[r];
        const I* end = src_idx + w.row_ptr[r + 1];
        ascending[r] = std::is_sorted(begin, end);
        if (ascending[r]) {
          const I* from = begin;
          for (int64_t b = 0; b < count; ++b) {
            const I* to = b + 1 == count ? end : std::lower_bound(from, end, I(first_column(b + 1)));
            ptr[b * stride + r + 1] = to - from;
            from = to;
          }
          continue;
        }
        for (int64_t b = 0; b < count; ++b) ptr[b * stride + r + 1] = 0;
        for (const I* i = begin; i < end; ++i) ++ptr[(int64_t(*i) >> block_shift_) * stride + r + 1];
      }
    });
    std::vector<int64_t> base(count + 1, 0);  // block b's nonzeros start at base[b]
    for (int64_t b = 0; b < count; ++b) {
      int64_t* row_ptr = ptr + b * stride;
      row_ptr[0] = 0;
      for (int64_t r = 0; r < w.rows; ++r) row_ptr[r + 1] += row_ptr[r];
      base[b + 1] = base[b] + row_ptr[w.rows];
      SparseMatrix block = w;
      block.cols = std::min(int64_t(1) << block_shift_, w.cols - first_column(b));
      block.row_ptr = row_ptr;
      block.values = val + base[b];
      block.col_idx = idx + base[b];
      block.bitmap = nullptr;
      blocks_.push_back(block);
    }
    parallel_for(n_threads, w.rows, grain, [&](int64_t r0, int64_t r1, int) {
      std::vector<int64_t> next(count);  // where row r's next nonzero of each block goes
      for (int64_t r = r0; r < r1; ++r) {
        int64_t k = w.row_ptr[r];
        for (int64_t b = 0; b < count; ++b) next[b] = base[b] + ptr[b * stride + r];
        if (ascending[r]) {
          for (int64_t b = 0; b < count; ++b) {
            const int64_t n = ptr[b * stride + r + 1] - ptr[b * stride + r], shift = first_column(b);
            std::copy(src_val + k, src_val + k + n, val + next[b]);
            for (int64_t j = 0; j < n; ++j) idx[next[b] + j] = I(int64_t(src_idx[k + j]) - shift);
            k += n;
          }
          continue;
        }
        for (; k < w.row_ptr[r + 1]; ++k) {
          const int64_t b = int64_t(src_idx[k]) >> block_shift_, at = next[b]++;
          val[at] = src_val[k];
          idx[at] = I(int64_t(src_idx[k]) - first_column(b));
        }
      }
    });
  }

  int block_shift_ = 0;
  std::vector<SparseMatrix> blocks_;
};

// Panel-major: a thread builds one panel in its own scratch, where it stays
// in L2 while every weight row streams past it once. (Row ranges over shared
// panels read each whole panel back from L3 once per range.) Where column
// blocks pay, a thread goes block by block on the widest panels instead.
void panel_major(const SparseMatrix& w, const void* x, DType x_dtype, int64_t batch, int64_t ldx,
                 const float* bias, const Output& out, Isa isa, PanelPlan plan, int n_threads) {
  const PanelPlan block_plan = pick_panel(w, isa, x_dtype, batch, kNarrowBlockCols);
  // Panel widths are powers of two, and so are the block widths. Blocks
  // are sized for float32 panels whatever the plan: a bfloat16 x then sums
  // in the order a float32 x does, for results equal to the float32 entry
  // point's (spmm.h).
  const int block_shift = __builtin_ctzll(uint64_t(kBlockBytes / (block_plan.width * int64_t(sizeof(float)))));
  const bool blocks_pay =
      w.cols > kMinBlockedCols && batch >= kBlockPanelsPerThread * n_threads * block_plan.width;
  const ColumnBlocks blocks = blocks_pay ? ColumnBlocks(w, block_shift, n_threads) : ColumnBlocks(w);
  if (blocks.count() > 1) plan = block_plan;
  const int width = plan.width;
  const int64_t panels = (batch + width - 1) / width, x_size = dtype_size(x_dtype);
  pull_items(n_threads, panels, [&](int64_t p) {
    const int64_t b0 = p * width, nb = std::min<int64_t>(width, batch - b0);
    const uint8_t* x_rows = static_cast<const uint8_t*>(x) + b0 * ldx * x_size;
    void* xt = scratch_bytes(plan.panel_bytes(blocks[0].cols));
    PanelCarry carry;
    if (blocks.count() > 1)
      carry.sums = reinterpret_cast<float*>(scratch_bytes(w.rows * width * int64_t(sizeof(float)), kCarrySlot));
    for (int64_t b = 0; b < blocks.count(); ++b) {
      const SparseMatrix& block = blocks[b];
      build_panels(x_rows + blocks.first_column(b) * x_size, x_dtype, nb, ldx, block.cols, plan, xt, 1);
      carry.resume = b > 0;
      carry.finish = b + 1 == blocks.count();
      plan.kernel(block, xt, b0, nb, bias, out.sums(), w.rows, 0, w.rows, carry);
    }
    out.finish_batch(b0, b0 + nb);
  });
}

void forward(const SparseMatrix& w, const void* x_in, DType x_dtype, int64_t batch, int64_t ldx,
             const float* bias, const Output& out, int n_threads) {
  Isa isa = active_isa();
  float* const y = out.sums();
  bool multi_column_gather = false;  // gather passes over several batch columns
#if SLIMTORCH_X86
  if (batch == 1 && isa >= Isa::kAvx512 && w.bitmap == nullptr && w.row_ptr[w.rows] < kShortRowNnz * w.rows)
    isa = Isa::kAvx2;
  multi_column_gather = isa >= Isa::kAvx512;
#endif
  const bool gather = batch == 1 || (multi_column_gather && batch <= kMaxGatherBatch);
  // A 16-bit x: the gather paths (at most kMaxGatherBatch rows) read all rows
  // widened; the panel path widens the rows as it builds the panels.
  const float* x = static_cast<const float*>(x_in);
  if (x_dtype != DType::kFloat32 && gather) {
    float* widened = reinterpret_cast<float*>(scratch_bytes(batch * w.cols * int64_t(sizeof(float)), kWidenedSlot));
    widen_rows(half_conversions(x_dtype), x_in, ldx, 0, batch, 0, w.cols, widened, w.cols);
    x = widened;
    ldx = w.cols;
  }
#if SLIMTORCH_X86
  if (batch == 1 && isa >= Isa::kAvx512 && w.bitmap != nullptr) {
    const BitmapGemvFn gemv = pick_gemv_bitmap_avx512(w);
    for_row_ranges(w, 1, n_threads, [&](int64_t r0, int64_t r1) {
      gemv(w, x, bias, y, r0, r1);
      out.finish(r0, r1);
    }, kChunksPerThread, kMinGatherWorkPerThread);
    return;
  }
#endif
  if (gather) {
    for_row_ranges(w, batch, n_threads, [&](int64_t r0, int64_t r1) {
      for (int64_t b = 0; b < batch;) {
        int columns = 1;
        const GemvFn gemv = pick_gemv(w, isa, batch - b, &columns);
        gemv(w, x + b * ldx, ldx, bias, y + b * w.rows, w.rows, r0, r1);
        b += columns;
      }
      out.finish(r0, r1);
    }, kChunksPerThread, kMinGatherWorkPerThread);
    return;
  }
  const PanelPlan plan = pick_panel(w, isa, x_dtype, batch, w.cols);
  const int width = plan.width;
  const int64_t panels = (batch + width - 1) / width;
  if (panels >= kPanelsPerThread * n_threads) {
    panel_major(w, x_in, x_dtype, batch, ldx, bias, out, isa, plan, n_threads);
    return;
  }
  uint8_t* xt = scratch_bytes(panels * plan.panel_bytes(w.cols));
  build_panels(x_in, x_dtype, batch, ldx, w.cols, plan, xt, n_threads);
  for_row_ranges(w, batch, n_threads, [&](int64_t r0, int64_t r1) {
    for (int64_t p = 0; p < panels; ++p) {
      const int64_t b0 = p * width;
      plan.kernel(w, xt + p * plan.panel_bytes(w.cols), b0, std::min<int64_t>(width, batch - b0), bias, y, w.rows,
                  r0, r1, {});
    }
    out.finish(r0, r1);
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

// Only reached where spmm_dynamic_supported (x86 with AVX-512 VNNI).
void forward_dynamic(const SparseMatrix& w, const void* x, DType x_dtype, int64_t batch, int64_t ldx,
                     const float* bias, const Output& out, int n_threads) {
#if SLIMTORCH_X86
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
  quantize_rows_u8(x, x_dtype, batch, cols, ldx, a, cols, row_scale, row_zp, n_threads);
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
  if (tiles >= kPanelsPerThread * n_threads) {
    // Tile-major, as the float panels (see forward): each tile stays in L2
    // while every weight row streams past it once.
    pull_items(n_threads, tiles, [&](int64_t t) {
      const int64_t b0 = t * kDynamicTile, nb = std::min<int64_t>(kDynamicTile, batch - b0);
      dynamic_rows_vnni(w, xt + t * cols * kDynamicTile, lane_zp + b0, lane_scale + b0, rowsum, bias, out.sums(),
                        b0, nb, 0, w.rows);
      out.finish_batch(b0, b0 + nb);
    });
    return;
  }
  // Two ranges per thread, not eight: every range reads every tile (cols x 64
  // bytes) once more from L3, which costs more than the balance gained.
  for_row_ranges(w, batch, n_threads, [&](int64_t r0, int64_t r1) {
    for (int64_t t = 0; t < tiles; ++t)
      dynamic_rows_vnni(w, xt + t * cols * kDynamicTile, lane_zp + t * kDynamicTile, lane_scale + t * kDynamicTile,
                        rowsum, bias, out.sums(), t * kDynamicTile,
                        std::min<int64_t>(kDynamicTile, batch - t * kDynamicTile), r0, r1);
    out.finish(r0, r1);
  }, 2);
#else
  (void)w, (void)x, (void)x_dtype, (void)batch, (void)ldx, (void)bias, (void)out, (void)n_threads;
#endif
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

// The argument checks of both forward entry points, then run() (forward or
// forward_dynamic) when there is work.
template <class Run>
Status checked_forward(const SparseMatrix& w, const void* x, int64_t batch, int64_t ldx, const void* y,
                       int n_threads, const Run& run) {
  if (!valid_matrix(w) || batch < 0 || n_threads < 1 || !batch_fits(w, batch, ldx))
    return Status::kInvalidArgument;
  if (batch == 0 || w.rows == 0) return Status::kOk;
  if (y == nullptr || (w.cols > 0 && x == nullptr) || (batch > 1 && ldx < w.cols))
    return Status::kInvalidArgument;
  run();
  return Status::kOk;
}

}  // namespace

Status spmm_forward(const SparseMatrix& w, const float* x, int64_t batch, int64_t ldx,
                    const float* bias, float* y, int n_threads) {
  return spmm_forward(w, x, DType::kFloat32, batch, ldx, bias, y, DType::kFloat32, n_threads);
}

Status spmm_forward(const SparseMatrix& w, const void* x, DType x_dtype, int64_t batch, int64_t ldx,
                    const float* bias, void* y, DType y_dtype, int n_threads) {
  return checked_forward(w, x, batch, ldx, y, n_threads, [&] {
    forward(w, x, x_dtype, batch, ldx, bias, Output(y, y_dtype, batch, w.rows), n_threads);
  });
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
  const bool matrix_fits = w.value_type == SparseValues::kInt8 && !w.wide_idx && w.row_scales != nullptr &&
                           w.cols <= kQgemmMaxK;
#if SLIMTORCH_X86
  return matrix_fits && active_isa() >= Isa::kAvx512 && cpu_has_avx512_vnni();
#else
  return matrix_fits && false;  // the x86 VNNI kernel only
#endif
}

Status spmm_forward_dynamic(const SparseMatrix& w, const float* x, int64_t batch, int64_t ldx,
                            const float* bias, float* y, int n_threads) {
  return spmm_forward_dynamic(w, x, DType::kFloat32, batch, ldx, bias, y, DType::kFloat32, n_threads);
}

Status spmm_forward_dynamic(const SparseMatrix& w, const void* x, DType x_dtype, int64_t batch, int64_t ldx,
                            const float* bias, void* y, DType y_dtype, int n_threads) {
  if (!spmm_dynamic_supported(w)) return Status::kInvalidArgument;
  return checked_forward(w, x, batch, ldx, y, n_threads, [&] {
    forward_dynamic(w, x, x_dtype, batch, ldx, bias, Output(y, y_dtype, batch, w.rows), n_threads);
  });
}

}  // namespace slimtorch
