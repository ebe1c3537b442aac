#include "slimtorch/qgemm.h"

#include "../glue.h"
#include "../families.h"

namespace slimtorch::bindings {

// Optional pointers (bias, c or the epilogue inputs) arrive as 0 for "none".
void bind_qgemm_cuda(py::module_& m) {
  m.def("quantize_rows_u8", [](uintptr_t x, int64_t rows, int64_t k, int64_t ldx, uintptr_t a,
                               int64_t lda, uintptr_t scale, uintptr_t zero_point, bool is_static,
                               float x_scale, int32_t x_zero_point, uintptr_t stream) {
    check(cuda::quantize_rows_u8(as_ptr<const float>(x), rows, k, ldx, as_ptr<uint8_t>(a), lda,
                                 as_ptr<float>(scale), as_ptr<int32_t>(zero_point),
                                 is_static ? &x_scale : nullptr, x_zero_point,
                                 as_ptr<CUstream_st>(stream)),
          "quantize_rows_u8");
  });
  m.def("qgemm_u8s8", [](uintptr_t a, int64_t rows, int64_t k_pad, int64_t lda, uintptr_t packed,
                         int64_t n, uintptr_t c, int64_t ldc, uintptr_t zero_point,
                         uintptr_t row_scale, uintptr_t w_scale, uintptr_t colsum, uintptr_t bias,
                         uintptr_t y, int64_t ldy, uintptr_t stream) {
    check(cuda::qgemm_u8s8(as_ptr<const uint8_t>(a), rows, k_pad, lda, as_ptr<const int8_t>(packed),
                           n, as_ptr<int32_t>(c), ldc, as_ptr<const int32_t>(zero_point),
                           as_ptr<const float>(row_scale), as_ptr<const float>(w_scale),
                           as_ptr<const int32_t>(colsum), as_ptr<const float>(bias),
                           as_ptr<float>(y), ldy, as_ptr<CUstream_st>(stream)),
          "qgemm_u8s8");
  });
  m.def("qlinear_weight_only", [](uintptr_t x, int64_t rows, int64_t k, int64_t ldx,
                                  uintptr_t packed, uintptr_t w_scale, uintptr_t bias, int64_t n,
                                  uintptr_t y, int64_t ldy, uintptr_t stream) {
    check(cuda::qlinear_weight_only(as_ptr<const float>(x), rows, k, ldx,
                                    as_ptr<const int8_t>(packed), as_ptr<const float>(w_scale),
                                    as_ptr<const float>(bias), n, as_ptr<float>(y), ldy,
                                    as_ptr<CUstream_st>(stream)),
          "qlinear_weight_only");
  });
}

}  // namespace slimtorch::bindings
