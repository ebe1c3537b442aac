// int8 GEMM / linear kernels: per-output-channel symmetric int8 weights,
// prepacked once, times uint8 (quantized) or float activations.
//
// Packed weight layout ("VNNI 16x4"). For weights q[N][K] (int8, symmetric,
// values in [-127, 127]):
//   packed[nb][g][j][i] = q[16*nb + j][4*g + i]     (0 where out of range)
//   nb < ceil(N/16), g < ceil(K/4); 64 bytes per (nb, g), nb-major.
// One 64-byte group is one zmm register: lane j holds the 4 consecutive-k
// weights of output channel 16*nb + j, which is the operand order of
// vpdpbusd (u8 x s8, 4 products summed into each int32 lane).
//
// Activations of the integer paths are uint8 with a per-row zero point zp:
//   acc[m][n] = sum_k a[m][k] * q[n][k]                       (exact, int32)
//   y[m][n]   = float(acc[m][n] - zp[m] * colsum[n]) * (a_scale[m] * w_scale[n]) + bias[n]
// where colsum[n] = sum_k q[n][k]. Accumulation is exact in int32 (wrapping
// arithmetic, no saturation on any path) while 255 * 127 * K < 2^31, i.e.
// K <= kQgemmMaxK.
//
// Non-finite activations: a row holding NaN or +/-Inf gives a NaN output row
// (in the dynamic and static paths its row scale is NaN). The weight-only
// path is plain float arithmetic: NaN/Inf propagate as IEEE says.
#pragma once

#include "slimtorch/common.h"
#include "slimtorch/cuda.h"

namespace slimtorch {

constexpr int64_t kQgemmBlockN = 16;   // output channels per packed block
constexpr int64_t kQgemmGroupK = 4;    // k values per 32-bit lane
constexpr int64_t kQgemmMaxK = 66311;  // largest K with 255 * 127 * K < 2^31

// Bytes of the packed buffer for an N x K weight.
int64_t qgemm_packed_bytes(int64_t n, int64_t k);

// Packs row-major q (row stride ldq) into `packed` (qgemm_packed_bytes bytes)
// and writes colsum[n] = sum_k q[n][k] when colsum is not null.
Status qgemm_pack(const int8_t* q, int64_t n, int64_t k, int64_t ldq, int8_t* packed,
                  int32_t* colsum);

// Per-row asymmetric uint8 quantization of float rows x[m][0..k) (row stride
// ldx) into a[m][0..k) (row stride lda), as the quantize op family's
// choose_qparams + per-channel quantize (slimtorch/reference/quantize.py):
//   lo = min(0, min x), hi = max(0, max x)
//   scale = max(float((hi - lo) / 255 in double), FLT_EPSILON)
//   zp    = clamp(-round_half_even(lo / scale in double), 0, 255)
//   a     = clamp(round_half_even(float32(float32(x * (1/scale)) + zp)), 0, 255)
// A row with NaN/Inf gets scale = NaN, zp = 0 and a = 0.
Status quantize_rows_u8(const float* x, int64_t m, int64_t k, int64_t ldx, uint8_t* a,
                        int64_t lda, float* scale, int32_t* zero_point, int n_threads);
// The same with x of any float DType (float16 / bfloat16 as 16-bit patterns,
// widened exactly): the codes and parameters of the widened rows.
Status quantize_rows_u8(const void* x, DType x_dtype, int64_t m, int64_t k, int64_t ldx, uint8_t* a,
                        int64_t lda, float* scale, int32_t* zero_point, int n_threads);

// c[m][n] = sum_k a[m][k] * q[n][k] (int32, exact). a row stride lda, c row stride ldc.
Status qgemm_u8s8s32(const uint8_t* a, int64_t m, int64_t k, int64_t lda, const int8_t* packed,
                     int64_t n, int32_t* c, int64_t ldc, int n_threads);

// Quantized linear, float in and out: y[m][n] (row stride ldy) from x[m][k]
// (row stride ldx). Rows are quantized as quantize_rows_u8 does (dynamic,
// x_scale == nullptr) or with the given per-tensor *x_scale and x_zero_point
// in [0, 255] (static, per-tensor quantize: a = clamp(round_half_even(fma(x, 1/x_scale, zp)), 0, 255)).
// bias may be null.
Status qlinear_u8s8(const float* x, int64_t m, int64_t k, int64_t ldx, const int8_t* packed,
                    const float* w_scale, const int32_t* colsum, const float* bias, int64_t n,
                    float* y, int64_t ldy, const float* x_scale, int32_t x_zero_point,
                    int n_threads);
// The same with x and y of any float DType (float16 / bfloat16 as 16-bit
// patterns, strides in elements): x is widened exactly as it is read, so the
// quantized rows equal those of float32 x; each output is computed in float32
// as above and rounded once (nearest even). bias stays float32.
Status qlinear_u8s8(const void* x, DType x_dtype, int64_t m, int64_t k, int64_t ldx, const int8_t* packed,
                    const float* w_scale, const int32_t* colsum, const float* bias, int64_t n,
                    void* y, DType y_dtype, int64_t ldy, const float* x_scale, int32_t x_zero_point,
                    int n_threads);

// Weight-only linear: y[m][n] = w_scale[n] * sum_k x[m][k] * float(q[n][k]) + bias[n],
// summed in float32; the weight is converted inside the kernel and never
// materialised as float. Where the active path multiplies bf16 natively (AMX
// tiles, or AVX512-BF16 on the avx512 path), from weight_only_bf16_min_rows()
// rows on, x is first rounded to bf16 (relative error at most 2^-8 per
// element; the weights are exact in bf16). bias may be null.
Status qlinear_weight_only(const float* x, int64_t m, int64_t k, int64_t ldx,
                           const int8_t* packed, const float* w_scale, const float* bias,
                           int64_t n, float* y, int64_t ldy, int n_threads);
// The same with x and y of any float DType (float16 / bfloat16 as 16-bit
// patterns, strides in elements): x is widened exactly as it is read and each
// output is the float32 result rounded once (nearest even), so y equals the
// float32 entry point's result on the widened x, rounded. bias stays float32.
Status qlinear_weight_only(const void* x, DType x_dtype, int64_t m, int64_t k, int64_t ldx,
                           const int8_t* packed, const float* w_scale, const float* bias,
                           int64_t n, void* y, DType y_dtype, int64_t ldy, int n_threads);
// The row count from which qlinear_weight_only rounds x to bf16 on the
// active path (see there), or 0 where it never does.
int64_t weight_only_bf16_min_rows();

// ---- CUDA (csrc/cuda/qgemm.cu); pointers are device memory, nothing synchronizes.
namespace cuda {

// As the CPU quantize_rows_u8 (dynamic when x_scale is null, else static with
// *x_scale (host value) and x_zero_point); also zeroes a's bytes k..lda-1 of
// every row, so a padded buffer (lda a multiple of 4) feeds qgemm_u8s8.
Status quantize_rows_u8(const float* x, int64_t m, int64_t k, int64_t ldx, uint8_t* a,
                        int64_t lda, float* scale, int32_t* zero_point, const float* x_scale,
                        int32_t x_zero_point, Stream stream);

// a: uint8 rows of k_pad bytes (a multiple of 4, zero past the true K), row
// stride lda (a multiple of 4). If c is not null, writes the int32
// accumulators c[m][n]; otherwise the linear epilogue of qlinear_u8s8 into y
// with per-row zero_point / row_scale (from quantize_rows_u8).
Status qgemm_u8s8(const uint8_t* a, int64_t m, int64_t k_pad, int64_t lda, const int8_t* packed,
                  int64_t n, int32_t* c, int64_t ldc, const int32_t* zero_point,
                  const float* row_scale, const float* w_scale, const int32_t* colsum,
                  const float* bias, float* y, int64_t ldy, Stream stream);

// Weight-only linear (a GEMV, 8 rows of x per pass over the weight).
Status qlinear_weight_only(const float* x, int64_t m, int64_t k, int64_t ldx,
                           const int8_t* packed, const float* w_scale, const float* bias,
                           int64_t n, float* y, int64_t ldy, Stream stream);

}  // namespace cuda

}  // namespace slimtorch
