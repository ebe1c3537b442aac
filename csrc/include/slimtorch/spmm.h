// Sparse x dense products for pruned linear layers: Y = X @ W.T + b with W
// stored in a packed compressed-sparse-row format.
//
// Packed sparse weight (W has `rows` = out_features, `cols` = in_features):
//   row_ptr  int64[rows + 1]   row_ptr[0] = 0, non-decreasing, row_ptr[rows] = nnz.
//                              The nonzeros of row r are entries [row_ptr[r], row_ptr[r+1]).
//   col_idx  uint16[nnz]       column of each entry when cols <= 65536 (torch stores
//            or int32[nnz]     them as int16 and the bits are read as uint16), else int32.
//                              Every index is < cols; within a row they are ascending
//                              (not required for correctness, it keeps gathers local).
//   values   nnz entries of    float32, float16, bfloat16 (bit patterns), or int8.
//   row_scales float32[rows]   int8 only ("sparse int8", Deep Compression style): the
//                              weight is values[k] * row_scales[r] (symmetric, per
//                              output row). nullptr for float values.
// The format is validated by the Python op layer when it is built or loaded;
// kernels only check sizes and pointers, never the contents.
//
// Activations are float32 (spmm_forward also takes float16 / bfloat16): x is
// [batch, cols] with row stride ldx (unit column stride), y is [batch, rows]
// contiguous, bias float32[rows] or nullptr.
// Accumulation is in float32; half/int8 values are widened exactly.
//
// Code paths (active_isa()):
//  - batch 1 (GEMV): per row, gather x[col] (AVX-512: 16 lanes, AVX2: 8 lanes,
//    NEON: 4 lanes loaded one by one, scalar: 8 unrolled accumulators) and
//    multiply by the widened values.
//  - batch > 1: X is transposed into panels of W batch columns (x^T[col][0:W],
//    W = 16/32/64 lanes on AVX-512, 8/16/32 on AVX2, 4/8/16 on NEON, 8
//    scalar), sized to stay
//    in L2; for every nonzero w[r, c], y[r, panel] += w * x^T[c, panel].
//    On AVX-512 a bfloat16 x stays bfloat16 in panels of W >= 32 (half the
//    bytes per nonzero; widened exactly in registers, the same sums).
//    Large batches go panel-major (each thread owns whole panels); there,
//    layers over 2048 inputs take the widest panels in blocks of 64 KiB of
//    columns, with the nonzeros regrouped by block for the call and each
//    row's sums carried from block to block.
//  - batch 1 with a bitmap (AVX-512): per block of 16 columns, the row's next
//    popcount(mask) values are expanded into the set lanes and multiplied by a
//    plain (masked) load of x: no gathers, 1 bit per column instead of 16.
//  The rows are cut into ranges of about the same number of nonzeros (plus a
//  fixed cost per row, found by binary search on row_ptr), 8 per thread;
//  threads pull ranges from a shared counter, so a late thread delays no one.
#pragma once

#include "slimtorch/common.h"
#include "slimtorch/cuda.h"

namespace slimtorch {

enum class SparseValues : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kInt8 = 3 };

struct SparseMatrix {
  int64_t rows = 0;                // out_features
  int64_t cols = 0;                // in_features
  const int64_t* row_ptr = nullptr;
  const void* col_idx = nullptr;   // uint16_t* when !wide_idx, int32_t* when wide_idx
  bool wide_idx = false;
  const void* values = nullptr;
  SparseValues value_type = SparseValues::kFloat32;
  const float* row_scales = nullptr;  // int8 only
  // Optional second encoding of the columns, used by the AVX-512 batch-1 path:
  // uint16[rows][ceil(cols / 16)], bit j of block b set iff column 16b + j is
  // stored in the row. Must describe exactly the columns of col_idx, which
  // must then be ascending within each row (values are read in that order).
  const uint16_t* bitmap = nullptr;
};

// y[b, r] = sum_k w[r, col_k] * x[b, col_k] (+ bias[r]) for b < batch.
Status spmm_forward(const SparseMatrix& w, const float* x, int64_t batch, int64_t ldx,
                    const float* bias, float* y, int n_threads);
// The same with x and y of any float DType (float16 / bfloat16 as 16-bit
// patterns; ldx in elements): x is widened exactly as it is read (row panel
// by row panel) and each output is the float32 result rounded once (nearest
// even), so y equals the float32 entry point's result on the widened x,
// rounded. bias stays float32.
Status spmm_forward(const SparseMatrix& w, const void* x, DType x_dtype, int64_t batch, int64_t ldx,
                    const float* bias, void* y, DType y_dtype, int n_threads);

// Int8 values times activations quantized per row on the fly ("sparse int8
// dynamic"): each row of x gets uint8 codes with its own scale and zero point
// exactly as quantize_rows_u8 (slimtorch/qgemm.h) gives them, the sums
// acc[b, r] = sum_k w[r, col_k] * code[b, col_k] are exact int32, and
//   y[b, r] = float(acc - zp[b] * sum_k w[r, col_k]) * (x_scale[b] * row_scales[r]) + bias[r].
// AVX-512 VNNI only (see spmm_avx512.cpp); spmm_dynamic_supported says whether this
// CPU, ISA setting and matrix (int8 values, 16-bit columns, cols <= kQgemmMaxK)
// can run it; otherwise spmm_forward_dynamic returns kInvalidArgument.
bool spmm_dynamic_supported(const SparseMatrix& w);
Status spmm_forward_dynamic(const SparseMatrix& w, const float* x, int64_t batch, int64_t ldx,
                            const float* bias, float* y, int n_threads);
// The same with x and y of any float DType (as spmm_forward): a 16-bit x is
// quantized from its exactly widened rows, a 16-bit y is each float32 result
// rounded once.
Status spmm_forward_dynamic(const SparseMatrix& w, const void* x, DType x_dtype, int64_t batch, int64_t ldx,
                            const float* bias, void* y, DType y_dtype, int n_threads);

// Gradient with respect to x: grad_x[b, c] = sum_r grad_y[b, r] * w[r, c].
// grad_y is [batch, rows] contiguous, grad_x is [batch, cols] contiguous and
// fully overwritten. Threads split the batch (each owns whole grad_x rows).
Status spmm_backward_input(const SparseMatrix& w, const float* grad_y, int64_t batch,
                           float* grad_x, int n_threads);

namespace cuda {
// Device version of spmm_forward: every pointer is a device pointer; runs on
// `stream` without synchronizing. One warp per output row; its lanes stride
// over the row's nonzeros for up to 8 batch columns at a time, then reduce
// with shuffles. (The gradient with respect to x runs on torch on CUDA.)
Status spmm_forward(const SparseMatrix& w, const float* x, int64_t batch, int64_t ldx,
                    const float* bias, float* y, Stream stream);
}  // namespace cuda

}  // namespace slimtorch
