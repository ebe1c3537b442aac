#include "slimtorch/quantize.h"

#include "../glue.h"
#include "../families.h"

namespace slimtorch::bindings {

// Tensors arrive as device addresses; scale / zero_point values were
// checked on the host by the op layer. Views are (outer, channels, inner).
void bind_quantize_cuda(py::module_& m) {
  m.def("choose_qparams", [](uintptr_t x, int dtype, int64_t outer, int64_t channels, int64_t inner,
                             bool symmetric, int qtype, uintptr_t scale, uintptr_t zero_point,
                             uintptr_t workspace, uintptr_t stream) {
    check(cuda::choose_qparams(as_ptr<const void>(x), to_dtype(dtype), {outer, channels, inner},
                               symmetric, QType(qtype), as_ptr<float>(scale),
                               as_ptr<int32_t>(zero_point), as_ptr<int32_t>(workspace),
                               as_ptr<CUstream_st>(stream)),
          "choose_qparams");
  });
  m.def("quantize", [](uintptr_t x, int dtype, int64_t outer, int64_t channels, int64_t inner,
                       bool per_channel, uintptr_t scale, uintptr_t zero_point, int qtype,
                       uintptr_t q, uintptr_t stream) {
    check(cuda::quantize(as_ptr<const void>(x), to_dtype(dtype), {outer, channels, inner},
                         per_channel, as_ptr<const float>(scale), as_ptr<const int32_t>(zero_point),
                         QType(qtype), as_ptr<void>(q), as_ptr<CUstream_st>(stream)),
          "quantize");
  });
  m.def("dequantize", [](uintptr_t q, int qtype, int64_t outer, int64_t channels, int64_t inner,
                         uintptr_t scale, uintptr_t zero_point, uintptr_t out, int out_dtype,
                         uintptr_t stream) {
    check(cuda::dequantize(as_ptr<const void>(q), QType(qtype), {outer, channels, inner},
                           as_ptr<const float>(scale), as_ptr<const int32_t>(zero_point),
                           as_ptr<void>(out), to_dtype(out_dtype), as_ptr<CUstream_st>(stream)),
          "dequantize");
  });
}

}  // namespace slimtorch::bindings
