// Select paths for ARM64 Advanced SIMD: keys four at a time (fp16 widened
// by FCVTL, exact), compares and counts in vector lanes; the histogram
// increments stay scalar (a scatter), the window pass compresses the keys
// inside the window with a table lookup.
#include <arm_neon.h>

#include "select_paths.h"

namespace slimtorch::select_paths {
namespace {

template <DType D>
inline uint32x4_t keys4(const void* data, int64_t i) {
  const uint32x4_t abs_mask = vdupq_n_u32(kAbsMask);
  if constexpr (D == DType::kFloat32) {
    return vandq_u32(vld1q_u32(static_cast<const uint32_t*>(data) + i), abs_mask);
  } else {
    const uint16x4_t h = vld1_u16(static_cast<const uint16_t*>(data) + i);
    if constexpr (D == DType::kBFloat16)
      return vandq_u32(vshll_n_u16(h, 16), abs_mask);
    else
      return vandq_u32(vreinterpretq_u32_f32(vcvt_f32_f16(vreinterpret_f16_u16(h))), abs_mask);
  }
}

// Number of set lanes of a compare result, added to a 64-bit pair.
inline uint64x2_t count_lanes(uint64x2_t total, uint32x4_t mask) {
  return vpadalq_u32(total, vshrq_n_u32(mask, 31));
}

inline uint32_t max_lane(uint32x4_t v) { return vmaxvq_u32(v); }

// For each 4-lane mask, TBL byte indices that move the selected 32-bit
// lanes, in order, to the front.
struct CompressTable {
  uint8_t bytes[16][16];
  CompressTable() {
    for (unsigned mask = 0; mask < 16; ++mask) {
      int slot = 0;
      for (int lane = 0; lane < 4; ++lane) {
        if (!(mask & (1u << lane))) continue;
        for (int b = 0; b < 4; ++b) bytes[mask][4 * slot + b] = uint8_t(4 * lane + b);
        ++slot;
      }
      for (; slot < 4; ++slot)
        for (int b = 0; b < 4; ++b) bytes[mask][4 * slot + b] = 0xff;  // TBL gives 0
    }
  }
};
const CompressTable kCompress;

// One step of the window pass (see window_steps): 4 keys.
template <DType D>
struct NeonWindowStep {
  static constexpr int64_t kLanes = 4;
  uint32x4_t lo, hi, max_key;
  uint64x2_t less = vdupq_n_u64(0), at_lo = vdupq_n_u64(0);

  explicit NeonWindowStep(const WindowTally& t)
      : lo(vdupq_n_u32(t.lo)), hi(vdupq_n_u32(t.hi)), max_key(vdupq_n_u32(t.max_key)) {}

  size_t operator()(const void* data, int64_t i, uint32_t* to) {
    const uint32x4_t lane_bit = {1, 2, 4, 8};
    const uint32x4_t key = keys4<D>(data, i);
    max_key = vmaxq_u32(max_key, key);
    less = count_lanes(less, vcltq_u32(key, lo));
    at_lo = count_lanes(at_lo, vceqq_u32(key, lo));
    const uint32x4_t inside = vandq_u32(vcgtq_u32(key, lo), vcleq_u32(key, hi));
    const unsigned mask = vaddvq_u32(vandq_u32(inside, lane_bit));
    const uint8x16_t moved = vqtbl1q_u8(vreinterpretq_u8_u32(key), vld1q_u8(kCompress.bytes[mask]));
    vst1q_u32(to, vreinterpretq_u32_u8(moved));
    return size_t(__builtin_popcount(mask));
  }

  void finish(WindowTally& t) const {
    t.less += int64_t(vaddvq_u64(less));
    t.at_lo += int64_t(vaddvq_u64(at_lo));
    t.max_key = std::max(t.max_key, max_lane(max_key));
  }
};

template <DType D>
struct NeonKernels {
  static void hist(const void* data, int64_t begin, int64_t end, HistJob& job) {
    const uint32x4_t copy_of_lane = {0, 1, 2, 3};
    const uint32x4_t prefix = vdupq_n_u32(job.prefix);
    const uint32x4_t digit_mask = vdupq_n_u32(job.digit_mask);
    const int32x4_t shift = vdupq_n_s32(-job.shift);  // negative: USHL shifts right
    const int32x4_t prefix_shift = vdupq_n_s32(-job.prefix_shift);
    uint32x4_t max_key = vdupq_n_u32(job.max_key);
    alignas(16) uint32_t index[8], hit[8];
    uint32_t* counts = job.counts;
    int64_t i = begin;
    for (; i + 8 <= end; i += 8) {
      const uint32x4_t k0 = keys4<D>(data, i), k1 = keys4<D>(data, i + 4);
      max_key = vmaxq_u32(max_key, vmaxq_u32(k0, k1));
      const uint32x4_t h0 = vceqq_u32(vshlq_u32(k0, prefix_shift), prefix);
      const uint32x4_t h1 = vceqq_u32(vshlq_u32(k1, prefix_shift), prefix);
      const uint32x4_t any = vorrq_u32(h0, h1);
      if (max_lane(any) == 0) continue;
      const uint32x4_t d0 = vandq_u32(vshlq_u32(k0, shift), digit_mask);
      const uint32x4_t d1 = vandq_u32(vshlq_u32(k1, shift), digit_mask);
      vst1q_u32(index, vorrq_u32(vshlq_n_u32(d0, 2), copy_of_lane));
      vst1q_u32(index + 4, vorrq_u32(vshlq_n_u32(d1, 2), copy_of_lane));
      if (vminvq_u32(vandq_u32(h0, h1)) != 0) {
        for (int j = 0; j < 8; ++j) ++counts[index[j]];
      } else {
        vst1q_u32(hit, h0);
        vst1q_u32(hit + 4, h1);
        for (int j = 0; j < 8; ++j) counts[index[j]] += hit[j] & 1u;
      }
    }
    job.max_key = std::max(job.max_key, max_lane(max_key));
    ScalarKernels<D>::hist(data, i, end, job);
  }

  static int64_t mask(const void* data, int64_t begin, int64_t end, uint32_t limit, uint8_t* keep) {
    const uint32x4_t lim = vdupq_n_u32(limit);
    uint64x2_t ties = vdupq_n_u64(0);
    int64_t i = begin;
    for (; i + 8 <= end; i += 8) {
      const uint32x4_t k0 = keys4<D>(data, i), k1 = keys4<D>(data, i + 4);
      ties = count_lanes(count_lanes(ties, vceqq_u32(k0, lim)), vceqq_u32(k1, lim));
      const uint16x8_t gt = vcombine_u16(vmovn_u32(vcgtq_u32(k0, lim)), vmovn_u32(vcgtq_u32(k1, lim)));
      vst1_u8(keep + i, vand_u8(vmovn_u16(gt), vdup_n_u8(1)));
    }
    return int64_t(vaddvq_u64(ties)) + ScalarKernels<D>::mask(data, i, end, limit, keep);
  }

  static void window(const void* data, int64_t begin, int64_t end, WindowTally& t) {
    window_steps<D, NeonWindowStep<D>>(data, begin, end, t);
  }
};

}  // namespace

Kernels kernels_neon(DType d) { return kernels_of<NeonKernels>(d); }

}  // namespace slimtorch::select_paths
