// Threshold bodies for ARM64 Advanced SIMD: 16 elements per step (four
// vectors of 32-bit lanes or two of 16-bit lanes), compared as unsigned
// integers (sign-cleared bit patterns), masks narrowed to bytes. One loop
// serves both widths; the overloads below pick the instructions.
#include <arm_neon.h>

#include "threshold_paths.h"

namespace slimtorch::threshold_paths {
namespace {

// Kept counts gather in 16-bit lanes (at most 2 per lane and step); they are
// added up before they could overflow.
constexpr int64_t kStepsPerFlush = 16384;

struct KeptCounter {
  uint16x8_t lanes = vdupq_n_u16(0);
  int64_t total = 0, steps = 0;
  // keep8: 0xff for a kept element, 0 otherwise; returns keep8 & 1.
  uint8x16_t add(uint8x16_t keep8) {
    const uint8x16_t ones = vandq_u8(keep8, vdupq_n_u8(1));
    lanes = vpadalq_u8(lanes, ones);
    if (++steps == kStepsPerFlush) flush();
    return ones;
  }
  void flush() {
    total += vaddlvq_u16(lanes);
    lanes = vdupq_n_u16(0);
    steps = 0;
  }
};

inline uint32x4_t splat(uint32_t x) { return vdupq_n_u32(x); }
inline uint16x8_t splat(uint16_t x) { return vdupq_n_u16(x); }
inline uint32x4_t load(const uint32_t* p) { return vld1q_u32(p); }
inline uint16x8_t load(const uint16_t* p) { return vld1q_u16(p); }
inline void store(uint32_t* p, uint32x4_t v) { vst1q_u32(p, v); }
inline void store(uint16_t* p, uint16x8_t v) { vst1q_u16(p, v); }
inline uint32x4_t bit_and(uint32x4_t a, uint32x4_t b) { return vandq_u32(a, b); }
inline uint16x8_t bit_and(uint16x8_t a, uint16x8_t b) { return vandq_u16(a, b); }
inline uint32x4_t greater(uint32x4_t a, uint32x4_t b) { return vcgtq_u32(a, b); }
inline uint16x8_t greater(uint16x8_t a, uint16x8_t b) { return vcgtq_u16(a, b); }

// The lane masks of one step, one byte per element, in order.
inline uint8x16_t to_bytes(const uint32x4_t (&k)[4]) {
  const uint16x8_t k01 = vcombine_u16(vmovn_u32(k[0]), vmovn_u32(k[1]));
  const uint16x8_t k23 = vcombine_u16(vmovn_u32(k[2]), vmovn_u32(k[3]));
  return vcombine_u8(vmovn_u16(k01), vmovn_u16(k23));
}
inline uint8x16_t to_bytes(const uint16x8_t (&k)[2]) {
  return vcombine_u8(vmovn_u16(k[0]), vmovn_u16(k[1]));
}

template <class Bits>
int64_t threshold_loop(Bits* w, uint8_t* keep, int64_t n, Bits limit) {
  using Vec = decltype(splat(limit));
  constexpr int kLanes = int(sizeof(Vec) / sizeof(Bits));
  constexpr int kVecs = 16 / kLanes;  // vectors per step
  const bool write_mask = keep != nullptr;
  const Vec abs_mask = splat(kAbs<Bits>), lim = splat(limit);
  KeptCounter counter;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    Vec v[kVecs], k[kVecs];
    for (int u = 0; u < kVecs; ++u) {
      v[u] = load(w + i + kLanes * u);
      k[u] = greater(bit_and(v[u], abs_mask), lim);
    }
    const uint8x16_t keep8 = to_bytes(k);
    const uint8x16_t ones = counter.add(keep8);
    if (write_mask) {
      vst1q_u8(keep + i, ones);
    } else if (vminvq_u8(keep8) != 0xff) {  // store only blocks with something to zero
      for (int u = 0; u < kVecs; ++u) store(w + i + kLanes * u, bit_and(v[u], k[u]));
    }
  }
  counter.flush();
  return counter.total + threshold_tail(w, keep, i, n, limit);
}

}  // namespace

const Path kNeonPath = {threshold_loop<uint32_t>, threshold_loop<uint16_t>};

}  // namespace slimtorch::threshold_paths
