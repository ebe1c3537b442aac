// int8 GEMM on Intel AMX tiles (contract: qgemm_amx.h; layout: slimtorch/qgemm.h).
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

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>

namespace slimtorch {
namespace {

constexpr int64_t kStepBytes = 64;                 // K bytes per tile step (A tile width)
constexpr int64_t kGroupBytes = 64;                // one packed k-group of 16 columns
constexpr int64_t kTileBytes = 16 * kGroupBytes;   // one B tile: 16 groups
constexpr int kBlockRows = 32;
constexpr int kBlockCols = 32;
// Blocking for the caches: a K chunk of one 32-column weight panel (32 x
// kChunkSteps * 64 bytes) stays in L1 while the row blocks of a row panel
// (kPanelTiles * 32 rows of the same K chunk, in L2) pass over it.
constexpr int64_t kChunkSteps = 12;
constexpr int64_t kPanelTiles = 8;
// Fewer rows than this leave the tiles mostly empty; the VNNI kernels win.
constexpr int64_t kMinRows = 16;
// Below this many multiply-adds a chunk is not worth a thread wake-up.
constexpr int64_t kMinMacsPerChunk = int64_t(1) << 20;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The 64-byte operand of ldtilecfg (palette 1).
struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};
static_assert(sizeof(TileConfig) == 64, "ldtilecfg reads 64 bytes");

// Loads the configuration for blocks whose first row tile has rows0 rows and
// second rows1 (0: the second row of tiles is not used).
class TileState {
 public:
  ~TileState() {
    if (rows0_ >= 0) _tile_release();
  }
  void configure(int rows0, int rows1) {
    if (rows0 == rows0_ && rows1 == rows1_) return;
    TileConfig config;
    std::memset(&config, 0, sizeof config);
    config.palette_id = 1;
    const auto set = [&](int tile, int rows) {
      config.rows[tile] = uint8_t(rows);
      config.colsb[tile] = rows > 0 ? 64 : 0;
    };
    set(0, rows0);
    set(1, rows0);
    set(2, rows1);
    set(3, rows1);
    set(4, rows0);
    set(5, rows1);
    set(6, 16);
    set(7, 16);
    _tile_loadconfig(&config);
    rows0_ = rows0;
    rows1_ = rows1;
  }

 private:
  int rows0_ = -1, rows1_ = -1;
};

// One block: RT row tiles x CT column tiles over `steps` K steps. b[j] is the
// first B tile of column tile j; b_last[j] its last step's tile (in place, or
// a staged zero-padded copy when reading in place would leave the buffer).
// With accumulate, the sums add to those already in acc (K chunks).
template <int RT, int CT>
void tile_block(const uint8_t* a, int64_t lda, int64_t steps, const int8_t* const* b,
                const int8_t* const* b_last, int32_t* acc, bool accumulate) {
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
  for (int64_t s = 0; s < steps; ++s) {
    const bool last = s == steps - 1;
    _tile_loadd(6, last ? b_last[0] : b[0] + s * kTileBytes, kGroupBytes);
    if (CT == 2) _tile_loadd(7, last ? b_last[1] : b[1] + s * kTileBytes, kGroupBytes);
    _tile_loadd(4, a + s * kStepBytes, lda);
    _tile_dpbusd(0, 4, 6);
    if (CT == 2) _tile_dpbusd(1, 4, 7);
    if (RT == 2) {
      _tile_loadd(5, a1 + s * kStepBytes, lda);
      _tile_dpbusd(2, 5, 6);
      if (CT == 2) _tile_dpbusd(3, 5, 7);
    }
  }
  _tile_stored(0, acc, kAccBytes);
  if (CT == 2) _tile_stored(1, acc + 16, kAccBytes);
  if (RT == 2) _tile_stored(2, acc + 16 * kAmxAccStride, kAccBytes);
  if (RT == 2 && CT == 2) _tile_stored(3, acc + 16 * kAmxAccStride + 16, kAccBytes);
}

using BlockFn = void (*)(const uint8_t*, int64_t, int64_t, const int8_t* const*, const int8_t* const*,
                         int32_t*, bool);
const BlockFn kBlocks[2][2] = {{tile_block<1, 1>, tile_block<1, 2>}, {tile_block<2, 1>, tile_block<2, 2>}};

}  // namespace

bool amx_int_gemm_wanted(int64_t m) { return m >= kMinRows && active_isa() >= Isa::kAmx; }

void amx_int_gemm(const uint8_t* a, int64_t m, int64_t k, int64_t lda, const int8_t* packed,
                  int64_t n, int n_threads, const AmxFinish& finish) {
  if (m <= 0 || n <= 0) return;
  const int64_t steps = std::max<int64_t>(ceil_div(k, kStepBytes), 1);
  // Rows starting on cache lines (see qgemm_amx.h), zero-padded to whole K steps.
  std::unique_ptr<uint8_t[]> padded;
  if (k == 0 || ((reinterpret_cast<uintptr_t>(a) | uintptr_t(lda)) & (kAmxRowAlign - 1))) {
    const int64_t width = steps * kStepBytes;
    padded.reset(new uint8_t[size_t(m * width) + kAmxRowAlign - 1]);
    uint8_t* rows = padded.get() + (-reinterpret_cast<uintptr_t>(padded.get()) & (kAmxRowAlign - 1));
    for (int64_t r = 0; r < m; ++r) {
      if (k > 0) std::memcpy(rows + r * width, a + r * lda, size_t(k));
      std::memset(rows + r * width + k, 0, size_t(width - k));
    }
    a = rows;
    lda = width;
  }
  const int64_t groups = k / 4;
  const int64_t block_stride = groups * kGroupBytes;  // bytes per 16-column block
  const int64_t n_blocks = ceil_div(n, 16);
  const int64_t col_tiles = ceil_div(n, kBlockCols);
  const int64_t row_tiles = ceil_div(m, kBlockRows);
  // Column tiles first: each thread streams its own slice of the weight. Rows
  // are split into panels only when there are too few column tiles.
  int64_t panels = 1;
  if (col_tiles < 2 * int64_t(n_threads))
    panels = std::min(row_tiles, ceil_div(2 * int64_t(n_threads), col_tiles));
  const int64_t macs_per_item = ceil_div(m, panels) * kBlockCols * std::max<int64_t>(k, 1);
  const int64_t grain = std::max<int64_t>(1, kMinMacsPerChunk / macs_per_item);
  // K chunks of at most kChunkSteps steps, of equal length.
  const int64_t chunks = ceil_div(steps, kChunkSteps);
  const int64_t chunk_steps = ceil_div(steps, chunks);
  parallel_for(n_threads, col_tiles * panels, grain, [&](int64_t begin, int64_t end, int) {
    TileState tiles;
    // Accumulators of one row panel (K chunks add up here).
    std::unique_ptr<int32_t[]> panel_acc(new int32_t[size_t(kPanelTiles * kBlockRows * kAmxAccStride)]);
    alignas(64) int8_t staged[2][kTileBytes];
    for (int64_t panel_first = 0; panel_first < row_tiles; panel_first += kPanelTiles) {
      const int64_t panel_last = std::min(row_tiles, panel_first + kPanelTiles);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t col_tile = item / panels, panel = item % panels;
        const int64_t first = std::max(panel_first, row_tiles * panel / panels);
        const int64_t last = std::min(panel_last, row_tiles * (panel + 1) / panels);
        if (first >= last) continue;
        const int64_t nb0 = 2 * col_tile;
        const int ct = int(std::min<int64_t>(2, n_blocks - nb0));
        const int64_t c0 = nb0 * 16;
        const int64_t cols = std::min<int64_t>(kBlockCols, n - c0);
        for (int64_t s0 = 0; s0 < steps; s0 += chunk_steps) {
          const int64_t chunk = std::min(chunk_steps, steps - s0);
          const bool final_chunk = s0 + chunk == steps;
          const int8_t* b[2] = {packed, packed};
          const int8_t* b_last[2] = {packed, packed};
          for (int j = 0; j < ct; ++j) {
            const int64_t block = (nb0 + j) * block_stride;
            const int64_t last_tile = block + (s0 + chunk - 1) * kTileBytes;
            b[j] = packed + block + s0 * kTileBytes;
            if (!final_chunk || k == steps * kStepBytes) {
              b_last[j] = packed + last_tile;
            } else {
              const int64_t own = std::max<int64_t>(block + block_stride - last_tile, 0);
              if (own > 0) std::memcpy(staged[j], packed + last_tile, size_t(own));
              std::memset(staged[j] + own, 0, size_t(kTileBytes - own));
              b_last[j] = staged[j];
            }
          }
          for (int64_t t = first; t < last; ++t) {
            const int64_t m0 = t * kBlockRows;
            const int rows = int(std::min<int64_t>(kBlockRows, m - m0));
            const int rows0 = std::min(rows, 16), rows1 = rows - rows0;
            int32_t* acc = panel_acc.get() + (t - panel_first) * kBlockRows * kAmxAccStride;
            tiles.configure(rows0, rows1);
            kBlocks[rows1 > 0][ct - 1](a + m0 * lda + s0 * kStepBytes, lda, chunk, b, b_last, acc, s0 > 0);
            if (final_chunk) finish(m0, rows, c0, cols, acc);
          }
        }
      }
    }
  });
}

}  // namespace slimtorch
