// Magnitude thresholding kernels. Every comparison is on integers: with the
// sign bit cleared, IEEE bit patterns of non-NaN values order like the values,
// so |w| <= t  <=>  (bits(w) & ~sign) <= bits(largest value <= t).
#include "slimtorch/threshold.h"

#include <immintrin.h>

#include <cmath>
#include <vector>

namespace slimtorch {
namespace {

constexpr int64_t kGrain = 1 << 16;  // elements per chunk below which threads cost more than they save

// Scalar bodies; also the tails of the vector paths.
template <typename Bits, bool kWriteMask>
int64_t threshold_scalar(Bits* w, uint8_t* keep, int64_t n, Bits limit) {
  constexpr Bits kAbs = Bits(~Bits(0)) >> 1;
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    const bool k = Bits(w[i] & kAbs) > limit;
    kept += k;
    if (kWriteMask) keep[i] = k;
    else if (!k) w[i] = 0;
  }
  return kept;
}

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

int64_t threshold_range(void* w, DType dtype, int64_t begin, int64_t end, int64_t limit,
                        uint8_t* keep) {
  const int64_t n = end - begin;
  const bool write_mask = keep != nullptr;
  uint8_t* keep_at = write_mask ? keep + begin : nullptr;
  const Isa isa = active_isa();
  if (dtype == DType::kFloat32) {
    uint32_t* data = static_cast<uint32_t*>(w) + begin;
    const uint32_t lim = uint32_t(limit);
    if (isa >= Isa::kAvx512) return threshold32_avx512(data, keep_at, n, lim, write_mask);
    if (isa >= Isa::kAvx2) return threshold32_avx2(data, keep_at, n, lim, write_mask);
    return write_mask ? threshold_scalar<uint32_t, true>(data, keep_at, n, lim)
                      : threshold_scalar<uint32_t, false>(data, nullptr, n, lim);
  }
  uint16_t* data = static_cast<uint16_t*>(w) + begin;
  const uint16_t lim = uint16_t(limit);
  if (isa >= Isa::kAvx512) return threshold16_avx512(data, keep_at, n, lim, write_mask);
  if (isa >= Isa::kAvx2) return threshold16_avx2(data, keep_at, n, lim, write_mask);
  return write_mask ? threshold_scalar<uint16_t, true>(data, keep_at, n, lim)
                    : threshold_scalar<uint16_t, false>(data, nullptr, n, lim);
}

Status run_threshold(void* w, DType dtype, int64_t n, float threshold, uint8_t* keep,
                     int n_threads, int64_t* kept) {
  if (n < 0 || kept == nullptr || (n > 0 && w == nullptr) || std::isnan(threshold))
    return Status::kInvalidArgument;
  const int64_t limit = magnitude_bits_at_most(dtype, threshold);
  if (limit < 0) {  // nothing is pruned
    if (keep != nullptr) std::memset(keep, 1, size_t(n));
    *kept = n;
    return Status::kOk;
  }
  std::vector<int64_t> kept_by_chunk(size_t(plan_chunks(n_threads, n, kGrain)), 0);
  parallel_for(n_threads, n, kGrain, [&](int64_t begin, int64_t end, int t) {
    kept_by_chunk[t] = threshold_range(w, dtype, begin, end, limit, keep);
  });
  *kept = 0;
  for (int64_t k : kept_by_chunk) *kept += k;
  return Status::kOk;
}

}  // namespace

int64_t magnitude_bits_at_most(DType dtype, float threshold) {
  if (!(threshold >= 0.0f)) return -1;
  threshold = std::fabs(threshold);  // -0.0 passes the test above; its bits must not
  if (dtype == DType::kFloat32) return int64_t(float_to_bits(threshold));
  // Binary search over the non-negative 16-bit patterns up to +Inf, which
  // are ordered like their values.
  const int64_t inf_bits = dtype == DType::kFloat16 ? 0x7c00 : 0x7f80;
  int64_t lo = 0, hi = inf_bits;  // invariant: value(lo) <= threshold
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (half_to_float(uint16_t(mid), dtype) <= threshold) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

Status threshold_inplace(void* w, DType dtype, int64_t n, float threshold, int n_threads,
                         int64_t* kept) {
  return run_threshold(w, dtype, n, threshold, nullptr, n_threads, kept);
}

Status prune_mask(const void* w, DType dtype, int64_t n, float threshold, uint8_t* keep,
                  int n_threads, int64_t* kept) {
  if (n > 0 && keep == nullptr) return Status::kInvalidArgument;
  // The mask path never writes w.
  return run_threshold(const_cast<void*>(w), dtype, n, threshold, keep, n_threads, kept);
}

}  // namespace slimtorch
