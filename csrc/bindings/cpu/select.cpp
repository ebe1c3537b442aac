#include "slimtorch/select.h"

#include <pybind11/stl.h>

#include <tuple>
#include <vector>

#include "../glue.h"
#include "../families.h"

namespace slimtorch::bindings {
namespace {

// Tensors arrive as parallel lists of data addresses, dtype codes and sizes.
std::vector<Segment> to_segments(const std::vector<uintptr_t>& data, const std::vector<int>& dtypes,
                                 const std::vector<int64_t>& sizes) {
  if (data.size() != dtypes.size() || data.size() != sizes.size())
    throw py::value_error("tensors: data, dtype and size lists differ in length");
  std::vector<Segment> segments;
  segments.reserve(data.size());
  for (size_t i = 0; i < data.size(); ++i)
    segments.push_back({as_ptr<const void>(data[i]), to_dtype(dtypes[i]), sizes[i]});
  return segments;
}

}  // namespace

void bind_select(py::module_& m) {
  // Returns (threshold, count_less, ties_to_prune); threshold is NaN when a
  // tensor holds NaN, so the op can report it the same way on every device.
  m.def("magnitude_select", [](const std::vector<uintptr_t>& data, const std::vector<int>& dtypes,
                               const std::vector<int64_t>& sizes, int64_t k, int n_threads) {
    const std::vector<Segment> segments = to_segments(data, dtypes, sizes);
    MagnitudeSelection selection{};
    Status status;
    {
      py::gil_scoped_release release;
      status = magnitude_select(segments.data(), int(segments.size()), k, n_threads, &selection);
    }
    if (status == Status::kNonFinite)
      return std::make_tuple(std::numeric_limits<float>::quiet_NaN(), int64_t(0), int64_t(0));
    check(status, "magnitude_select");
    return std::make_tuple(selection.threshold, selection.count_less, selection.ties_to_prune);
  });
  m.def("magnitude_masks", [](const std::vector<uintptr_t>& data, const std::vector<int>& dtypes,
                              const std::vector<int64_t>& sizes, int64_t k,
                              const std::vector<uintptr_t>& keep, int n_threads) {
    const std::vector<Segment> segments = to_segments(data, dtypes, sizes);
    if (keep.size() != segments.size())
      throw py::value_error("keep: expected one mask per tensor");
    std::vector<uint8_t*> keep_ptrs;
    for (uintptr_t address : keep) keep_ptrs.push_back(as_ptr<uint8_t>(address));
    MagnitudeSelection selection{};
    Status status;
    {
      py::gil_scoped_release release;
      status = magnitude_masks(segments.data(), int(segments.size()), k, keep_ptrs.data(),
                               n_threads, &selection);
    }
    if (status == Status::kNonFinite)
      throw py::value_error("tensors: expected no NaN values (NaN has no magnitude to rank)");
    check(status, "magnitude_masks");
  });
}

}  // namespace slimtorch::bindings
