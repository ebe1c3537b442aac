// Magnitude selection: the k-th smallest |w| over several tensors taken
// together, found exactly by radix selection over float bit patterns (no
// sorting, no concatenation), and the keep-masks that prune exactly k weights.
//
// Keys: every element is widened to float32 (fp16/bf16 exactly) and its sign
// bit is cleared. For non-NaN values these 31-bit keys order like |w|, so a
// histogram over key digits, most significant first, narrows the search to
// one key in a fixed number of passes. -0.0 has key 0; +/-Inf has key
// 0x7f800000 (the largest magnitude); any key above that is a NaN, which has
// no rank: the kernels return Status::kNonFinite.
//
// Order of the elements (used to break ties): segment order, then index
// within the segment (row-major flat index of a contiguous tensor).
#pragma once

#include "slimtorch/common.h"
#include "slimtorch/cuda.h"

namespace slimtorch {

// One dense tensor of the list: n elements of `dtype` at `data`.
struct Segment {
  const void* data;
  DType dtype;
  int64_t n;
};

struct MagnitudeSelection {
  // The k-th smallest |w| (1-based) as float32 — the largest magnitude that is
  // pruned. -Inf when k == 0 (threshold_ with it prunes nothing).
  float threshold;
  // Elements with |w| < threshold (all pruned).
  int64_t count_less;
  // k - count_less: how many of the elements with |w| == threshold are pruned
  // (the first ones in element order). 0 when k == 0.
  int64_t ties_to_prune;
};

// Selects the k-th smallest magnitude over all segments (0 <= k <= total n).
// Scans every element even when k == 0, so NaN is always reported.
Status magnitude_select(const Segment* segments, int n_segments, int64_t k, int n_threads,
                        MagnitudeSelection* out);

// Writes keep-masks (one byte 0/1 per element, as torch.bool) with exactly k
// zeros in total: every element with |w| < threshold, plus the first
// ties_to_prune elements with |w| == threshold in element order. keep[s]
// points at segment s's mask. Also writes the selection to *out.
Status magnitude_masks(const Segment* segments, int n_segments, int64_t k, uint8_t* const* keep,
                       int n_threads, MagnitudeSelection* out);

namespace cuda {
// Device versions. Segments hold device pointers (the Segment array itself is
// on the host); everything is launched on `stream`, nothing synchronizes.

// Bytes of device workspace magnitude_select needs (any alignment of 8).
int64_t select_workspace_bytes();

// Writes the selection to result[0..3] (device, int64) on `stream`:
// [threshold as its float32 bit pattern, sign-extended from int32;
//  count_less; ties_to_prune; 1 if any element is NaN else 0].
// With NaN the first three are meaningless.
Status magnitude_select(const Segment* segments, int n_segments, int64_t k, void* workspace,
                        int64_t* result, Stream stream);

// Elements per mask tile; magnitude_mask needs (ceil(n / tile) + 1) int64 of
// `tiles` workspace for a segment of n elements.
int64_t mask_tile_elements();

// Keep-mask of one segment from a selection `result` (as written above).
// Call it for every segment in element order, with one `ties_seen` counter
// (device int64, zeroed before the first call): it numbers the ties across
// segments so that the first ties_to_prune of them are pruned.
Status magnitude_mask(const Segment& segment, const int64_t* result, int64_t* ties_seen,
                      int64_t* tiles, uint8_t* keep, Stream stream);
}  // namespace cuda

}  // namespace slimtorch
