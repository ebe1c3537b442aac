// Magnitude selection by histogram radix select over sign-cleared float32
// bit patterns (see select.h for the key definition).
//
// Each level histograms one digit of the keys that share the prefix chosen so
// far, over every element of every segment (the segments are walked as one
// sequence, never concatenated). The bin holding the k-th key becomes part of
// the prefix; after the last level the prefix is the key itself.
//
// Large inputs (>= 2^20 elements) first try a sampled window (window_select):
// one streaming pass that counts and compresses instead of scattering into a
// histogram, which is faster; it is exact too and falls back to the histogram
// select whenever the sample misleads it.
//
// The histogram levels are bound by their scattered increments, the window
// path by one streaming read of the weights; the AVX-512 paths are no faster
// at histogramming but share the loaders and masked tails.
//
// Threads: parallel_for splits the sequence into contiguous chunks, one per
// thread; each thread fills its own histogram / tally, and the main thread
// sums them (integer sums: the result does not depend on the split).
#include "slimtorch/select.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "dispatch.h"
#include "select_paths.h"

namespace slimtorch {
namespace {

using namespace select_paths;

constexpr uint32_t kInfKey = 0x7f800000u;  // keys above this are NaN
constexpr int64_t kGrain = 1 << 16;
// Per-thread uint32 counters are flushed to uint64 at least this often.
constexpr int64_t kFlushBlock = int64_t(1) << 30;

// digit = (key >> shift) & (2^bits - 1); a key takes part in a level when
// key >> (shift + bits) equals the prefix chosen by the levels before.
struct Digit {
  int shift, bits;
};
// Large inputs: two levels of 15 + 16 bits. Level 1 covers the exponent and
// 7 mantissa bits; real weights use a few exponents only, so the bins it
// touches stay in L1/L2 although the table has 32K bins. Level 2 sees only the
// keys of one level-1 bin (~0.1% of Gaussian weights) and for bf16 is skipped.
constexpr Digit kLargeDigits[] = {{16, 15}, {0, 16}};
// Small inputs: 8-bit digits. Four cheap passes over data that sits in cache
// cost less than clearing and summing the large tables (~1.5 MB per thread).
constexpr Digit kSmallDigits[] = {{23, 8}, {16, 7}, {8, 8}, {0, 8}};
constexpr int64_t kSmallInput = int64_t(1) << 16;

// Keys of this dtype have this many zero low bits: levels below are skipped.
int zero_low_bits(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return 0;
    case DType::kFloat16: return 13;  // 10 mantissa bits of 23, also for subnormals
    case DType::kBFloat16: return 16;
  }
  return 0;
}

// ---- dispatch ----------------------------------------------------------------

// The kernels of the best path this CPU runs, for dtype d.
Kernels kernels_for(DType d) {
  const Isa isa = active_isa();
#if SLIMTORCH_X86
  if (isa >= Isa::kAvx512) return kernels_avx512(d);
  if (isa >= Isa::kAvx2) return kernels_avx2(d);
#elif SLIMTORCH_ARM64
  if (isa >= Isa::kNeon) return kernels_neon(d);
#endif
  (void)isa;
  return kernels_of<ScalarKernels>(d);
}

// Sets keep[i] = 1 for the elements of [begin, end) with key == limit whose
// tie number (counted from `tie`, in element order) is >= ties_to_prune.
// Returns the tie number after the range.
template <DType D>
int64_t keep_late_ties(const void* data, int64_t begin, int64_t end, uint32_t limit, int64_t tie,
                       int64_t ties_to_prune, uint8_t* keep) {
  for (int64_t i = begin; i < end; ++i) {
    if (key_at<D>(data, i) != limit) continue;
    if (tie >= ties_to_prune) keep[i] = 1;
    ++tie;
  }
  return tie;
}

int64_t keep_late_ties(const Segment& s, int64_t begin, int64_t end, uint32_t limit, int64_t tie,
                       int64_t ties_to_prune, uint8_t* keep) {
  switch (s.dtype) {
    case DType::kFloat32:
      return keep_late_ties<DType::kFloat32>(s.data, begin, end, limit, tie, ties_to_prune, keep);
    case DType::kFloat16:
      return keep_late_ties<DType::kFloat16>(s.data, begin, end, limit, tie, ties_to_prune, keep);
    case DType::kBFloat16:
      return keep_late_ties<DType::kBFloat16>(s.data, begin, end, limit, tie, ties_to_prune, keep);
  }
  return tie;
}

// ---- the segments as one sequence -----------------------------------------------

class Sequence {
 public:
  Sequence(const Segment* segments, int count) : segments_(segments), start_(size_t(count) + 1, 0) {
    for (int s = 0; s < count; ++s) start_[size_t(s) + 1] = start_[size_t(s)] + segments[s].n;
  }
  int64_t size() const { return start_.back(); }

  // Key of the element at sequence index i (scalar; for sampling).
  uint32_t key(int64_t i) const {
    const int s = int(std::upper_bound(start_.begin(), start_.end(), i) - start_.begin()) - 1;
    const Segment& seg = segments_[s];
    const int64_t j = i - start_[size_t(s)];
    switch (seg.dtype) {
      case DType::kFloat32: return key_at<DType::kFloat32>(seg.data, j);
      case DType::kFloat16: return key_at<DType::kFloat16>(seg.data, j);
      case DType::kBFloat16: return key_at<DType::kBFloat16>(seg.data, j);
    }
    return 0;
  }
  const Segment& segment(int s) const { return segments_[s]; }

  // Calls fn(s, local_begin, local_end) for every segment s overlapping the
  // sequence range [begin, end), in order.
  template <typename Fn>
  void for_each_piece(int64_t begin, int64_t end, Fn&& fn) const {
    const int count = int(start_.size()) - 1;
    int s = int(std::upper_bound(start_.begin(), start_.end(), begin) - start_.begin()) - 1;
    for (; s < count && start_[size_t(s)] < end; ++s) {
      const int64_t lo = std::max(begin, start_[size_t(s)]) - start_[size_t(s)];
      const int64_t hi = std::min(end, start_[size_t(s) + 1]) - start_[size_t(s)];
      if (lo < hi) fn(s, lo, hi);
    }
  }

 private:
  const Segment* segments_;
  std::vector<int64_t> start_;  // start_[s]: sequence index of segment s's first element
};

// Histogram of one digit over the keys with the given prefix, summed over
// threads into `bins` (2^digit.bits entries). Returns the largest key seen.
uint32_t histogram(const Sequence& seq, int n_threads, Digit digit, uint32_t prefix,
                   std::vector<uint64_t>& bins) {
  const size_t n_bins = size_t(1) << digit.bits;
  const int chunks = plan_chunks(n_threads, seq.size(), kGrain);
  std::vector<std::vector<uint64_t>> partial(static_cast<size_t>(chunks));
  std::vector<uint32_t> max_keys(size_t(chunks), 0u);
  parallel_for(n_threads, seq.size(), kGrain, [&](int64_t begin, int64_t end, int t) {
    std::vector<uint32_t> counts(n_bins * kCopies, 0);
    std::vector<uint64_t>& sum = partial[size_t(t)];
    sum.assign(n_bins, 0);
    HistJob job{digit.shift, digit.shift + digit.bits, prefix, uint32_t(n_bins - 1), counts.data(), 0};
    const auto flush = [&] {
      for (size_t b = 0; b < n_bins; ++b) {
        sum[b] += uint64_t(counts[4 * b]) + counts[4 * b + 1] + counts[4 * b + 2] + counts[4 * b + 3];
      }
      std::fill(counts.begin(), counts.end(), 0u);
    };
    int64_t since_flush = 0;
    seq.for_each_piece(begin, end, [&](int s, int64_t lo, int64_t hi) {
      const Segment& seg = seq.segment(s);
      const auto hist = kernels_for(seg.dtype).hist;
      for (int64_t block = lo; block < hi; block += kFlushBlock) {
        const int64_t block_end = std::min(hi, block + kFlushBlock);
        if (since_flush + (block_end - block) > kFlushBlock) {
          flush();
          since_flush = 0;
        }
        hist(seg.data, block, block_end, job);
        since_flush += block_end - block;
      }
    });
    flush();
    max_keys[size_t(t)] = job.max_key;
  });
  bins.assign(n_bins, 0);
  for (const auto& sum : partial) {
    for (size_t b = 0; b < sum.size(); ++b) bins[b] += sum[b];
  }
  return *std::max_element(max_keys.begin(), max_keys.end());
}

Status check_segments(const Segment* segments, int n_segments, int64_t* total) {
  if (n_segments < 0 || (n_segments > 0 && segments == nullptr)) return Status::kInvalidArgument;
  *total = 0;
  for (int s = 0; s < n_segments; ++s) {
    const Segment& seg = segments[s];
    if (seg.n < 0 || (seg.n > 0 && seg.data == nullptr)) return Status::kInvalidArgument;
    if (int(seg.dtype) < 0 || int(seg.dtype) > 2) return Status::kInvalidArgument;
    *total += seg.n;
  }
  return Status::kOk;
}

}  // namespace

namespace {

// The exact histogram radix select (see the top of the file).
Status histogram_select(const Sequence& seq, int64_t k, int n_threads, int known_zero_bits,
                        MagnitudeSelection* out) {
  const bool small = seq.size() <= kSmallInput;
  const Digit* digits = small ? kSmallDigits : kLargeDigits;
  const int levels = small ? 4 : 2;

  // Invariant: the k-th key is the rank-th (1-based) smallest of the keys
  // whose high bits equal `prefix`; `below` keys are smaller than all of those.
  uint32_t prefix = 0;
  int64_t rank = k, below = 0;
  int shift = 31;
  std::vector<uint64_t> bins;
  for (int level = 0; level < levels; ++level) {
    const Digit digit = digits[level];
    const uint32_t max_key = histogram(seq, n_threads, digit, prefix, bins);
    if (level == 0) {
      if (max_key > kInfKey) return Status::kNonFinite;
      if (k == 0) {
        *out = {-std::numeric_limits<float>::infinity(), 0, 0};
        return Status::kOk;
      }
    }
    size_t b = 0;
    while (int64_t(bins[b]) < rank) {  // terminates: the bins hold >= rank keys
      rank -= int64_t(bins[b]);
      below += int64_t(bins[b]);
      ++b;
    }
    prefix = (prefix << digit.bits) | uint32_t(b);
    shift = digit.shift;
    if (shift <= known_zero_bits) break;  // the rest of the key is zero
  }
  *out = {bits_to_float(prefix << shift), below, rank};
  return Status::kOk;
}

// Fast path for large inputs, still exact: a strided sample of the keys
// brackets the k-th key in a window (lo, hi] that very likely holds it; one
// streaming pass counts the keys below lo and equal to lo, and stores the
// few inside the window (SIMD compares, no scatter); the histogram select
// then runs on the stored keys only. When the sample misled (the k-th key is
// outside the window, or too many keys fall inside, e.g. heavy ties) it
// returns false and the caller runs the full histogram select.
constexpr int64_t kWindowMinInput = int64_t(1) << 20;
constexpr int64_t kSampleSize = int64_t(1) << 16;
constexpr int64_t kSampleRun = 16;
constexpr double kWindowSigmas = 5.0;  // half-width of the window in binomial std deviations

bool window_select(const Sequence& seq, int64_t k, int n_threads, int known_zero_bits,
                   MagnitudeSelection* out, Status* status) {
  const int64_t n = seq.size();
  if (n < kWindowMinInput || k == 0) return false;
  // Sample ranks around k's position; the sample's order statistics bound it.
  std::vector<uint32_t> sample(static_cast<size_t>(kSampleSize));
  // Runs of kSampleRun consecutive keys (a cache line of fp32) at evenly
  // spaced places: one cache miss per run instead of one per key.
  for (int64_t run = 0; run < kSampleSize / kSampleRun; ++run) {
    const int64_t at = run * (n / (kSampleSize / kSampleRun));
    for (int64_t j = 0; j < kSampleRun; ++j) sample[size_t(run * kSampleRun + j)] = seq.key(at + j);
  }
  const double q = double(k) / double(n), m = double(kSampleSize);
  const double spread = kWindowSigmas * std::sqrt(m * q * (1.0 - q)) + 2.0;
  const int64_t r_lo = std::max<int64_t>(1, int64_t(q * m - spread));
  const int64_t r_hi = std::min<int64_t>(kSampleSize, int64_t(q * m + spread) + 1);
  // The sample's r_lo-th and r_hi-th smallest keys, by the same radix select.
  const Segment sample_segment{sample.data(), DType::kFloat32, kSampleSize};
  const Sequence sample_seq(&sample_segment, 1);
  MagnitudeSelection lo_pick{}, hi_pick{};
  *status = histogram_select(sample_seq, r_lo, 1, 0, &lo_pick);
  if (*status == Status::kOk) *status = histogram_select(sample_seq, r_hi, 1, 0, &hi_pick);
  if (*status != Status::kOk) return true;  // NaN in the sample
  const uint32_t lo = float_to_bits(lo_pick.threshold), hi = float_to_bits(hi_pick.threshold);
  // Expected fraction of keys inside: (r_hi - r_lo) / m; stop storing at 4x that.
  const double expected = double(r_hi - r_lo + 1) / m;
  const int chunks = plan_chunks(n_threads, n, kGrain);
  std::vector<WindowTally> tallies(static_cast<size_t>(chunks));
  parallel_for(n_threads, n, kGrain, [&](int64_t begin, int64_t end, int t) {
    WindowTally& tally = tallies[size_t(t)];
    tally.lo = lo;
    tally.hi = hi;
    tally.allocate(size_t(4.0 * expected * double(end - begin)) + 1024);
    seq.for_each_piece(begin, end, [&](int s, int64_t b, int64_t e) {
      const Segment& seg = seq.segment(s);
      if (!tally.overflow) kernels_for(seg.dtype).window(seg.data, b, e, tally);
    });
  });
  int64_t less = 0, at_lo = 0, inside = 0;
  for (const WindowTally& t : tallies) {
    if (t.overflow) return false;  // max_key incomplete too: the full path rescans
    if (t.max_key > kInfKey) {
      *status = Status::kNonFinite;
      return true;
    }
    less += t.less;
    at_lo += t.at_lo;
    inside += int64_t(t.count);
  }
  if (k <= less || k > less + at_lo + inside) return false;  // outside the window
  if (k <= less + at_lo) {
    *out = {bits_to_float(lo), less, k - less};
    *status = Status::kOk;
    return true;
  }
  // The stored keys are float32 bit patterns of magnitudes: select among them.
  std::vector<Segment> stored;
  for (const WindowTally& t : tallies)
    stored.push_back({t.stored.get(), DType::kFloat32, int64_t(t.count)});
  MagnitudeSelection inner{};
  *status = histogram_select(Sequence(stored.data(), int(stored.size())), k - less - at_lo, n_threads,
                             known_zero_bits, &inner);
  *out = {inner.threshold, less + at_lo + inner.count_less, inner.ties_to_prune};
  return true;
}

}  // namespace

Status magnitude_select(const Segment* segments, int n_segments, int64_t k, int n_threads,
                        MagnitudeSelection* out) {
  int64_t total = 0;
  if (out == nullptr) return Status::kInvalidArgument;
  if (Status status = check_segments(segments, n_segments, &total); status != Status::kOk)
    return status;
  if (k < 0 || k > total) return Status::kInvalidArgument;
  const Sequence seq(segments, n_segments);
  int known_zero_bits = 16;
  for (int s = 0; s < n_segments; ++s)
    known_zero_bits = std::min(known_zero_bits, zero_low_bits(segments[s].dtype));
  Status status = Status::kOk;
  if (window_select(seq, k, n_threads, known_zero_bits, out, &status)) return status;
  return histogram_select(seq, k, n_threads, known_zero_bits, out);
}

Status magnitude_masks(const Segment* segments, int n_segments, int64_t k, uint8_t* const* keep,
                       int n_threads, MagnitudeSelection* out) {
  MagnitudeSelection selection{};
  if (Status status = magnitude_select(segments, n_segments, k, n_threads, &selection);
      status != Status::kOk)
    return status;
  for (int s = 0; s < n_segments; ++s)
    if (segments[s].n > 0 && (keep == nullptr || keep[s] == nullptr)) return Status::kInvalidArgument;
  if (out != nullptr) *out = selection;
  const Sequence seq(segments, n_segments);
  if (k == 0) {
    for (int s = 0; s < n_segments; ++s)
      if (segments[s].n > 0) std::memset(keep[s], 1, size_t(segments[s].n));
    return Status::kOk;
  }
  const uint32_t limit = float_to_bits(selection.threshold);

  // Pass 1: keep = key > limit (every tie pruned); count ties per chunk.
  const int chunks = plan_chunks(n_threads, seq.size(), kGrain);
  std::vector<int64_t> ties(size_t(chunks), 0);
  parallel_for(n_threads, seq.size(), kGrain, [&](int64_t begin, int64_t end, int t) {
    seq.for_each_piece(begin, end, [&](int s, int64_t lo, int64_t hi) {
      const Segment& seg = seq.segment(s);
      ties[size_t(t)] += kernels_for(seg.dtype).mask(seg.data, lo, hi, limit, keep[s]);
    });
  });
  // Pass 2: keep the ties after the first ties_to_prune. Chunks are the same
  // as in pass 1 (same arguments to parallel_for), so ties_before[t] numbers
  // the first tie of chunk t.
  std::vector<int64_t> ties_before(size_t(chunks), 0);
  for (int t = 1; t < chunks; ++t) ties_before[size_t(t)] = ties_before[size_t(t) - 1] + ties[size_t(t) - 1];
  const int64_t to_prune = selection.ties_to_prune;
  parallel_for(n_threads, seq.size(), kGrain, [&](int64_t begin, int64_t end, int t) {
    if (ties_before[size_t(t)] + ties[size_t(t)] <= to_prune) return;  // all its ties pruned
    int64_t tie = ties_before[size_t(t)];
    seq.for_each_piece(begin, end, [&](int s, int64_t lo, int64_t hi) {
      tie = keep_late_ties(seq.segment(s), lo, hi, limit, tie, to_prune, keep[s]);
    });
  });
  return Status::kOk;
}

}  // namespace slimtorch
