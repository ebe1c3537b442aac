#include "slimtorch/quantize.h"

#include <string>

#include "../glue.h"
#include "../families.h"

namespace slimtorch::bindings {
namespace {

QType to_qtype(int code) {
  if (code != 0 && code != 1) throw py::value_error("unknown qtype code " + std::to_string(code));
  return QType(code);
}

std::string format_float(float value) {
  return py::str(py::float_(value)).cast<std::string>();
}

// Raises ValueError naming `scale` or `zero_point` for the first invalid channel.
void check_qparams(const float* scale, const int32_t* zero_point, int64_t channels, QType qtype) {
  bool bad_scale = false;
  const int64_t c = find_invalid_qparams(scale, zero_point, channels, qtype, &bad_scale);
  if (c < 0) return;
  const std::string where = channels > 1 ? " at index " + std::to_string(c) : "";
  if (bad_scale)
    throw py::value_error("scale: expected finite values > 0 with a finite float32 reciprocal "
                          "(>= 2.9389e-39), got " + format_float(scale[c]) + where);
  throw py::value_error("zero_point: expected values in [" + std::to_string(qtype_min(qtype)) + ", " +
                        std::to_string(qtype_max(qtype)) + "] for " +
                        (qtype == QType::kInt8 ? "int8" : "uint8") + ", got " +
                        std::to_string(zero_point[c]) + where);
}

}  // namespace

void bind_quantize(py::module_& m) {
  // Views are passed as (outer, channels, inner); scale/zero_point are host
  // float32 / int32 arrays of `channels` entries.
  m.def("check_qparams", [](uintptr_t scale, uintptr_t zero_point, int64_t channels, int qtype) {
    check_qparams(as_ptr<const float>(scale), as_ptr<const int32_t>(zero_point), channels,
                  to_qtype(qtype));
  });
  m.def("choose_qparams", [](uintptr_t x, int dtype, int64_t outer, int64_t channels,
                             int64_t inner, bool symmetric, int qtype, uintptr_t scale,
                             uintptr_t zero_point, int n_threads) {
    const DType type = to_dtype(dtype);
    const QType qt = to_qtype(qtype);
    Status status;
    {
      py::gil_scoped_release release;
      status = choose_qparams(as_ptr<const void>(x), type, {outer, channels, inner}, symmetric, qt,
                              as_ptr<float>(scale), as_ptr<int32_t>(zero_point), n_threads);
    }
    if (status == Status::kNonFinite)
      throw py::value_error("x: expected finite values, found NaN or Inf (choose_qparams needs a finite range)");
    check(status, "choose_qparams");
  });
  m.def("quantize", [](uintptr_t x, int dtype, int64_t outer, int64_t channels, int64_t inner,
                       bool per_channel, uintptr_t scale, uintptr_t zero_point, int qtype,
                       uintptr_t q, int n_threads) {
    const DType type = to_dtype(dtype);
    const QType qt = to_qtype(qtype);
    check_qparams(as_ptr<const float>(scale), as_ptr<const int32_t>(zero_point), channels, qt);
    Status status;
    {
      py::gil_scoped_release release;
      status = quantize(as_ptr<const void>(x), type, {outer, channels, inner}, per_channel,
                        as_ptr<const float>(scale), as_ptr<const int32_t>(zero_point), qt,
                        as_ptr<void>(q), n_threads);
    }
    check(status, "quantize");
  });
  m.def("dequantize", [](uintptr_t q, int qtype, int64_t outer, int64_t channels, int64_t inner,
                         uintptr_t scale, uintptr_t zero_point, uintptr_t out, int out_dtype,
                         int n_threads) {
    const DType type = to_dtype(out_dtype);
    const QType qt = to_qtype(qtype);
    check_qparams(as_ptr<const float>(scale), as_ptr<const int32_t>(zero_point), channels, qt);
    Status status;
    {
      py::gil_scoped_release release;
      status = dequantize(as_ptr<const void>(q), qt, {outer, channels, inner},
                          as_ptr<const float>(scale), as_ptr<const int32_t>(zero_point),
                          as_ptr<void>(out), type, n_threads);
    }
    check(status, "dequantize");
  });
}

}  // namespace slimtorch::bindings
