// int8 GEMM and bf16 weight-only linear on Intel AMX tiles (contract: qgemm_amx.h;
// layout: slimtorch/qgemm.h).
//
// tdpbusd multiplies a 16-row x 64-byte uint8 tile A by an int8 tile B of 16
// rows x 64 bytes whose row g holds, for 16 output columns, the 4 weights of
// k-group g: exactly one 16-column block of the packed weight over 16
// consecutive groups (1 KB, row stride 64). So the weight is read in place,
// with no new format. C is 16 x 16 int32.
//
// Register blocking: 2 x 2 C tiles (32 rows x 32 columns) with 2 A and 2 B
// tiles: four tdpbusd per four tile loads, all eight tile registers.
//   C(i, j) = tmm(2i + j), A(i) = tmm(4 + i), B(j) = tmm(6 + j)
// Row tails use a tile configuration with fewer rows (tiles load and store
// only their configured rows); column tails compute zero columns (the packed
// weight is zero there) that the caller never reads.
//
// K tails: a K step covers 64 bytes of every A row (rows are at least that
// long: their stride is a multiple of 64). When K is not a multiple of 64 the
// last step's B tiles are staged copies, zero past the weight's last group,
// so whatever A holds past K is multiplied by zero: the sums stay exact.
//
// Tile state belongs to a thread: every chunk of parallel_for loads the
// configuration on the thread that runs it and releases the tiles at its end.
#include "qgemm_amx.h"

#include "half_rows.h"
#include "line_aligned.h"
#include "qgemm_amx_config.h"
#include "qgemm_paths.h"

// GCC 12 flags its own _mm512_undefined_*() placeholders in the AVX-512
// intrinsic headers as uninitialized (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#if defined(SLIMTORCH_AMX_EMULATION)
#include "amx_emulation.h"  // test builds: the tile intrinsics below run in software
#endif

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>

namespace slimtorch {
namespace {

// The weight-only bf16 epilogue (qgemm_paths::float_epilogue_bf16_avx512bf16) reads the tiles' accumulator rows.
static_assert(kAmxAccStride == qgemm_paths::kMaxTileCols, "accumulator rows as the float epilogues read them");
constexpr int64_t kStepBytes = 64;                 // K bytes per tile step (A tile width)
constexpr int64_t kGroupBytes = 64;                // one packed k-group of 16 columns
constexpr int64_t kTileBytes = 16 * kGroupBytes;   // one B tile: 16 groups
constexpr int kBlockRows = kAmxBlockRows;
constexpr int kBlockCols = 32;
// Integer GEMM blocking: a 32-row block's K chunk (32 x kIntChunkSteps * 64
// bytes, in L1 or L2) meets the column tiles of a weight panel of at most
// kPanelWeightBytes (in L2) streamed past it. Chunks are long: each one ends
// by storing the accumulator tiles, which first waits for the tile unit to
// drain, and that costs more than reading the rows from L2 instead of L1.
constexpr int64_t kIntChunkSteps = 64;
constexpr int64_t kPanelWeightBytes = int64_t(1) << 20;
constexpr int64_t kMaxGroupTiles = 4;
// Row blocks per thread from which rows_first pays with a weight that fits
// L2 (kPanelWeightBytes), and with any weight.
constexpr int64_t kMinRowTilesPerThread = 4;
constexpr int64_t kManyRowTiles = 16;
// bf16 blocking: the staged B tiles of a column tile's K chunk stay in L1
// while the row blocks of a row panel pass over them; the panel's bf16 rows
// (at most kPanelRowBytes, at most kMaxPanelTiles * 32 rows) stay in L2
// while the column tiles pass.
constexpr int64_t kPanelRowBytes = int64_t(3) << 19;
constexpr int64_t kMaxPanelTiles = 16;
// Fewer rows than this leave the tiles mostly empty; the VNNI kernels win.
constexpr int64_t kMinRows = 16;
// Integer GEMMs with smaller weights (n * k) lose to the VNNI kernels: the
// per-call tile configuration, the aligned copy of the rows and the K tail
// staging cost more than the tiles save (weight-only keeps no such limit:
// its bf16 tiles replace a float kernel and win from 16 rows).
std::atomic<int64_t> min_int_weight{int64_t(1) << 16};
// Below this many multiply-adds a chunk is not worth a thread wake-up.
constexpr int64_t kMinMacsPerChunk = int64_t(1) << 20;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Loads the configuration for blocks whose first row tile has rows0 rows and
// second rows1 (0: the second row of tiles is not used).
class TileState {
 public:
  ~TileState() {
    if (rows0_ >= 0) _tile_release();
  }
  void configure(int rows0, int rows1) {
    if (rows0 == rows0_ && rows1 == rows1_) return;
    AmxTileConfig config;
    config.set(0, rows0);
    config.set(1, rows0);
    config.set(2, rows1);
    config.set(3, rows1);
    config.set(4, rows0);
    config.set(5, rows1);
    config.set(6, 16);
    config.set(7, 16);
    _tile_loadconfig(&config);
    rows0_ = rows0;
    rows1_ = rows1;
  }

 private:
  int rows0_ = -1, rows1_ = -1;
};

// Requests the 16 cache lines of a 1 KB tile into L1.
inline void prefetch_tile(const void* tile) {
  const char* line = static_cast<const char*>(tile);
  for (int i = 0; i < 16; ++i) _mm_prefetch(line + i * 64, _MM_HINT_T0);
}

// tmm c += tmm a . tmm b: tdpbf16ps (bf16 pairs, float sums) when bf16,
// else tdpbusd (u8 x s8 quads, int32 sums). A macro because the intrinsics
// are: they paste the tile numbers into the instruction as literals.
#define SLIMTORCH_TILE_DOT(bf16, c, a, b) \
  do {                                    \
    if (bf16)                             \
      _tile_dpbf16ps(c, a, b);            \
    else                                  \
      _tile_dpbusd(c, a, b);              \
  } while (0)

// Vector work to run while the tile unit multiplies: run(ctx, s, steps) after
// the tile instructions of each step s are issued.
struct SideWork {
  void (*run)(const void* ctx, int64_t s, int64_t steps);
  const void* ctx;
};

// One block: RT row tiles x CT column tiles over `steps` K steps (tiles of
// 64-byte rows: 64 uint8 x int8 products per row for tdpbusd, or 32 bf16
// pairs for tdpbf16ps). b[j] is the first B tile of column tile j (the next
// ones follow 1 KB apart); b_last[j] its last step's tile (in place, or a
// staged zero-padded copy when reading in place would leave the buffer).
// acc holds int32 (tdpbusd) or float (tdpbf16ps) sums; with accumulate they
// add to those already there (K chunks). side (may be null) runs between steps.
template <int RT, int CT, bool kBf16>
void tile_block(const void* a_rows, int64_t lda, int64_t steps, const void* const* b_tiles,
                const void* const* b_last_tiles, void* acc_block, bool accumulate, const SideWork* side) {
  const auto* a = static_cast<const uint8_t*>(a_rows);
  const int8_t* const b[2] = {static_cast<const int8_t*>(b_tiles[0]), static_cast<const int8_t*>(b_tiles[1])};
  const void* const* b_last = b_last_tiles;
  auto* acc = static_cast<int32_t*>(acc_block);
  constexpr int64_t kAccBytes = kAmxAccStride * sizeof(int32_t);
  if (accumulate) {
    _tile_loadd(0, acc, kAccBytes);
    if (CT == 2) _tile_loadd(1, acc + 16, kAccBytes);
    if (RT == 2) _tile_loadd(2, acc + 16 * kAmxAccStride, kAccBytes);
    if (RT == 2 && CT == 2) _tile_loadd(3, acc + 16 * kAmxAccStride + 16, kAccBytes);
  } else {
    _tile_zero(0);
    if (CT == 2) _tile_zero(1);
    if (RT == 2) _tile_zero(2);
    if (RT == 2 && CT == 2) _tile_zero(3);
  }
  const uint8_t* a1 = a + 16 * lda;
  const auto b_tile = [&](int j, int64_t s) -> const void* {
    return s == steps - 1 ? b_last[j] : b[j] + s * kTileBytes;
  };
  for (int64_t s = 0; s < steps; ++s) {
    // The next step's B tiles, into L1 while this step multiplies.
    if (s + 1 < steps) {
      prefetch_tile(b_tile(0, s + 1));
      if (CT == 2) prefetch_tile(b_tile(1, s + 1));
    }
    _tile_loadd(6, b_tile(0, s), kGroupBytes);
    if (CT == 2) _tile_loadd(7, b_tile(1, s), kGroupBytes);
    _tile_loadd(4, a + s * kStepBytes, lda);
    SLIMTORCH_TILE_DOT(kBf16, 0, 4, 6);
    if (CT == 2) SLIMTORCH_TILE_DOT(kBf16, 1, 4, 7);
    if (RT == 2) {
      _tile_loadd(5, a1 + s * kStepBytes, lda);
      SLIMTORCH_TILE_DOT(kBf16, 2, 5, 6);
      if (CT == 2) SLIMTORCH_TILE_DOT(kBf16, 3, 5, 7);
    }
    if (side != nullptr) side->run(side->ctx, s, steps);
  }
  _tile_stored(0, acc, kAccBytes);
  if (CT == 2) _tile_stored(1, acc + 16, kAccBytes);
  if (RT == 2) _tile_stored(2, acc + 16 * kAmxAccStride, kAccBytes);
  if (RT == 2 && CT == 2) _tile_stored(3, acc + 16 * kAmxAccStride + 16, kAccBytes);
}

// tile_block for blocks of 1 or 2 row tiles and 1 or 2 column tiles: [rows - 1][cols - 1].
using BlockFn = void (*)(const void*, int64_t, int64_t, const void* const*, const void* const*, void*, bool,
                         const SideWork*);
const BlockFn kBlocks[2][2] = {{tile_block<1, 1, false>, tile_block<1, 2, false>},
                               {tile_block<2, 1, false>, tile_block<2, 2, false>}};
const BlockFn kBf16Blocks[2][2] = {{tile_block<1, 1, true>, tile_block<1, 2, true>},
                                   {tile_block<2, 1, true>, tile_block<2, 2, true>}};

}  // namespace

bool amx_int_gemm_wanted(int64_t m, int64_t n, int64_t k) {
  return m >= kMinRows && n * k >= min_int_weight.load(std::memory_order_relaxed) && active_isa() == Isa::kAmx;
}

void set_amx_min_int_weight(int64_t elements) { min_int_weight.store(elements, std::memory_order_relaxed); }

// One work item's columns: 16-column blocks nb0 and (when blocks == 2)
// nb0 + 1, output columns [c0, c0 + cols).
struct ColumnTile {
  int64_t nb0;
  int blocks;
  int64_t c0;
  int64_t cols;
};

// The work split of the bf16 tile GEMM. Column tiles come first, so each thread
// streams its own slice of the weight; rows are split into panels only when
// there are too few column tiles to feed every thread. K runs in chunks of at
// most max_chunk_steps steps of equal length. Each worker thread makes its
// scratch once (make_scratch()), then for every row panel, work item and K
// chunk calls chunk(scratch, tile, s0, steps_in_chunk, first_row_tile,
// last_row_tile, panel_first_row_tile).
template <typename MakeScratch, typename Chunk>
void for_each_tile_chunk(int64_t m, int64_t n, int64_t k, int64_t steps, int64_t max_chunk_steps, int n_threads,
                         const MakeScratch& make_scratch, const Chunk& chunk) {
  const int64_t n_blocks = ceil_div(n, 16);
  const int64_t col_tiles = ceil_div(n, kBlockCols);
  const int64_t row_tiles = ceil_div(m, kBlockRows);
  int64_t panels = 1;
  if (col_tiles < 2 * int64_t(n_threads))
    panels = std::min(row_tiles, ceil_div(2 * int64_t(n_threads), col_tiles));
  const int64_t macs_per_item = ceil_div(m, panels) * kBlockCols * std::max<int64_t>(k, 1);
  const int64_t grain = std::max<int64_t>(1, kMinMacsPerChunk / macs_per_item);
  const int64_t chunk_steps = ceil_div(steps, ceil_div(steps, max_chunk_steps));
  const int64_t panel_tiles =
      std::clamp<int64_t>(kPanelRowBytes / (kBlockRows * steps * kStepBytes), 1, kMaxPanelTiles);
  parallel_for(n_threads, col_tiles * panels, grain, [&](int64_t begin, int64_t end, int) {
    auto scratch = make_scratch();
    for (int64_t panel_first = 0; panel_first < row_tiles; panel_first += panel_tiles) {
      const int64_t panel_last = std::min(row_tiles, panel_first + panel_tiles);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t col_tile = item / panels, panel = item % panels;
        const int64_t first = std::max(panel_first, row_tiles * panel / panels);
        const int64_t last = std::min(panel_last, row_tiles * (panel + 1) / panels);
        if (first >= last) continue;
        const int64_t nb0 = 2 * col_tile;
        const ColumnTile tile{nb0, int(std::min<int64_t>(2, n_blocks - nb0)), nb0 * 16,
                              std::min<int64_t>(kBlockCols, n - nb0 * 16)};
        for (int64_t s0 = 0; s0 < steps; s0 += chunk_steps)
          chunk(scratch, tile, s0, std::min(chunk_steps, steps - s0), first, last, panel_first);
      }
    }
  });
}

// Calls block(m0, rows, two_row_tiles, acc) for row tiles [first, last) of a
// panel, with the tile configuration set for the block's rows; acc is the
// block's part of the panel's accumulators.
template <typename Acc, typename Block>
void for_each_row_block(TileState& tiles, int64_t m, int64_t first, int64_t last, int64_t panel_first, Acc* panel_acc,
                        const Block& block) {
  for (int64_t t = first; t < last; ++t) {
    const int64_t m0 = t * kBlockRows;
    const int rows = int(std::min<int64_t>(kBlockRows, m - m0));
    const int rows0 = std::min(rows, 16), rows1 = rows - rows0;
    tiles.configure(rows0, rows1);
    block(m0, rows, rows1 > 0, panel_acc + (t - panel_first) * kBlockRows * kAmxAccStride);
  }
}

// The work split of the integer GEMM. The weight is cut into column panels
// small enough to stay in L2 (kPanelWeightBytes), as many as the threads or
// a multiple of them so that every thread gets the same share; rows are
// split only when there are fewer panels than threads. Each thread then
// walks its rows block by block: a block's rows (one K chunk of them) meet
// every column tile of the panel, streamed from L2 in order. Few
// rows (at most kMaxGroupTiles blocks) go the other way round as a group:
// each weight chunk, read once from memory, serves all of them.
//
// With rows_first (amx_int_gemm_prepares_rows) each thread instead takes a
// row part and every panel: it prepares (quantizes) its own rows and
// multiplies them while they are still in its caches, with no second
// fork and join, at the price of every thread reading the whole weight.
struct IntSplit {
  int64_t col_tiles;    // 32-column tiles of the whole output
  int64_t panels;       // column panels
  int64_t panel_tiles;  // the most column tiles in one panel
  int64_t row_parts;    // row ranges per panel
  int64_t group_tiles;  // row blocks that share each weight chunk
  bool rows_first;      // a work unit is a row part with all panels, else one (panel, part)
};

IntSplit split_int_work(int64_t m, int64_t n, int64_t k, int n_threads, bool rows_first) {
  const int64_t col_tiles = ceil_div(n, kBlockCols);
  const int64_t row_tiles = ceil_div(m, kBlockRows);
  const int64_t threads = std::max<int64_t>(n_threads, 1);
  const int64_t weight_panels = std::max<int64_t>(ceil_div(col_tiles * kBlockCols * k, kPanelWeightBytes), 1);
  int64_t panels = std::min(col_tiles, weight_panels);
  int64_t row_parts = std::min(row_tiles, threads);
  if (!rows_first) {
    panels = std::min(col_tiles, ceil_div(panels, threads) * threads);
    row_parts = panels >= threads ? 1 : std::min(row_tiles, ceil_div(threads, panels));
  }
  const int64_t part_tiles = ceil_div(row_tiles, row_parts);
  return {col_tiles, panels, ceil_div(col_tiles, panels), row_parts, part_tiles <= kMaxGroupTiles ? part_tiles : 1,
          rows_first};
}

bool amx_int_gemm_prepares_rows(int64_t m, int64_t n, int64_t k, int n_threads) {
  // Every thread reads the whole weight: worth it where each thread has rows
  // enough to share that read, and the weight fits L2 or the rows are many.
  // Measured, 2 threads, ops.qlinear_dynamic with the caches flushed before
  // every call (as a layer's weight is in a model), float32 / bf16 in/out:
  // 2048 x 768 -> 768 1.51-1.53 / 1.29-1.52 -> 1.18-1.22 / 1.03-1.16 ms,
  // 512 rows 0.40-0.42 / 0.34-0.37 -> 0.33-0.35 / 0.30-0.32 ms, 2048 x 3072
  // -> 768 4.40-4.47 / 3.78-3.85 -> 3.92-4.12 / 3.27-3.46 ms; but at 128
  // rows (2 blocks per thread) 384 -> 1536 float32 0.156-0.164 -> 0.17-0.23.
  const int64_t threads = std::max(n_threads, 1);
  const int64_t row_tiles_per_thread = ceil_div(m, kBlockRows) / threads;
  return threads > 1 && k > 0 && row_tiles_per_thread >= kMinRowTilesPerThread &&
         (n * k <= kPanelWeightBytes || row_tiles_per_thread >= kManyRowTiles);
}

void amx_int_gemm(const uint8_t* a, int64_t m, int64_t k, int64_t lda, const int8_t* packed,
                  int64_t n, int n_threads, const AmxFinish& finish, const AmxPrepareRows* prepare) {
  if (m <= 0 || n <= 0) return;
  const int64_t steps = std::max<int64_t>(ceil_div(k, kStepBytes), 1);
  // Rows starting on cache lines (see qgemm_amx.h), zero-padded to whole K
  // steps: other rows are copied into such rows, all of them first (so rows
  // that prepare would make are made first too).
  const bool in_place = k > 0 && ((reinterpret_cast<uintptr_t>(a) | uintptr_t(lda)) & (kAmxRowAlign - 1)) == 0;
  if (prepare != nullptr && !in_place) {
    (*prepare)(0, m);
    prepare = nullptr;
  }
  LineAlignedArray<uint8_t> padded;
  if (!in_place) {
    const int64_t width = steps * kStepBytes;
    padded.reset(size_t(m * width));
    uint8_t* rows = padded.get();
    for (int64_t r = 0; r < m; ++r) {
      if (k > 0) std::memcpy(rows + r * width, a + r * lda, size_t(k));
      std::memset(rows + r * width + k, 0, size_t(width - k));
    }
    a = rows;
    lda = width;
  }
  const int64_t block_stride = k / 4 * kGroupBytes;  // bytes per 16-column block
  const int64_t n_blocks = ceil_div(n, 16);
  const IntSplit split = split_int_work(m, n, k, n_threads, prepare != nullptr);
  const int64_t chunk_steps = ceil_div(steps, ceil_div(steps, kIntChunkSteps));
  // Accumulators: one block per row block of the group and column tile of
  // the panel when K has several chunks (their sums add up there), else two
  // that alternate: a block's epilogue runs while the next block multiplies.
  const bool k_chunks = steps > chunk_steps;
  const int64_t acc_blocks = k_chunks ? split.group_tiles * split.panel_tiles : 2;
  const int64_t macs_per_item = ceil_div(m, split.row_parts) * split.panel_tiles * kBlockCols * steps * kStepBytes;
  const int64_t units = split.rows_first ? split.row_parts : split.panels * split.row_parts;
  const int64_t grain =
      split.rows_first ? 1 : std::max<int64_t>(1, kMinMacsPerChunk / std::max<int64_t>(macs_per_item, 1));
  const int64_t row_tiles = ceil_div(m, kBlockRows);
  // The first and the last B tile of 16-column block nb's K chunk [s0, s0 +
  // chunk): read in place, except a last tile that would reach past the
  // block (K not a multiple of 64), staged zero-padded in `staged`.
  const auto weight_tiles = [&](int64_t nb, int64_t s0, int64_t chunk, int8_t* staged, const void** first,
                                const void** last) {
    const int64_t block = nb * block_stride;
    const int64_t last_tile = block + (s0 + chunk - 1) * kTileBytes;
    *first = packed + block + s0 * kTileBytes;
    if (s0 + chunk < steps || k == steps * kStepBytes) {
      *last = packed + last_tile;
      return;
    }
    const int64_t own = std::max<int64_t>(block + block_stride - last_tile, 0);
    if (own > 0) std::memcpy(staged, packed + last_tile, size_t(own));
    std::memset(staged + own, 0, size_t(kTileBytes - own));
    *last = staged;
  };
  // A finished block whose epilogue is spread over the steps of the next.
  struct Pending {
    const AmxFinish* finish;
    int64_t m0, c0, cols;
    int rows;
    const int32_t* acc;
    void rows_part(int64_t part, int64_t parts) const {
      const int r0 = int(rows * part / parts), r1 = int(rows * (part + 1) / parts);
      if (r1 > r0) (*finish)(m0 + r0, r1 - r0, c0, cols, acc + r0 * kAmxAccStride);
    }
  };
  const auto run_pending = [](const void* ctx, int64_t s, int64_t parts) {
    static_cast<const Pending*>(ctx)->rows_part(s, parts);
  };
  parallel_for(n_threads, units, grain, [&](int64_t begin, int64_t end, int) {
    TileState tiles;
    LineAlignedArray<int32_t> acc_storage(size_t(acc_blocks * kBlockRows * kAmxAccStride));
    alignas(64) int8_t staged[2][kTileBytes];
    Pending pending{&finish, 0, 0, 0, 0, nullptr};
    const SideWork side{run_pending, &pending};
    int64_t next_slot = 0;
    // Row tiles [first_row_tile, last_row_tile) against the column tiles of `panel`.
    const auto multiply = [&](int64_t panel, int64_t first_row_tile, int64_t last_row_tile) {
      const int64_t first_col_tile = split.col_tiles * panel / split.panels;
      const int64_t last_col_tile = split.col_tiles * (panel + 1) / split.panels;
      for (int64_t g0 = first_row_tile; g0 < last_row_tile; g0 += split.group_tiles) {
        const int64_t g1 = std::min(last_row_tile, g0 + split.group_tiles);
        for (int64_t s0 = 0; s0 < steps; s0 += chunk_steps) {
          const int64_t chunk = std::min(chunk_steps, steps - s0);
          const bool final_chunk = s0 + chunk == steps;
          for (int64_t col_tile = first_col_tile; col_tile < last_col_tile; ++col_tile) {
            const int64_t nb0 = 2 * col_tile;
            const int blocks = int(std::min<int64_t>(2, n_blocks - nb0));
            const void* b[2] = {packed, packed};
            const void* b_last[2] = {packed, packed};
            for (int j = 0; j < blocks; ++j) weight_tiles(nb0 + j, s0, chunk, staged[j], &b[j], &b_last[j]);
            for (int64_t t = g0; t < g1; ++t) {
              const int64_t m0 = t * kBlockRows;
              const int rows = int(std::min<int64_t>(kBlockRows, m - m0));
              const int rows0 = std::min(rows, 16), rows1 = rows - rows0;
              tiles.configure(rows0, rows1);
              const int64_t slot =
                  k_chunks ? (t - g0) * split.panel_tiles + col_tile - first_col_tile : (next_slot ^= 1);
              int32_t* acc = acc_storage.get() + slot * kBlockRows * kAmxAccStride;
              kBlocks[rows1 > 0][blocks - 1](a + m0 * lda + s0 * kStepBytes, lda, chunk, b, b_last, acc, s0 > 0,
                                             pending.acc != nullptr ? &side : nullptr);
              pending.acc = nullptr;
              if (final_chunk)
                pending = {&finish, m0, nb0 * 16, std::min<int64_t>(kBlockCols, n - nb0 * 16), rows, acc};
            }
          }
        }
      }
    };
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t part = split.rows_first ? unit : unit % split.row_parts;
      const int64_t first_row_tile = row_tiles * part / split.row_parts;
      const int64_t last_row_tile = row_tiles * (part + 1) / split.row_parts;
      if (!split.rows_first) {
        multiply(unit / split.row_parts, first_row_tile, last_row_tile);
        continue;
      }
      (*prepare)(first_row_tile * kBlockRows, std::min(m, last_row_tile * kBlockRows));  // rows_first: given
      for (int64_t panel = 0; panel < split.panels; ++panel) multiply(panel, first_row_tile, last_row_tile);
    }
    if (pending.acc != nullptr) pending.rows_part(0, 1);
  });
}

// ---- weight-only linear on bf16 tiles -----------------------------------------------
//
// tdpbf16ps multiplies A (16 rows x 32 bf16) by B (16 rows x 16 columns x 2
// bf16: row p holds k = 2p, 2p + 1 of every column) into 16 x 16 float32. A
// packed k-group (16 columns x 4 int8) is two such B rows; they are staged
// per (column tile, K chunk) and reused by every row block of the row panel.

namespace {

constexpr int64_t kBf16StepK = 32;       // k per bf16 tile step
constexpr int64_t kBf16ChunkSteps = 12;  // staged B per column tile: 2 x 12 KB

}  // namespace

bool amx_weight_only_wanted(int64_t m, int64_t k) {
  // The same row count as the AVX512-BF16 tiles (weight_only_bf16_min_rows).
  return m >= weight_only_bf16_min_rows() && k > 0 && active_isa() == Isa::kAmx;
}

void amx_weight_only(const void* x, DType x_dtype, int64_t m, int64_t k, int64_t ldx, const int8_t* packed,
                     const float* w_scale, const float* bias, int64_t n, void* y, DType y_dtype, int64_t ldy,
                     int n_threads) {
  if (m <= 0 || n <= 0 || k <= 0) return;
  const int64_t steps = ceil_div(k, kBf16StepK);
  const int64_t width = steps * kBf16StepK;  // bf16 values per staged row (128-byte multiple)
  // bf16 rows of whole K steps that start on cache lines (see kAmxRowAlign)
  // are the tiles' A rows as they are; other x is staged as such rows.
  const uint16_t* xb = static_cast<const uint16_t*>(x);
  int64_t ldb = ldx;  // elements
  LineAlignedArray<uint16_t> xb_storage;
  if (x_dtype != DType::kBFloat16 || width != k ||
      ((reinterpret_cast<uintptr_t>(x) | uintptr_t(ldx * 2)) & (kAmxRowAlign - 1))) {
    xb_storage.reset(size_t(m * width));
    uint16_t* const staged = xb_storage.get();
    parallel_for(n_threads, m, std::max<int64_t>(1, (int64_t(1) << 15) / width),
                 [&](int64_t begin, int64_t end, int) {
                   qgemm_paths::rows_to_bf16_avx512(x, x_dtype, ldx, k, width, staged, begin, end);
                 });
    xb = staged;
    ldb = width;
  }

  const int64_t groups = ceil_div(k, 4);
  const int64_t block_stride = groups * kGroupBytes;
  struct Scratch {
    TileState tiles;
    LineAlignedArray<float> panel_acc{size_t(kMaxPanelTiles * kBlockRows * kAmxAccStride)};
    // B tiles of one K chunk of the column tile: [column block][step][16 rows][64 bytes].
    LineAlignedArray<uint8_t> staged_tiles{size_t(2 * kBf16ChunkSteps * kTileBytes)};
  };
  const HalfConversions y_half = half_conversions(y_dtype);  // a float16 y (bfloat16 has its own epilogue)
  for_each_tile_chunk(m, n, k, steps, kBf16ChunkSteps, n_threads, [] { return Scratch{}; },
                      [&](Scratch& scratch, const ColumnTile& tile, int64_t s0, int64_t chunk, int64_t first,
                          int64_t last, int64_t panel_first) {
    uint8_t* const staged = scratch.staged_tiles.get();
    const void* b[2] = {staged, staged};
    const void* b_last[2] = {staged, staged};
    for (int j = 0; j < tile.blocks; ++j) {
      uint8_t* tiles_j = staged + j * kBf16ChunkSteps * kTileBytes;
      const int8_t* block = packed + (tile.nb0 + j) * block_stride;
      // 8 groups (32 k) per tile step: the chunk's tiles are its groups' pair rows in order.
      static_assert(kTileBytes == 8 * 2 * qgemm_paths::kBf16PairBytes, "a bf16 B tile is 8 k-groups");
      qgemm_paths::weight_groups_to_bf16_avx512(block, s0 * 8, chunk * 8, groups, tiles_j);
      b[j] = tiles_j;
      b_last[j] = tiles_j + (chunk - 1) * kTileBytes;
    }
    const bool final_chunk = s0 + chunk == steps;
    const int64_t c0 = tile.c0, cols = tile.cols;
    // y rows [r0, r1) of the block of rows from m0 whose sums are in acc.
    const auto finish_rows = [&](const float* acc, int64_t m0, int r0, int r1) {
      if (y_dtype == DType::kBFloat16) {
        qgemm_paths::float_epilogue_bf16_avx512bf16(acc + r0 * kAmxAccStride, w_scale + c0, bias ? bias + c0 : nullptr,
                                             static_cast<uint16_t*>(y) + (m0 + r0) * ldy + c0, ldy, r1 - r0, cols);
        return;
      }
      for (int r = r0; r < r1; ++r) {
        alignas(64) float row[kBlockCols];  // a float16 y's float32 results, rounded below
        float* out = y_dtype == DType::kFloat32 ? static_cast<float*>(y) + (m0 + r) * ldy + c0 : row;
        for (int64_t c = 0; c < cols; c += 16) {
          const __mmask16 live = cols - c >= 16 ? __mmask16(0xffff) : __mmask16((1u << (cols - c)) - 1);
          __m512 v = _mm512_mul_ps(_mm512_loadu_ps(acc + r * kAmxAccStride + c),
                                   _mm512_maskz_loadu_ps(live, w_scale + c0 + c));
          if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(live, bias + c0 + c));
          _mm512_mask_storeu_ps(out + c, live, v);
        }
        if (y_dtype != DType::kFloat32) y_half.round(row, cols, static_cast<uint16_t*>(y) + (m0 + r) * ldy + c0);
      }
    };
    // A float32 y: a finished block's epilogue runs a few rows at a time
    // between the tile steps of the next block (its sums stay in their own
    // slot of panel_acc), as in the integer GEMM, and the chunk's last block
    // finishes at its end. That hides the stores of 4-byte outputs; 2-byte
    // ones cost less than the calls between the steps, so they finish at once.
    const bool overlap = y_dtype == DType::kFloat32;
    struct Pending {
      const decltype(finish_rows)* finish;
      const float* acc;
      int64_t m0;
      int rows;
      static void run(const void* ctx, int64_t s, int64_t parts) {
        const auto* p = static_cast<const Pending*>(ctx);
        const int r0 = int(p->rows * s / parts), r1 = int(p->rows * (s + 1) / parts);
        if (r1 > r0) (*p->finish)(p->acc, p->m0, r0, r1);
      }
    } pending{&finish_rows, nullptr, 0, 0};
    const SideWork side{Pending::run, &pending};
    for_each_row_block(scratch.tiles, m, first, last, panel_first, scratch.panel_acc.get(),
                       [&](int64_t m0, int rows, bool two_row_tiles, float* acc) {
      kBf16Blocks[two_row_tiles][tile.blocks - 1](xb + m0 * ldb + s0 * kBf16StepK, ldb * 2, chunk, b, b_last,
                                                  acc, s0 > 0, pending.acc != nullptr ? &side : nullptr);
      pending.acc = nullptr;
      if (!final_chunk) return;
      if (overlap) {
        pending = {&finish_rows, acc, m0, rows};
      } else {
        finish_rows(acc, m0, 0, rows);
      }
    });
    if (pending.acc != nullptr) finish_rows(pending.acc, pending.m0, 0, pending.rows);
  });
}

}  // namespace slimtorch
