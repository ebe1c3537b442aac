// CUDA int8 GEMM / linear kernels; contracts and weight layout in
// slimtorch/qgemm.h (the same packed VNNI 16x4 layout as the CPU kernels:
// the int32 word of channel 16*nb + j and k-group g is word (nb*G + g)*16 + j).
//
// * quantize_rows_u8: one block per row; min/max/non-finite reduction, then
//   the same arithmetic as the CPU path (rint = round half even).
// * qgemm_u8s8: 64x64 output tiles, 256 threads of 4x4 outputs, k in chunks
//   of 16 groups staged in shared memory; dp4a.u32.s32 (u8 x s8, 4 products
//   into int32) is exact, so accumulators equal the integer reference.
// * qlinear_weight_only: a GEMV for small batches: one warp per 16-channel
//   block, lane (j, h) reads channel j's word of group 2*step + h (a warp
//   reads 128 contiguous bytes), up to 8 rows at a time.
#include <cuda_runtime.h>

#include <cfloat>
#include <cmath>

#include "slimtorch/qgemm.h"

namespace slimtorch::cuda {
namespace {

constexpr int kQuantThreads = 256;
constexpr int kTile = 64;         // output rows and columns per GEMM block
constexpr int kChunkGroups = 16;  // k groups (of 4) per shared-memory stage
constexpr int kGemvRows = 8;      // rows of x per weight-only GEMV pass
constexpr int kGemvWarps = 4;     // warps (16-channel blocks) per GEMV block

__device__ __forceinline__ int32_t dp4a_u8s8(uint32_t a, uint32_t b, int32_t c) {
  int32_t d;
  asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}

__device__ __forceinline__ int32_t round_clamped(float v, float lo, float hi) {
  v = fminf(fmaxf(v, lo), hi);  // fmaxf(NaN, lo) = lo
  return __float2int_rn(v);
}

__global__ void quantize_rows_kernel(const float* x, int64_t k, int64_t ldx, uint8_t* a,
                                     int64_t lda, float* scale, int32_t* zero_point,
                                     bool is_static, float x_scale, int32_t x_zp) {
  const int64_t row = blockIdx.x;
  const float* in = x + row * ldx;
  uint8_t* out = a + row * lda;
  float lo = 0.0f, hi = 0.0f;
  int bad = 0;
  for (int64_t i = threadIdx.x; i < k; i += blockDim.x) {
    const float v = in[i];
    bad |= !isfinite(v);
    lo = fminf(lo, v);
    hi = fmaxf(hi, v);
  }
  __shared__ float s_lo[kQuantThreads / 32], s_hi[kQuantThreads / 32];
  __shared__ int s_bad[kQuantThreads / 32];
  __shared__ float s_inv;
  __shared__ int32_t s_zp;
  __shared__ bool s_finite;
  for (int offset = 16; offset > 0; offset /= 2) {
    lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, offset));
    hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, offset));
    bad |= __shfl_xor_sync(0xffffffffu, bad, offset);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    s_lo[warp] = lo;
    s_hi[warp] = hi;
    s_bad[warp] = bad;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < int(blockDim.x / 32); ++w) {
      lo = fminf(lo, s_lo[w]);
      hi = fmaxf(hi, s_hi[w]);
      bad |= s_bad[w];
    }
    float row_scale;
    int32_t zp;
    if (bad) {
      row_scale = nanf("");
      zp = 0;
    } else if (is_static) {
      row_scale = x_scale;
      zp = x_zp;
    } else {
      // choose_qparams (asymmetric uint8) in double, as the CPU path and the reference.
      const double lo_d = fmin(double(lo), 0.0), hi_d = fmax(double(hi), 0.0);
      row_scale = fmaxf(__double2float_rn(__ddiv_rn(hi_d - lo_d, 255.0)), FLT_EPSILON);
      zp = int32_t(fmin(fmax(-rint(__ddiv_rn(lo_d, double(row_scale))), 0.0), 255.0));
    }
    scale[row] = row_scale;
    zero_point[row] = zp;
    s_finite = !bad;
    s_inv = bad ? 0.0f : __fdiv_rn(1.0f, row_scale);
    s_zp = zp;
  }
  __syncthreads();
  const float inv = s_inv;
  const int32_t zp = s_zp;
  const bool finite = s_finite;
  for (int64_t i = threadIdx.x; i < lda; i += blockDim.x) {
    uint8_t q = 0;
    if (finite && i < k) {
      // Per-row: float32(float32(x * inv) + zp); static (per tensor): one fma rounding.
      const float t = is_static ? __fmaf_rn(in[i], inv, float(zp)) : __fadd_rn(__fmul_rn(in[i], inv), float(zp));
      q = uint8_t(round_clamped(t, 0.0f, 255.0f));
    }
    out[i] = q;  // pad bytes past k are zero
  }
}

// acc tile 64x64; thread (ty, tx) owns rows ty*4..+4 and columns tx*4..+4.
__global__ void qgemm_u8s8_kernel(const uint8_t* a, int64_t m, int64_t groups, int64_t lda,
                                  const int8_t* packed, int64_t n, int32_t* c, int64_t ldc,
                                  const int32_t* zero_point, const float* row_scale,
                                  const float* w_scale, const int32_t* colsum, const float* bias,
                                  float* y, int64_t ldy) {
  __shared__ uint32_t s_a[kTile][kChunkGroups + 1];  // +1: no bank conflicts on column reads
  __shared__ uint32_t s_b[kChunkGroups][kTile];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t m0 = int64_t(blockIdx.y) * kTile, n0 = int64_t(blockIdx.x) * kTile;
  const uint32_t* b_words = reinterpret_cast<const uint32_t*>(packed);
  int32_t acc[4][4] = {};
  for (int64_t g0 = 0; g0 < groups; g0 += kChunkGroups) {
    for (int idx = threadIdx.x; idx < kTile * kChunkGroups; idx += blockDim.x) {
      const int r = idx / kChunkGroups, g = idx % kChunkGroups;
      uint32_t v = 0;
      if (m0 + r < m && g0 + g < groups)
        v = *reinterpret_cast<const uint32_t*>(a + (m0 + r) * lda + 4 * (g0 + g));
      s_a[r][g] = v;
    }
    for (int idx = threadIdx.x; idx < kTile * kChunkGroups; idx += blockDim.x) {
      const int g = idx / kTile, col = idx % kTile;
      const int64_t ch = n0 + col;
      uint32_t v = 0;
      if (ch < n && g0 + g < groups) v = b_words[((ch / 16) * groups + g0 + g) * 16 + ch % 16];
      s_b[g][col] = v;
    }
    __syncthreads();
#pragma unroll
    for (int g = 0; g < kChunkGroups; ++g) {
      uint32_t av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = s_a[ty * 4 + i][g];
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[j] = s_b[g][tx * 4 + j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = dp4a_u8s8(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }
  for (int i = 0; i < 4; ++i) {
    const int64_t row = m0 + ty * 4 + i;
    if (row >= m) continue;
    for (int j = 0; j < 4; ++j) {
      const int64_t col = n0 + tx * 4 + j;
      if (col >= n) continue;
      if (c != nullptr) {
        c[row * ldc + col] = acc[i][j];
      } else {
        // Wrapping int32 arithmetic gives the true value (it fits, see qgemm.h).
        const int32_t v = int32_t(uint32_t(acc[i][j]) - uint32_t(zero_point[row]) * uint32_t(colsum[col]));
        const float p = __fmul_rn(float(v), __fmul_rn(row_scale[row], w_scale[col]));
        y[row * ldy + col] = bias != nullptr ? __fadd_rn(p, bias[col]) : p;
      }
    }
  }
}

template <int R>
__global__ void weight_only_gemv_kernel(const float* x, int64_t m, int64_t k, int64_t ldx,
                                        const int8_t* packed, const float* w_scale,
                                        const float* bias, int64_t n, float* y, int64_t ldy) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t block = int64_t(blockIdx.x) * kGemvWarps + warp;  // 16-channel block
  const int64_t n_blocks = (n + 15) / 16;
  if (block >= n_blocks) return;
  const int64_t m0 = int64_t(blockIdx.y) * R;
  const int rows = int(min(int64_t(R), m - m0));
  const int64_t groups = (k + 3) / 4;
  const int j = lane % 16, h = lane / 16;
  const uint32_t* words = reinterpret_cast<const uint32_t*>(packed) + block * groups * 16;
  float acc[R] = {};
  for (int64_t g = h; g < groups; g += 2) {
    const uint32_t word = words[g * 16 + j];
    float w[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) w[i] = float(int8_t(uint8_t(word >> (8 * i))));
    const int live = int(min(int64_t(4), k - 4 * g));
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (r >= rows) break;
      const float* xr = x + (m0 + r) * ldx + 4 * g;
      for (int i = 0; i < live; ++i) acc[r] = fmaf(xr[i], w[i], acc[r]);
    }
  }
  const int64_t ch = block * 16 + j;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], 16);  // the two group halves
    if (r < rows && h == 0 && ch < n) {
      const float p = acc[r] * w_scale[ch];
      y[(m0 + r) * ldy + ch] = bias != nullptr ? p + bias[ch] : p;
    }
  }
}

Status launched() { return cudaGetLastError() == cudaSuccess ? Status::kOk : Status::kCudaError; }

}  // namespace

Status quantize_rows_u8(const float* x, int64_t m, int64_t k, int64_t ldx, uint8_t* a,
                        int64_t lda, float* scale, int32_t* zero_point, const float* x_scale,
                        int32_t x_zero_point, Stream stream) {
  if (m < 0 || k < 0 || ldx < k || lda < k || m > 2147483647) return Status::kInvalidArgument;
  if (x_scale != nullptr && (!(*x_scale >= FLT_MIN) || !std::isfinite(*x_scale) ||
                             x_zero_point < 0 || x_zero_point > 255))
    return Status::kInvalidArgument;
  if (m == 0) return Status::kOk;
  quantize_rows_kernel<<<unsigned(m), kQuantThreads, 0, stream>>>(
      x, k, ldx, a, lda, scale, zero_point, x_scale != nullptr, x_scale ? *x_scale : 1.0f, x_zero_point);
  return launched();
}

Status qgemm_u8s8(const uint8_t* a, int64_t m, int64_t k_pad, int64_t lda, const int8_t* packed,
                  int64_t n, int32_t* c, int64_t ldc, const int32_t* zero_point,
                  const float* row_scale, const float* w_scale, const int32_t* colsum,
                  const float* bias, float* y, int64_t ldy, Stream stream) {
  if (m < 0 || n < 0 || k_pad < 0 || k_pad % 4 != 0 || lda % 4 != 0 || lda < k_pad ||
      k_pad > kQgemmMaxK + 3)
    return Status::kInvalidArgument;
  if (c == nullptr && (y == nullptr || zero_point == nullptr || row_scale == nullptr ||
                       w_scale == nullptr || colsum == nullptr))
    return Status::kInvalidArgument;
  if (m == 0 || n == 0) return Status::kOk;
  const dim3 grid(unsigned((n + kTile - 1) / kTile), unsigned((m + kTile - 1) / kTile));
  if (grid.y > 65535) return Status::kInvalidArgument;
  qgemm_u8s8_kernel<<<grid, 256, 0, stream>>>(a, m, k_pad / 4, lda, packed, n, c, ldc, zero_point,
                                              row_scale, w_scale, colsum, bias, y, ldy);
  return launched();
}

Status qlinear_weight_only(const float* x, int64_t m, int64_t k, int64_t ldx,
                           const int8_t* packed, const float* w_scale, const float* bias,
                           int64_t n, float* y, int64_t ldy, Stream stream) {
  if (m < 0 || n < 0 || k < 0 || ldx < k || ldy < n) return Status::kInvalidArgument;
  if (m == 0 || n == 0) return Status::kOk;
  const int64_t n_blocks = (n + 15) / 16;
  const dim3 grid(unsigned((n_blocks + kGemvWarps - 1) / kGemvWarps),
                  unsigned((m + kGemvRows - 1) / kGemvRows));
  if (grid.y > 65535) return Status::kInvalidArgument;
  if (m == 1) {
    weight_only_gemv_kernel<1><<<grid, 32 * kGemvWarps, 0, stream>>>(x, m, k, ldx, packed, w_scale, bias, n, y, ldy);
  } else {
    weight_only_gemv_kernel<kGemvRows><<<grid, 32 * kGemvWarps, 0, stream>>>(x, m, k, ldx, packed, w_scale, bias, n, y, ldy);
  }
  return launched();
}

}  // namespace slimtorch::cuda
