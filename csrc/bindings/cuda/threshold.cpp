#include "slimtorch/threshold.h"

#include "../glue.h"
#include "../families.h"

namespace slimtorch::bindings {

void bind_threshold_cuda(py::module_& m) {
  m.def("threshold_", [](uintptr_t w, int dtype, int64_t n, float threshold, uintptr_t kept,
                         uintptr_t stream) {
    check(cuda::threshold_inplace(as_ptr<void>(w), to_dtype(dtype), n, threshold,
                                  as_ptr<int64_t>(kept), as_ptr<CUstream_st>(stream)),
          "threshold_");
  });
  m.def("prune_mask", [](uintptr_t w, int dtype, int64_t n, float threshold, uintptr_t keep,
                         uintptr_t kept, uintptr_t stream) {
    check(cuda::prune_mask(as_ptr<const void>(w), to_dtype(dtype), n, threshold,
                           as_ptr<uint8_t>(keep), as_ptr<int64_t>(kept),
                           as_ptr<CUstream_st>(stream)),
          "prune_mask");
  });
}

}  // namespace slimtorch::bindings
