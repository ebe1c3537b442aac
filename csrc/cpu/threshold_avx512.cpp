// Threshold bodies for AVX-512 (x86-64; per-function target attributes): one
// masked loop for both element widths, 64 bytes a step; the helpers pick
// each step's instructions by the width.
#include <immintrin.h>

#include <type_traits>

#include "threshold_paths.h"

namespace slimtorch::threshold_paths {
namespace {

#define SLIMTORCH_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

// One bit per lane: 16 lanes of 32 bits, 32 lanes of 16 bits.
template <class Bits>
using LaneMask = std::conditional_t<sizeof(Bits) == 4, __mmask16, __mmask32>;

template <class Bits>
SLIMTORCH_AVX512 inline __m512i splat(Bits x) {
  if constexpr (sizeof(Bits) == 4) return _mm512_set1_epi32(int32_t(x));
  else return _mm512_set1_epi16(int16_t(x));
}

template <class Bits>
SLIMTORCH_AVX512 inline __m512i load(LaneMask<Bits> live, const Bits* p) {
  if constexpr (sizeof(Bits) == 4) return _mm512_maskz_loadu_epi32(live, p);
  else return _mm512_maskz_loadu_epi16(live, p);
}

// The live lanes of v whose sign-cleared bits are above lim.
template <class Bits>
SLIMTORCH_AVX512 inline LaneMask<Bits> above(LaneMask<Bits> live, __m512i v, __m512i abs_mask,
                                             __m512i lim) {
  if constexpr (sizeof(Bits) == 4) return _mm512_mask_cmpgt_epu32_mask(live, _mm512_and_si512(v, abs_mask), lim);
  else return _mm512_mask_cmpgt_epu16_mask(live, _mm512_and_si512(v, abs_mask), lim);
}

// keep[j] = 1 for the lanes of kept, 0 for the other live lanes.
template <class Bits>
SLIMTORCH_AVX512 inline void store_keep(uint8_t* keep, LaneMask<Bits> live, LaneMask<Bits> kept) {
  if constexpr (sizeof(Bits) == 4) _mm_mask_storeu_epi8(keep, live, _mm_maskz_set1_epi8(kept, 1));
  else _mm256_mask_storeu_epi8(keep, live, _mm256_maskz_set1_epi8(kept, 1));
}

// Stores zeros into the lanes of `drop` only: untouched lines stay clean.
template <class Bits>
SLIMTORCH_AVX512 inline void zero_lanes(Bits* w, LaneMask<Bits> drop) {
  if constexpr (sizeof(Bits) == 4) _mm512_mask_storeu_epi32(w, drop, _mm512_setzero_si512());
  else _mm512_mask_storeu_epi16(w, drop, _mm512_setzero_si512());
}

template <class Bits>
SLIMTORCH_AVX512 int64_t threshold_loop(Bits* w, uint8_t* keep, int64_t n, Bits limit) {
  using Mask = LaneMask<Bits>;
  constexpr int64_t kLanes = 64 / sizeof(Bits);
  const bool write_mask = keep != nullptr;
  const __m512i abs_mask = splat(kAbs<Bits>), lim = splat(limit);
  int64_t kept = 0, i = 0;
  for (; i < n; i += kLanes) {
    // The tail runs through the same masked loop: no scalar remainder.
    const Mask live = n - i >= kLanes ? Mask(~0u) : Mask((1u << (n - i)) - 1);
    const __m512i v = load<Bits>(live, w + i);
    const Mask keep_m = above<Bits>(live, v, abs_mask, lim);
    kept += __builtin_popcount(keep_m);
    if (write_mask) store_keep<Bits>(keep + i, live, keep_m);
    else zero_lanes<Bits>(w + i, Mask(live & ~keep_m));
  }
  return kept;
}

}  // namespace

const Path kAvx512Path = {threshold_loop<uint32_t>, threshold_loop<uint16_t>};

}  // namespace slimtorch::threshold_paths
