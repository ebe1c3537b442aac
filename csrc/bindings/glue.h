// Helpers shared by the pybind11 modules. Bindings are glue only: tensors
// arrive as raw addresses (torch's data_ptr()) already validated by the
// Python op layer, and Status codes become Python exceptions.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "slimtorch/common.h"

namespace slimtorch::bindings {

namespace py = pybind11;

template <typename T>
inline T* as_ptr(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

inline DType to_dtype(int code) {
  if (code < 0 || code > 2) throw py::value_error("unknown dtype code " + std::to_string(code));
  return DType(code);
}

inline void check(Status status, const char* what) {
  switch (status) {
    case Status::kOk: return;
    case Status::kInvalidArgument:
      throw py::value_error(std::string(what) + ": invalid argument reached the kernel");
    case Status::kNonFinite:
      throw py::value_error(std::string(what) + ": input contains NaN or Inf");
    case Status::kCudaError:
      throw std::runtime_error(std::string(what) + ": CUDA kernel launch failed");
  }
  throw std::runtime_error(std::string(what) + ": unknown status");
}

}  // namespace slimtorch::bindings
