// Threshold bodies for AVX2 (x86-64; per-function target attributes).
#include <immintrin.h>

#include "threshold_paths.h"

namespace slimtorch::threshold_paths {

__attribute__((target("avx2"))) int64_t threshold32_avx2(uint32_t* w, uint8_t* keep, int64_t n,
                                                          uint32_t limit, bool write_mask) {
  // Sign-cleared patterns are < 2^31, so the signed compare is exact.
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
  const __m256i lim = _mm256_set1_epi32(int32_t(limit));
  int64_t kept = 0, i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i));
    const __m256i keep_v = _mm256_cmpgt_epi32(_mm256_and_si256(v, abs_mask), lim);
    const int bits = _mm256_movemask_ps(_mm256_castsi256_ps(keep_v));
    kept += __builtin_popcount(bits);
    if (write_mask) {
      for (int j = 0; j < 8; ++j) keep[i + j] = (bits >> j) & 1;
    } else if (bits != 0xff) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(w + i), _mm256_and_si256(v, keep_v));
    }
  }
  return kept + (write_mask ? threshold_scalar<uint32_t, true>(w + i, keep + i, n - i, limit)
                            : threshold_scalar<uint32_t, false>(w + i, nullptr, n - i, limit));
}

__attribute__((target("avx2"))) int64_t threshold16_avx2(uint16_t* w, uint8_t* keep, int64_t n,
                                                          uint16_t limit, bool write_mask) {
  const __m256i abs_mask = _mm256_set1_epi16(0x7fff);
  const __m256i lim = _mm256_set1_epi16(int16_t(limit));
  int64_t kept = 0, i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i));
    const __m256i keep_v = _mm256_cmpgt_epi16(_mm256_and_si256(v, abs_mask), lim);
    // movemask_epi8 gives two identical bits per 16-bit lane.
    const uint32_t byte_bits = uint32_t(_mm256_movemask_epi8(keep_v));
    kept += __builtin_popcount(byte_bits) / 2;
    if (write_mask) {
      const __m128i packed = _mm_packs_epi16(_mm256_castsi256_si128(keep_v),
                                             _mm256_extracti128_si256(keep_v, 1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(keep + i),
                       _mm_and_si128(packed, _mm_set1_epi8(1)));
    } else if (byte_bits != 0xffffffffu) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(w + i), _mm256_and_si256(v, keep_v));
    }
  }
  return kept + (write_mask ? threshold_scalar<uint16_t, true>(w + i, keep + i, n - i, limit)
                            : threshold_scalar<uint16_t, false>(w + i, nullptr, n - i, limit));
}

}  // namespace slimtorch::threshold_paths
