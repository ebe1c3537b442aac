// Intel AMX in software, for test builds only (CMake option
// SLIMTORCH_AMX_EMULATION): the tile intrinsics that qgemm_amx.cpp uses, run
// on a per-thread tile file, so that CPUs without AMX run the AMX kernels
// and their tests. It checks what the hardware faults on (an unloaded or
// invalid configuration, operand shapes that do not match, one tile in two
// operand roles) and aborts with the reason where the hardware would raise
// SIGILL or SIGSEGV; tile loads and stores touch exactly the bytes the
// hardware touches, so AddressSanitizer sees the kernels' reads and writes.
// It says nothing about speed.
//
// Semantics (Intel SDM, Vol. 2, TDPBUSD and TDPBF16PS; palette 1: 8 tiles
// of at most 16 rows x 64 bytes):
//   tdpbusd   C[m][n] += sum over k, i < 4 of uint8 A[m][4k + i] * int8 B[k][4n + i]
//             (int32, wrapping);
//   tdpbf16ps C[m][n] += A[m][2k] * B[k][2n] + A[m][2k + 1] * B[k][2n + 1] in
//             float32, the two products added one at a time, input and output
//             denormals taken as zero, rounding to nearest even.
//
// Included after <immintrin.h>: it replaces the intrinsics' names.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "qgemm_amx_config.h"

namespace slimtorch {
namespace amx_emulation {

constexpr int kTiles = 8, kMaxRows = 16, kMaxRowBytes = 64;

struct TileFile {
  bool configured = false;
  uint8_t rows[kTiles] = {};
  uint16_t colsb[kTiles] = {};
  alignas(64) uint8_t data[kTiles][kMaxRows][kMaxRowBytes] = {};
};

// Tile state belongs to a thread, as on the hardware (XTILECFG and XTILEDATA
// are per-thread state).
inline TileFile& tile_file() {
  static thread_local TileFile file;
  return file;
}

[[noreturn]] inline void fault(const char* instruction, const char* why) {
  std::fprintf(stderr, "slimtorch AMX emulation: %s: %s\n", instruction, why);
  std::abort();
}

inline void release() { tile_file() = TileFile{}; }

inline void load_config(const void* memory) {
  AmxTileConfig config;
  std::memcpy(&config, memory, sizeof(config));
  if (config.palette_id == 0) return release();  // palette 0: the initial state
  if (config.palette_id != 1) fault("ldtilecfg", "palette other than 0 or 1");
  for (uint8_t reserved : config.reserved)
    if (reserved != 0) fault("ldtilecfg", "reserved bytes not zero");
  TileFile& file = tile_file();
  file = TileFile{};  // a new configuration zeroes every tile
  for (int t = 0; t < 16; ++t) {
    const int rows = config.rows[t], colsb = config.colsb[t];
    if (t >= kTiles ? rows != 0 || colsb != 0 : rows > kMaxRows || colsb > kMaxRowBytes)
      fault("ldtilecfg", "a tile's rows or bytes per row out of range");
    if ((rows == 0) != (colsb == 0)) fault("ldtilecfg", "a tile with rows but no bytes, or bytes but no rows");
    if (t < kTiles) {
      file.rows[t] = uint8_t(rows);
      file.colsb[t] = uint16_t(colsb);
    }
  }
  file.configured = true;
}

// The tile file, once `instruction` may use tile t.
inline TileFile& usable(const char* instruction, int t) {
  TileFile& file = tile_file();
  if (!file.configured) fault(instruction, "no tile configuration loaded on this thread");
  if (t < 0 || t >= kTiles || file.rows[t] == 0) fault(instruction, "tile not configured");
  return file;
}

inline void load(int t, const void* base, int64_t stride) {
  TileFile& file = usable("tileloadd", t);
  std::memset(file.data[t], 0, sizeof(file.data[t]));  // rows and bytes past the configuration read zero
  for (int r = 0; r < file.rows[t]; ++r)
    std::memcpy(file.data[t][r], static_cast<const uint8_t*>(base) + r * stride, file.colsb[t]);
}

inline void store(int t, void* base, int64_t stride) {
  TileFile& file = usable("tilestored", t);
  for (int r = 0; r < file.rows[t]; ++r)
    std::memcpy(static_cast<uint8_t*>(base) + r * stride, file.data[t][r], file.colsb[t]);
}

inline void zero(int t) {
  TileFile& file = usable("tilezero", t);
  std::memset(file.data[t], 0, sizeof(file.data[t]));
}

// Checks the shapes of c += a . b (bytes per row in 4-byte units: k of a, n of c and b).
inline TileFile& dot_operands(const char* instruction, int c, int a, int b) {
  TileFile& file = usable(instruction, c);
  usable(instruction, a);
  usable(instruction, b);
  if (c == a || c == b || a == b) fault(instruction, "one tile in two operand roles");
  if (file.colsb[c] % 4 != 0 || file.colsb[a] % 4 != 0 || file.colsb[b] % 4 != 0)
    fault(instruction, "bytes per row not a multiple of 4");
  if (file.rows[c] != file.rows[a]) fault(instruction, "C and A rows differ");
  if (file.colsb[c] != file.colsb[b]) fault(instruction, "C and B bytes per row differ");
  if (file.colsb[a] / 4 != file.rows[b]) fault(instruction, "A's bytes per row are not 4 x B's rows");
  return file;
}

inline void dpbusd(int c, int a, int b) {
  TileFile& file = dot_operands("tdpbusd", c, a, b);
  for (int m = 0; m < file.rows[c]; ++m)
    for (int n = 0; n < file.colsb[c] / 4; ++n) {
      int32_t sum;
      std::memcpy(&sum, &file.data[c][m][4 * n], 4);
      uint32_t wrapped = uint32_t(sum);
      for (int k = 0; k < file.rows[b]; ++k)
        for (int i = 0; i < 4; ++i)
          wrapped += uint32_t(int32_t(file.data[a][m][4 * k + i]) * int32_t(int8_t(file.data[b][k][4 * n + i])));
      std::memcpy(&file.data[c][m][4 * n], &wrapped, 4);
    }
}

// Denormals as zero (both inputs and results of tdpbf16ps).
inline float flush(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  if ((bits & 0x7f800000u) == 0) bits &= 0x80000000u;
  std::memcpy(&v, &bits, 4);
  return v;
}

inline float bf16_at(const uint8_t* pair_row, int index) {
  const uint32_t bits = uint32_t(pair_row[2 * index]) << 16 | uint32_t(pair_row[2 * index + 1]) << 24;
  float v;
  std::memcpy(&v, &bits, 4);
  return flush(v);
}

inline void dpbf16ps(int c, int a, int b) {
  TileFile& file = dot_operands("tdpbf16ps", c, a, b);
  for (int m = 0; m < file.rows[c]; ++m)
    for (int n = 0; n < file.colsb[c] / 4; ++n) {
      float sum;
      std::memcpy(&sum, &file.data[c][m][4 * n], 4);
      for (int k = 0; k < file.rows[b]; ++k)
        for (int i = 0; i < 2; ++i) {
          // A product of two bf16 is exact in float32: fused or not, one rounding.
          const float product = bf16_at(file.data[a][m], 2 * k + i) * bf16_at(file.data[b][k], 2 * n + i);
          sum = flush(flush(sum) + product);
        }
      std::memcpy(&file.data[c][m][4 * n], &sum, 4);
    }
}

}  // namespace amx_emulation
}  // namespace slimtorch

#undef _tile_loadd
#undef _tile_stored
#undef _tile_zero
#undef _tile_dpbusd
#undef _tile_dpbf16ps
#define _tile_loadconfig(config) ::slimtorch::amx_emulation::load_config(config)
#define _tile_release() ::slimtorch::amx_emulation::release()
#define _tile_loadd(t, base, stride) ::slimtorch::amx_emulation::load(t, base, stride)
#define _tile_stored(t, base, stride) ::slimtorch::amx_emulation::store(t, base, stride)
#define _tile_zero(t) ::slimtorch::amx_emulation::zero(t)
#define _tile_dpbusd(c, a, b) ::slimtorch::amx_emulation::dpbusd(c, a, b)
#define _tile_dpbf16ps(c, a, b) ::slimtorch::amx_emulation::dpbf16ps(c, a, b)
