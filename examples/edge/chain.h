// A "slimtorch-chain" file (written by slimtorch.export_chain; format in
// python/slimtorch/api/export.py): read, validated completely, and run on the
// kernel library's CPU kernels, the same ones slimtorch's Python layers call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "slimtorch/spmm.h"

namespace edge {

// Kernel buffers are 64-byte aligned, as torch allocates them.
template <class T>
struct AlignedAllocator {
  using value_type = T;
  AlignedAllocator() = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U>&) {}
  T* allocate(size_t n) {
    if (n > size_t(-1) / sizeof(T)) throw std::bad_alloc();
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64)));
  }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(64)); }
  template <class U>
  bool operator==(const AlignedAllocator<U>&) const { return true; }
  template <class U>
  bool operator!=(const AlignedAllocator<U>&) const { return false; }
};
template <class T>
using Buffer = std::vector<T, AlignedAllocator<T>>;

enum class Op { kSparse, kInt8, kRelu, kGelu, kGeluTanh };

struct Layer {
  Op op = Op::kRelu;
  std::string name;  // the module's path in the exported model
  int64_t in_features = 0, out_features = 0;
  Buffer<float> bias;  // empty: no bias

  // kSparse (SparseLinear, and nn.Linear stored with every entry)
  slimtorch::SparseMatrix matrix;
  bool dynamic = false;  // int8_dynamic: rows quantized to uint8 first
  Buffer<int64_t> row_ptr;
  Buffer<uint16_t> col16;
  Buffer<int32_t> col32;
  Buffer<uint8_t> values;  // raw bytes of the values' dtype
  Buffer<float> row_scales;
  Buffer<uint16_t> bitmap;

  // kInt8 (Int8Linear)
  std::string scheme;
  Buffer<int8_t> packed;
  Buffer<float> weight_scale;
  Buffer<int32_t> colsum;
  float activation_scale = 1.0f;
  int32_t activation_zero_point = 0;
};

struct Chain {
  int64_t in_features = 0, out_features = 0;
  std::vector<Layer> layers;
};

// Reads and validates the whole file; throws std::runtime_error with a
// message naming the problem for anything malformed or unsupported.
Chain load_chain(const std::string& path);

// y = chain(x) for `batch` float32 rows of chain.in_features; returns
// batch x chain.out_features floats. Throws std::runtime_error when a kernel
// reports an error.
std::vector<float> run_chain(const Chain& chain, const float* x, int64_t batch, int n_threads);

}  // namespace edge
