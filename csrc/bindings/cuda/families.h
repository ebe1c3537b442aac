// One bind_<family> per op family of the CUDA module; module.cpp calls them all.
#pragma once

#include <pybind11/pybind11.h>

namespace slimtorch::bindings {
void bind_threshold_cuda(pybind11::module_& m);
void bind_select_cuda(pybind11::module_& m);
void bind_quantize_cuda(pybind11::module_& m);
void bind_spmm_cuda(pybind11::module_& m);
}  // namespace slimtorch::bindings
