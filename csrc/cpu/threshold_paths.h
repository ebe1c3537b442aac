// Per-ISA bodies of the threshold family (threshold.cpp dispatches). Each
// counts the kept elements of w[0, n) with sign-cleared bits above `limit`
// and either writes keep[i] (keep != nullptr) or zeroes the others in place.
// Elements are uint32_t bits (fp32) or uint16_t bits (fp16, bf16); each ISA
// writes one loop for both widths.
#pragma once

#include <cstdint>

namespace slimtorch::threshold_paths {

// One path: its loop for each element width.
struct Path {
  int64_t (*bits32)(uint32_t* w, uint8_t* keep, int64_t n, uint32_t limit);
  int64_t (*bits16)(uint16_t* w, uint8_t* keep, int64_t n, uint16_t limit);
};

// Defined by each ISA's file.
extern const Path kAvx2Path, kAvx512Path, kNeonPath;

// Unnamed namespace: every translation unit keeps its own copy, compiled
// with its own flags (no shared inline copy the linker could pick).
namespace {

// Clears the sign bit of a Bits pattern.
template <class Bits>
constexpr Bits kAbs = Bits(Bits(~Bits(0)) >> 1);

template <class Bits, bool kWriteMask>
int64_t scalar_loop(Bits* w, uint8_t* keep, int64_t begin, int64_t n, Bits limit) {
  int64_t kept = 0;
  for (int64_t i = begin; i < n; ++i) {
    const bool k = Bits(w[i] & kAbs<Bits>) > limit;
    kept += k;
    if (kWriteMask) keep[i] = k;
    else if (!k) w[i] = 0;
  }
  return kept;
}

// The scalar loop over w[begin, n): the tails of the vector paths.
template <class Bits>
int64_t threshold_tail(Bits* w, uint8_t* keep, int64_t begin, int64_t n, Bits limit) {
  return keep != nullptr ? scalar_loop<Bits, true>(w, keep, begin, n, limit)
                         : scalar_loop<Bits, false>(w, nullptr, begin, n, limit);
}

// The scalar path, where no vector path runs.
template <class Bits>
int64_t threshold_scalar(Bits* w, uint8_t* keep, int64_t n, Bits limit) {
  return threshold_tail(w, keep, 0, n, limit);
}

}  // namespace
}  // namespace slimtorch::threshold_paths
