#include "slimtorch/spmm.h"

#include "../glue.h"
#include "families.h"

namespace slimtorch::bindings {

void bind_spmm_cuda(py::module_& m) {
  m.def("spmm_forward", [](int64_t rows, int64_t cols, uintptr_t row_ptr, uintptr_t col_idx,
                           bool wide_idx, uintptr_t values, int value_type, uintptr_t row_scales,
                           uintptr_t x, int64_t batch, int64_t ldx, uintptr_t bias, uintptr_t y,
                           uintptr_t stream) {
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
    check(cuda::spmm_forward(w, as_ptr<const float>(x), batch, ldx, as_ptr<const float>(bias),
                             as_ptr<float>(y), as_ptr<CUstream_st>(stream)),
          "sparse_linear");
  });
}

}  // namespace slimtorch::bindings
