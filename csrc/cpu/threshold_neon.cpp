// Threshold bodies for ARM64 Advanced SIMD: 16 elements per step, compared
// as unsigned integers (sign-cleared bit patterns), masks narrowed to bytes.
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

}  // namespace

int64_t threshold32_neon(uint32_t* w, uint8_t* keep, int64_t n, uint32_t limit, bool write_mask) {
  const uint32x4_t abs_mask = vdupq_n_u32(0x7fffffffu), lim = vdupq_n_u32(limit);
  KeptCounter counter;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    uint32x4_t v[4], k[4];
    for (int u = 0; u < 4; ++u) {
      v[u] = vld1q_u32(w + i + 4 * u);
      k[u] = vcgtq_u32(vandq_u32(v[u], abs_mask), lim);
    }
    const uint16x8_t k01 = vcombine_u16(vmovn_u32(k[0]), vmovn_u32(k[1]));
    const uint16x8_t k23 = vcombine_u16(vmovn_u32(k[2]), vmovn_u32(k[3]));
    const uint8x16_t keep8 = vcombine_u8(vmovn_u16(k01), vmovn_u16(k23));
    const uint8x16_t ones = counter.add(keep8);
    if (write_mask) {
      vst1q_u8(keep + i, ones);
    } else if (vminvq_u8(keep8) != 0xff) {  // store only blocks with something to zero
      for (int u = 0; u < 4; ++u) vst1q_u32(w + i + 4 * u, vandq_u32(v[u], k[u]));
    }
  }
  counter.flush();
  return counter.total + (write_mask ? threshold_scalar<uint32_t, true>(w + i, keep + i, n - i, limit)
                                     : threshold_scalar<uint32_t, false>(w + i, nullptr, n - i, limit));
}

int64_t threshold16_neon(uint16_t* w, uint8_t* keep, int64_t n, uint16_t limit, bool write_mask) {
  const uint16x8_t abs_mask = vdupq_n_u16(0x7fff), lim = vdupq_n_u16(limit);
  KeptCounter counter;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const uint16x8_t v0 = vld1q_u16(w + i), v1 = vld1q_u16(w + i + 8);
    const uint16x8_t k0 = vcgtq_u16(vandq_u16(v0, abs_mask), lim);
    const uint16x8_t k1 = vcgtq_u16(vandq_u16(v1, abs_mask), lim);
    const uint8x16_t keep8 = vcombine_u8(vmovn_u16(k0), vmovn_u16(k1));
    const uint8x16_t ones = counter.add(keep8);
    if (write_mask) {
      vst1q_u8(keep + i, ones);
    } else if (vminvq_u8(keep8) != 0xff) {
      vst1q_u16(w + i, vandq_u16(v0, k0));
      vst1q_u16(w + i + 8, vandq_u16(v1, k1));
    }
  }
  counter.flush();
  return counter.total + (write_mask ? threshold_scalar<uint16_t, true>(w + i, keep + i, n - i, limit)
                                     : threshold_scalar<uint16_t, false>(w + i, nullptr, n - i, limit));
}

}  // namespace slimtorch::threshold_paths
