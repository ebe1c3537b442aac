// Run-time choice of the CPU code path.
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "slimtorch/common.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace slimtorch {
namespace {

#if defined(__x86_64__) || defined(__i386__)
uint64_t read_xcr0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (uint64_t(edx) << 32) | eax;
}

Isa probe_isa() {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return Isa::kScalar;
  const bool osxsave = ecx & (1u << 27), fma = ecx & (1u << 12), f16c = ecx & (1u << 29);
  if (!osxsave) return Isa::kScalar;
  const uint64_t xcr0 = read_xcr0();
  const bool os_ymm = (xcr0 & 0x6) == 0x6;     // SSE + AVX state saved
  const bool os_zmm = (xcr0 & 0xe6) == 0xe6;   // + opmask, ZMM_Hi256, Hi16_ZMM
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return Isa::kScalar;
  const bool avx2 = ebx & (1u << 5);
  const bool avx512f = ebx & (1u << 16), avx512dq = ebx & (1u << 17);
  const bool avx512bw = ebx & (1u << 30), avx512vl = ebx & (1u << 31);
  if (os_zmm && avx512f && avx512bw && avx512dq && avx512vl && avx2 && fma && f16c)
    return Isa::kAvx512;
  if (os_ymm && avx2 && fma && f16c) return Isa::kAvx2;
  return Isa::kScalar;
}
#else
Isa probe_isa() { return Isa::kScalar; }
#endif

Isa isa_from_environment(Isa detected) {
  const char* forced = std::getenv("SLIMTORCH_ISA");
  if (forced == nullptr || *forced == '\0') return detected;
  Isa wanted = detected;
  if (std::strcmp(forced, "scalar") == 0) wanted = Isa::kScalar;
  else if (std::strcmp(forced, "avx2") == 0) wanted = Isa::kAvx2;
  else if (std::strcmp(forced, "avx512") == 0) wanted = Isa::kAvx512;
  // The variable can only lower the path: forcing an instruction set the CPU
  // lacks would crash with SIGILL.
  return wanted < detected ? wanted : detected;
}

std::atomic<int>& active_isa_slot() {
  static std::atomic<int> slot{int(isa_from_environment(detected_isa()))};
  return slot;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
  }
  return "unknown";
}

Isa detected_isa() {
  static const Isa detected = probe_isa();
  return detected;
}

bool cpu_has_avx512_vnni() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool vnni = [] {
    unsigned eax, ebx, ecx, edx;
    if (detected_isa() < Isa::kAvx512 || !__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
    return (ecx & (1u << 11)) != 0;  // CPUID.(7,0):ECX[11] = AVX512_VNNI
  }();
  return vnni;
#else
  return false;
#endif
}

Isa active_isa() { return Isa(active_isa_slot().load(std::memory_order_relaxed)); }

bool set_active_isa(Isa isa) {
  if (isa > detected_isa() || isa < Isa::kScalar) return false;
  active_isa_slot().store(int(isa), std::memory_order_relaxed);
  return true;
}

}  // namespace slimtorch
