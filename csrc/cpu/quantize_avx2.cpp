// Quantize paths for AVX2 (x86-64; per-function target attributes).
#include <immintrin.h>

#include "quantize_paths.h"

#define SLIMTORCH_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace slimtorch::quantize_paths {
namespace {

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

struct Avx2Path {
  template <DType D, bool kFma, bool kArrays>
  static constexpr QuantizeRun quantize = quantize_run_avx2<D, kFma, kArrays>;
  template <bool kSigned, DType O, bool kArrays>
  static constexpr DequantizeRun dequantize = dequantize_run_avx2<kSigned, O, kArrays>;
  template <DType D, bool kArrays>
  static constexpr MinmaxRun minmax = minmax_run_avx2<D, kArrays>;
};

}  // namespace

QuantizeRun pick_quantize_avx2(DType dtype, bool fma, bool arrays) {
  return pick_quantize_of<Avx2Path>(dtype, fma, arrays);
}
DequantizeRun pick_dequantize_avx2(QType qtype, DType out, bool arrays) {
  return pick_dequantize_of<Avx2Path>(qtype, out, arrays);
}
MinmaxRun pick_minmax_avx2(DType dtype, bool arrays) { return pick_minmax_of<Avx2Path>(dtype, arrays); }
QuantizeRun pick_quantize_stream_avx2(DType, bool) { return nullptr; }
DequantizeRun pick_dequantize_stream_avx2(QType qtype) {
  return qtype == QType::kInt8 ? dequantize_run_avx2_stream<true> : dequantize_run_avx2_stream<false>;
}

}  // namespace slimtorch::quantize_paths
