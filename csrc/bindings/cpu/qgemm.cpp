#include "slimtorch/qgemm.h"

#include <optional>

#include "../glue.h"
#include "../families.h"

namespace slimtorch::bindings {

// The address of an optional tensor (bias) arrives as 0 for "none".
// Enough work that releasing and re-taking the GIL is a small part of the call.
constexpr int64_t kReleaseGilMacs = int64_t(1) << 22;

void bind_qgemm(py::module_& m) {
  m.attr("qgemm_max_k") = kQgemmMaxK;
  m.def("qgemm_packed_bytes", &qgemm_packed_bytes);
  m.def("weight_only_bf16_min_rows", &weight_only_bf16_min_rows);
  m.def("quantize_rows_u8", [](uintptr_t x, int64_t m, int64_t k, int64_t ldx, uintptr_t a,
                               int64_t lda, uintptr_t scale, uintptr_t zero_point, int n_threads) {
    Status status;
    {
      py::gil_scoped_release release;
      status = quantize_rows_u8(as_ptr<const float>(x), m, k, ldx, as_ptr<uint8_t>(a), lda,
                                as_ptr<float>(scale), as_ptr<int32_t>(zero_point), n_threads);
    }
    check(status, "quantize_rows_u8");
  });
  m.def("qgemm_u8s8s32", [](uintptr_t a, int64_t m, int64_t k, int64_t lda, uintptr_t packed,
                            int64_t n, uintptr_t c, int64_t ldc, int n_threads) {
    Status status;
    {
      py::gil_scoped_release release;
      status = qgemm_u8s8s32(as_ptr<const uint8_t>(a), m, k, lda, as_ptr<const int8_t>(packed), n,
                             as_ptr<int32_t>(c), ldc, n_threads);
    }
    check(status, "qgemm_u8s8s32");
  });
  // The linear entry points release the GIL only for large problems: at batch
  // 1 releasing and re-taking it costs a noticeable part of a small layer's GEMV.
  // x_dtype / y_dtype: DType codes (float32 0, float16 1, bfloat16 2).
  m.def("qlinear_u8s8", [](uintptr_t x, int64_t m, int64_t k, int64_t ldx, uintptr_t packed,
                           uintptr_t w_scale, uintptr_t colsum, uintptr_t bias, int64_t n,
                           uintptr_t y, int64_t ldy, bool is_static, float x_scale,
                           int32_t x_zero_point, int n_threads, int x_dtype, int y_dtype) {
    std::optional<py::gil_scoped_release> release;
    if (m * n * k >= kReleaseGilMacs) release.emplace();
    check(qlinear_u8s8(as_ptr<const void>(x), to_dtype(x_dtype), m, k, ldx, as_ptr<const int8_t>(packed),
                       as_ptr<const float>(w_scale), as_ptr<const int32_t>(colsum),
                       as_ptr<const float>(bias), n, as_ptr<void>(y), to_dtype(y_dtype), ldy,
                       is_static ? &x_scale : nullptr, x_zero_point, n_threads),
          "qlinear_u8s8");
  });
  m.def("qlinear_weight_only", [](uintptr_t x, int64_t m, int64_t k, int64_t ldx,
                                  uintptr_t packed, uintptr_t w_scale, uintptr_t bias, int64_t n,
                                  uintptr_t y, int64_t ldy, int n_threads, int x_dtype, int y_dtype) {
    std::optional<py::gil_scoped_release> release;
    if (m * n * k >= kReleaseGilMacs) release.emplace();
    check(qlinear_weight_only(as_ptr<const void>(x), to_dtype(x_dtype), m, k, ldx, as_ptr<const int8_t>(packed),
                              as_ptr<const float>(w_scale), as_ptr<const float>(bias), n,
                              as_ptr<void>(y), to_dtype(y_dtype), ldy, n_threads),
          "qlinear_weight_only");
  });
}

}  // namespace slimtorch::bindings
