#include "slimtorch/threshold.h"

#include "../glue.h"
#include "../families.h"

namespace slimtorch::bindings {

void bind_threshold(py::module_& m) {
  m.def("threshold_", [](uintptr_t w, int dtype, int64_t n, float threshold, int n_threads) {
    const DType type = to_dtype(dtype);
    int64_t kept = 0;
    Status status;
    {
      py::gil_scoped_release release;
      status = threshold_inplace(as_ptr<void>(w), type, n, threshold, n_threads, &kept);
    }
    check(status, "threshold_");
    return kept;
  });
  m.def("prune_mask", [](uintptr_t w, int dtype, int64_t n, float threshold, uintptr_t keep,
                         int n_threads) {
    const DType type = to_dtype(dtype);
    int64_t kept = 0;
    Status status;
    {
      py::gil_scoped_release release;
      status = prune_mask(as_ptr<const void>(w), type, n, threshold,
                          as_ptr<uint8_t>(keep), n_threads, &kept);
    }
    check(status, "prune_mask");
    return kept;
  });
}

}  // namespace slimtorch::bindings
