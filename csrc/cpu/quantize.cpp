// Affine int8/uint8 quantization kernels (formulas in slimtorch/quantize.h).
//
// This file is compiled with -ffp-contract=off (CMakeLists.txt): the
// per-channel formula rounds x * inv and then + zp separately, exactly like
// torch, and a compiler-fused multiply-add would round once. Where one
// rounding is wanted (per tensor) the code says fma explicitly.
//
// Work split: the flat element range [0, n) is cut into parallel_for chunks;
// each chunk is walked as "runs" of elements that share parameters:
//  - broadcast runs: a whole per-tensor chunk, or one row of `inner` elements
//    of one channel (per channel with inner >= kShortInner);
//  - array runs: per channel with short rows (e.g. the last axis, inner = 1):
//    a row of channels * inner elements paired element by element with
//    parameter arrays expanded to that row, so vector loops stay long.
#include "slimtorch/quantize.h"

#include "narrow.h"

// GCC 12's AVX-512 headers initialise "undefined" vectors as `__Y = __Y`,
// which -Wall reports at every inlined use; the warning is a false positive.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#define SLIMTORCH_AVX2 __attribute__((target("avx2,fma,f16c")))
#define SLIMTORCH_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

namespace slimtorch {
namespace {

constexpr int64_t kGrain = 1 << 16;     // elements per chunk below which threads cost more than they save
constexpr int64_t kShortInner = 16;     // rows shorter than this use array runs
constexpr int64_t kStreamBytes = int64_t(16) << 20;  // outputs this large bypass the caches
constexpr uint32_t kInfBits = 0x7f800000u;  // |x| bits >= this: Inf or NaN

// Outputs are freshly allocated by torch and written once, so for large
// ones the first-touch page faults (one per 4 KiB page, each zeroing it)
// cost more than the kernel itself. Asking for transparent huge pages over
// the 2 MiB-aligned interior cuts the faults ~500x; it is only a hint (a
// no-op where THP is off) and the memory still belongs to torch.
void advise_huge_pages(void* data, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(1) << 21;
  if (bytes < int64_t(2 * kHuge)) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + uintptr_t(bytes)) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data, (void)bytes;
#endif
}

// Calls run(i, len, k) for consecutive runs covering [begin, end): k is the
// channel of a broadcast run, or the offset of i within its row for array runs.
template <typename Run>
void for_each_run(const ChannelView& view, bool arrays, int64_t begin, int64_t end, Run&& run) {
  const int64_t period = arrays ? view.channels * view.inner : view.inner;
  int64_t i = begin;
  while (i < end) {
    const int64_t row = i / period, offset = i - row * period;
    const int64_t stop = std::min(end, i - offset + period);
    run(i, stop - i, arrays ? offset : row % view.channels);
    i = stop;
  }
}

// Parameters of a run: one value each (broadcast, read [0]) or arrays
// aligned with the run's elements.
struct RunParams {
  const float* mul;  // 1/scale (quantize) or scale (dequantize)
  const float* zp;   // zero points as floats (exact: small integers)
};

// Per-channel parameters laid out for the runs: one entry per channel, or
// for array runs one entry per element of a row of channels * inner.
struct ParamTable {
  std::vector<float> mul, zp;
  ParamTable(const ChannelView& view, bool arrays, const float* scale, const int32_t* zero_point,
             bool reciprocal) {
    const int64_t repeat = arrays ? view.inner : 1;
    mul.resize(size_t(view.channels * repeat));
    zp.resize(mul.size());
    for (int64_t c = 0; c < view.channels; ++c) {
      const float m = reciprocal ? 1.0f / scale[c] : scale[c];
      std::fill_n(mul.begin() + c * repeat, repeat, m);
      std::fill_n(zp.begin() + c * repeat, repeat, float(zero_point[c]));
    }
  }
  RunParams at(int64_t k) const { return {mul.data() + k, zp.data() + k}; }
};

// ---- scalar paths (also the tails of the AVX2 paths) -------------------------

template <bool kFma>
inline int32_t quantize_value(float x, float inv, float zp, float qlo, float qhi) {
  const float t = kFma ? std::fma(x, inv, zp) : x * inv + zp;
  if (t != t) return int32_t(zp);  // NaN
  return int32_t(std::lrint(std::min(std::max(t, qlo), qhi)));  // clamp before rounding: exact, qlo/qhi are integers
}

template <DType D>
inline void store_float(void* out, int64_t i, float v) {
  if (D == DType::kFloat32) static_cast<float*>(out)[i] = v;
  else if (D == DType::kFloat16) static_cast<uint16_t*>(out)[i] = float_to_fp16(v);
  else static_cast<uint16_t*>(out)[i] = float_to_bf16(v);
}

template <DType D, bool kFma, bool kArrays>
void quantize_run_scalar(const void* x, int64_t i, int64_t n, RunParams p, float qlo, float qhi,
                         uint8_t* q) {
  for (int64_t j = 0; j < n; ++j) {
    const int64_t k = kArrays ? j : 0;
    // Storing the int32 as a byte gives the int8 two's complement or uint8 value.
    q[i + j] = uint8_t(quantize_value<kFma>(load_as_float(x, D, i + j), p.mul[k], p.zp[k], qlo, qhi));
  }
}

template <bool kSigned, DType O, bool kArrays>
void dequantize_run_scalar(const uint8_t* q, int64_t i, int64_t n, RunParams p, void* out) {
  for (int64_t j = 0; j < n; ++j) {
    const int64_t k = kArrays ? j : 0;
    const float level = kSigned ? float(int8_t(q[i + j])) : float(q[i + j]);
    store_float<O>(out, i + j, (level - p.zp[k]) * p.mul[k]);
  }
}

// Folds x[i, i+n) into lo/hi (one value, or arrays aligned with the run) and
// the largest |x| bit pattern into *worst (>= kInfBits means Inf or NaN).
template <DType D, bool kArrays>
void minmax_run_scalar(const void* x, int64_t i, int64_t n, float* lo, float* hi, uint32_t* worst) {
  uint32_t w = *worst;
  for (int64_t j = 0; j < n; ++j) {
    const float v = load_as_float(x, D, i + j);
    const int64_t k = kArrays ? j : 0;
    lo[k] = std::min(lo[k], v);
    hi[k] = std::max(hi[k], v);
    w = std::max(w, float_to_bits(v) & 0x7fffffffu);
  }
  *worst = w;
}

// ---- AVX2 -------------------------------------------------------------------

template <DType D>
SLIMTORCH_AVX2 inline __m256 load8(const void* x, int64_t i) {
  if (D == DType::kFloat32) return _mm256_loadu_ps(static_cast<const float*>(x) + i);
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(x) + i));
  if (D == DType::kFloat16) return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

template <bool kFma>
SLIMTORCH_AVX2 inline __m256i quantize8(__m256 v, __m256 inv, __m256 zp, __m256 lo, __m256 hi) {
  __m256 t = kFma ? _mm256_fmadd_ps(v, inv, zp) : _mm256_add_ps(_mm256_mul_ps(v, inv), zp);
  t = _mm256_blendv_ps(t, zp, _mm256_cmp_ps(t, t, _CMP_UNORD_Q));  // NaN -> zero point
  return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(t, lo), hi));
}

template <DType D, bool kFma, bool kArrays>
SLIMTORCH_AVX2 void quantize_run_avx2(const void* x, int64_t i, int64_t n, RunParams p, float qlo,
                                      float qhi, uint8_t* q) {
  const __m256 lo = _mm256_set1_ps(qlo), hi = _mm256_set1_ps(qhi);
  __m256 inv0 = _mm256_set1_ps(p.mul[0]), zp0 = _mm256_set1_ps(p.zp[0]);
  __m256 inv1 = inv0, zp1 = zp0;
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    if (kArrays) {
      inv0 = _mm256_loadu_ps(p.mul + j), inv1 = _mm256_loadu_ps(p.mul + j + 8);
      zp0 = _mm256_loadu_ps(p.zp + j), zp1 = _mm256_loadu_ps(p.zp + j + 8);
    }
    const __m256i a = quantize8<kFma>(load8<D>(x, i + j), inv0, zp0, lo, hi);
    const __m256i b = quantize8<kFma>(load8<D>(x, i + j + 8), inv1, zp1, lo, hi);
    // 16 int32 in [-128, 255] -> int16 (exact) in order -> bytes.
    const __m256i words = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xd8);
    const __m128i w0 = _mm256_castsi256_si128(words), w1 = _mm256_extracti128_si256(words, 1);
    const __m128i bytes = qlo < 0 ? _mm_packs_epi16(w0, w1) : _mm_packus_epi16(w0, w1);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i + j), bytes);
  }
  const RunParams rest = kArrays ? RunParams{p.mul + j, p.zp + j} : p;
  quantize_run_scalar<D, kFma, kArrays>(x, i + j, n - j, rest, qlo, qhi, q);
}

template <DType O>
SLIMTORCH_AVX2 inline void store8(void* out, int64_t i, __m256 v) {
  if (O == DType::kFloat32) {
    _mm256_storeu_ps(static_cast<float*>(out) + i, v);
    return;
  }
  __m128i h;
  if (O == DType::kFloat16) {
    h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  } else {
    // bfloat16, round to nearest even on the bits (inputs are never NaN here).
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    const __m256i rounded = _mm256_srli_epi32(
        _mm256_add_epi32(bits, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff))), 16);
    h = _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(rounded, rounded), 0xd8));
  }
  _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(out) + i), h);
}

template <bool kSigned, DType O, bool kArrays>
SLIMTORCH_AVX2 void dequantize_run_avx2(const uint8_t* q, int64_t i, int64_t n, RunParams p, void* out) {
  __m256 scale = _mm256_set1_ps(p.mul[0]), zp = _mm256_set1_ps(p.zp[0]);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    if (kArrays) scale = _mm256_loadu_ps(p.mul + j), zp = _mm256_loadu_ps(p.zp + j);
    const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + i + j));
    const __m256i levels = kSigned ? _mm256_cvtepi8_epi32(bytes) : _mm256_cvtepu8_epi32(bytes);
    store8<O>(out, i + j, _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(levels), zp), scale));
  }
  const RunParams rest = kArrays ? RunParams{p.mul + j, p.zp + j} : p;
  dequantize_run_scalar<kSigned, O, kArrays>(q, i + j, n - j, rest, out);
}

template <bool kSigned>
SLIMTORCH_AVX2 void dequantize_run_avx2_stream(const uint8_t* q, int64_t i, int64_t n, RunParams p,
                                               void* out) {
  float* dst = static_cast<float*>(out) + i;
  const __m256 scale = _mm256_set1_ps(p.mul[0]), zp = _mm256_set1_ps(p.zp[0]);
  // Head (scalar) up to the first 32-byte boundary, streamed body, scalar tail.
  int64_t j = std::min<int64_t>(n, int64_t((32 - (reinterpret_cast<uintptr_t>(dst) & 31)) & 31) / 4);
  dequantize_run_scalar<kSigned, DType::kFloat32, false>(q, i, j, p, out);
  for (; j + 8 <= n; j += 8) {
    const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + i + j));
    const __m256i levels = kSigned ? _mm256_cvtepi8_epi32(bytes) : _mm256_cvtepu8_epi32(bytes);
    _mm256_stream_ps(dst + j, _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(levels), zp), scale));
  }
  dequantize_run_scalar<kSigned, DType::kFloat32, false>(q, i + j, n - j, p, out);
}

SLIMTORCH_AVX2 inline float hmin8(__m256 v) {
  __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_min_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_min_ss(m, _mm_shuffle_ps(m, m, 1)));
}
SLIMTORCH_AVX2 inline float hmax8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
}

template <DType D, bool kArrays>
SLIMTORCH_AVX2 void minmax_run_avx2(const void* x, int64_t i, int64_t n, float* lo, float* hi,
                                    uint32_t* worst) {
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
  __m256 vlo = _mm256_set1_ps(lo[0]), vhi = _mm256_set1_ps(hi[0]);
  __m256i vworst = _mm256_setzero_si256();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 v = load8<D>(x, i + j);
    vworst = _mm256_max_epu32(vworst, _mm256_and_si256(_mm256_castps_si256(v), abs_mask));
    if (kArrays) {
      _mm256_storeu_ps(lo + j, _mm256_min_ps(_mm256_loadu_ps(lo + j), v));
      _mm256_storeu_ps(hi + j, _mm256_max_ps(_mm256_loadu_ps(hi + j), v));
    } else {
      vlo = _mm256_min_ps(vlo, v), vhi = _mm256_max_ps(vhi, v);
    }
  }
  if (!kArrays) lo[0] = hmin8(vlo), hi[0] = hmax8(vhi);
  alignas(32) uint32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), vworst);
  for (uint32_t lane : lanes) *worst = std::max(*worst, lane);
  minmax_run_scalar<D, kArrays>(x, i + j, n - j, kArrays ? lo + j : lo, kArrays ? hi + j : hi, worst);
}

// ---- AVX-512 (masked tails: no scalar remainder) ----------------------------

inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
}

template <DType D>
SLIMTORCH_AVX512 inline __m512 load16(const void* x, int64_t i, __mmask16 live) {
  if (D == DType::kFloat32) return _mm512_maskz_loadu_ps(live, static_cast<const float*>(x) + i);
  const __m256i h = _mm256_maskz_loadu_epi16(live, static_cast<const uint16_t*>(x) + i);
  if (D == DType::kFloat16) return _mm512_cvtph_ps(h);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

template <bool kFma>
SLIMTORCH_AVX512 inline __m128i quantize16(__m512 v, __m512 inv, __m512 zp, __m512 lo, __m512 hi) {
  __m512 t = kFma ? _mm512_fmadd_ps(v, inv, zp) : _mm512_add_ps(_mm512_mul_ps(v, inv), zp);
  t = _mm512_mask_mov_ps(t, _mm512_cmp_ps_mask(t, t, _CMP_UNORD_Q), zp);  // NaN -> zero point
  const __m512i levels = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(t, lo), hi));
  // Truncating to bytes gives int8 or uint8: levels are already in range.
  return _mm512_cvtepi32_epi8(levels);
}

// 64 elements with broadcast parameters at once. Instead of clamping both
// ends in float and narrowing each vector with vpmovdb (2 uops on Zen 4),
// only the top is clamped in float (it also keeps huge values off
// cvtps2dq's INT_MIN) and narrow_to_bytes64's saturating packs clamp the
// bottom while they narrow 4 vectors to one. Same results as quantize16:
// rint then saturate equals clamp then rint for these integer bounds.
template <DType D, bool kFma, bool kSigned>
SLIMTORCH_AVX512 inline __m512i quantize64(const void* x, int64_t i, __m512 inv, __m512 zp, __m512 hi) {
  __m512i levels[4];
  for (int u = 0; u < 4; ++u) {
    const __m512 v = load16<D>(x, i + 16 * u, 0xffff);
    __m512 t = kFma ? _mm512_fmadd_ps(v, inv, zp) : _mm512_add_ps(_mm512_mul_ps(v, inv), zp);
    t = _mm512_mask_mov_ps(t, _mm512_cmp_ps_mask(t, t, _CMP_UNORD_Q), zp);  // NaN -> zero point
    levels[u] = _mm512_cvtps_epi32(_mm512_min_ps(t, hi));
  }
  return narrow_to_bytes64<kSigned>(levels);
}

// The 64-element body of a broadcast run: elements [j, n - n % 64) from j
// (a multiple of 64 past the start); returns where it stopped.
template <DType D, bool kFma, bool kStream>
SLIMTORCH_AVX512 int64_t quantize_body64(const void* x, int64_t i, int64_t j, int64_t n, RunParams p,
                                         float qlo, float qhi, uint8_t* q) {
  const __m512 hi = _mm512_set1_ps(qhi);
  const __m512 inv = _mm512_set1_ps(p.mul[0]), zp = _mm512_set1_ps(p.zp[0]);
  const bool is_signed = qlo < 0.0f;
  for (; j + 64 <= n; j += 64) {
    const __m512i bytes = is_signed ? quantize64<D, kFma, true>(x, i + j, inv, zp, hi)
                                    : quantize64<D, kFma, false>(x, i + j, inv, zp, hi);
    if (kStream) _mm512_stream_si512(reinterpret_cast<__m512i*>(q + i + j), bytes);
    else _mm512_storeu_si512(q + i + j, bytes);
  }
  return j;
}

template <DType D, bool kFma, bool kArrays>
SLIMTORCH_AVX512 void quantize_run_avx512(const void* x, int64_t i, int64_t n, RunParams p,
                                          float qlo, float qhi, uint8_t* q) {
  const __m512 lo = _mm512_set1_ps(qlo), hi = _mm512_set1_ps(qhi);
  __m512 inv = _mm512_set1_ps(p.mul[0]), zp = _mm512_set1_ps(p.zp[0]);
  const int64_t start = kArrays ? 0 : quantize_body64<D, kFma, false>(x, i, 0, n, p, qlo, qhi, q);
  for (int64_t j = start; j < n; j += 16) {
    const __mmask16 live = tail_mask(n - j);
    if (kArrays) inv = _mm512_maskz_loadu_ps(live, p.mul + j), zp = _mm512_maskz_loadu_ps(live, p.zp + j);
    _mm_mask_storeu_epi8(q + i + j, live, quantize16<kFma>(load16<D>(x, i + j, live), inv, zp, lo, hi));
  }
}

// A broadcast run with non-temporal stores (large outputs, see kStreamBytes;
// the caller fences once per chunk):
// unaligned head and tail through the normal path, 64-byte aligned body streamed.
template <DType D, bool kFma>
SLIMTORCH_AVX512 void quantize_run_avx512_stream(const void* x, int64_t i, int64_t n, RunParams p,
                                                 float qlo, float qhi, uint8_t* q) {
  const int64_t head = std::min<int64_t>(n, int64_t((64 - (reinterpret_cast<uintptr_t>(q + i) & 63)) & 63));
  quantize_run_avx512<D, kFma, false>(x, i, head, p, qlo, qhi, q);
  const int64_t j = quantize_body64<D, kFma, true>(x, i, head, n, p, qlo, qhi, q);
  quantize_run_avx512<D, kFma, false>(x, i + j, n - j, p, qlo, qhi, q);
}

template <bool kSigned>
SLIMTORCH_AVX512 inline __m512 dequantize16(__m128i bytes, __m512 zp, __m512 scale) {
  const __m512i levels = kSigned ? _mm512_cvtepi8_epi32(bytes) : _mm512_cvtepu8_epi32(bytes);
  return _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(levels), zp), scale);
}

// The body of a broadcast float32 run: 64 elements per step with plain
// (unmasked) loads and stores; returns where it stopped.
template <bool kSigned>
SLIMTORCH_AVX512 int64_t dequantize_body64(const uint8_t* q, int64_t n, __m512 zp, __m512 scale, float* dst) {
  int64_t j = 0;
  for (; j + 64 <= n; j += 64) {
    for (int u = 0; u < 64; u += 16)
      _mm512_storeu_ps(dst + j + u, dequantize16<kSigned>(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + j + u)), zp, scale));
  }
  return j;
}

template <bool kSigned, DType O, bool kArrays>
SLIMTORCH_AVX512 void dequantize_run_avx512(const uint8_t* q, int64_t i, int64_t n, RunParams p,
                                            void* out) {
  __m512 scale = _mm512_set1_ps(p.mul[0]), zp = _mm512_set1_ps(p.zp[0]);
  const int64_t start = (kArrays || O != DType::kFloat32)
                            ? 0 : dequantize_body64<kSigned>(q + i, n, zp, scale, static_cast<float*>(out) + i);
  for (int64_t j = start; j < n; j += 16) {
    const __mmask16 live = tail_mask(n - j);
    if (kArrays) scale = _mm512_maskz_loadu_ps(live, p.mul + j), zp = _mm512_maskz_loadu_ps(live, p.zp + j);
    const __m512 v = dequantize16<kSigned>(_mm_maskz_loadu_epi8(live, q + i + j), zp, scale);
    if (O == DType::kFloat32) {
      _mm512_mask_storeu_ps(static_cast<float*>(out) + i + j, live, v);
      continue;
    }
    __m256i h;
    if (O == DType::kFloat16) {
      h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    } else {
      // bfloat16 by integer rounding: VCVTNEPS2BF16 would flush subnormals.
      const __m512i bits = _mm512_castps_si512(v);
      const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
      h = _mm512_cvtepi32_epi16(_mm512_srli_epi32(
          _mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16));
    }
    _mm256_mask_storeu_epi16(static_cast<uint16_t*>(out) + i + j, live, h);
  }
}

// Float32 output of a broadcast run with non-temporal stores: for outputs
// far larger than the caches this skips the read-for-ownership of every
// written line (4 of the 5 bytes per element are writes).
template <bool kSigned>
SLIMTORCH_AVX512 void dequantize_run_avx512_stream(const uint8_t* q, int64_t i, int64_t n, RunParams p,
                                                   void* out) {
  float* dst = static_cast<float*>(out) + i;
  const __m512 scale = _mm512_set1_ps(p.mul[0]), zp = _mm512_set1_ps(p.zp[0]);
  // Head: up to the first 64-byte boundary of dst (dst is 4-byte aligned).
  int64_t j = std::min<int64_t>(n, int64_t((64 - (reinterpret_cast<uintptr_t>(dst) & 63)) & 63) / 4);
  if (j > 0) {
    const __mmask16 live = tail_mask(j);
    _mm512_mask_storeu_ps(dst, live, dequantize16<kSigned>(_mm_maskz_loadu_epi8(live, q + i), zp, scale));
  }
  for (; j + 16 <= n; j += 16)
    _mm512_stream_ps(dst + j, dequantize16<kSigned>(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + i + j)), zp, scale));
  if (j < n) {
    const __mmask16 live = tail_mask(n - j);
    _mm512_mask_storeu_ps(dst + j, live, dequantize16<kSigned>(_mm_maskz_loadu_epi8(live, q + i + j), zp, scale));
  }
}

template <DType D, bool kArrays>
SLIMTORCH_AVX512 void minmax_run_avx512(const void* x, int64_t i, int64_t n, float* lo, float* hi,
                                        uint32_t* worst) {
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
  __m512 vlo = _mm512_set1_ps(lo[0]), vhi = _mm512_set1_ps(hi[0]);
  __m512i vworst = _mm512_setzero_si512();
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 live = tail_mask(n - j);
    const __m512 v = load16<D>(x, i + j, live);
    vworst = _mm512_mask_max_epu32(vworst, live, vworst, _mm512_and_si512(_mm512_castps_si512(v), abs_mask));
    if (kArrays) {
      _mm512_mask_storeu_ps(lo + j, live, _mm512_min_ps(_mm512_maskz_loadu_ps(live, lo + j), v));
      _mm512_mask_storeu_ps(hi + j, live, _mm512_max_ps(_mm512_maskz_loadu_ps(live, hi + j), v));
    } else {
      vlo = _mm512_mask_min_ps(vlo, live, vlo, v), vhi = _mm512_mask_max_ps(vhi, live, vhi, v);
    }
  }
  if (!kArrays) lo[0] = _mm512_reduce_min_ps(vlo), hi[0] = _mm512_reduce_max_ps(vhi);
  *worst = std::max(*worst, uint32_t(_mm512_reduce_max_epu32(vworst)));
}

// ---- dispatch: one function pointer per (ISA, dtypes, formula, run kind) ----

using QuantizeRun = void (*)(const void*, int64_t, int64_t, RunParams, float, float, uint8_t*);
using DequantizeRun = void (*)(const uint8_t*, int64_t, int64_t, RunParams, void*);
using MinmaxRun = void (*)(const void*, int64_t, int64_t, float*, float*, uint32_t*);

template <DType D, bool kFma, bool kArrays>
QuantizeRun pick_quantize(Isa isa) {
  if (isa >= Isa::kAvx512) return quantize_run_avx512<D, kFma, kArrays>;
  if (isa >= Isa::kAvx2) return quantize_run_avx2<D, kFma, kArrays>;
  return quantize_run_scalar<D, kFma, kArrays>;
}

template <DType D>
QuantizeRun pick_quantize(Isa isa, bool fma, bool arrays) {
  if (fma) return arrays ? pick_quantize<D, true, true>(isa) : pick_quantize<D, true, false>(isa);
  return arrays ? pick_quantize<D, false, true>(isa) : pick_quantize<D, false, false>(isa);
}

template <bool kFma>
QuantizeRun pick_quantize_stream(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return quantize_run_avx512_stream<DType::kFloat32, kFma>;
    case DType::kFloat16: return quantize_run_avx512_stream<DType::kFloat16, kFma>;
    case DType::kBFloat16: return quantize_run_avx512_stream<DType::kBFloat16, kFma>;
  }
  return nullptr;
}

QuantizeRun pick_quantize(Isa isa, DType dtype, bool fma, bool arrays) {
  switch (dtype) {
    case DType::kFloat32: return pick_quantize<DType::kFloat32>(isa, fma, arrays);
    case DType::kFloat16: return pick_quantize<DType::kFloat16>(isa, fma, arrays);
    case DType::kBFloat16: return pick_quantize<DType::kBFloat16>(isa, fma, arrays);
  }
  return nullptr;
}

template <bool kSigned, DType O, bool kArrays>
DequantizeRun pick_dequantize(Isa isa) {
  if (isa >= Isa::kAvx512) return dequantize_run_avx512<kSigned, O, kArrays>;
  if (isa >= Isa::kAvx2) return dequantize_run_avx2<kSigned, O, kArrays>;
  return dequantize_run_scalar<kSigned, O, kArrays>;
}

template <bool kSigned, bool kArrays>
DequantizeRun pick_dequantize(Isa isa, DType out) {
  switch (out) {
    case DType::kFloat32: return pick_dequantize<kSigned, DType::kFloat32, kArrays>(isa);
    case DType::kFloat16: return pick_dequantize<kSigned, DType::kFloat16, kArrays>(isa);
    case DType::kBFloat16: return pick_dequantize<kSigned, DType::kBFloat16, kArrays>(isa);
  }
  return nullptr;
}

DequantizeRun pick_dequantize_stream(Isa isa, QType qtype) {
  const bool is_signed = qtype == QType::kInt8;
  if (isa >= Isa::kAvx512) return is_signed ? dequantize_run_avx512_stream<true> : dequantize_run_avx512_stream<false>;
  if (isa >= Isa::kAvx2) return is_signed ? dequantize_run_avx2_stream<true> : dequantize_run_avx2_stream<false>;
  return nullptr;
}

DequantizeRun pick_dequantize(Isa isa, QType qtype, DType out, bool arrays) {
  if (qtype == QType::kInt8)
    return arrays ? pick_dequantize<true, true>(isa, out) : pick_dequantize<true, false>(isa, out);
  return arrays ? pick_dequantize<false, true>(isa, out) : pick_dequantize<false, false>(isa, out);
}

template <DType D, bool kArrays>
MinmaxRun pick_minmax(Isa isa) {
  if (isa >= Isa::kAvx512) return minmax_run_avx512<D, kArrays>;
  if (isa >= Isa::kAvx2) return minmax_run_avx2<D, kArrays>;
  return minmax_run_scalar<D, kArrays>;
}

MinmaxRun pick_minmax(Isa isa, DType dtype, bool arrays) {
  switch (dtype) {
    case DType::kFloat32: return arrays ? pick_minmax<DType::kFloat32, true>(isa) : pick_minmax<DType::kFloat32, false>(isa);
    case DType::kFloat16: return arrays ? pick_minmax<DType::kFloat16, true>(isa) : pick_minmax<DType::kFloat16, false>(isa);
    case DType::kBFloat16: return arrays ? pick_minmax<DType::kBFloat16, true>(isa) : pick_minmax<DType::kBFloat16, false>(isa);
  }
  return nullptr;
}

bool valid_view(const ChannelView& view) {
  return view.outer >= 0 && view.channels >= 0 && view.inner >= 0;
}

bool valid_dtype(DType dtype) { return int(dtype) >= 0 && int(dtype) <= 2; }
bool valid_qtype(QType qtype) { return qtype == QType::kInt8 || qtype == QType::kUInt8; }

// One channel is one long run, whatever the axis.
ChannelView normalized(const ChannelView& view) {
  return view.channels == 1 ? ChannelView{1, 1, view.numel()} : view;
}

}  // namespace

int64_t find_invalid_qparams(const float* scale, const int32_t* zero_point, int64_t channels,
                             QType qtype, bool* bad_scale) {
  for (int64_t c = 0; c < channels; ++c) {
    const float s = scale[c];
    if (!(s > 0.0f) || !std::isfinite(s) || !std::isfinite(1.0f / s)) {
      *bad_scale = true;
      return c;
    }
    if (zero_point[c] < qtype_min(qtype) || zero_point[c] > qtype_max(qtype)) {
      *bad_scale = false;
      return c;
    }
  }
  return -1;
}

Status choose_qparams(const void* x, DType dtype, ChannelView view, bool symmetric, QType qtype,
                      float* scale, int32_t* zero_point, int n_threads) {
  if (!valid_view(view)) return Status::kInvalidArgument;
  view = normalized(view);
  const int64_t n = view.numel();
  if (!valid_view(view) || !valid_dtype(dtype) || !valid_qtype(qtype) || (n > 0 && x == nullptr) ||
      (view.channels > 0 && (scale == nullptr || zero_point == nullptr)))
    return Status::kInvalidArgument;
  const bool arrays = view.inner < kShortInner && view.channels > 1;
  const int64_t width = arrays ? view.channels * view.inner : view.channels;  // accumulators per chunk
  const int chunks = plan_chunks(n_threads, n, kGrain);
  std::vector<float> lo(size_t(chunks * width), std::numeric_limits<float>::infinity());
  std::vector<float> hi(lo.size(), -std::numeric_limits<float>::infinity());
  std::vector<uint32_t> worst(size_t(chunks), 0);
  const MinmaxRun run = pick_minmax(active_isa(), dtype, arrays);
  parallel_for(n_threads, n, kGrain, [&](int64_t begin, int64_t end, int t) {
    float* chunk_lo = lo.data() + t * width;
    float* chunk_hi = hi.data() + t * width;
    for_each_run(view, arrays, begin, end, [&](int64_t i, int64_t len, int64_t k) {
      run(x, i, len, chunk_lo + k, chunk_hi + k, &worst[size_t(t)]);
    });
  });
  for (uint32_t w : worst)
    if (w >= kInfBits) return Status::kNonFinite;
  const int64_t per_channel = width / std::max<int64_t>(view.channels, 1);  // inner (arrays) or 1
  for (int64_t c = 0; c < view.channels; ++c) {
    float channel_lo = std::numeric_limits<float>::infinity(), channel_hi = -channel_lo;
    for (int t = 0; t < chunks; ++t) {
      for (int64_t k = 0; k < per_channel; ++k) {
        channel_lo = std::min(channel_lo, lo[size_t(t * width + c * per_channel + k)]);
        channel_hi = std::max(channel_hi, hi[size_t(t * width + c * per_channel + k)]);
      }
    }
    if (channel_lo > channel_hi) channel_lo = channel_hi = 0.0f;  // empty channel
    qparams_from_range(channel_lo, channel_hi, symmetric, qtype, scale + c, zero_point + c);
  }
  return Status::kOk;
}

Status quantize(const void* x, DType dtype, ChannelView view, bool per_channel,
                const float* scale, const int32_t* zero_point, QType qtype, void* q,
                int n_threads) {
  if (!valid_view(view)) return Status::kInvalidArgument;
  view = normalized(view);
  const int64_t n = view.numel();
  if (!valid_view(view) || !valid_dtype(dtype) || !valid_qtype(qtype) ||
      (!per_channel && view.channels != 1) || (n > 0 && (x == nullptr || q == nullptr)) ||
      (view.channels > 0 && (scale == nullptr || zero_point == nullptr)))
    return Status::kInvalidArgument;
  bool bad_scale = false;
  if (find_invalid_qparams(scale, zero_point, view.channels, qtype, &bad_scale) >= 0)
    return Status::kInvalidArgument;
  if (n == 0) return Status::kOk;
  const bool arrays = per_channel && view.inner < kShortInner;
  const ParamTable params(view, arrays, scale, zero_point, /*reciprocal=*/true);
  QuantizeRun run = pick_quantize(active_isa(), dtype, /*fma=*/!per_channel, arrays);
  const bool streaming = !arrays && n >= kStreamBytes && active_isa() >= Isa::kAvx512;
  if (streaming) run = per_channel ? pick_quantize_stream<false>(dtype) : pick_quantize_stream<true>(dtype);
  advise_huge_pages(q, n);
  const float qlo = float(qtype_min(qtype)), qhi = float(qtype_max(qtype));
  uint8_t* out = static_cast<uint8_t*>(q);
  parallel_for(n_threads, n, kGrain, [&](int64_t begin, int64_t end, int) {
    for_each_run(view, arrays, begin, end, [&](int64_t i, int64_t len, int64_t k) {
      run(x, i, len, params.at(k), qlo, qhi, out);
    });
    if (streaming) _mm_sfence();  // streamed stores complete before the chunk reports done
  });
  return Status::kOk;
}

Status dequantize(const void* q, QType qtype, ChannelView view, const float* scale,
                  const int32_t* zero_point, void* out, DType out_dtype, int n_threads) {
  if (!valid_view(view)) return Status::kInvalidArgument;
  view = normalized(view);
  const int64_t n = view.numel();
  if (!valid_view(view) || !valid_dtype(out_dtype) || !valid_qtype(qtype) ||
      (n > 0 && (q == nullptr || out == nullptr)) ||
      (view.channels > 0 && (scale == nullptr || zero_point == nullptr)))
    return Status::kInvalidArgument;
  bool bad_scale = false;
  if (find_invalid_qparams(scale, zero_point, view.channels, qtype, &bad_scale) >= 0)
    return Status::kInvalidArgument;
  if (n == 0) return Status::kOk;
  const bool arrays = view.channels > 1 && view.inner < kShortInner;
  const ParamTable params(view, arrays, scale, zero_point, /*reciprocal=*/false);
  DequantizeRun run = pick_dequantize(active_isa(), qtype, out_dtype, arrays);
  const DequantizeRun streamed = pick_dequantize_stream(active_isa(), qtype);
  const bool streaming = out_dtype == DType::kFloat32 && !arrays && n * 4 >= kStreamBytes && streamed;
  if (streaming) run = streamed;
  advise_huge_pages(out, n * dtype_size(out_dtype));
  const uint8_t* levels = static_cast<const uint8_t*>(q);
  parallel_for(n_threads, n, kGrain, [&](int64_t begin, int64_t end, int) {
    for_each_run(view, arrays, begin, end, [&](int64_t i, int64_t len, int64_t k) {
      run(levels, i, len, params.at(k), out);
    });
    if (streaming) _mm_sfence();  // streamed stores complete before the chunk reports done
  });
  return Status::kOk;
}

}  // namespace slimtorch
