// Threshold bodies for AVX-512 (x86-64; per-function target attributes).
#include <immintrin.h>

#include "threshold_paths.h"

namespace slimtorch::threshold_paths {

__attribute__((target("avx512f,avx512bw,avx512vl"))) int64_t threshold32_avx512(
    uint32_t* w, uint8_t* keep, int64_t n, uint32_t limit, bool write_mask) {
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
  const __m512i lim = _mm512_set1_epi32(int32_t(limit));
  int64_t kept = 0, i = 0;
  for (; i < n; i += 16) {
    // The tail runs through the same masked loop: no scalar remainder.
    const __mmask16 live = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1);
    const __m512i v = _mm512_maskz_loadu_epi32(live, w + i);
    const __mmask16 keep_m = _mm512_mask_cmpgt_epu32_mask(live, _mm512_and_si512(v, abs_mask), lim);
    kept += __builtin_popcount(keep_m);
    if (write_mask) {
      _mm_mask_storeu_epi8(keep + i, live, _mm_maskz_set1_epi8(keep_m, 1));
    } else {
      // Store only the lanes being zeroed: untouched lines stay clean.
      _mm512_mask_storeu_epi32(w + i, __mmask16(live & ~keep_m), _mm512_setzero_si512());
    }
  }
  return kept;
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) int64_t threshold16_avx512(
    uint16_t* w, uint8_t* keep, int64_t n, uint16_t limit, bool write_mask) {
  const __m512i abs_mask = _mm512_set1_epi16(0x7fff);
  const __m512i lim = _mm512_set1_epi16(int16_t(limit));
  int64_t kept = 0, i = 0;
  for (; i < n; i += 32) {
    const __mmask32 live = n - i >= 32 ? __mmask32(0xffffffffu) : __mmask32((1u << (n - i)) - 1);
    const __m512i v = _mm512_maskz_loadu_epi16(live, w + i);
    const __mmask32 keep_m = _mm512_mask_cmpgt_epu16_mask(live, _mm512_and_si512(v, abs_mask), lim);
    kept += __builtin_popcount(keep_m);
    if (write_mask) {
      _mm256_mask_storeu_epi8(keep + i, live, _mm256_maskz_set1_epi8(keep_m, 1));
    } else {
      _mm512_mask_storeu_epi16(w + i, __mmask32(live & ~keep_m), _mm512_setzero_si512());
    }
  }
  return kept;
}

}  // namespace slimtorch::threshold_paths
