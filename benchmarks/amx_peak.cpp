// Peak AMX rates of one core: independent tdpbusd (u8 x s8 -> int32) and
// tdpbf16ps (bf16 x bf16 -> fp32) chains on register-resident tiles, no
// memory traffic in the loop. Each instruction is 16 x 16 x 64 int8
// multiply-adds (16 x 16 x 32 bf16). An upper bound for any int8 / bf16 GEMM
// on this CPU, the counterpart of vnni_peak.cpp for the AMX kernels.
// Linux only (asks the kernel for tile permission first).
//
//   g++ -O2 -mamx-tile -mamx-int8 -mamx-bf16 benchmarks/amx_peak.cpp -o build/amx_peak && build/amx_peak
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <ctime>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "../csrc/cpu/qgemm_amx_config.h"

namespace {

constexpr long kSteps = 20000000;

// CPU time of this thread: the rate of the core while it runs this loop, even
// when other processes share the core.
double thread_seconds() {
  timespec now;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return double(now.tv_sec) + 1e-9 * double(now.tv_nsec);
}

}  // namespace

int main() {
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) {
    std::printf("no AMX: the kernel refused tile permission\n");
    return 1;
  }
  slimtorch::AmxTileConfig config;
  for (int t = 0; t < 8; ++t) config.set(t, 16);
  _tile_loadconfig(&config);
  alignas(64) static uint8_t operand[16 * 64];
  std::memset(operand, 1, sizeof operand);
  // Four accumulators (tmm0-3) from two A (tmm4-5) and two B (tmm6-7): the
  // same register use as a 2x2-blocked GEMM, with four independent chains.
  _tile_loadd(4, operand, 64);
  _tile_loadd(5, operand, 64);
  _tile_loadd(6, operand, 64);
  _tile_loadd(7, operand, 64);
  for (int mode = 0; mode < 2; ++mode) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    const double start = thread_seconds();
    for (long step = 0; step < kSteps; ++step) {
      if (mode == 0) {
        _tile_dpbusd(0, 4, 6);
        _tile_dpbusd(1, 4, 7);
        _tile_dpbusd(2, 5, 6);
        _tile_dpbusd(3, 5, 7);
      } else {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
    }
    const double per_second = 4.0 * double(kSteps) / (thread_seconds() - start);
    alignas(64) static int32_t out[16 * 16];
    _tile_stored(0, out, 64);
    if (mode == 0)
      std::printf("%.3f G tdpbusd/s = %.0f G int8 MAC/s per core (checksum %d)\n", per_second / 1e9,
                  per_second * 16 * 16 * 64 / 1e9, out[0]);
    else
      std::printf("%.3f G tdpbf16ps/s = %.0f G bf16 FMA/s per core (checksum %d)\n", per_second / 1e9,
                  per_second * 16 * 16 * 32 / 1e9, out[0]);
  }
  _tile_release();
  return 0;
}
