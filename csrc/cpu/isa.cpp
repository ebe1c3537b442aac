// Run-time choice of the CPU code path.
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "slimtorch/common.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#endif

namespace slimtorch {
namespace {

#if defined(__x86_64__) || defined(__i386__)
uint64_t read_xcr0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (uint64_t(edx) << 32) | eax;
}

// Why detection stopped short of kAmx (unused when it did not).
const char* amx_off_reason = "off: the CPU has no AVX-512";

#if defined(__x86_64__) && defined(__linux__) && defined(SLIMTORCH_HAVE_AMX)
// Linux keeps the 8 KB tile state out of a process until it asks for it;
// without the grant the first tile instruction raises SIGILL.
bool request_tile_permission() {
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0) return true;
  // ENOSPC: a thread's sigaltstack is too small for the larger signal frame.
  amx_off_reason = errno == ENOSPC ? "off: the kernel refused tile permission (a sigaltstack is too small)"
                                   : "off: the kernel refused tile permission (arch_prctl)";
  return false;
}
#endif

// Called once kAvx512 is established: CPU bits, OS-enabled tile state, the
// build, and the per-process permission, in that order.
bool amx_usable(uint64_t xcr0, unsigned edx7) {
  const bool amx_bf16 = edx7 & (1u << 22), amx_tile = edx7 & (1u << 24), amx_int8 = edx7 & (1u << 25);
  if (!(amx_tile && amx_int8 && amx_bf16)) {
    amx_off_reason = "off: the CPU has no AMX-TILE/INT8/BF16";
    return false;
  }
  if ((xcr0 & (3u << 17)) != (3u << 17)) {  // XTILECFG (17) and XTILEDATA (18)
    amx_off_reason = "off: the OS has not enabled the tile state (XCR0)";
    return false;
  }
#if !defined(SLIMTORCH_HAVE_AMX)
  amx_off_reason = "off: this build has no AMX kernels";
  return false;
#elif defined(__x86_64__) && defined(__linux__)
  return request_tile_permission();
#else
  amx_off_reason = "off: tile permission is only requested on Linux";
  return false;
#endif
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
    return amx_usable(xcr0, edx) ? Isa::kAmx : Isa::kAvx512;
  if (os_ymm && avx2 && fma && f16c) return Isa::kAvx2;
  return Isa::kScalar;
}
#else
const char* amx_off_reason = "off: not an x86-64 CPU";
Isa probe_isa() { return Isa::kScalar; }
#endif

Isa isa_from_environment(Isa detected) {
  const char* forced = std::getenv("SLIMTORCH_ISA");
  if (forced == nullptr || *forced == '\0') return detected;
  Isa wanted = detected;
  if (std::strcmp(forced, "scalar") == 0) wanted = Isa::kScalar;
  else if (std::strcmp(forced, "avx2") == 0) wanted = Isa::kAvx2;
  else if (std::strcmp(forced, "avx512") == 0) wanted = Isa::kAvx512;
  else if (std::strcmp(forced, "amx") == 0) wanted = Isa::kAmx;
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
    case Isa::kAmx: return "amx";
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

const char* amx_status() {
  if (detected_isa() < Isa::kAmx) return amx_off_reason;
  if (active_isa() < Isa::kAmx) return "off: lowered by SLIMTORCH_ISA or set_active_isa";
  return "on";
}

Isa active_isa() { return Isa(active_isa_slot().load(std::memory_order_relaxed)); }

bool set_active_isa(Isa isa) {
  if (isa > detected_isa() || isa < Isa::kScalar) return false;
  active_isa_slot().store(int(isa), std::memory_order_relaxed);
  return true;
}

}  // namespace slimtorch
