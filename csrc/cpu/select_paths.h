// Per-ISA paths of the select family (select.cpp dispatches): keys,
// the shared request structures, and the scalar bodies that are also the
// tails of the vector paths.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>

#include "dispatch.h"

namespace slimtorch::select_paths {

constexpr uint32_t kAbsMask = 0x7fffffffu;
// Each bin has kCopies counters, indexed (digit << 2) | lane % 4: a run of
// equal keys (ties, zeros) increments four counters in turn instead of one,
// so consecutive increments do not wait on each other's store.
constexpr int kCopies = 4;

// One level's histogram request, filled by the per-ISA range functions.
struct HistJob {
  int shift;            // digit shift
  int prefix_shift;     // shift + bits
  uint32_t prefix;      // required key >> prefix_shift
  uint32_t digit_mask;  // 2^bits - 1
  uint32_t* counts;     // (digit_mask + 1) * kCopies counters
  uint32_t max_key;     // running maximum of every key seen (NaN detection)
};

// ---- window pass (the sampled fast path, see window_select) --------------------

// One chunk's tally of keys against the window (lo, hi]: keys below lo, keys
// equal to lo, and the keys inside, stored in `stored`. The SIMD paths store
// whole vectors of compressed keys, branch-free, so `stored` has kSlack
// entries of room past `cap`; more than `cap` keys inside sets `overflow`
// and ends the scan (the caller then falls back).
constexpr size_t kSlack = 16;

struct WindowTally {
  uint32_t lo = 0, hi = 0;
  int64_t less = 0, at_lo = 0;
  uint32_t max_key = 0;
  std::unique_ptr<uint32_t[]> stored;  // cap + kSlack entries, written from the front
  size_t count = 0, cap = 0;
  bool overflow = false;

  void allocate(size_t capacity) {
    cap = capacity;
    stored.reset(new uint32_t[cap + kSlack]);  // uninitialised: pages are touched only as used
  }
};

// Per ISA: the histogram of one level over data[begin, end) (see HistJob);
// keep[i] = key > limit with the number of keys == limit returned; the window
// tally (see WindowTally).
#define SLIMTORCH_SELECT_PATH(isa)                                                                   \
  void hist_range_##isa(DType d, const void* data, int64_t begin, int64_t end, HistJob& job);       \
  int64_t mask_range_##isa(DType d, const void* data, int64_t begin, int64_t end, uint32_t limit, \
                           uint8_t* keep);                                                          \
  void window_range_##isa(DType d, const void* data, int64_t begin, int64_t end, WindowTally& t);
SLIMTORCH_SELECT_PATH(avx2)
SLIMTORCH_SELECT_PATH(avx512)
SLIMTORCH_SELECT_PATH(neon)
#undef SLIMTORCH_SELECT_PATH

// Unnamed namespace: every translation unit keeps its own copy, compiled
// with its own flags (no shared inline copy the linker could pick).
namespace {

// ---- keys --------------------------------------------------------------------

template <DType D>
inline uint32_t key_at(const void* data, int64_t i) {
  if constexpr (D == DType::kFloat32) {
    return static_cast<const uint32_t*>(data)[i] & kAbsMask;
  } else if constexpr (D == DType::kBFloat16) {
    return (uint32_t(static_cast<const uint16_t*>(data)[i]) << 16) & kAbsMask;
  } else {
    return float_to_bits(fp16_to_float(static_cast<const uint16_t*>(data)[i])) & kAbsMask;
  }
}

// ---- scalar path (also the tail of the AVX2 path) ----------------------------

template <DType D>
void hist_scalar(const void* data, int64_t begin, int64_t end, HistJob& job) {
  uint32_t max_key = job.max_key;
  for (int64_t i = begin; i < end; ++i) {
    const uint32_t key = key_at<D>(data, i);
    max_key = std::max(max_key, key);
    if ((key >> job.prefix_shift) == job.prefix)
      ++job.counts[(((key >> job.shift) & job.digit_mask) << 2) | uint32_t(i & 3)];
  }
  job.max_key = max_key;
}

// keep[i] = key > limit; returns the number of keys equal to limit.
template <DType D>
int64_t mask_scalar(const void* data, int64_t begin, int64_t end, uint32_t limit, uint8_t* keep) {
  int64_t ties = 0;
  for (int64_t i = begin; i < end; ++i) {
    const uint32_t key = key_at<D>(data, i);
    keep[i] = key > limit;
    ties += key == limit;
  }
  return ties;
}

template <DType D>
void window_scalar(const void* data, int64_t begin, int64_t end, WindowTally& t) {
  const uint32_t lo = t.lo, hi = t.hi;
  uint32_t max_key = t.max_key;
  int64_t less = 0, at_lo = 0;  // locals, as in window_avx2
  size_t count = t.count;
  for (int64_t i = begin; i < end; ++i) {
    const uint32_t key = key_at<D>(data, i);
    max_key = std::max(max_key, key);
    less += key < lo;
    at_lo += key == lo;
    if (key > lo && key <= hi) {
      if (count == t.cap) {
        t.overflow = true;
        break;
      }
      t.stored[count++] = key;
    }
  }
  t.count = count;
  t.max_key = max_key;
  t.less += less;
  t.at_lo += at_lo;
}

}  // namespace
}  // namespace slimtorch::select_paths
