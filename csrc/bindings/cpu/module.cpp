// slimtorch._C: the CPU kernels, plus build and ISA information.
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "../glue.h"
#include "../families.h"

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
  // The paths of the architecture this module was built for, lowest first.
#if defined(__aarch64__)
  static const std::vector<Isa> kPaths = {Isa::kScalar, Isa::kNeon, Isa::kDotprod, Isa::kI8mm};
#elif defined(__x86_64__) || defined(__i386__)
  static const std::vector<Isa> kPaths = {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAmx};
#else
  static const std::vector<Isa> kPaths = {Isa::kScalar};
#endif
  m.def("supported_isas", [] {
    // The paths this CPU runs (set_active_isa accepts exactly these), lowest first.
    py::list names;
    const Isa active = active_isa();
    for (Isa isa : kPaths)
      if (set_active_isa(isa)) names.append(isa_name(isa));
    set_active_isa(active);
    return names;
  });
  m.def("set_active_isa", [](const std::string& name) {
    std::string expected;
    for (size_t i = 0; i < kPaths.size(); ++i) {
      const Isa isa = kPaths[i];
      if (name == isa_name(isa)) {
        if (!set_active_isa(isa))
          throw py::value_error("isa: this CPU does not support '" + name + "'");
        return;
      }
      expected += (i == 0 ? "'" : i + 1 == kPaths.size() ? " or '" : ", '") + std::string(isa_name(isa)) + "'";
    }
    throw py::value_error("isa: expected " + expected + ", got '" + name + "'");
  });
  m.def("amx_status", [] { return std::string(amx_status()); });
  // AVX512_VBMI2 kernels (batch-1 bitmap GEMV with bf16 values): whether they
  // run, and a switch for tests and A/B timings.
  m.def("has_avx512_vbmi2", [] { return cpu_has_avx512_vbmi2(); });
  m.def("allow_avx512_vbmi2", [](bool allowed) { allow_avx512_vbmi2(allowed); });
  bindings::bind_threshold(m);
  bindings::bind_select(m);
  bindings::bind_quantize(m);
  bindings::bind_spmm(m);
  bindings::bind_qgemm(m);
}
