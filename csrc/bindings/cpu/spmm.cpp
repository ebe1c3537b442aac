#include "slimtorch/spmm.h"

#include <optional>

#include "../glue.h"
#include "../spmm_matrix.h"
#include "../families.h"

namespace slimtorch::bindings {

namespace {

// Index of the first offset that breaks "row_ptr[0] = 0, non-decreasing,
// row_ptr[rows] = nnz", or -1. Neighbours are compared, never subtracted:
// a difference of two int64 offsets can overflow.
int64_t first_bad_offset(const int64_t* row_ptr, int64_t rows, int64_t nnz) {
  if (row_ptr[0] != 0) return 0;
  for (int64_t r = 0; r < rows; ++r)
    if (row_ptr[r + 1] < row_ptr[r]) return r + 1;
  return row_ptr[rows] == nnz ? -1 : rows;
}

// The ends of the offsets, O(1) per call: with the full check done when the
// weight was built, this keeps a forward from reading past values/col_idx
// even if it is handed offsets that disagree with nnz.
void check_offset_ends(uintptr_t row_ptr, int64_t rows, int64_t nnz) {
  if (rows < 0 || nnz < 0) throw py::value_error("sparse_linear: negative size");
  const int64_t* offsets = as_ptr<const int64_t>(row_ptr);
  if (rows > 0 && (offsets == nullptr || offsets[0] != 0 || offsets[rows] != nnz))
    throw py::value_error("row_ptr: expected offsets from 0 to nnz");
}

using ForwardKernel = Status (*)(const SparseMatrix&, const void*, DType, int64_t, int64_t, const float*, void*,
                                 DType, int);

// The binding of a forward kernel: the packed weight's addresses and sizes
// in, its offsets' ends checked, then the kernel, without the GIL once the
// work (nnz x batch) reaches release_from. x_dtype / y_dtype: DType codes.
auto forward_binding(ForwardKernel kernel, int64_t release_from, const char* what) {
  return [=](int64_t rows, int64_t cols, uintptr_t row_ptr, uintptr_t col_idx, bool wide_idx, uintptr_t values,
             int value_type, uintptr_t row_scales, int64_t nnz, uintptr_t bitmap, uintptr_t x, int x_dtype,
             int64_t batch, int64_t ldx, uintptr_t bias, uintptr_t y, int y_dtype, int n_threads) {
    check_offset_ends(row_ptr, rows, nnz);
    const SparseMatrix w = make_matrix(rows, cols, row_ptr, col_idx, wide_idx, values, value_type,
                                       row_scales, bitmap);
    const DType x_type = to_dtype(x_dtype), y_type = to_dtype(y_dtype);
    int64_t work = 0;
    const bool work_overflows = __builtin_mul_overflow(nnz, batch, &work);
    std::optional<py::gil_scoped_release> release;
    if (work_overflows || work >= release_from) release.emplace();
    const Status status = kernel(w, as_ptr<const void>(x), x_type, batch, ldx, as_ptr<const float>(bias),
                                 as_ptr<void>(y), y_type, n_threads);
    release.reset();  // check raises a Python exception: it needs the GIL
    check(status, what);
  };
}

}  // namespace

void bind_spmm(py::module_& m) {
  m.def("spmm_check_offsets", [](uintptr_t row_ptr, int64_t rows, int64_t nnz) {
    if (rows < 0 || nnz < 0 || row_ptr == 0) throw py::value_error("row_ptr: negative size or null pointer");
    return first_bad_offset(as_ptr<const int64_t>(row_ptr), rows, nnz);
  });
  // Called directly (no torch.library) by SparseLinear's eager inference
  // path, so it must stay cheap: raw integers in, nothing allocated. The GIL
  // is released only when the work is large enough for that to matter.
  const ForwardKernel forward = spmm_forward;  // the overload with dtypes
  m.def("spmm_forward", forward_binding(forward, int64_t(1) << 16, "sparse_linear"));
  m.def("spmm_dynamic_supported", [](int64_t rows, int64_t cols, bool wide_idx, int value_type) {
    SparseMatrix w;
    w.rows = rows;
    w.cols = cols;
    w.wide_idx = wide_idx;
    w.value_type = SparseValues(value_type);
    static const float one = 1.0f;
    w.row_scales = &one;
    return spmm_dynamic_supported(w);
  });
  // As spmm_forward, with activations quantized per row (int8 values only);
  // the quantization makes every call worth releasing the GIL.
  const ForwardKernel forward_dynamic = spmm_forward_dynamic;  // the overload with dtypes
  m.def("spmm_forward_dynamic", forward_binding(forward_dynamic, 0, "sparse_linear (int8_dynamic)"));
  m.def("spmm_backward_input", [](int64_t rows, int64_t cols, uintptr_t row_ptr, uintptr_t col_idx,
                                  bool wide_idx, uintptr_t values, int value_type,
                                  uintptr_t row_scales, uintptr_t grad_y, int64_t batch,
                                  uintptr_t grad_x, int n_threads) {
    const SparseMatrix w =
        make_matrix(rows, cols, row_ptr, col_idx, wide_idx, values, value_type, row_scales);
    Status status;
    {
      py::gil_scoped_release release;
      status = spmm_backward_input(w, as_ptr<const float>(grad_y), batch, as_ptr<float>(grad_x),
                                   n_threads);
    }
    check(status, "sparse_linear backward");
  });
}

}  // namespace slimtorch::bindings
