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

// ---- window pass (the sampled fast path, see window_select) -----------------

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

// One path's kernels for one dtype: the histogram of one level over
// data[begin, end) (see HistJob); keep[i] = key > limit, returning the number
// of keys == limit; the window tally (see WindowTally).
struct Kernels {
  void (*hist)(const void* data, int64_t begin, int64_t end, HistJob& job);
  int64_t (*mask)(const void* data, int64_t begin, int64_t end, uint32_t limit, uint8_t* keep);
  void (*window)(const void* data, int64_t begin, int64_t end, WindowTally& t);
};

// Per ISA (defined in its file): its kernels for dtype d.
Kernels kernels_avx2(DType d);
Kernels kernels_avx512(DType d);
Kernels kernels_neon(DType d);

// Unnamed namespace: every translation unit keeps its own copy, compiled
// with its own flags (no shared inline copy the linker could pick).
namespace {

// ---- keys -------------------------------------------------------------------

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

// The kernels of a path written as P<D>::hist, P<D>::mask and P<D>::window
// (D: the dtype), for dtype d.
template <template <DType> class P>
Kernels kernels_of(DType d) {
  Kernels kernels{};
  with_dtype(d, [&](auto tag) {
    using Path = P<decltype(tag)::value>;
    kernels = {Path::hist, Path::mask, Path::window};
  });
  return kernels;
}

// ---- scalar path (also the tails of the vector paths) -----------------------

template <DType D>
struct ScalarKernels {
  static void hist(const void* data, int64_t begin, int64_t end, HistJob& job) {
    uint32_t max_key = job.max_key;
    for (int64_t i = begin; i < end; ++i) {
      const uint32_t key = key_at<D>(data, i);
      max_key = std::max(max_key, key);
      if ((key >> job.prefix_shift) == job.prefix)
        ++job.counts[(((key >> job.shift) & job.digit_mask) << 2) | uint32_t(i & 3)];
    }
    job.max_key = max_key;
  }

  static int64_t mask(const void* data, int64_t begin, int64_t end, uint32_t limit, uint8_t* keep) {
    int64_t ties = 0;
    for (int64_t i = begin; i < end; ++i) {
      const uint32_t key = key_at<D>(data, i);
      keep[i] = key > limit;
      ties += key == limit;
    }
    return ties;
  }

  static void window(const void* data, int64_t begin, int64_t end, WindowTally& t) {
    const uint32_t lo = t.lo, hi = t.hi;
    uint32_t max_key = t.max_key;
    int64_t less = 0, at_lo = 0;  // locals, as in the AVX2 window
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
};

// ---- the window pass of the vector paths ------------------------------------

// Whole steps of Step::kLanes keys, then the scalar kernel for the rest. A
// step tallies its keys (Step holds the counters and the running maximum,
// added to the tally by finish) and stores the keys inside the window,
// compressed, at `to`, returning how many. It stores a whole vector, hence
// the kSlack entries of room past cap, and the scan stops once past cap.
// Always inlined: the steps need the target of the ISA kernel that calls it.
template <DType D, class Step>
__attribute__((always_inline)) inline void window_steps(const void* data, int64_t begin,
                                                        int64_t end, WindowTally& t) {
  Step step(t);
  uint32_t* stored = t.stored.get();
  size_t count = t.count;
  const size_t cap = t.cap;
  int64_t i = begin;
  for (; i + Step::kLanes <= end; i += Step::kLanes) {
    if (count > cap) break;
    count += step(data, i, stored + count);
  }
  t.count = count;
  step.finish(t);
  if (count > cap) t.overflow = true;
  else ScalarKernels<D>::window(data, i, end, t);
}

}  // namespace
}  // namespace slimtorch::select_paths
