// slimtorch._C: the CPU kernels, plus build and ISA information.
#include <pybind11/pybind11.h>

#include "../glue.h"
#include "families.h"

namespace py = pybind11;
using namespace slimtorch;

PYBIND11_MODULE(_C, m) {
  m.doc() = "slimtorch CPU kernels (raw-pointer glue; use slimtorch.ops)";
  m.attr("__version__") = SLIMTORCH_VERSION;
  m.attr("build_type") = SLIMTORCH_BUILD_TYPE;
  m.attr("compiler") = SLIMTORCH_COMPILER;
  m.def("detected_isa", [] { return std::string(isa_name(detected_isa())); });
  m.def("active_isa", [] { return std::string(isa_name(active_isa())); });
  m.def("thread_pool", [] { return std::string(thread_pool_name()); });
  m.def("set_active_isa", [](const std::string& name) {
    for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAmx}) {
      if (name == isa_name(isa)) {
        if (!set_active_isa(isa))
          throw py::value_error("isa: this CPU does not support '" + name + "'");
        return;
      }
    }
    throw py::value_error("isa: expected 'scalar', 'avx2' or 'avx512' (or 'amx'), got '" + name + "'");
  });
  m.def("amx_status", [] { return std::string(amx_status()); });
  bindings::bind_threshold(m);
  bindings::bind_select(m);
  bindings::bind_quantize(m);
  bindings::bind_spmm(m);
  bindings::bind_qgemm(m);
}
