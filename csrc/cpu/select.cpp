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
// histogram, ~2x faster; it is exact too and falls back to the histogram
// select whenever the sample misleads it.
//
// Measured (64M fp32 weights, 1 thread, AVX2, Zen 4): histogram level 1
// ~35 ms (scatter-bound, ~0.5 ns/element), level 2 ~16 ms (a filtering pass);
// the window path ~16 ms in all, about one memory-bound read (torch amax:
// 12 ms). The AVX-512 paths are no faster at histogramming (scatter-bound)
// but share the loaders and masked tails.
//
// Threads: parallel_for splits the sequence into contiguous chunks, one per
// thread; each thread fills its own histogram / tally, and the main thread
// sums them (integer sums: the result does not depend on the split).
#include "slimtorch/select.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

namespace slimtorch {
namespace {

constexpr uint32_t kAbsMask = 0x7fffffffu;
constexpr uint32_t kInfKey = 0x7f800000u;  // keys above this are NaN
constexpr int64_t kGrain = 1 << 16;
// Each bin has kCopies counters, indexed (digit << 2) | lane % 4: a run of
// equal keys (ties, zeros) increments four counters in turn instead of one,
// so consecutive increments do not wait on each other's store.
constexpr int kCopies = 4;
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

// One level's histogram request, filled by the per-ISA range functions.
struct HistJob {
  int shift;            // digit shift
  int prefix_shift;     // shift + bits
  uint32_t prefix;      // required key >> prefix_shift
  uint32_t digit_mask;  // 2^bits - 1
  uint32_t* counts;     // (digit_mask + 1) * kCopies counters
  uint32_t max_key;     // running maximum of every key seen (NaN detection)
};

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

// ---- AVX2 --------------------------------------------------------------------

#define SLIMTORCH_AVX2 __attribute__((target("avx2,fma,f16c")))

template <DType D>
SLIMTORCH_AVX2 inline __m256i keys8_avx2(const void* data, int64_t i) {
  const __m256i abs_mask = _mm256_set1_epi32(int32_t(kAbsMask));
  if constexpr (D == DType::kFloat32) {
    const auto* p = static_cast<const uint32_t*>(data) + i;
    return _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), abs_mask);
  } else {
    const auto* p = static_cast<const uint16_t*>(data) + i;
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    if constexpr (D == DType::kBFloat16)
      return _mm256_and_si256(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16), abs_mask);
    else
      return _mm256_and_si256(_mm256_castps_si256(_mm256_cvtph_ps(h)), abs_mask);
  }
}

template <DType D>
SLIMTORCH_AVX2 void hist_avx2(const void* data, int64_t begin, int64_t end, HistJob& job) {
  const __m256i copy_of_lane = _mm256_setr_epi32(0, 1, 2, 3, 0, 1, 2, 3);
  const __m256i prefix = _mm256_set1_epi32(int32_t(job.prefix));
  const __m256i digit_mask = _mm256_set1_epi32(int32_t(job.digit_mask));
  const __m128i shift = _mm_cvtsi32_si128(job.shift);
  const __m128i prefix_shift = _mm_cvtsi32_si128(job.prefix_shift);
  __m256i max_key = _mm256_set1_epi32(int32_t(job.max_key));
  alignas(32) uint32_t index[8];
  uint32_t* counts = job.counts;
  int64_t i = begin;
  for (; i + 8 <= end; i += 8) {
    const __m256i key = keys8_avx2<D>(data, i);
    max_key = _mm256_max_epu32(max_key, key);
    const __m256i hit = _mm256_cmpeq_epi32(_mm256_srl_epi32(key, prefix_shift), prefix);
    unsigned live = unsigned(_mm256_movemask_ps(_mm256_castsi256_ps(hit)));
    if (live == 0) continue;
    const __m256i digit = _mm256_and_si256(_mm256_srl_epi32(key, shift), digit_mask);
    _mm256_store_si256(reinterpret_cast<__m256i*>(index),
                       _mm256_or_si256(_mm256_slli_epi32(digit, 2), copy_of_lane));
    if (live == 0xff) {
      for (int j = 0; j < 8; ++j) ++counts[index[j]];
    } else {
      for (; live != 0; live &= live - 1) ++counts[index[__builtin_ctz(live)]];
    }
  }
  alignas(32) uint32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), max_key);
  for (uint32_t m : lanes) job.max_key = std::max(job.max_key, m);
  hist_scalar<D>(data, i, end, job);
}

template <DType D>
SLIMTORCH_AVX2 int64_t mask_avx2(const void* data, int64_t begin, int64_t end, uint32_t limit,
                                 uint8_t* keep) {
  // Keys are < 2^31, so the signed compares are exact.
  const __m256i lim = _mm256_set1_epi32(int32_t(limit));
  int64_t ties = 0, i = begin;
  for (; i + 8 <= end; i += 8) {
    const __m256i key = keys8_avx2<D>(data, i);
    const uint64_t gt = uint64_t(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(key, lim))));
    ties += __builtin_popcount(unsigned(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(key, lim)))));
    // Spread the 8 mask bits into 8 bytes of 0/1: byte j of the product keeps
    // bit j; adding 0x7f sets bit 7 of exactly the nonzero bytes (no carries).
    const uint64_t picked = (gt * 0x0101010101010101ull) & 0x8040201008040201ull;
    const uint64_t bytes = ((picked + 0x7f7f7f7f7f7f7f7full) >> 7) & 0x0101010101010101ull;
    std::memcpy(keep + i, &bytes, 8);
  }
  return ties + mask_scalar<D>(data, i, end, limit, keep);
}

// ---- AVX-512 -----------------------------------------------------------------

// GCC 12 flags the self-initialised "undefined" vectors inside its own
// AVX-512 intrinsics (_mm512_undefined_*) as uninitialised: a false positive.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define SLIMTORCH_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

template <DType D>
SLIMTORCH_AVX512 inline __m512i keys16_avx512(const void* data, int64_t i, __mmask16 live) {
  const __m512i abs_mask = _mm512_set1_epi32(int32_t(kAbsMask));
  if constexpr (D == DType::kFloat32) {
    return _mm512_and_si512(_mm512_maskz_loadu_epi32(live, static_cast<const uint32_t*>(data) + i),
                            abs_mask);
  } else {
    const __m256i h = _mm256_maskz_loadu_epi16(live, static_cast<const uint16_t*>(data) + i);
    if constexpr (D == DType::kBFloat16)
      return _mm512_and_si512(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16), abs_mask);
    else
      return _mm512_and_si512(_mm512_castps_si512(_mm512_cvtph_ps(h)), abs_mask);
  }
}

SLIMTORCH_AVX512 inline __mmask16 live_lanes(int64_t remaining) {
  return remaining >= 16 ? __mmask16(0xffff) : __mmask16((1u << remaining) - 1);
}

template <DType D>
SLIMTORCH_AVX512 void hist_avx512(const void* data, int64_t begin, int64_t end, HistJob& job) {
  const __m512i copy_of_lane = _mm512_setr_epi32(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3);
  const __m512i prefix = _mm512_set1_epi32(int32_t(job.prefix));
  const __m512i digit_mask = _mm512_set1_epi32(int32_t(job.digit_mask));
  const __m128i shift = _mm_cvtsi32_si128(job.shift);
  const __m128i prefix_shift = _mm_cvtsi32_si128(job.prefix_shift);
  __m512i max_key = _mm512_set1_epi32(int32_t(job.max_key));  // masked-off lanes load 0
  alignas(64) uint32_t index[16];
  uint32_t* counts = job.counts;
  for (int64_t i = begin; i < end; i += 16) {
    const __mmask16 live = live_lanes(end - i);
    const __m512i key = keys16_avx512<D>(data, i, live);
    max_key = _mm512_max_epu32(max_key, key);
    unsigned hit = _mm512_mask_cmpeq_epi32_mask(live, _mm512_srl_epi32(key, prefix_shift), prefix);
    if (hit == 0) continue;
    const __m512i digit = _mm512_and_si512(_mm512_srl_epi32(key, shift), digit_mask);
    _mm512_store_si512(index, _mm512_or_si512(_mm512_slli_epi32(digit, 2), copy_of_lane));
    if (hit == 0xffff) {
      for (int j = 0; j < 16; ++j) ++counts[index[j]];
    } else {
      for (; hit != 0; hit &= hit - 1) ++counts[index[__builtin_ctz(hit)]];
    }
  }
  job.max_key = _mm512_reduce_max_epu32(max_key);
}

template <DType D>
SLIMTORCH_AVX512 int64_t mask_avx512(const void* data, int64_t begin, int64_t end, uint32_t limit,
                                     uint8_t* keep) {
  const __m512i lim = _mm512_set1_epi32(int32_t(limit));
  int64_t ties = 0;
  for (int64_t i = begin; i < end; i += 16) {
    const __mmask16 live = live_lanes(end - i);
    const __m512i key = keys16_avx512<D>(data, i, live);
    const __mmask16 gt = _mm512_mask_cmpgt_epu32_mask(live, key, lim);
    ties += __builtin_popcount(unsigned(_mm512_mask_cmpeq_epu32_mask(live, key, lim)));
    _mm_mask_storeu_epi8(keep + i, live, _mm_maskz_set1_epi8(gt, 1));
  }
  return ties;
}

#pragma GCC diagnostic pop


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

// For each 8-bit lane mask, the lanes set, in order, as permutevar8x32 indices
// (one byte each), so that a permute moves the selected keys to the front.
struct CompressTable {
  uint64_t indices[256];
  CompressTable() {
    for (unsigned mask = 0; mask < 256; ++mask) {
      uint64_t packed = 0;
      int slot = 0;
      for (int lane = 0; lane < 8; ++lane)
        if (mask & (1u << lane)) packed |= uint64_t(lane) << (8 * slot++);
      indices[mask] = packed;
    }
  }
};
const CompressTable kCompress;

template <DType D>
SLIMTORCH_AVX2 void window_avx2(const void* data, int64_t begin, int64_t end, WindowTally& t) {
  // Keys are < 2^31, so the signed compares are exact.
  const __m256i lo = _mm256_set1_epi32(int32_t(t.lo)), hi = _mm256_set1_epi32(int32_t(t.hi));
  __m256i max_key = _mm256_set1_epi32(int32_t(t.max_key));
  // Counters live in locals: as struct fields the compiler keeps them in
  // memory (the stores to `stored` may alias them), a chain through memory.
  int64_t less = 0, at_lo_count = 0;
  uint32_t* stored = t.stored.get();
  size_t count = t.count;
  const size_t cap = t.cap;
  int64_t i = begin;
  for (; i + 8 <= end; i += 8) {
    if (count > cap) break;
    const __m256i key = keys8_avx2<D>(data, i);
    max_key = _mm256_max_epu32(max_key, key);
    const __m256i above_lo = _mm256_cmpgt_epi32(key, lo);
    const __m256i at_lo = _mm256_cmpeq_epi32(key, lo);
    const unsigned below = ~unsigned(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_or_si256(above_lo, at_lo)))) & 0xff;
    less += __builtin_popcount(below);
    at_lo_count += __builtin_popcount(unsigned(_mm256_movemask_ps(_mm256_castsi256_ps(at_lo))));
    const unsigned inside = unsigned(_mm256_movemask_ps(
        _mm256_castsi256_ps(_mm256_andnot_si256(_mm256_cmpgt_epi32(key, hi), above_lo))));
    const __m256i order = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
        reinterpret_cast<const __m128i*>(&kCompress.indices[inside])));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(stored + count), _mm256_permutevar8x32_epi32(key, order));
    count += size_t(__builtin_popcount(inside));
  }
  t.count = count;
  t.less += less;
  t.at_lo += at_lo_count;
  alignas(32) uint32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), max_key);
  for (uint32_t m : lanes) t.max_key = std::max(t.max_key, m);
  if (count > cap) t.overflow = true;
  else window_scalar<D>(data, i, end, t);
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

template <DType D>
SLIMTORCH_AVX512 void window_avx512(const void* data, int64_t begin, int64_t end, WindowTally& t) {
  const __m512i lo = _mm512_set1_epi32(int32_t(t.lo)), hi = _mm512_set1_epi32(int32_t(t.hi));
  __m512i max_key = _mm512_set1_epi32(int32_t(t.max_key));  // masked-off lanes load 0
  int64_t less = 0, at_lo = 0;  // locals, as in window_avx2
  uint32_t* stored = t.stored.get();
  size_t count = t.count;
  const size_t cap = t.cap;
  for (int64_t i = begin; i < end; i += 16) {
    if (count > cap) break;
    const __mmask16 live = live_lanes(end - i);
    const __m512i key = keys16_avx512<D>(data, i, live);
    max_key = _mm512_max_epu32(max_key, key);
    less += __builtin_popcount(unsigned(_mm512_mask_cmplt_epu32_mask(live, key, lo)));
    at_lo += __builtin_popcount(unsigned(_mm512_mask_cmpeq_epu32_mask(live, key, lo)));
    const __mmask16 inside = _mm512_mask_cmple_epu32_mask(_mm512_mask_cmpgt_epu32_mask(live, key, lo), key, hi);
    // Register-form compress, then a plain store (the memory form is slow on Zen 4).
    _mm512_storeu_si512(stored + count, _mm512_maskz_compress_epi32(inside, key));
    count += size_t(__builtin_popcount(unsigned(inside)));
  }
  t.count = count;
  t.overflow = count > cap;
  t.less += less;
  t.at_lo += at_lo;
  alignas(64) uint32_t lanes[16];
  _mm512_store_si512(lanes, max_key);
  for (uint32_t m : lanes) t.max_key = std::max(t.max_key, m);
}

#pragma GCC diagnostic pop

// ---- dispatch ----------------------------------------------------------------

template <DType D>
void hist_range(const void* data, int64_t begin, int64_t end, HistJob& job) {
  const Isa isa = active_isa();
  if (isa >= Isa::kAvx512) hist_avx512<D>(data, begin, end, job);
  else if (isa >= Isa::kAvx2) hist_avx2<D>(data, begin, end, job);
  else hist_scalar<D>(data, begin, end, job);
}

void hist_range(const Segment& s, int64_t begin, int64_t end, HistJob& job) {
  switch (s.dtype) {
    case DType::kFloat32: return hist_range<DType::kFloat32>(s.data, begin, end, job);
    case DType::kFloat16: return hist_range<DType::kFloat16>(s.data, begin, end, job);
    case DType::kBFloat16: return hist_range<DType::kBFloat16>(s.data, begin, end, job);
  }
}

template <DType D>
void window_range(const void* data, int64_t begin, int64_t end, WindowTally& t) {
  const Isa isa = active_isa();
  if (isa >= Isa::kAvx512) window_avx512<D>(data, begin, end, t);
  else if (isa >= Isa::kAvx2) window_avx2<D>(data, begin, end, t);
  else window_scalar<D>(data, begin, end, t);
}

void window_range(const Segment& s, int64_t begin, int64_t end, WindowTally& t) {
  switch (s.dtype) {
    case DType::kFloat32: return window_range<DType::kFloat32>(s.data, begin, end, t);
    case DType::kFloat16: return window_range<DType::kFloat16>(s.data, begin, end, t);
    case DType::kBFloat16: return window_range<DType::kBFloat16>(s.data, begin, end, t);
  }
}

template <DType D>
int64_t mask_range(const void* data, int64_t begin, int64_t end, uint32_t limit, uint8_t* keep) {
  const Isa isa = active_isa();
  if (isa >= Isa::kAvx512) return mask_avx512<D>(data, begin, end, limit, keep);
  if (isa >= Isa::kAvx2) return mask_avx2<D>(data, begin, end, limit, keep);
  return mask_scalar<D>(data, begin, end, limit, keep);
}

int64_t mask_range(const Segment& s, int64_t begin, int64_t end, uint32_t limit, uint8_t* keep) {
  switch (s.dtype) {
    case DType::kFloat32: return mask_range<DType::kFloat32>(s.data, begin, end, limit, keep);
    case DType::kFloat16: return mask_range<DType::kFloat16>(s.data, begin, end, limit, keep);
    case DType::kBFloat16: return mask_range<DType::kBFloat16>(s.data, begin, end, limit, keep);
  }
  return 0;
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
      for (int64_t block = lo; block < hi; block += kFlushBlock) {
        const int64_t block_end = std::min(hi, block + kFlushBlock);
        if (since_flush + (block_end - block) > kFlushBlock) {
          flush();
          since_flush = 0;
        }
        hist_range(seq.segment(s), block, block_end, job);
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
      if (!tally.overflow) window_range(seq.segment(s), b, e, tally);
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
      ties[size_t(t)] += mask_range(seq.segment(s), lo, hi, limit, keep[s]);
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
