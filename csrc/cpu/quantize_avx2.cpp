// Quantize paths for AVX2 (x86-64; per-function target attributes).
#include <immintrin.h>

#include "quantize_paths.h"

#define SLIMTORCH_AVX2 __attribute__((target("avx2,fma,f16c")))

// The shared loops take this file's instruction set (see quantize_loops.h).
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#include "quantize_loops.h"
#pragma GCC pop_options

namespace slimtorch::quantize_paths {
namespace {

// The lanes type of the shared loops (quantize_loops.h): 8 floats.
struct Avx2Lanes : FullSteps {
  static constexpr int64_t kWidth = 8;
  template <DType D>
  SLIMTORCH_AVX2 static __m256 load_as(const void* x, int64_t i, Live) {
    if (D == DType::kFloat32) return _mm256_loadu_ps(static_cast<const float*>(x) + i);
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(x) + i));
    if (D == DType::kFloat16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  SLIMTORCH_AVX2 static __m256 load(const float* p, Live) { return _mm256_loadu_ps(p); }
  SLIMTORCH_AVX2 static void store(float* p, Live, __m256 v) { _mm256_storeu_ps(p, v); }
  SLIMTORCH_AVX2 static __m256 broadcast(float f) { return _mm256_set1_ps(f); }
  SLIMTORCH_AVX2 static __m256 min(__m256 a, __m256 b) { return _mm256_min_ps(a, b); }
  SLIMTORCH_AVX2 static __m256 max(__m256 a, __m256 b) { return _mm256_max_ps(a, b); }
  SLIMTORCH_AVX2 static __m256 fold_min(__m256 acc, Live, __m256 v) { return _mm256_min_ps(acc, v); }
  SLIMTORCH_AVX2 static __m256 fold_max(__m256 acc, Live, __m256 v) { return _mm256_max_ps(acc, v); }
  SLIMTORCH_AVX2 static __m256i abs_bits(__m256 v) {
    return _mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x7fffffff));
  }
  SLIMTORCH_AVX2 static __m256i zero_bits() { return _mm256_setzero_si256(); }
  SLIMTORCH_AVX2 static __m256i max_bits(__m256i acc, Live, __m256i bits) { return _mm256_max_epu32(acc, bits); }
  SLIMTORCH_AVX2 static float reduce_min(__m256 v) {
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_min_ss(m, _mm_shuffle_ps(m, m, 1)));
  }
  SLIMTORCH_AVX2 static float reduce_max(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
  }
  SLIMTORCH_AVX2 static void fold_max_bits(uint32_t* worst, __m256i bits) {
    alignas(32) uint32_t lanes[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), bits);
    for (uint32_t lane : lanes) *worst = std::max(*worst, lane);
  }

  static constexpr int kStoreParts = 2;
  template <bool kFma>
  SLIMTORCH_AVX2 static __m256i quantize(__m256 v, __m256 inv, __m256 zp, __m256 lo, __m256 hi) {
    __m256 t = kFma ? _mm256_fmadd_ps(v, inv, zp) : _mm256_add_ps(_mm256_mul_ps(v, inv), zp);
    t = _mm256_blendv_ps(t, zp, _mm256_cmp_ps(t, t, _CMP_UNORD_Q));  // NaN -> zero point
    return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(t, lo), hi));
  }
  SLIMTORCH_AVX2 static void store_bytes(uint8_t* p, const __m256i* levels, bool is_signed) {
    // 16 int32 in [-128, 255] -> int16 (exact) in order -> bytes.
    const __m256i words = _mm256_permute4x64_epi64(_mm256_packs_epi32(levels[0], levels[1]), 0xd8);
    const __m128i w0 = _mm256_castsi256_si128(words), w1 = _mm256_extracti128_si256(words, 1);
    const __m128i bytes = is_signed ? _mm_packs_epi16(w0, w1) : _mm_packus_epi16(w0, w1);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), bytes);
  }

  static constexpr uintptr_t kAlign = 32;
  SLIMTORCH_AVX2 static __m128i load_levels(const uint8_t* p) {
    return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  }
  template <bool kSigned>
  SLIMTORCH_AVX2 static __m256 dequantize(__m128i bytes, __m256 zp, __m256 scale) {
    const __m256i levels = kSigned ? _mm256_cvtepi8_epi32(bytes) : _mm256_cvtepu8_epi32(bytes);
    return _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(levels), zp), scale);
  }
  SLIMTORCH_AVX2 static __m128i to_fp16(__m256 v) {
    return _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  // Round to nearest even on the bits (inputs are never NaN here).
  SLIMTORCH_AVX2 static __m128i to_bf16(__m256 v) {
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    const __m256i rounded = _mm256_srli_epi32(
        _mm256_add_epi32(bits, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff))), 16);
    return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(rounded, rounded), 0xd8));
  }
  SLIMTORCH_AVX2 static void store_halves(uint16_t* p, Live, __m128i h) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), h);
  }
  SLIMTORCH_AVX2 static void stream(float* p, __m256 v) { _mm256_stream_ps(p, v); }
};

struct Avx2Path {
  template <DType D, bool kFma, bool kArrays>
  SLIMTORCH_AVX2 static void quantize(const void* x, int64_t i, int64_t n, RunParams p, float qlo, float qhi,
                                      uint8_t* q) {
    quantize_run_vector<Avx2Lanes, D, kFma, kArrays>(x, i, n, p, qlo, qhi, q);
  }

  template <bool kSigned, DType O, bool kArrays>
  SLIMTORCH_AVX2 static void dequantize(const uint8_t* q, int64_t i, int64_t n, RunParams p, void* out) {
    __m256 scale = _mm256_set1_ps(p.mul[0]), zp = _mm256_set1_ps(p.zp[0]);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
      if (kArrays) scale = _mm256_loadu_ps(p.mul + j), zp = _mm256_loadu_ps(p.zp + j);
      const __m256 v = Avx2Lanes::dequantize<kSigned>(Avx2Lanes::load_levels(q + i + j), zp, scale);
      store_as<Avx2Lanes, O>(out, i + j, Avx2Lanes::Live{}, v);
    }
    const RunParams rest = kArrays ? RunParams{p.mul + j, p.zp + j} : p;
    ScalarPath::dequantize<kSigned, O, kArrays>(q, i + j, n - j, rest, out);
  }

  template <DType D, bool kArrays>
  SLIMTORCH_AVX2 static void minmax(const void* x, int64_t i, int64_t n, float* lo, float* hi, uint32_t* worst) {
    minmax_run_vector<Avx2Lanes, D, kArrays>(x, i, n, lo, hi, worst);
  }
};

}  // namespace

PathRuns avx2_path() {
  PathRuns runs = path_runs<Avx2Path>();
  runs.dequantize_stream = [](QType qtype) -> DequantizeRun {
    return qtype == QType::kInt8 ? dequantize_run_streamed<Avx2Lanes, true>
                                 : dequantize_run_streamed<Avx2Lanes, false>;
  };
  return runs;
}

}  // namespace slimtorch::quantize_paths
