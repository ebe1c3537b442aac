#include "slimtorch/select.h"

#include <pybind11/stl.h>

#include <vector>

#include "../glue.h"
#include "../families.h"

namespace slimtorch::bindings {

void bind_select_cuda(py::module_& m) {
  m.def("select_workspace_size", [] { return cuda::select_workspace_bytes(); });
  m.def("mask_tile_elements", [] { return cuda::mask_tile_elements(); });
  // result: device int64[4], see select.h.
  m.def("magnitude_select", [](const std::vector<uintptr_t>& data, const std::vector<int>& dtypes,
                               const std::vector<int64_t>& sizes, int64_t k, uintptr_t workspace,
                               uintptr_t result, uintptr_t stream) {
    if (data.size() != dtypes.size() || data.size() != sizes.size())
      throw py::value_error("tensors: data, dtype and size lists differ in length");
    std::vector<Segment> segments;
    for (size_t i = 0; i < data.size(); ++i)
      segments.push_back({as_ptr<const void>(data[i]), to_dtype(dtypes[i]), sizes[i]});
    check(cuda::magnitude_select(segments.data(), int(segments.size()), k, as_ptr<void>(workspace),
                                 as_ptr<int64_t>(result), as_ptr<CUstream_st>(stream)),
          "magnitude_select");
  });
  m.def("magnitude_mask", [](uintptr_t data, int dtype, int64_t n, uintptr_t result,
                             uintptr_t ties_seen, uintptr_t tiles, uintptr_t keep, uintptr_t stream) {
    const Segment segment{as_ptr<const void>(data), to_dtype(dtype), n};
    check(cuda::magnitude_mask(segment, as_ptr<const int64_t>(result), as_ptr<int64_t>(ties_seen),
                               as_ptr<int64_t>(tiles), as_ptr<uint8_t>(keep),
                               as_ptr<CUstream_st>(stream)),
          "magnitude_masks");
  });
}

}  // namespace slimtorch::bindings
