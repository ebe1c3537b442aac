// Select paths for AVX-512 (x86-64; per-function target attributes).
#include <immintrin.h>

#include <cstring>

#include "select_paths.h"

namespace slimtorch::select_paths {
namespace {

// ---- AVX-512 -----------------------------------------------------------------

// GCC 12 flags the self-initialised "undefined" vectors inside its own
// AVX-512 intrinsics (_mm512_undefined_*) as uninitialised: a false positive.
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
struct Avx512Kernels {
  SLIMTORCH_AVX512 static void hist(const void* data, int64_t begin, int64_t end, HistJob& job) {
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

  SLIMTORCH_AVX512 static int64_t mask(const void* data, int64_t begin, int64_t end, uint32_t limit,
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

  SLIMTORCH_AVX512 static void window(const void* data, int64_t begin, int64_t end, WindowTally& t) {
    const __m512i lo = _mm512_set1_epi32(int32_t(t.lo)), hi = _mm512_set1_epi32(int32_t(t.hi));
    __m512i max_key = _mm512_set1_epi32(int32_t(t.max_key));  // masked-off lanes load 0
    int64_t less = 0, at_lo = 0;  // locals, as in the AVX2 window
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
};

}  // namespace

Kernels kernels_avx512(DType d) { return kernels_of<Avx512Kernels>(d); }

}  // namespace slimtorch::select_paths
