// Narrowing four AVX-512 vectors of int32 to 64 bytes in one go (shared by the
// AVX-512 quantize kernels of quantize_avx512.cpp and qgemm_avx512.cpp; x86 only).
#pragma once

#include <immintrin.h>

namespace slimtorch {

// Elements 0-15, 16-31, 32-47, 48-63 (int32, in v[0..3]) become 64 bytes in
// order, saturated to int8 (kSigned) or uint8. Two packs narrow all four
// vectors (about half the uops of four vpmovdb), but they interleave
// 128-bit lanes: dword 4L + u of their result holds elements 16u + 4L .. +3,
// which the permute moves to dword 4u + L.
template <bool kSigned>
__attribute__((target("avx512f,avx512bw"))) inline __m512i narrow_to_bytes64(const __m512i v[4]) {
  const __m512i words01 = _mm512_packs_epi32(v[0], v[1]), words23 = _mm512_packs_epi32(v[2], v[3]);
  const __m512i bytes = kSigned ? _mm512_packs_epi16(words01, words23) : _mm512_packus_epi16(words01, words23);
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutexvar_epi32(order, bytes);
}

}  // namespace slimtorch
