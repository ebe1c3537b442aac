// Shared vocabulary of the kernel libraries: status codes, element types, the
// CPU instruction-set paths, and the thread pool. Kernels include this and
// nothing from torch or Python.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>

namespace slimtorch {

// Every kernel entry point returns a Status; the Python op layer validates
// input first, so anything but kOk from a CPU kernel means data the op layer
// cannot see cheaply (e.g. NaN found while scanning) or a CUDA launch error.
enum class Status : int {
  kOk = 0,
  kInvalidArgument = 1,
  kNonFinite = 2,
  kCudaError = 3,
};

// Floating element types a kernel accepts. Half types travel as uint16_t bit
// patterns so the kernel ABI needs no half type.
enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// CPU code paths. Within one architecture they are ordered: a higher path
// may use every lower one's instructions. x86 paths are below 11, ARM64 paths
// from 11 on; kScalar (portable C++) runs everywhere. A comparison such as
// `isa >= Isa::kAvx2` is only meaningful in x86 code, `isa >= Isa::kNeon`
// only in ARM64 code.
enum class Isa : int {
  kScalar = 0,
  kAvx2 = 1,     // x86-64: AVX2 + FMA + F16C
  kAvx512 = 2,   // x86-64: AVX-512 F/BW/DQ/VL
  kAmx = 3,      // x86-64: + Intel AMX tiles (int8, bf16), with the OS permission granted
  kNeon = 11,    // ARM64: Advanced SIMD (every ARM64 CPU)
  kDotprod = 12, // ARM64: + SDOT/UDOT (Armv8.2 dot product)
  kI8mm = 13,    // ARM64: + SMMLA/USMMLA (int8 matrix multiply)
};

// "scalar", "avx2", "avx512", "amx", "neon", "dotprod", "i8mm" (also the values of
// SLIMTORCH_ISA).
const char* isa_name(Isa isa);
// The best path this CPU and OS support (x86: CPUID + XGETBV; ARM64 Linux:
// getauxval(AT_HWCAP / AT_HWCAP2)).
Isa detected_isa();
// The path kernels use: detected_isa(), lowered by SLIMTORCH_ISA (one of the
// names above) at first use, or by set_active_isa(). Never higher than
// detected_isa(), never a path of another architecture.
Isa active_isa();
// Returns false (and changes nothing) if the CPU lacks `isa`.
bool set_active_isa(Isa isa);
// True when the CPU (and OS) also run AVX512_VNNI (vpdpbusd); only meaningful
// on the kAvx512 path.
bool cpu_has_avx512_vnni();
// True when the CPU (and OS) also run AVX512_BF16 (vdpbf16ps, vcvtneps2bf16);
// only meaningful on the kAvx512 path and above.
bool cpu_has_avx512_bf16();
// True when the CPU (and OS) also run AVX512_VBMI2 (vpexpandw) and the tests
// have not switched it off (allow_avx512_vbmi2); only meaningful on the
// kAvx512 path and above.
bool cpu_has_avx512_vbmi2();
void allow_avx512_vbmi2(bool allowed);
// "on" when the kernels use AMX tiles now, else why not (CPU, OS, build, or
// lowered by SLIMTORCH_ISA / set_active_isa). Test builds that emulate the
// tiles (SLIMTORCH_AMX_EMULATION) say "on (emulated ...)".
const char* amx_status();

// Runs fn(begin, end, chunk) over [0, n) split into at most n_threads
// contiguous chunks of at least `grain` items, numbered 0..chunks-1; each
// chunk runs exactly once, on one thread, so a kernel can keep partial
// results in an array indexed by `chunk` and combine them deterministically.
// The chunks run on torch's OpenMP team when torch's libgomp is loaded, else
// on a built-in pool (see parallel.cpp); a busy or nested call may run them
// one after another on the caller's thread. fn must not throw.
using RangeFn = std::function<void(int64_t begin, int64_t end, int chunk)>;
void parallel_for(int n_threads, int64_t n, int64_t grain, const RangeFn& fn);
// How many chunks parallel_for will use for these arguments (>= 1).
int plan_chunks(int n_threads, int64_t n, int64_t grain);
// "openmp" (torch's libgomp team) or "builtin": where parallel_for runs now.
const char* thread_pool_name();

// ---- half-precision bit conversions (scalar; exact, round-to-nearest-even) --

inline float bits_to_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline uint32_t float_to_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

inline float bf16_to_float(uint16_t h) { return bits_to_float(uint32_t(h) << 16); }

inline float fp16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exponent = (h >> 10) & 0x1f;
  uint32_t mantissa = h & 0x3ff;
  if (exponent == 0x1f) return bits_to_float(sign | 0x7f800000u | (mantissa << 13));
  if (exponent == 0) {
    if (mantissa == 0) return bits_to_float(sign);
    // Subnormal half: value = mantissa * 2^-24, exact in float.
    const float magnitude = float(mantissa) * (1.0f / 16777216.0f);
    return sign ? -magnitude : magnitude;
  }
  return bits_to_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

inline float half_to_float(uint16_t h, DType dtype) {
  return dtype == DType::kFloat16 ? fp16_to_float(h) : bf16_to_float(h);
}

// float -> bfloat16 bits, round to nearest even; NaN stays a (quiet) NaN.
inline uint16_t float_to_bf16(float f) {
  const uint32_t bits = float_to_bits(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x0040u);
  return uint16_t((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

// float -> IEEE half bits, round to nearest even (overflow -> Inf); NaN stays NaN.
inline uint16_t float_to_fp16(float f) {
  const uint32_t bits = float_to_bits(f);
  const uint16_t sign = uint16_t((bits >> 16) & 0x8000u);
  const uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return uint16_t(sign | 0x7e00u | ((magnitude >> 13) & 0x3ffu));
  if (magnitude >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // >= 65520 rounds to Inf
  if (magnitude < 0x38800000u) {
    // Below 2^-14: a subnormal half, in units of 2^-24. The scaling is exact;
    // rounding to an integer is the half's rounding (1024 = smallest normal).
    const float units = bits_to_float(magnitude) * 16777216.0f;
    uint32_t rounded = uint32_t(units);
    const float rest = units - float(rounded);
    if (rest > 0.5f || (rest == 0.5f && (rounded & 1u))) ++rounded;
    return uint16_t(sign | rounded);
  }
  // Normal: rebias the exponent (127 -> 15) and round 23 -> 10 mantissa bits;
  // a carry out of the mantissa correctly increments the exponent.
  return uint16_t(sign | ((magnitude - 0x38000000u + 0xfffu + ((magnitude >> 13) & 1u)) >> 13));
}

// Reads element i of a float buffer of the given dtype as float.
inline float load_as_float(const void* data, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::kFloat32: return static_cast<const float*>(data)[i];
    case DType::kFloat16: return fp16_to_float(static_cast<const uint16_t*>(data)[i]);
    case DType::kBFloat16: return bf16_to_float(static_cast<const uint16_t*>(data)[i]);
  }
  return 0.0f;
}

inline int64_t dtype_size(DType dtype) { return dtype == DType::kFloat32 ? 4 : 2; }

}  // namespace slimtorch
