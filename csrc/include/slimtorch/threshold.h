// Magnitude thresholding: zero (or mask) every element with |w| <= threshold.
//
// Layout: `w` is a dense buffer of n elements of `dtype` (fp16/bf16 as raw
// 16-bit patterns). NaN elements compare false and are always kept.
// A negative threshold prunes nothing. The threshold must not be NaN.
#pragma once

#include "slimtorch/common.h"
#include "slimtorch/cuda.h"

namespace slimtorch {

// Zeroes in place every element with |w[i]| <= threshold (a zeroed negative
// element becomes +0). Writes the number of elements kept to *kept.
Status threshold_inplace(void* w, DType dtype, int64_t n, float threshold, int n_threads,
                         int64_t* kept);

// keep[i] = |w[i]| > threshold, one byte (0/1) per element, as torch.bool.
// Writes the number of elements kept to *kept.
Status prune_mask(const void* w, DType dtype, int64_t n, float threshold, uint8_t* keep,
                  int n_threads, int64_t* kept);

// The bit pattern (sign cleared) of the largest value of `dtype` that is
// <= threshold, or -1 when no non-negative value is (threshold < 0).
// |w| <= threshold  <=>  (bits(w) & ~sign) <= result, for every non-NaN w,
// which lets kernels compare integers instead of converting to float.
int64_t magnitude_bits_at_most(DType dtype, float threshold);

namespace cuda {
// Device versions: w, keep and *kept are device pointers; *kept (int64) is
// overwritten with the count on `stream`.
Status threshold_inplace(void* w, DType dtype, int64_t n, float threshold, int64_t* kept,
                         Stream stream);
Status prune_mask(const void* w, DType dtype, int64_t n, float threshold, uint8_t* keep,
                  int64_t* kept, Stream stream);
}  // namespace cuda

}  // namespace slimtorch
