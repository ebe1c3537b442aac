// Select paths for AVX2 (x86-64; per-function target attributes).
#include <immintrin.h>

#include <cstring>

#include "select_paths.h"

namespace slimtorch::select_paths {
namespace {

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

// One step of the window pass (see window_steps): 8 keys.
template <DType D>
struct Avx2WindowStep {
  static constexpr int64_t kLanes = 8;
  // Keys are < 2^31, so the signed compares are exact.
  __m256i lo, hi, max_key;
  // The counters live in this local object, not in the tally: as tally
  // fields the compiler keeps them in memory (the stores to `stored` may
  // alias them), a chain through memory.
  int64_t less = 0, at_lo_count = 0;

  SLIMTORCH_AVX2 explicit Avx2WindowStep(const WindowTally& t)
      : lo(_mm256_set1_epi32(int32_t(t.lo))),
        hi(_mm256_set1_epi32(int32_t(t.hi))),
        max_key(_mm256_set1_epi32(int32_t(t.max_key))) {}

  SLIMTORCH_AVX2 size_t operator()(const void* data, int64_t i, uint32_t* to) {
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
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(to), _mm256_permutevar8x32_epi32(key, order));
    return size_t(__builtin_popcount(inside));
  }

  SLIMTORCH_AVX2 void finish(WindowTally& t) const {
    t.less += less;
    t.at_lo += at_lo_count;
    alignas(32) uint32_t lanes[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), max_key);
    for (uint32_t m : lanes) t.max_key = std::max(t.max_key, m);
  }
};

template <DType D>
struct Avx2Kernels {
  SLIMTORCH_AVX2 static void hist(const void* data, int64_t begin, int64_t end, HistJob& job) {
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
    ScalarKernels<D>::hist(data, i, end, job);
  }

  SLIMTORCH_AVX2 static int64_t mask(const void* data, int64_t begin, int64_t end, uint32_t limit,
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
    return ties + ScalarKernels<D>::mask(data, i, end, limit, keep);
  }

  SLIMTORCH_AVX2 static void window(const void* data, int64_t begin, int64_t end, WindowTally& t) {
    window_steps<D, Avx2WindowStep<D>>(data, begin, end, t);
  }
};

}  // namespace

Kernels kernels_avx2(DType d) { return kernels_of<Avx2Kernels>(d); }

}  // namespace slimtorch::select_paths
