// Quantize paths for AVX-512 (x86-64; per-function target attributes).
#include <immintrin.h>

#include "narrow.h"
#include "quantize_paths.h"

// GCC 12's AVX-512 headers initialise "undefined" vectors as `__Y = __Y`,
// which -Wall reports at every inlined use; the warning is a false positive.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define SLIMTORCH_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

// The shared loops take this file's instruction set (see quantize_loops.h).
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#include "quantize_loops.h"
#pragma GCC pop_options

namespace slimtorch::quantize_paths {
namespace {

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

// The lanes type of the shared loops (quantize_loops.h): 16 floats, the
// last step masked.
struct Avx512Lanes {
  using Live = __mmask16;
  static constexpr int64_t kWidth = 16;
  static constexpr bool kMasked = true;
  static Live live(int64_t left) { return tail_mask(left); }
  template <DType D>
  SLIMTORCH_AVX512 static __m512 load_as(const void* x, int64_t i, Live live) { return load16<D>(x, i, live); }
  SLIMTORCH_AVX512 static __m512 load(const float* p, Live live) { return _mm512_maskz_loadu_ps(live, p); }
  SLIMTORCH_AVX512 static void store(float* p, Live live, __m512 v) { _mm512_mask_storeu_ps(p, live, v); }
  SLIMTORCH_AVX512 static __m512 broadcast(float f) { return _mm512_set1_ps(f); }
  SLIMTORCH_AVX512 static __m512 min(__m512 a, __m512 b) { return _mm512_min_ps(a, b); }
  SLIMTORCH_AVX512 static __m512 max(__m512 a, __m512 b) { return _mm512_max_ps(a, b); }
  SLIMTORCH_AVX512 static __m512 fold_min(__m512 acc, Live live, __m512 v) {
    return _mm512_mask_min_ps(acc, live, acc, v);
  }
  SLIMTORCH_AVX512 static __m512 fold_max(__m512 acc, Live live, __m512 v) {
    return _mm512_mask_max_ps(acc, live, acc, v);
  }
  SLIMTORCH_AVX512 static __m512i abs_bits(__m512 v) {
    return _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7fffffff));
  }
  SLIMTORCH_AVX512 static __m512i zero_bits() { return _mm512_setzero_si512(); }
  SLIMTORCH_AVX512 static __m512i max_bits(__m512i acc, Live live, __m512i bits) {
    return _mm512_mask_max_epu32(acc, live, acc, bits);
  }
  SLIMTORCH_AVX512 static float reduce_min(__m512 v) { return _mm512_reduce_min_ps(v); }
  SLIMTORCH_AVX512 static float reduce_max(__m512 v) { return _mm512_reduce_max_ps(v); }
  SLIMTORCH_AVX512 static void fold_max_bits(uint32_t* worst, __m512i bits) {
    *worst = std::max(*worst, uint32_t(_mm512_reduce_max_epu32(bits)));
  }

  static constexpr uintptr_t kAlign = 64;
  SLIMTORCH_AVX512 static __m128i load_levels(const uint8_t* p) {
    return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  }
  SLIMTORCH_AVX512 static __m128i load_levels(const uint8_t* p, Live live) { return _mm_maskz_loadu_epi8(live, p); }
  template <bool kSigned>
  SLIMTORCH_AVX512 static __m512 dequantize(__m128i bytes, __m512 zp, __m512 scale) {
    return dequantize16<kSigned>(bytes, zp, scale);
  }
  SLIMTORCH_AVX512 static __m256i to_fp16(__m512 v) {
    return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  // bfloat16 by integer rounding: VCVTNEPS2BF16 would flush subnormals.
  SLIMTORCH_AVX512 static __m256i to_bf16(__m512 v) {
    const __m512i bits = _mm512_castps_si512(v);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    return _mm512_cvtepi32_epi16(
        _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16));
  }
  SLIMTORCH_AVX512 static void store_halves(uint16_t* p, Live live, __m256i h) {
    _mm256_mask_storeu_epi16(p, live, h);
  }
  SLIMTORCH_AVX512 static void stream(float* p, __m512 v) { _mm512_stream_ps(p, v); }
};

struct Avx512Path {
  // Not inlined: the streamed run calls it for its unaligned head and tail.
  template <DType D, bool kFma, bool kArrays>
  SLIMTORCH_AVX512 __attribute__((noinline)) static void quantize(const void* x, int64_t i, int64_t n, RunParams p,
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

  template <bool kSigned, DType O, bool kArrays>
  SLIMTORCH_AVX512 static void dequantize(const uint8_t* q, int64_t i, int64_t n, RunParams p, void* out) {
    __m512 scale = _mm512_set1_ps(p.mul[0]), zp = _mm512_set1_ps(p.zp[0]);
    const int64_t start = (kArrays || O != DType::kFloat32)
                              ? 0 : dequantize_body64<kSigned>(q + i, n, zp, scale, static_cast<float*>(out) + i);
    for (int64_t j = start; j < n; j += 16) {
      const __mmask16 live = tail_mask(n - j);
      if (kArrays) scale = _mm512_maskz_loadu_ps(live, p.mul + j), zp = _mm512_maskz_loadu_ps(live, p.zp + j);
      const __m512 v = dequantize16<kSigned>(_mm_maskz_loadu_epi8(live, q + i + j), zp, scale);
      store_as<Avx512Lanes, O>(out, i + j, live, v);
    }
  }

  template <DType D, bool kArrays>
  SLIMTORCH_AVX512 static void minmax(const void* x, int64_t i, int64_t n, float* lo, float* hi, uint32_t* worst) {
    minmax_run_vector<Avx512Lanes, D, kArrays>(x, i, n, lo, hi, worst);
  }
};

// A broadcast run with non-temporal stores (large outputs, see kStreamBytes;
// the caller fences once per chunk):
// unaligned head and tail through the normal path, 64-byte aligned body streamed.
template <DType D, bool kFma>
SLIMTORCH_AVX512 void quantize_run_avx512_stream(const void* x, int64_t i, int64_t n, RunParams p,
                                                 float qlo, float qhi, uint8_t* q) {
  const int64_t head = std::min<int64_t>(n, int64_t((64 - (reinterpret_cast<uintptr_t>(q + i) & 63)) & 63));
  Avx512Path::quantize<D, kFma, false>(x, i, head, p, qlo, qhi, q);
  const int64_t j = quantize_body64<D, kFma, true>(x, i, head, n, p, qlo, qhi, q);
  Avx512Path::quantize<D, kFma, false>(x, i + j, n - j, p, qlo, qhi, q);
}

}  // namespace

PathRuns avx512_path() {
  PathRuns runs = path_runs<Avx512Path>();
  runs.quantize_stream = [](DType dtype, bool fma) {
    QuantizeRun run = nullptr;
    with_dtype(dtype, [&](auto tag) {
      constexpr DType D = decltype(tag)::value;
      run = fma ? quantize_run_avx512_stream<D, true> : quantize_run_avx512_stream<D, false>;
    });
    return run;
  };
  runs.dequantize_stream = [](QType qtype) -> DequantizeRun {
    return qtype == QType::kInt8 ? dequantize_run_streamed<Avx512Lanes, true>
                                 : dequantize_run_streamed<Avx512Lanes, false>;
  };
  return runs;
}

}  // namespace slimtorch::quantize_paths
