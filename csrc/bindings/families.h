// One bind function per op family and native module: bind_<family> for the
// CPU module (_C), bind_<family>_cuda for the CUDA module (_C_cuda). Each
// module's module.cpp calls all of its own.
#pragma once

#include <pybind11/pybind11.h>

namespace slimtorch::bindings {
void bind_threshold(pybind11::module_& m);
void bind_threshold_cuda(pybind11::module_& m);
void bind_select(pybind11::module_& m);
void bind_select_cuda(pybind11::module_& m);
void bind_quantize(pybind11::module_& m);
void bind_quantize_cuda(pybind11::module_& m);
void bind_spmm(pybind11::module_& m);
void bind_spmm_cuda(pybind11::module_& m);
void bind_qgemm(pybind11::module_& m);
void bind_qgemm_cuda(pybind11::module_& m);
}  // namespace slimtorch::bindings
