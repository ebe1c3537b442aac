#include "slimtorch/spmm.h"

#include "../glue.h"
#include "../spmm_matrix.h"
#include "../families.h"

namespace slimtorch::bindings {

void bind_spmm_cuda(py::module_& m) {
  m.def("spmm_forward", [](int64_t rows, int64_t cols, uintptr_t row_ptr, uintptr_t col_idx,
                           bool wide_idx, uintptr_t values, int value_type, uintptr_t row_scales,
                           uintptr_t x, int64_t batch, int64_t ldx, uintptr_t bias, uintptr_t y,
                           uintptr_t stream) {
    const SparseMatrix w =
        make_matrix(rows, cols, row_ptr, col_idx, wide_idx, values, value_type, row_scales);
    check(cuda::spmm_forward(w, as_ptr<const float>(x), batch, ldx, as_ptr<const float>(bias),
                             as_ptr<float>(y), as_ptr<CUstream_st>(stream)),
          "sparse_linear");
  });
}

}  // namespace slimtorch::bindings
