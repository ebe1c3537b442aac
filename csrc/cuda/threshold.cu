// CUDA magnitude thresholding; same integer comparison as csrc/cpu/threshold.cpp
// (sign-cleared bit patterns against the largest representable value <= t).
#include <cuda_runtime.h>

#include <cmath>

#include "slimtorch/threshold.h"

namespace slimtorch::cuda {
namespace {

constexpr int kThreads = 256;

template <typename Bits, bool kWriteMask>
__global__ void threshold_kernel(Bits* w, uint8_t* keep, int64_t n, Bits limit,
                                 unsigned long long* kept) {
  constexpr Bits kAbs = Bits(~Bits(0)) >> 1;
  unsigned long long local = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const Bits v = w[i];
    const bool k = Bits(v & kAbs) > limit;
    local += k;
    if (kWriteMask) keep[i] = k;
    else if (!k) w[i] = 0;
  }
  // Warp reduction, then one atomic per warp.
  for (int offset = 16; offset > 0; offset /= 2) local += __shfl_down_sync(0xffffffffu, local, offset);
  if ((threadIdx.x & 31) == 0 && local != 0) atomicAdd(kept, local);
}

template <bool kWriteMask>
Status launch(void* w, DType dtype, int64_t n, float threshold, uint8_t* keep, int64_t* kept,
              Stream stream) {
  if (n < 0 || kept == nullptr || std::isnan(threshold)) return Status::kInvalidArgument;
  auto* counter = reinterpret_cast<unsigned long long*>(kept);
  const int64_t limit = magnitude_bits_at_most(dtype, threshold);
  if (limit < 0 || n == 0) {  // nothing pruned: keep all, count n
    if (kWriteMask && n > 0 && cudaMemsetAsync(keep, 1, size_t(n), stream) != cudaSuccess)
      return Status::kCudaError;
    const unsigned long long count = static_cast<unsigned long long>(n);
    // Pageable memcpy of 8 bytes is ordered on the stream.
    return cudaMemcpyAsync(counter, &count, sizeof count, cudaMemcpyHostToDevice, stream) == cudaSuccess
               ? Status::kOk
               : Status::kCudaError;
  }
  if (cudaMemsetAsync(counter, 0, sizeof *counter, stream) != cudaSuccess) return Status::kCudaError;
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, 65535 * 8);
  if (dtype == DType::kFloat32) {
    threshold_kernel<uint32_t, kWriteMask><<<int(blocks), kThreads, 0, stream>>>(
        static_cast<uint32_t*>(w), keep, n, uint32_t(limit), counter);
  } else {
    threshold_kernel<uint16_t, kWriteMask><<<int(blocks), kThreads, 0, stream>>>(
        static_cast<uint16_t*>(w), keep, n, uint16_t(limit), counter);
  }
  return cudaGetLastError() == cudaSuccess ? Status::kOk : Status::kCudaError;
}

}  // namespace

Status threshold_inplace(void* w, DType dtype, int64_t n, float threshold, int64_t* kept,
                         Stream stream) {
  return launch<false>(w, dtype, n, threshold, nullptr, kept, stream);
}

Status prune_mask(const void* w, DType dtype, int64_t n, float threshold, uint8_t* keep,
                  int64_t* kept, Stream stream) {
  return launch<true>(const_cast<void*>(w), dtype, n, threshold, keep, kept, stream);
}

}  // namespace slimtorch::cuda
