// CUDA affine quantization, bit-exact with the CPU kernels and the reference
// (formulas in slimtorch/quantize.h). Every rounding step is an explicit
// intrinsic (__frcp_rn, __fmul_rn, __fadd_rn, __fmaf_rn, __float2int_rn), so
// nvcc's multiply-add contraction cannot change a result.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "slimtorch/quantize.h"

namespace slimtorch::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535 * 8;  // grid-stride loops cover the rest

template <DType D>
__device__ __forceinline__ float load_float(const void* x, int64_t i) {
  if (D == DType::kFloat32) return static_cast<const float*>(x)[i];
  if (D == DType::kFloat16) return __half2float(static_cast<const __half*>(x)[i]);
  return __uint_as_float(uint32_t(static_cast<const uint16_t*>(x)[i]) << 16);  // bfloat16: exact
}

template <DType O>
__device__ __forceinline__ void store_float(void* out, int64_t i, float v) {
  if (O == DType::kFloat32) static_cast<float*>(out)[i] = v;
  else if (O == DType::kFloat16) static_cast<__half*>(out)[i] = __float2half_rn(v);
  else static_cast<__nv_bfloat16*>(out)[i] = __float2bfloat16_rn(v);
}

// Channel of flat element i in the [outer, channels, inner] view.
__device__ __forceinline__ int64_t channel_of(int64_t i, int64_t channels, int64_t inner) {
  return channels == 1 ? 0 : (i / inner) % channels;
}

template <DType D, bool kFma>
__global__ void quantize_kernel(const void* x, int64_t n, int64_t channels, int64_t inner,
                                const float* scale, const int32_t* zero_point, float qlo,
                                float qhi, uint8_t* q) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = channel_of(i, channels, inner);
    const float inv = __frcp_rn(scale[c]);  // correctly rounded, = 1.0f / scale on the CPU
    const float zp = float(zero_point[c]);
    const float v = load_float<D>(x, i);
    const float t = kFma ? __fmaf_rn(v, inv, zp) : __fadd_rn(__fmul_rn(v, inv), zp);
    // NaN -> zero point; clamping before rounding is exact (qlo, qhi are integers).
    const int level = isnan(t) ? zero_point[c] : __float2int_rn(fminf(fmaxf(t, qlo), qhi));
    q[i] = uint8_t(level);  // the byte of an int8 or uint8 level
  }
}

template <bool kSigned, DType O>
__global__ void dequantize_kernel(const uint8_t* q, int64_t n, int64_t channels, int64_t inner,
                                  const float* scale, const int32_t* zero_point, void* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = channel_of(i, channels, inner);
    const int level = kSigned ? int(int8_t(q[i])) : int(q[i]);
    store_float<O>(out, i, __fmul_rn(float(level - zero_point[c]), scale[c]));
  }
}

// Floats as unsigned keys that order like the floats (for atomicMin/Max).
__device__ __forceinline__ unsigned order_key(float f) {
  const unsigned bits = __float_as_uint(f);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}
__device__ __forceinline__ float key_to_float(unsigned key) {
  return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

constexpr unsigned kEmptyLo = 0xffffffffu, kEmptyHi = 0u;  // initial keys: no element seen

__global__ void init_minmax_kernel(unsigned* keys, int64_t channels) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c <= channels;
       c += int64_t(gridDim.x) * blockDim.x) {
    if (c == channels) {
      keys[2 * channels] = 0;  // non-finite flag
    } else {
      keys[2 * c] = kEmptyLo;
      keys[2 * c + 1] = kEmptyHi;
    }
  }
}

// Block b reduces part (b % parts) of channel (b / parts); one atomic per block.
template <DType D>
__global__ void minmax_kernel(const void* x, int64_t outer, int64_t channels, int64_t inner,
                              int64_t parts, unsigned* keys) {
  const int64_t c = blockIdx.x / parts, part = blockIdx.x % parts;
  const int64_t per_channel = outer * inner;
  unsigned lo = kEmptyLo, hi = kEmptyHi, non_finite = 0;
  for (int64_t k = part * blockDim.x + threadIdx.x; k < per_channel; k += parts * blockDim.x) {
    const int64_t o = k / inner, i = k - o * inner;
    const float v = load_float<D>(x, (o * channels + c) * inner + i);
    non_finite |= (__float_as_uint(v) & 0x7fffffffu) >= 0x7f800000u;
    const unsigned key = order_key(v);
    lo = min(lo, key);
    hi = max(hi, key);
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    lo = min(lo, __shfl_down_sync(0xffffffffu, lo, offset));
    hi = max(hi, __shfl_down_sync(0xffffffffu, hi, offset));
    non_finite |= __shfl_down_sync(0xffffffffu, non_finite, offset);
  }
  __shared__ unsigned warp_lo[kThreads / 32], warp_hi[kThreads / 32], warp_bad[kThreads / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_lo[warp] = lo, warp_hi[warp] = hi, warp_bad[warp] = non_finite;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) {
      lo = min(lo, warp_lo[w]);
      hi = max(hi, warp_hi[w]);
      non_finite |= warp_bad[w];
    }
    if (lo != kEmptyLo) atomicMin(&keys[2 * c], lo);
    if (hi != kEmptyHi) atomicMax(&keys[2 * c + 1], hi);
    if (non_finite) atomicOr(&keys[2 * channels], 1u);
  }
}

__global__ void finalize_qparams_kernel(const unsigned* keys, int64_t channels, bool symmetric,
                                        QType qtype, float* scale, int32_t* zero_point) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < channels;
       c += int64_t(gridDim.x) * blockDim.x) {
    const bool empty = keys[2 * c] == kEmptyLo;
    const float lo = empty ? 0.0f : key_to_float(keys[2 * c]);
    const float hi = empty ? 0.0f : key_to_float(keys[2 * c + 1]);
    qparams_from_range(lo, hi, symmetric, qtype, scale + c, zero_point + c);
  }
}

int blocks_for(int64_t n) { return int(std::max<int64_t>(1, std::min((n + kThreads - 1) / kThreads, kMaxBlocks))); }

Status launched() { return cudaGetLastError() == cudaSuccess ? Status::kOk : Status::kCudaError; }

bool valid(const ChannelView& view) { return view.outer >= 0 && view.channels >= 0 && view.inner >= 0; }

template <DType D>
void launch_quantize(const void* x, int64_t n, const ChannelView& view, bool per_channel,
                     const float* scale, const int32_t* zero_point, float qlo, float qhi,
                     uint8_t* q, Stream stream) {
  if (per_channel) {
    quantize_kernel<D, false><<<blocks_for(n), kThreads, 0, stream>>>(
        x, n, view.channels, view.inner, scale, zero_point, qlo, qhi, q);
  } else {
    quantize_kernel<D, true><<<blocks_for(n), kThreads, 0, stream>>>(
        x, n, 1, view.inner, scale, zero_point, qlo, qhi, q);
  }
}

template <bool kSigned>
void launch_dequantize(const uint8_t* q, int64_t n, const ChannelView& view, const float* scale,
                       const int32_t* zero_point, void* out, DType out_dtype, Stream stream) {
  const int blocks = blocks_for(n);
  switch (out_dtype) {
    case DType::kFloat32:
      dequantize_kernel<kSigned, DType::kFloat32><<<blocks, kThreads, 0, stream>>>(
          q, n, view.channels, view.inner, scale, zero_point, out);
      break;
    case DType::kFloat16:
      dequantize_kernel<kSigned, DType::kFloat16><<<blocks, kThreads, 0, stream>>>(
          q, n, view.channels, view.inner, scale, zero_point, out);
      break;
    case DType::kBFloat16:
      dequantize_kernel<kSigned, DType::kBFloat16><<<blocks, kThreads, 0, stream>>>(
          q, n, view.channels, view.inner, scale, zero_point, out);
      break;
  }
}

}  // namespace

Status choose_qparams(const void* x, DType dtype, ChannelView view, bool symmetric, QType qtype,
                      float* scale, int32_t* zero_point, int32_t* workspace, Stream stream) {
  if (!valid(view) || workspace == nullptr || int(dtype) < 0 || int(dtype) > 2) return Status::kInvalidArgument;
  unsigned* keys = reinterpret_cast<unsigned*>(workspace);
  init_minmax_kernel<<<blocks_for(view.channels + 1), kThreads, 0, stream>>>(keys, view.channels);
  if (view.channels == 0) return launched();
  const int64_t per_channel = view.outer * view.inner;
  if (per_channel > 0) {
    // Enough blocks to fill the GPU even with few channels, each reducing
    // at least ~16 elements per thread.
    const int64_t by_size = std::max<int64_t>(1, per_channel / (kThreads * 16));
    const int64_t by_grid = std::max<int64_t>(1, 4096 / view.channels);
    const int64_t parts = std::min(by_size, by_grid);
    const int64_t blocks = view.channels * parts;
    if (blocks > 0x7fffffffLL) return Status::kInvalidArgument;
    switch (dtype) {
      case DType::kFloat32:
        minmax_kernel<DType::kFloat32><<<unsigned(blocks), kThreads, 0, stream>>>(
            x, view.outer, view.channels, view.inner, parts, keys);
        break;
      case DType::kFloat16:
        minmax_kernel<DType::kFloat16><<<unsigned(blocks), kThreads, 0, stream>>>(
            x, view.outer, view.channels, view.inner, parts, keys);
        break;
      case DType::kBFloat16:
        minmax_kernel<DType::kBFloat16><<<unsigned(blocks), kThreads, 0, stream>>>(
            x, view.outer, view.channels, view.inner, parts, keys);
        break;
    }
  }
  finalize_qparams_kernel<<<blocks_for(view.channels), kThreads, 0, stream>>>(
      keys, view.channels, symmetric, qtype, scale, zero_point);
  return launched();
}

Status quantize(const void* x, DType dtype, ChannelView view, bool per_channel,
                const float* scale, const int32_t* zero_point, QType qtype, void* q,
                Stream stream) {
  if (!valid(view) || (!per_channel && view.channels != 1)) return Status::kInvalidArgument;
  const int64_t n = view.numel();
  if (n == 0) return Status::kOk;
  const float qlo = float(qtype_min(qtype)), qhi = float(qtype_max(qtype));
  uint8_t* out = static_cast<uint8_t*>(q);
  switch (dtype) {
    case DType::kFloat32:
      launch_quantize<DType::kFloat32>(x, n, view, per_channel, scale, zero_point, qlo, qhi, out, stream);
      break;
    case DType::kFloat16:
      launch_quantize<DType::kFloat16>(x, n, view, per_channel, scale, zero_point, qlo, qhi, out, stream);
      break;
    case DType::kBFloat16:
      launch_quantize<DType::kBFloat16>(x, n, view, per_channel, scale, zero_point, qlo, qhi, out, stream);
      break;
    default:
      return Status::kInvalidArgument;
  }
  return launched();
}

Status dequantize(const void* q, QType qtype, ChannelView view, const float* scale,
                  const int32_t* zero_point, void* out, DType out_dtype, Stream stream) {
  if (!valid(view) || int(out_dtype) < 0 || int(out_dtype) > 2) return Status::kInvalidArgument;
  const int64_t n = view.numel();
  if (n == 0) return Status::kOk;
  const uint8_t* levels = static_cast<const uint8_t*>(q);
  if (qtype == QType::kInt8) launch_dequantize<true>(levels, n, view, scale, zero_point, out, out_dtype, stream);
  else launch_dequantize<false>(levels, n, view, scale, zero_point, out, out_dtype, stream);
  return launched();
}

}  // namespace slimtorch::cuda
