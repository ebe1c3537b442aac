// One bind_<family> per op family of the CPU module; module.cpp calls them all.
#pragma once

#include <pybind11/pybind11.h>

namespace slimtorch::bindings {
void bind_threshold(pybind11::module_& m);
void bind_select(pybind11::module_& m);
void bind_quantize(pybind11::module_& m);
void bind_spmm(pybind11::module_& m);
}  // namespace slimtorch::bindings
