// CUDA magnitude selection: the same radix select over sign-cleared float32
// keys as csrc/cpu/select.cpp (see select.h), with three levels of 11/10/10
// bits so that a block's histogram fits in 8 KB of shared memory.
//
// Every step is a kernel on the caller's stream; the state of the search
// (prefix, rank, ...) lives in device workspace, so the host never waits:
//   init -> for each level: clear histogram, histogram every segment, pick bin
// Masks: per segment, keep = key > threshold and per-tile tie counts; an
// exclusive scan of the tile counts numbers the ties in element order; a last
// kernel keeps the ties numbered >= ties_to_prune.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "slimtorch/select.h"

namespace slimtorch::cuda {
namespace {

constexpr uint32_t kAbsMask = 0x7fffffffu;
constexpr uint32_t kInfKey = 0x7f800000u;  // keys above this are NaN
constexpr int kLevels = 3;
// Level l's digit is (key >> shift(l)) & (2^bits(l) - 1).
__device__ __forceinline__ int level_shift(int level) { return level == 0 ? 20 : level == 1 ? 10 : 0; }
__device__ __forceinline__ int level_bits(int level) { return level == 0 ? 11 : 10; }
constexpr int kMaxBins = 1 << 11;
constexpr int kHistThreads = 256;
constexpr int kHistMaxBlocks = 1024;  // grid-stride beyond: fewer shared->global flushes
constexpr int kPickThreads = 1024;
constexpr int kMaskThreads = 256;
constexpr int kMaskPerThread = 16;
constexpr int kTile = kMaskThreads * kMaskPerThread;

struct SearchState {
  int64_t k;
  int64_t rank;   // the k-th key is the rank-th (1-based) smallest with this prefix
  int64_t below;  // keys smaller than every key with this prefix
  uint32_t prefix;
  uint32_t nan;
};

struct Workspace {
  unsigned long long hist[kMaxBins];
  SearchState state;
};

template <DType D>
__device__ __forceinline__ uint32_t key_at(const void* data, int64_t i) {
  if constexpr (D == DType::kFloat32) {
    return static_cast<const uint32_t*>(data)[i] & kAbsMask;
  } else if constexpr (D == DType::kBFloat16) {
    return (uint32_t(static_cast<const uint16_t*>(data)[i]) << 16) & kAbsMask;
  } else {
    const __half h = __ushort_as_half(static_cast<const unsigned short*>(data)[i]);
    return __float_as_uint(__half2float(h)) & kAbsMask;
  }
}

__global__ void init_kernel(SearchState* state, int64_t k) {
  *state = SearchState{k, k, 0, 0u, 0u};
}

// Adds the level's digit histogram of the segment's keys that carry the
// current prefix to ws->hist; at level 0 also flags NaN.
template <DType D>
__global__ void hist_kernel(const void* data, int64_t n, int level, Workspace* ws) {
  __shared__ unsigned int local[kMaxBins];
  const int shift = level_shift(level), bins = 1 << level_bits(level);
  const int prefix_shift = shift + level_bits(level);
  const uint32_t prefix = ws->state.prefix;
  for (int b = threadIdx.x; b < bins; b += blockDim.x) local[b] = 0;
  __syncthreads();
  bool nan = false;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const uint32_t key = key_at<D>(data, i);
    nan |= key > kInfKey;
    if ((key >> prefix_shift) == prefix) atomicAdd(&local[(key >> shift) & uint32_t(bins - 1)], 1u);
  }
  // __syncthreads_or doubles as the barrier before the flush.
  const bool any_nan = __syncthreads_or(nan);
  if (any_nan && threadIdx.x == 0) atomicOr(&ws->state.nan, 1u);
  for (int b = threadIdx.x; b < bins; b += blockDim.x)
    if (local[b] != 0) atomicAdd(&ws->hist[b], (unsigned long long)local[b]);
}

// One block: finds the bin holding the rank-th key and narrows the state to
// it; after the last level writes the result.
__global__ void pick_bin_kernel(int level, Workspace* ws, int64_t* result) {
  using Scan = cub::BlockScan<unsigned long long, kPickThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  SearchState* state = &ws->state;
  const int bits = level_bits(level), bins = 1 << bits;
  const int per_thread = (bins + kPickThreads - 1) / kPickThreads;
  const int first = threadIdx.x * per_thread;
  const unsigned long long rank = (unsigned long long)state->rank;
  unsigned long long mine = 0;
  for (int b = first; b < first + per_thread && b < bins; ++b) mine += ws->hist[b];
  unsigned long long before = 0;
  Scan(scan_storage).ExclusiveSum(mine, before);
  __syncthreads();  // every thread has read the state before it changes
  if (rank >= 1 && before < rank && rank <= before + mine) {  // exactly one thread
    int b = first;
    unsigned long long acc = before;
    while (acc + ws->hist[b] < rank) acc += ws->hist[b++];
    state->prefix = (state->prefix << bits) | uint32_t(b);
    state->rank = int64_t(rank - acc);
    state->below += int64_t(acc);
  }
  if (level != kLevels - 1) return;
  __syncthreads();
  if (threadIdx.x == 0) {
    const bool none = state->k == 0;
    // -inf when nothing is pruned; keys are < 2^31, so int32 holds them.
    result[0] = none ? int64_t(int32_t(0xff800000u)) : int64_t(state->prefix);
    result[1] = none ? 0 : state->below;
    result[2] = none ? 0 : state->rank;
    result[3] = state->nan;
  }
}

// keep = key > threshold for one tile per block; tiles[b] = ties in tile b.
// ties_to_prune == 0 (k == 0) keeps everything.
template <DType D>
__global__ void mask_kernel(const void* data, int64_t n, const int64_t* result, uint8_t* keep,
                            int64_t* tiles) {
  using Reduce = cub::BlockReduce<int, kMaskThreads>;
  __shared__ typename Reduce::TempStorage reduce_storage;
  const uint32_t limit = uint32_t(result[0]) & kAbsMask;
  const bool keep_all = result[2] == 0;
  const int64_t base = int64_t(blockIdx.x) * kTile;
  int ties = 0;
  for (int j = 0; j < kMaskPerThread; ++j) {
    const int64_t i = base + j * kMaskThreads + threadIdx.x;
    if (i >= n) break;
    const uint32_t key = key_at<D>(data, i);
    keep[i] = keep_all || key > limit;
    ties += key == limit;
  }
  const int total = Reduce(reduce_storage).Sum(ties);
  if (threadIdx.x == 0) tiles[blockIdx.x] = keep_all ? 0 : total;
}

// One block: tiles[0..count) becomes the exclusive prefix sum plus *ties_seen,
// tiles[count] the end; *ties_seen advances past this segment.
__global__ void scan_tiles_kernel(int64_t* tiles, int64_t count, int64_t* ties_seen) {
  using Scan = cub::BlockScan<long long, kPickThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  __shared__ long long carry;
  if (threadIdx.x == 0) carry = *ties_seen;
  __syncthreads();
  for (int64_t start = 0; start < count; start += kPickThreads) {
    const int64_t i = start + threadIdx.x;
    const long long mine = i < count ? tiles[i] : 0;
    long long before = 0, chunk_total = 0;
    Scan(scan_storage).ExclusiveSum(mine, before, chunk_total);
    if (i < count) tiles[i] = carry + before;
    __syncthreads();  // everyone has used carry and scan_storage
    if (threadIdx.x == 0) carry += chunk_total;
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    tiles[count] = carry;
    *ties_seen = carry;
  }
}

// Keeps the ties of one tile per block whose number is >= ties_to_prune,
// numbering them in element order from tiles[block].
template <DType D>
__global__ void keep_late_ties_kernel(const void* data, int64_t n, const int64_t* result,
                                      const int64_t* tiles, uint8_t* keep) {
  using Scan = cub::BlockScan<int, kMaskThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  const int64_t to_prune = result[2];
  const int64_t first_tie = tiles[blockIdx.x];
  if (to_prune == 0 || tiles[blockIdx.x + 1] <= to_prune) return;  // all kept / all pruned
  const uint32_t limit = uint32_t(result[0]) & kAbsMask;
  const int64_t base = int64_t(blockIdx.x) * kTile;
  int64_t tie = first_tie;
  // Rounds walk the tile in element order: round j covers
  // [base + j * kMaskThreads, base + (j + 1) * kMaskThreads).
  for (int j = 0; j < kMaskPerThread; ++j) {
    const int64_t i = base + j * kMaskThreads + threadIdx.x;
    const int is_tie = i < n && key_at<D>(data, i) == limit;
    int before = 0, round_ties = 0;
    Scan(scan_storage).ExclusiveSum(is_tie, before, round_ties);
    if (is_tie && tie + before >= to_prune) keep[i] = 1;
    tie += round_ties;
    __syncthreads();  // scan_storage is reused next round
  }
}

bool launched() { return cudaGetLastError() == cudaSuccess; }

template <DType D>
void launch_hist(const Segment& s, int level, Workspace* ws, Stream stream) {
  const int64_t blocks = std::min<int64_t>((s.n + kHistThreads - 1) / kHistThreads, kHistMaxBlocks);
  hist_kernel<D><<<int(blocks), kHistThreads, 0, stream>>>(s.data, s.n, level, ws);
}

bool valid(const Segment& s) {
  return s.n >= 0 && (s.n == 0 || s.data != nullptr) && int(s.dtype) >= 0 && int(s.dtype) <= 2;
}

}  // namespace

int64_t select_workspace_bytes() { return int64_t(sizeof(Workspace)); }

int64_t mask_tile_elements() { return kTile; }

Status magnitude_select(const Segment* segments, int n_segments, int64_t k, void* workspace,
                        int64_t* result, Stream stream) {
  if (n_segments < 0 || (n_segments > 0 && segments == nullptr) || workspace == nullptr ||
      result == nullptr)
    return Status::kInvalidArgument;
  int64_t total = 0;
  for (int s = 0; s < n_segments; ++s) {
    if (!valid(segments[s])) return Status::kInvalidArgument;
    total += segments[s].n;
  }
  if (k < 0 || k > total) return Status::kInvalidArgument;
  auto* ws = static_cast<Workspace*>(workspace);
  init_kernel<<<1, 1, 0, stream>>>(&ws->state, k);
  for (int level = 0; level < kLevels; ++level) {
    if (cudaMemsetAsync(ws->hist, 0, sizeof(ws->hist), stream) != cudaSuccess) return Status::kCudaError;
    for (int s = 0; s < n_segments; ++s) {
      const Segment& seg = segments[s];
      if (seg.n == 0) continue;
      switch (seg.dtype) {
        case DType::kFloat32: launch_hist<DType::kFloat32>(seg, level, ws, stream); break;
        case DType::kFloat16: launch_hist<DType::kFloat16>(seg, level, ws, stream); break;
        case DType::kBFloat16: launch_hist<DType::kBFloat16>(seg, level, ws, stream); break;
      }
    }
    pick_bin_kernel<<<1, kPickThreads, 0, stream>>>(level, ws, result);
  }
  return launched() ? Status::kOk : Status::kCudaError;
}

Status magnitude_mask(const Segment& segment, const int64_t* result, int64_t* ties_seen,
                      int64_t* tiles, uint8_t* keep, Stream stream) {
  if (!valid(segment) || result == nullptr || ties_seen == nullptr || tiles == nullptr ||
      (segment.n > 0 && keep == nullptr))
    return Status::kInvalidArgument;
  if (segment.n == 0) return Status::kOk;
  const int64_t count = (segment.n + kTile - 1) / kTile;
  if (count > int64_t(0x7fffffff)) return Status::kInvalidArgument;
  const int blocks = int(count);
  const void* data = segment.data;
  const int64_t n = segment.n;
  switch (segment.dtype) {
    case DType::kFloat32: mask_kernel<DType::kFloat32><<<blocks, kMaskThreads, 0, stream>>>(data, n, result, keep, tiles); break;
    case DType::kFloat16: mask_kernel<DType::kFloat16><<<blocks, kMaskThreads, 0, stream>>>(data, n, result, keep, tiles); break;
    case DType::kBFloat16: mask_kernel<DType::kBFloat16><<<blocks, kMaskThreads, 0, stream>>>(data, n, result, keep, tiles); break;
  }
  scan_tiles_kernel<<<1, kPickThreads, 0, stream>>>(tiles, count, ties_seen);
  switch (segment.dtype) {
    case DType::kFloat32: keep_late_ties_kernel<DType::kFloat32><<<blocks, kMaskThreads, 0, stream>>>(data, n, result, tiles, keep); break;
    case DType::kFloat16: keep_late_ties_kernel<DType::kFloat16><<<blocks, kMaskThreads, 0, stream>>>(data, n, result, tiles, keep); break;
    case DType::kBFloat16: keep_late_ties_kernel<DType::kBFloat16><<<blocks, kMaskThreads, 0, stream>>>(data, n, result, tiles, keep); break;
  }
  return launched() ? Status::kOk : Status::kCudaError;
}

}  // namespace slimtorch::cuda
