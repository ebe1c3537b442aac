// Threshold bodies for AVX2 (x86-64; per-function target attributes): one
// loop for both element widths, 32 bytes a step; the helpers pick each
// step's instructions by the width.
#include <immintrin.h>

#include "threshold_paths.h"

namespace slimtorch::threshold_paths {
namespace {

#define SLIMTORCH_AVX2 __attribute__((target("avx2")))

template <class Bits>
SLIMTORCH_AVX2 inline __m256i splat(Bits x) {
  if constexpr (sizeof(Bits) == 4) return _mm256_set1_epi32(int32_t(x));
  else return _mm256_set1_epi16(int16_t(x));
}

// All ones in the lanes of v whose sign-cleared bits are above lim.
// Sign-cleared patterns are below the sign bit, so the signed compare is exact.
template <class Bits>
SLIMTORCH_AVX2 inline __m256i above(__m256i v, __m256i abs_mask, __m256i lim) {
  if constexpr (sizeof(Bits) == 4) return _mm256_cmpgt_epi32(_mm256_and_si256(v, abs_mask), lim);
  else return _mm256_cmpgt_epi16(_mm256_and_si256(v, abs_mask), lim);
}

// One bit per 32-bit lane (movemask_ps); two identical bits per 16-bit lane
// (movemask_epi8, there is no 16-bit form).
template <class Bits>
constexpr int kMaskBitsPerLane = sizeof(Bits) == 4 ? 1 : 2;

template <class Bits>
SLIMTORCH_AVX2 inline int lane_bits(__m256i lanes) {
  if constexpr (sizeof(Bits) == 4) return _mm256_movemask_ps(_mm256_castsi256_ps(lanes));
  else return _mm256_movemask_epi8(lanes);
}

// keep[i + j] = 0/1 for each lane j of the compare result keep_v (bits: its
// lane_bits).
template <class Bits>
SLIMTORCH_AVX2 inline void store_keep(uint8_t* keep, int64_t i, __m256i keep_v, int bits) {
  if constexpr (sizeof(Bits) == 4) {
    for (int j = 0; j < 8; ++j) keep[i + j] = (bits >> j) & 1;
  } else {
    const __m128i packed = _mm_packs_epi16(_mm256_castsi256_si128(keep_v),
                                           _mm256_extracti128_si256(keep_v, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(keep + i), _mm_and_si128(packed, _mm_set1_epi8(1)));
  }
}

template <class Bits>
SLIMTORCH_AVX2 int64_t threshold_loop(Bits* w, uint8_t* keep, int64_t n, Bits limit) {
  constexpr int64_t kLanes = 32 / sizeof(Bits);
  constexpr int kAllKept = int((uint64_t(1) << (kLanes * kMaskBitsPerLane<Bits>)) - 1);
  const bool write_mask = keep != nullptr;
  const __m256i abs_mask = splat(kAbs<Bits>), lim = splat(limit);
  int64_t kept = 0, i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i));
    const __m256i keep_v = above<Bits>(v, abs_mask, lim);
    const int bits = lane_bits<Bits>(keep_v);
    kept += __builtin_popcount(bits) / kMaskBitsPerLane<Bits>;
    if (write_mask) {
      store_keep<Bits>(keep, i, keep_v, bits);
    } else if (bits != kAllKept) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(w + i), _mm256_and_si256(v, keep_v));
    }
  }
  return kept + threshold_tail(w, keep, i, n, limit);
}

}  // namespace

const Path kAvx2Path = {threshold_loop<uint32_t>, threshold_loop<uint16_t>};

}  // namespace slimtorch::threshold_paths
