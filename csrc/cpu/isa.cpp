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
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
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

// CPUID.(7,1):EAX[5] = AVX512_BF16 (vdpbf16ps, vcvtneps2bf16).
bool cpuid_avx512_bf16() {
  unsigned eax, ebx, ecx, edx;
  return __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && (eax & (1u << 5));
}

// Called once kAvx512 is established: CPU bits, OS-enabled tile state, the
// build, and the per-process permission, in that order.
bool amx_usable(uint64_t xcr0, unsigned edx7) {
#if defined(SLIMTORCH_AMX_EMULATION)
  // A test build: the tile instructions run in software (amx_emulation.h),
  // the rest of the AMX path natively, which needs AVX512_BF16 as below.
  (void)xcr0, (void)edx7;
  amx_off_reason = "off: emulated AMX needs a CPU with AVX512_BF16";
  return cpuid_avx512_bf16();
#endif
  const bool amx_bf16 = edx7 & (1u << 22), amx_tile = edx7 & (1u << 24), amx_int8 = edx7 & (1u << 25);
  if (!(amx_tile && amx_int8 && amx_bf16)) {
    amx_off_reason = "off: the CPU has no AMX-TILE/INT8/BF16";
    return false;
  }
  // The AMX path also converts float32 to bf16 with VCVTNEPS2BF16 (every
  // CPU with AMX so far has AVX512_BF16; this keeps a future one safe).
  if (!cpuid_avx512_bf16()) {
    amx_off_reason = "off: the CPU has no AVX512_BF16";
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
#elif defined(__aarch64__) && defined(__linux__)
// The kernel reports CPU features in the auxiliary vector; the bits are
// fixed by the arm64 ABI (older headers may lack the names). Half-precision
// arithmetic (HWCAP_FPHP / ASIMDHP) is not a path: half data is converted
// exactly (FCVTL) and summed in float32, which every ARM64 CPU does.
constexpr unsigned long kHwcapAsimddp = 1ul << 20;
constexpr unsigned long kHwcap2I8mm = 1ul << 13;

Isa probe_isa() {
  const unsigned long hwcap = getauxval(AT_HWCAP), hwcap2 = getauxval(AT_HWCAP2);
  const bool dotprod = hwcap & kHwcapAsimddp;
  // Paths form a chain (a higher one may use the lower ones' instructions):
  // i8mm counts only with the dot product, as on every CPU that has it.
  if (dotprod && (hwcap2 & kHwcap2I8mm)) return Isa::kI8mm;
  if (dotprod) return Isa::kDotprod;
  return Isa::kNeon;  // Advanced SIMD is mandatory on ARM64 Linux
}
#elif defined(__aarch64__)
Isa probe_isa() { return Isa::kNeon; }
#else
Isa probe_isa() { return Isa::kScalar; }
#endif
#if !(defined(__x86_64__) || defined(__i386__))
const char* amx_off_reason = "off: not an x86-64 CPU";
#endif

// Paths of one architecture form a chain above kScalar.
bool is_arm64_path(Isa isa) { return int(isa) >= int(Isa::kNeon); }

// True when `wanted` runs on a CPU whose best path is `detected`: scalar,
// or a path of the same architecture that is not higher. Forcing an
// instruction set the CPU lacks would crash with SIGILL.
bool runs_on(Isa wanted, Isa detected) {
  if (wanted == Isa::kScalar) return true;
  if (int(wanted) < 0 || detected == Isa::kScalar || is_arm64_path(wanted) != is_arm64_path(detected)) return false;
  return int(wanted) <= int(detected);
}

Isa isa_from_environment(Isa detected) {
  const char* forced = std::getenv("SLIMTORCH_ISA");
  if (forced == nullptr || *forced == '\0') return detected;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAmx, Isa::kNeon, Isa::kDotprod, Isa::kI8mm})
    // The variable can only lower the path; an unknown or unavailable name keeps it.
    if (std::strcmp(forced, isa_name(isa)) == 0) return runs_on(isa, detected) ? isa : detected;
  return detected;
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
    case Isa::kNeon: return "neon";
    case Isa::kDotprod: return "dotprod";
    case Isa::kI8mm: return "i8mm";
  }
  return "unknown";
}

Isa detected_isa() {
  static const Isa detected = probe_isa();
  return detected;
}

namespace {
// CPUID.(7,0):ECX bit `bit`, on a CPU that runs the AVX-512 path.
bool avx512_leaf7_ecx(unsigned bit) {
#if defined(__x86_64__) || defined(__i386__)
  unsigned eax, ebx, ecx, edx;
  return detected_isa() >= Isa::kAvx512 && __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) &&
         (ecx & (1u << bit)) != 0;
#else
  (void)bit;
  return false;
#endif
}

// Tests switch the VBMI2 kernels off to check the paths without them.
std::atomic<bool> vbmi2_allowed{true};
}  // namespace

bool cpu_has_avx512_vnni() {
  static const bool vnni = avx512_leaf7_ecx(11);  // AVX512_VNNI
  return vnni;
}

bool cpu_has_avx512_vbmi2() {
  static const bool vbmi2 = avx512_leaf7_ecx(6);  // AVX512_VBMI2
  return vbmi2 && vbmi2_allowed.load(std::memory_order_relaxed);
}

void allow_avx512_vbmi2(bool allowed) { vbmi2_allowed.store(allowed, std::memory_order_relaxed); }

bool cpu_has_avx512_bf16() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool bf16 = detected_isa() >= Isa::kAvx512 && cpuid_avx512_bf16();
  return bf16;
#else
  return false;
#endif
}

const char* amx_status() {
  // kAmx is the top x86 path; ARM64 paths have larger values but no AMX.
  if (detected_isa() != Isa::kAmx) return amx_off_reason;
  if (active_isa() != Isa::kAmx) return "off: lowered by SLIMTORCH_ISA or set_active_isa";
#if defined(SLIMTORCH_AMX_EMULATION)
  return "on (emulated in software: a test build, not for speed)";
#else
  return "on";
#endif
}

Isa active_isa() { return Isa(active_isa_slot().load(std::memory_order_relaxed)); }

bool set_active_isa(Isa isa) {
  if (!runs_on(isa, detected_isa())) return false;
  active_isa_slot().store(int(isa), std::memory_order_relaxed);
  return true;
}

}  // namespace slimtorch
