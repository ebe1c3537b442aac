// Shared by the CPU and CUDA spmm bindings.
#pragma once

#include <string>

#include "glue.h"
#include "slimtorch/spmm.h"

namespace slimtorch::bindings {

// The packed weight as it crosses the binding: addresses of the validated
// tensors plus the facts the op layer read from their dtypes.
inline SparseMatrix make_matrix(int64_t rows, int64_t cols, uintptr_t row_ptr, uintptr_t col_idx,
                                bool wide_idx, uintptr_t values, int value_type,
                                uintptr_t row_scales, uintptr_t bitmap = 0) {
  if (value_type < 0 || value_type > 3)
    throw py::value_error("values: unknown value type code " + std::to_string(value_type));
  SparseMatrix w;
  w.rows = rows;
  w.cols = cols;
  w.row_ptr = as_ptr<const int64_t>(row_ptr);
  w.col_idx = as_ptr<const void>(col_idx);
  w.wide_idx = wide_idx;
  w.values = as_ptr<const void>(values);
  w.value_type = SparseValues(value_type);
  w.row_scales = as_ptr<const float>(row_scales);
  w.bitmap = as_ptr<const uint16_t>(bitmap);
  return w;
}

}  // namespace slimtorch::bindings
