// Internal: the Intel AMX tile kernels of qgemm_amx.cpp (the int8 GEMM and the
// bf16 weight-only linear), called by qgemm.cpp when the active ISA is kAmx.
// Exists only in builds with SLIMTORCH_HAVE_AMX (x86-64, see CMakeLists.txt).
#pragma once

#include <functional>

#include "slimtorch/common.h"

namespace slimtorch {

// Accumulators handed to an AmxFinish callback: row r of the block starts at
// acc + r * kAmxAccStride (the stride of the other integer paths' tiles).
constexpr int kAmxAccStride = 64;
// Rows of the blocks handed to an AmxFinish callback (at most).
constexpr int kAmxBlockRows = 32;

// A is read in place when its rows start on cache lines (tile loads read one
// 64-byte line per row; a row across two lines costs two): base and row
// stride multiples of kAmxRowAlign. Otherwise it is first copied into such rows.
constexpr int64_t kAmxRowAlign = 64;

// finish(m0, rows, c0, cols, acc): the exact int32 sums of output rows
// [m0, m0 + rows) and columns [c0, c0 + cols). Called from several threads at
// once, each block exactly once.
using AmxFinish = std::function<void(int64_t m0, int rows, int64_t c0, int64_t cols, const int32_t* acc)>;

// True when the AMX kernel should run an m x k by k x n problem: AMX is the
// active path, there are enough rows to fill tiles and the weight is large
// enough to pay for the tile set-up (smaller problems stay on the VNNI
// kernels, which are faster there).
bool amx_int_gemm_wanted(int64_t m, int64_t n, int64_t k);
// The smallest weight (n * k) the integer GEMM takes to the tiles; tests set
// 0 so that every shape of their grids runs on AMX.
void set_amx_min_int_weight(int64_t elements);

// prepare(begin, end): makes rows [begin, end) of a (and whatever the finish
// callback reads of them), called on the thread that then multiplies them,
// before any of them is read; the ranges are disjoint and cover [0, m).
using AmxPrepareRows = std::function<void(int64_t begin, int64_t end)>;

// True when amx_int_gemm on these sizes and threads takes a prepare callback:
// it then splits the rows among the threads (each reads the whole weight),
// which pays only where the weight fits L2 or each thread's rows are many.
bool amx_int_gemm_prepares_rows(int64_t m, int64_t n, int64_t k, int n_threads);

// acc = a . q^T for a [m][k] uint8 (row stride lda; k a multiple of 4, bytes
// past the true K zero) and the packed weight of qgemm.h ([ceil(n/16)][k/4]
// groups of 64 bytes), in blocks of at most 32 rows x 32 columns. prepare
// (may be null; only where amx_int_gemm_prepares_rows) fills a's rows first,
// range by range: a must then start on a cache line with lda a multiple of
// kAmxRowAlign, and be at least 64 bytes per row.
void amx_int_gemm(const uint8_t* a, int64_t m, int64_t k, int64_t lda, const int8_t* packed,
                  int64_t n, int n_threads, const AmxFinish& finish, const AmxPrepareRows* prepare = nullptr);

// True when the weight-only linear of m rows runs on bf16 tiles (AMX active,
// enough rows, k > 0).
bool amx_weight_only_wanted(int64_t m, int64_t k);

// Weight-only linear on bf16 tiles: y[m][n] = w_scale[n] * sum_k x[m][k] * q[n][k] + bias[n]
// with x rounded to bf16 (nearest even), the int8 weights widened to bf16
// (exact), and the products summed in float32 by tdpbf16ps. x and y of any
// float DType (as qlinear_weight_only); a 16-bit y is each float32 result
// rounded once. bias may be null.
void amx_weight_only(const void* x, DType x_dtype, int64_t m, int64_t k, int64_t ldx, const int8_t* packed,
                     const float* w_scale, const float* bias, int64_t n, void* y, DType y_dtype, int64_t ldy,
                     int n_threads);

}  // namespace slimtorch
