// Magnitude thresholding kernels. Every comparison is on integers: with the
// sign bit cleared, IEEE bit patterns of non-NaN values order like the values,
// so |w| <= t  <=>  (bits(w) & ~sign) <= bits(largest value <= t).
#include "slimtorch/threshold.h"

#include <cmath>
#include <vector>

#include "dispatch.h"
#include "threshold_paths.h"

namespace slimtorch {
namespace {

using namespace threshold_paths;

constexpr int64_t kGrain = 1 << 16;  // elements per chunk below which threads cost more than they save

const Path kScalarPath = {threshold_scalar<uint32_t>, threshold_scalar<uint16_t>};

// The best path this CPU runs.
const Path& best_path() {
  [[maybe_unused]] const Isa isa = active_isa();
#if SLIMTORCH_X86
  if (isa >= Isa::kAvx512) return kAvx512Path;
  if (isa >= Isa::kAvx2) return kAvx2Path;
#elif SLIMTORCH_ARM64
  if (isa >= Isa::kNeon) return kNeonPath;
#endif
  return kScalarPath;
}

int64_t threshold_range(void* w, DType dtype, int64_t begin, int64_t end, int64_t limit,
                        uint8_t* keep) {
  const Path& path = best_path();
  uint8_t* keep_at = keep != nullptr ? keep + begin : nullptr;
  if (dtype == DType::kFloat32)
    return path.bits32(static_cast<uint32_t*>(w) + begin, keep_at, end - begin, uint32_t(limit));
  return path.bits16(static_cast<uint16_t*>(w) + begin, keep_at, end - begin, uint16_t(limit));
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
