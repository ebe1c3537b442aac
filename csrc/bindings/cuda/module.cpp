// slimtorch._C_cuda: launchers of the CUDA kernels. Every function takes the
// address of torch's current stream and returns without synchronizing.
#include <pybind11/pybind11.h>

#include "../glue.h"
#include "../families.h"

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "slimtorch CUDA kernels (raw-pointer glue; use slimtorch.ops)";
  m.attr("architectures") = SLIMTORCH_CUDA_ARCHITECTURES;
  slimtorch::bindings::bind_threshold_cuda(m);
  slimtorch::bindings::bind_select_cuda(m);
  slimtorch::bindings::bind_quantize_cuda(m);
  slimtorch::bindings::bind_spmm_cuda(m);
  slimtorch::bindings::bind_qgemm_cuda(m);
}
