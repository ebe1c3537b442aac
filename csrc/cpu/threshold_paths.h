// Per-ISA bodies of the threshold family (threshold.cpp dispatches). Each
// counts the kept elements of w[0, n) with sign-cleared bits above `limit`
// and either writes keep[i] (write_mask) or zeroes the others in place.
#pragma once

#include <cstdint>

namespace slimtorch::threshold_paths {

int64_t threshold32_avx2(uint32_t* w, uint8_t* keep, int64_t n, uint32_t limit, bool write_mask);
int64_t threshold16_avx2(uint16_t* w, uint8_t* keep, int64_t n, uint16_t limit, bool write_mask);
int64_t threshold32_avx512(uint32_t* w, uint8_t* keep, int64_t n, uint32_t limit, bool write_mask);
int64_t threshold16_avx512(uint16_t* w, uint8_t* keep, int64_t n, uint16_t limit, bool write_mask);
int64_t threshold32_neon(uint32_t* w, uint8_t* keep, int64_t n, uint32_t limit, bool write_mask);
int64_t threshold16_neon(uint16_t* w, uint8_t* keep, int64_t n, uint16_t limit, bool write_mask);

// Unnamed namespace: every translation unit keeps its own copy, compiled
// with its own flags (no shared inline copy the linker could pick).
namespace {

// Scalar bodies; also the tails of the vector paths.
template <typename Bits, bool kWriteMask>
int64_t threshold_scalar(Bits* w, uint8_t* keep, int64_t n, Bits limit) {
  constexpr Bits kAbs = Bits(~Bits(0)) >> 1;
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    const bool k = Bits(w[i] & kAbs) > limit;
    kept += k;
    if (kWriteMask) keep[i] = k;
    else if (!k) w[i] = 0;
  }
  return kept;
}

}  // namespace
}  // namespace slimtorch::threshold_paths
