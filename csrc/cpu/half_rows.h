// float16 / bfloat16 rows <-> float32 on the active ISA path, for the kernels
// that read and write 16-bit activations in place (qgemm, spmm). Defined in
// qgemm.cpp, next to the per-ISA conversions it picks from.
#pragma once

#include <cstdint>

#include "slimtorch/common.h"

namespace slimtorch {

struct HalfConversions {
  void (*widen)(const uint16_t* in, int64_t n, float* out);  // exact
  void (*round)(const float* in, int64_t n, uint16_t* out);  // once, nearest even; NaN stays NaN
};

// The conversions of float16 or bfloat16 (`dtype`) on the active path; pick
// them once per call, outside the loops.
HalfConversions half_conversions(DType dtype);

}  // namespace slimtorch
