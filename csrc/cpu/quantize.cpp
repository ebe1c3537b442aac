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

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "dispatch.h"
#include "quantize_paths.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace slimtorch {
namespace {

using namespace quantize_paths;

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

// ---- dispatch: one function pointer per (ISA, dtypes, formula, run kind) ----

PathRuns path_for(Isa isa) {
#if SLIMTORCH_X86
  if (isa >= Isa::kAvx512) return avx512_path();
  if (isa >= Isa::kAvx2) return avx2_path();
#elif SLIMTORCH_ARM64
  if (isa >= Isa::kNeon) return neon_path();
#endif
  (void)isa;
  return path_runs<ScalarPath>();
}

// Non-temporal stores are ordered by a fence before a chunk reports done.
void fence_streamed_stores() {
#if SLIMTORCH_X86
  __builtin_ia32_sfence();
#endif
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

// The checks quantize and dequantize share; normalizes view on the way.
// values/levels: the float and the quantized buffer (null only when empty).
bool valid_affine_args(ChannelView& view, DType dtype, QType qtype, const void* values, const void* levels,
                       const float* scale, const int32_t* zero_point) {
  if (!valid_view(view)) return false;
  view = normalized(view);
  bool bad_scale = false;
  return valid_view(view) && valid_dtype(dtype) && valid_qtype(qtype) &&
         (view.numel() == 0 || (values != nullptr && levels != nullptr)) &&
         (view.channels == 0 || (scale != nullptr && zero_point != nullptr)) &&
         find_invalid_qparams(scale, zero_point, view.channels, qtype, &bad_scale) < 0;
}

// Calls run(i, len, k) for every run (see for_each_run) of the chunks of
// the whole view on n_threads threads; streamed stores are fenced per chunk.
template <typename Run>
void run_in_chunks(const ChannelView& view, bool arrays, bool streaming, int n_threads, Run&& run) {
  parallel_for(n_threads, view.numel(), kGrain, [&](int64_t begin, int64_t end, int) {
    for_each_run(view, arrays, begin, end, run);
    if (streaming) fence_streamed_stores();
  });
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
  const MinmaxRun run = path_for(active_isa()).minmax(dtype, arrays);
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
  // Checked before the parameters are read: per tensor means one scale.
  if ((!per_channel && view.channels != 1) || !valid_affine_args(view, dtype, qtype, x, q, scale, zero_point))
    return Status::kInvalidArgument;
  const int64_t n = view.numel();
  if (n == 0) return Status::kOk;
  const bool arrays = per_channel && view.inner < kShortInner;
  const ParamTable params(view, arrays, scale, zero_point, /*reciprocal=*/true);
  const PathRuns path = path_for(active_isa());
  const bool streaming = !arrays && n >= kStreamBytes && path.quantize_stream != nullptr;
  const QuantizeRun run = streaming ? path.quantize_stream(dtype, /*fma=*/!per_channel)
                                    : path.quantize(dtype, /*fma=*/!per_channel, arrays);
  advise_huge_pages(q, n);
  const float qlo = float(qtype_min(qtype)), qhi = float(qtype_max(qtype));
  uint8_t* out = static_cast<uint8_t*>(q);
  run_in_chunks(view, arrays, streaming, n_threads, [&](int64_t i, int64_t len, int64_t k) {
    run(x, i, len, params.at(k), qlo, qhi, out);
  });
  return Status::kOk;
}

Status dequantize(const void* q, QType qtype, ChannelView view, const float* scale,
                  const int32_t* zero_point, void* out, DType out_dtype, int n_threads) {
  if (!valid_affine_args(view, out_dtype, qtype, out, q, scale, zero_point)) return Status::kInvalidArgument;
  const int64_t n = view.numel();
  if (n == 0) return Status::kOk;
  const bool arrays = view.channels > 1 && view.inner < kShortInner;
  const ParamTable params(view, arrays, scale, zero_point, /*reciprocal=*/false);
  const PathRuns path = path_for(active_isa());
  const bool streaming = out_dtype == DType::kFloat32 && !arrays && n * 4 >= kStreamBytes &&
                         path.dequantize_stream != nullptr;
  const DequantizeRun run = streaming ? path.dequantize_stream(qtype) : path.dequantize(qtype, out_dtype, arrays);
  advise_huge_pages(out, n * dtype_size(out_dtype));
  const uint8_t* levels = static_cast<const uint8_t*>(q);
  run_in_chunks(view, arrays, streaming, n_threads, [&](int64_t i, int64_t len, int64_t k) {
    run(levels, i, len, params.at(k), out);
  });
  return Status::kOk;
}

}  // namespace slimtorch
