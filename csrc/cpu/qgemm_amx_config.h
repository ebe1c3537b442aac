// The tile configuration of Intel AMX (palette 1): the 64-byte operand of
// ldtilecfg. Shared by the AMX kernels and benchmarks/amx_peak.cpp, so it
// includes nothing of the library.
#pragma once

#include <cstdint>

namespace slimtorch {

struct alignas(64) AmxTileConfig {
  uint8_t palette_id = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};  // bytes per row of each tile
  uint8_t rows[16] = {};

  // Tile `tile` holds `rows` rows of 64 bytes (0 rows: unused).
  void set(int tile, int tile_rows) {
    rows[tile] = uint8_t(tile_rows);
    colsb[tile] = tile_rows > 0 ? 64 : 0;
  }
};
static_assert(sizeof(AmxTileConfig) == 64, "ldtilecfg reads 64 bytes");

}  // namespace slimtorch
