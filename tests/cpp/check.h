// A minimal test harness for the kernel library's C++ tests (no dependencies,
// so the edge build tests itself anywhere). Each test file defines TESTs and
// ends with SLIMTORCH_TEST_MAIN(); ctest runs every file as one executable.
#pragma once

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "slimtorch/common.h"

namespace slimtorch::testing {

struct Registry {
  std::vector<std::pair<std::string, std::function<void()>>> tests;
  int failures = 0;
  static Registry& get() {
    static Registry registry;
    return registry;
  }
};

struct Register {
  Register(const char* name, std::function<void()> fn) {
    Registry::get().tests.emplace_back(name, std::move(fn));
  }
};

// The ISA paths this CPU runs, lowest first (set_active_isa accepts exactly
// these: scalar and the paths of this architecture up to the detected one).
inline std::vector<Isa> supported_isas() {
  std::vector<Isa> result;
  const Isa active = active_isa();
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAmx, Isa::kNeon, Isa::kDotprod, Isa::kI8mm})
    if (set_active_isa(isa)) result.push_back(isa);
  set_active_isa(active);
  return result;
}

// The (x, y) dtype pairs of the half-precision I/O tests: both 16-bit, and
// one side 16-bit with the other float32.
constexpr DType kHalfIoPairs[][2] = {{DType::kBFloat16, DType::kBFloat16},
                                     {DType::kFloat16, DType::kFloat16},
                                     {DType::kBFloat16, DType::kFloat32},
                                     {DType::kFloat32, DType::kBFloat16}};

// v rounded once to `type` (bfloat16 or float16) bits.
inline uint16_t to_half(float v, DType type) {
  return type == DType::kBFloat16 ? float_to_bf16(v) : float_to_fp16(v);
}

inline int run_all() {
  auto& registry = Registry::get();
  // The log names every path the tests run, so a CI log shows which kernels
  // were checked against the scalar oracle on this CPU.
  std::printf("detected path: %s; active (SLIMTORCH_ISA): %s; paths tested:", isa_name(detected_isa()),
              isa_name(active_isa()));
  for (Isa isa : supported_isas()) std::printf(" %s", isa_name(isa));
  std::printf("\n");
  for (auto& [name, fn] : registry.tests) {
    const int before = registry.failures;
    fn();
    std::printf("%s %s\n", registry.failures == before ? "PASS" : "FAIL", name.c_str());
  }
  std::printf("%d failure(s)\n", registry.failures);
  return registry.failures == 0 ? 0 : 1;
}

}  // namespace slimtorch::testing

#define TEST(name)                                                              \
  static void name();                                                           \
  static ::slimtorch::testing::Register register_##name(#name, name);           \
  static void name()

#define CHECK(cond)                                                             \
  do {                                                                          \
    if (!(cond)) {                                                              \
      std::printf("  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);    \
      ++::slimtorch::testing::Registry::get().failures;                         \
    }                                                                           \
  } while (0)

#define SLIMTORCH_TEST_MAIN() \
  int main() { return ::slimtorch::testing::run_all(); }
