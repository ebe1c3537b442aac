// Loop skeletons shared by the vector paths of the quantize family. Included
// only by the per-ISA files, after their intrinsics headers: x86 files include
// it under `#pragma GCC target` with their own instruction set, so that the
// skeletons can inline the path's primitives (a function may only inline
// code for an instruction set it has itself).
//
// A skeleton takes the path's lanes type V:
//   kWidth, kMasked        elements per step; whether a step can be partial
//   Live live(left)        the lanes of a step with `left` elements left
//                          (all of them where !kMasked)
//   load_as<D>(x, i, live) elements x[i, i + kWidth) of type D as floats
//   load(p, live), store(p, live, v), broadcast(f), min(a, b), max(a, b)
//   fold_min/fold_max(acc, live, v)  acc with the live lanes of v folded in
//   abs_bits(v), zero_bits(), max_bits(acc, live, bits)
//   reduce_min(v), reduce_max(v), fold_max_bits(worst, bits): *worst and the lanes
// and for dequantize:
//   kAlign                 bytes a streamed store must be aligned to
//   load_levels(p[, live]) kWidth bytes; dequantize<kSigned>(bytes, zp, scale)
//   to_fp16(v), to_bf16(v), store_halves(p, live, h), stream(p, v)
#pragma once

#include <algorithm>

#include "quantize_paths.h"

namespace slimtorch::quantize_paths {
namespace {

// The steps of a path without masked loads and stores: always kWidth
// elements, the scalar body takes what is left.
struct FullSteps {
  struct Live {};
  static constexpr bool kMasked = false;
  static Live live(int64_t) { return {}; }
};

// Folds x[i, i + n) into lo/hi and *worst (see MinmaxRun). Paths without
// masked steps finish the last n % kWidth elements with the scalar body.
// NaN may make the vector min/max NaN; lo/hi are then unused (*worst reports it).
template <class V, DType D, bool kArrays>
inline void minmax_run_vector(const void* x, int64_t i, int64_t n, float* lo, float* hi, uint32_t* worst) {
  auto vlo = V::broadcast(lo[0]), vhi = V::broadcast(hi[0]);
  auto vworst = V::zero_bits();
  int64_t j = 0;
  for (; V::kMasked ? j < n : j + V::kWidth <= n; j += V::kWidth) {
    const auto live = V::live(n - j);
    const auto v = V::template load_as<D>(x, i + j, live);
    vworst = V::max_bits(vworst, live, V::abs_bits(v));
    if (kArrays) {
      V::store(lo + j, live, V::min(V::load(lo + j, live), v));
      V::store(hi + j, live, V::max(V::load(hi + j, live), v));
    } else {
      vlo = V::fold_min(vlo, live, v), vhi = V::fold_max(vhi, live, v);
    }
  }
  if (!kArrays) lo[0] = V::reduce_min(vlo), hi[0] = V::reduce_max(vhi);
  V::fold_max_bits(worst, vworst);
  if constexpr (!V::kMasked)
    ScalarPath::minmax<D, kArrays>(x, i + j, n - j, kArrays ? lo + j : lo, kArrays ? hi + j : hi, worst);
}

// Quantizes x[i, i + n) (see QuantizeRun) for paths without masked steps:
// kStoreParts vectors per step, narrowed to bytes and stored at once; the
// scalar body takes the rest. Needs V::quantize<kFma>(v, inv, zp, lo, hi)
// (clamped int32 levels, NaN -> zero point) and store_bytes(p, levels, is_signed).
template <class V, DType D, bool kFma, bool kArrays>
inline void quantize_run_vector(const void* x, int64_t i, int64_t n, RunParams p, float qlo, float qhi,
                                uint8_t* q) {
  constexpr int kParts = V::kStoreParts;
  using Floats = decltype(V::broadcast(0.0f));
  using Levels = decltype(V::template quantize<kFma>(Floats{}, Floats{}, Floats{}, Floats{}, Floats{}));
  const auto all = V::live(V::kWidth);
  const auto lo = V::broadcast(qlo), hi = V::broadcast(qhi);
  Floats inv[kParts], zp[kParts];
  for (int u = 0; u < kParts; ++u) inv[u] = V::broadcast(p.mul[0]), zp[u] = V::broadcast(p.zp[0]);
  const bool is_signed = qlo < 0.0f;
  int64_t j = 0;
  for (; j + kParts * V::kWidth <= n; j += kParts * V::kWidth) {
    Levels levels[kParts];
    for (int u = 0; u < kParts; ++u) {
      const int64_t k = j + u * V::kWidth;
      if (kArrays) inv[u] = V::load(p.mul + k, all), zp[u] = V::load(p.zp + k, all);
      levels[u] = V::template quantize<kFma>(V::template load_as<D>(x, i + k, all), inv[u], zp[u], lo, hi);
    }
    V::store_bytes(q + i + j, levels, is_signed);
  }
  const RunParams rest = kArrays ? RunParams{p.mul + j, p.zp + j} : p;
  ScalarPath::quantize<D, kFma, kArrays>(x, i + j, n - j, rest, qlo, qhi, q);
}

// Stores the floats v as out[i, i + kWidth) of type O (the live lanes).
template <class V, DType O, class Live, class Floats>
inline void store_as(void* out, int64_t i, Live live, Floats v) {
  if (O == DType::kFloat32) V::store(static_cast<float*>(out) + i, live, v);
  else if (O == DType::kFloat16) V::store_halves(static_cast<uint16_t*>(out) + i, live, V::to_fp16(v));
  else V::store_halves(static_cast<uint16_t*>(out) + i, live, V::to_bf16(v));
}

// A broadcast dequantize run into float32 with non-temporal stores (large
// outputs; the caller fences once per chunk): the elements before the first
// kAlign-byte boundary of the output and the tail take a partial step, the
// aligned body is streamed.
template <class V, bool kSigned>
inline void dequantize_run_streamed(const uint8_t* q, int64_t i, int64_t n, RunParams p, void* out) {
  float* dst = static_cast<float*>(out) + i;
  const auto scale = V::broadcast(p.mul[0]), zp = V::broadcast(p.zp[0]);
  const auto partial = [&](int64_t j, int64_t count) {
    if constexpr (V::kMasked) {
      if (count <= 0) return;
      const auto live = V::live(count);
      V::store(dst + j, live, V::template dequantize<kSigned>(V::load_levels(q + i + j, live), zp, scale));
    } else {
      ScalarPath::dequantize<kSigned, DType::kFloat32, false>(q, i + j, count, p, out);
    }
  };
  const uintptr_t misalign = reinterpret_cast<uintptr_t>(dst) & (V::kAlign - 1);
  int64_t j = std::min<int64_t>(n, int64_t((V::kAlign - misalign) & (V::kAlign - 1)) / 4);
  partial(0, j);
  for (; j + V::kWidth <= n; j += V::kWidth)
    V::stream(dst + j, V::template dequantize<kSigned>(V::load_levels(q + i + j), zp, scale));
  partial(j, n - j);
}

}  // namespace
}  // namespace slimtorch::quantize_paths
