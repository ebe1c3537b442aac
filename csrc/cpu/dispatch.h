// Helpers of the run-time dispatch between a family's paths.
//
// Which architecture this translation unit is compiled for: dispatch code
// names the per-ISA functions of its own architecture only; the others are
// not compiled (CMakeLists.txt picks source files by their ISA suffix).
#pragma once

#include <type_traits>

#include "slimtorch/common.h"

#if defined(__x86_64__) || defined(__i386__)
#define SLIMTORCH_X86 1
#else
#define SLIMTORCH_X86 0
#endif

#if defined(__aarch64__)
#define SLIMTORCH_ARM64 1
#else
#define SLIMTORCH_ARM64 0
#endif

namespace slimtorch {

// Calls fn(tag) with decltype(tag)::value == d: a kernel template
// instantiated for the element type d.
template <class Fn>
inline void with_dtype(DType d, Fn&& fn) {
  switch (d) {
    case DType::kFloat32: return fn(std::integral_constant<DType, DType::kFloat32>{});
    case DType::kFloat16: return fn(std::integral_constant<DType, DType::kFloat16>{});
    case DType::kBFloat16: return fn(std::integral_constant<DType, DType::kBFloat16>{});
  }
}

}  // namespace slimtorch
