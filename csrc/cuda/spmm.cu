// CUDA sparse (packed CSR) x dense product; layout in slimtorch/spmm.h.
// One warp per output row: lane l takes nonzeros l, l+32, ... of the row and
// multiplies each into up to kCols batch columns, then the warp reduces.
// Consecutive lanes read consecutive indices/values (coalesced); the x
// reads are gathers that hit L1/L2 for the small batches this targets.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "slimtorch/spmm.h"

namespace slimtorch::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kCols = 8;  // batch columns per warp pass (registers per lane)

struct F16 { uint16_t bits; };
struct BF16 { uint16_t bits; };

__device__ __forceinline__ float widen(float v) { return v; }
__device__ __forceinline__ float widen(F16 v) { return __half2float(__ushort_as_half(v.bits)); }
__device__ __forceinline__ float widen(BF16 v) { return __uint_as_float(uint32_t(v.bits) << 16); }
__device__ __forceinline__ float widen(int8_t v) { return float(v); }

template <class V, class I>
__global__ void spmm_rows_kernel(int64_t rows, const int64_t* __restrict__ row_ptr,
                                 const I* __restrict__ col_idx, const V* __restrict__ values,
                                 const float* __restrict__ row_scales, const float* __restrict__ x,
                                 int64_t batch, int64_t ldx, const float* __restrict__ bias,
                                 float* __restrict__ y) {
  const int lane = threadIdx.x & 31;
  const int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (r >= rows) return;  // whole warps exit together
  const int64_t begin = row_ptr[r], end = row_ptr[r + 1];
  const float scale = row_scales != nullptr ? row_scales[r] : 1.0f;
  const float shift = bias != nullptr ? bias[r] : 0.0f;
  for (int64_t b0 = int64_t(blockIdx.y) * kCols; b0 < batch; b0 += int64_t(gridDim.y) * kCols) {
    const int nb = int(batch - b0 < kCols ? batch - b0 : kCols);
    float acc[kCols];
#pragma unroll
    for (int j = 0; j < kCols; ++j) acc[j] = 0.0f;
    for (int64_t k = begin + lane; k < end; k += 32) {
      const float v = widen(values[k]);
      const int64_t c = int64_t(col_idx[k]);
      const float* xc = x + b0 * ldx + c;
#pragma unroll
      for (int j = 0; j < kCols; ++j)
        if (j < nb) acc[j] += v * __ldg(xc + j * ldx);
    }
#pragma unroll
    for (int j = 0; j < kCols; ++j) {
      float s = acc[j];
      for (int offset = 16; offset > 0; offset /= 2) s += __shfl_down_sync(0xffffffffu, s, offset);
      if (lane == 0 && j < nb) y[(b0 + j) * rows + r] = s * scale + shift;
    }
  }
}

template <class V, class I>
Status launch_typed(const SparseMatrix& w, const float* x, int64_t batch, int64_t ldx,
                    const float* bias, float* y, Stream stream) {
  const int64_t row_blocks = (w.rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  const int64_t col_blocks = (batch + kCols - 1) / kCols;
  if (row_blocks > 0x7fffffffLL) return Status::kInvalidArgument;
  const dim3 grid(unsigned(row_blocks), unsigned(col_blocks < 65535 ? col_blocks : 65535));
  spmm_rows_kernel<V, I><<<grid, kWarpsPerBlock * 32, 0, stream>>>(
      w.rows, w.row_ptr, static_cast<const I*>(w.col_idx), static_cast<const V*>(w.values),
      w.row_scales, x, batch, ldx, bias, y);
  return cudaGetLastError() == cudaSuccess ? Status::kOk : Status::kCudaError;
}

template <class V>
Status launch_by_index(const SparseMatrix& w, const float* x, int64_t batch, int64_t ldx,
                       const float* bias, float* y, Stream stream) {
  return w.wide_idx ? launch_typed<V, int32_t>(w, x, batch, ldx, bias, y, stream)
                    : launch_typed<V, uint16_t>(w, x, batch, ldx, bias, y, stream);
}

}  // namespace

Status spmm_forward(const SparseMatrix& w, const float* x, int64_t batch, int64_t ldx,
                    const float* bias, float* y, Stream stream) {
  if (w.rows < 0 || w.cols < 0 || batch < 0) return Status::kInvalidArgument;
  if (batch == 0 || w.rows == 0) return Status::kOk;
  if (w.row_ptr == nullptr || y == nullptr || (batch > 1 && ldx < w.cols)) return Status::kInvalidArgument;
  if ((w.value_type == SparseValues::kInt8) != (w.row_scales != nullptr)) return Status::kInvalidArgument;
  switch (w.value_type) {
    case SparseValues::kFloat32: return launch_by_index<float>(w, x, batch, ldx, bias, y, stream);
    case SparseValues::kFloat16: return launch_by_index<F16>(w, x, batch, ldx, bias, y, stream);
    case SparseValues::kBFloat16: return launch_by_index<BF16>(w, x, batch, ldx, bias, y, stream);
    case SparseValues::kInt8: return launch_by_index<int8_t>(w, x, batch, ldx, bias, y, stream);
  }
  return Status::kInvalidArgument;
}

}  // namespace slimtorch::cuda
