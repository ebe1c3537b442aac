// Per-ISA paths of the quantize family (quantize.cpp dispatches): the run
// functions' types, the scalar bodies (also the tails of vector paths), and
// the table that turns a path's kernel templates into function pointers.
// Every file of the family is compiled with -ffp-contract=off (see quantize.cpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "dispatch.h"
#include "slimtorch/quantize.h"

namespace slimtorch::quantize_paths {

// Parameters of a run: one value each (broadcast, read [0]) or arrays
// aligned with the run's elements.
struct RunParams {
  const float* mul;  // 1/scale (quantize) or scale (dequantize)
  const float* zp;   // zero points as floats (exact: small integers)
};

// A run over elements [i, i + n): quantize x into q (qlo/qhi: the type's
// range), dequantize q into out, or fold x into lo/hi and *worst (the
// largest |x| bit pattern; >= 0x7f800000 means Inf or NaN).
using QuantizeRun = void (*)(const void*, int64_t, int64_t, RunParams, float, float, uint8_t*);
using DequantizeRun = void (*)(const uint8_t*, int64_t, int64_t, RunParams, void*);
using MinmaxRun = void (*)(const void*, int64_t, int64_t, float*, float*, uint32_t*);

// One path's entry points: its run functions for the given element types,
// formula and run kind; the stream pickers give the non-temporal variants for
// large broadcast runs and are null where a path has none.
struct PathRuns {
  QuantizeRun (*quantize)(DType dtype, bool fma, bool arrays);
  DequantizeRun (*dequantize)(QType qtype, DType out, bool arrays);
  MinmaxRun (*minmax)(DType dtype, bool arrays);
  QuantizeRun (*quantize_stream)(DType dtype, bool fma);
  DequantizeRun (*dequantize_stream)(QType qtype);
};
PathRuns avx2_path();
PathRuns avx512_path();
PathRuns neon_path();

// Unnamed namespace: every translation unit keeps its own copy, compiled
// with its own flags (no shared inline copy the linker could pick).
namespace {

// ---- scalar paths ---------------------------------------------------------------

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

// The scalar path. Its runs are also the tails of the vector paths that
// have no masked loads and stores.
struct ScalarPath {
  template <DType D, bool kFma, bool kArrays>
  static void quantize(const void* x, int64_t i, int64_t n, RunParams p, float qlo, float qhi, uint8_t* q) {
    for (int64_t j = 0; j < n; ++j) {
      const int64_t k = kArrays ? j : 0;
      // Storing the int32 as a byte gives the int8 two's complement or uint8 value.
      q[i + j] = uint8_t(quantize_value<kFma>(load_as_float(x, D, i + j), p.mul[k], p.zp[k], qlo, qhi));
    }
  }

  template <bool kSigned, DType O, bool kArrays>
  static void dequantize(const uint8_t* q, int64_t i, int64_t n, RunParams p, void* out) {
    for (int64_t j = 0; j < n; ++j) {
      const int64_t k = kArrays ? j : 0;
      const float level = kSigned ? float(int8_t(q[i + j])) : float(q[i + j]);
      store_float<O>(out, i + j, (level - p.zp[k]) * p.mul[k]);
    }
  }

  // Folds x[i, i+n) into lo/hi (one value, or arrays aligned with the run) and
  // the largest |x| bit pattern into *worst (>= 0x7f800000 means Inf or NaN).
  template <DType D, bool kArrays>
  static void minmax(const void* x, int64_t i, int64_t n, float* lo, float* hi, uint32_t* worst) {
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
};

// The entry points of a path P, which has the run templates of ScalarPath
// (quantize, dequantize, minmax); the streamed variants are left null.
template <class P>
PathRuns path_runs() {
  PathRuns runs{};
  runs.quantize = [](DType dtype, bool fma, bool arrays) {
    QuantizeRun run = nullptr;
    with_dtype(dtype, [&](auto tag) {
      constexpr DType D = decltype(tag)::value;
      if (fma) run = arrays ? P::template quantize<D, true, true> : P::template quantize<D, true, false>;
      else run = arrays ? P::template quantize<D, false, true> : P::template quantize<D, false, false>;
    });
    return run;
  };
  runs.dequantize = [](QType qtype, DType out, bool arrays) {
    DequantizeRun run = nullptr;
    with_dtype(out, [&](auto tag) {
      constexpr DType O = decltype(tag)::value;
      if (qtype == QType::kInt8)
        run = arrays ? P::template dequantize<true, O, true> : P::template dequantize<true, O, false>;
      else
        run = arrays ? P::template dequantize<false, O, true> : P::template dequantize<false, O, false>;
    });
    return run;
  };
  runs.minmax = [](DType dtype, bool arrays) {
    MinmaxRun run = nullptr;
    with_dtype(dtype, [&](auto tag) {
      constexpr DType D = decltype(tag)::value;
      run = arrays ? P::template minmax<D, true> : P::template minmax<D, false>;
    });
    return run;
  };
  return runs;
}

}  // namespace
}  // namespace slimtorch::quantize_paths
