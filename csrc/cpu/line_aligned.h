// Per-call scratch arrays that start on a cache line.
//
// Plain new[] aligns to 16 bytes. A tile load or store (one 64-byte row per
// cache line when aligned) or an AVX-512 load on such memory splits every row
// across two lines, and whether it does changes with the heap's state from
// call to call: the AMX accumulators alone lost about a fifth of the tiles'
// speed when they did. Scratch read by tiles or wide vectors is made here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>

namespace slimtorch {

constexpr size_t kCacheLineBytes = 64;

template <typename T>
class LineAlignedArray {
  static_assert(std::is_trivial<T>::value, "the storage is raw bytes: T has no constructor to run");

 public:
  LineAlignedArray() = default;
  // count elements, uninitialized.
  explicit LineAlignedArray(size_t count) { reset(count); }
  void reset(size_t count) {
    storage_.reset(new unsigned char[count * sizeof(T) + kCacheLineBytes - 1]);
    const uintptr_t base = reinterpret_cast<uintptr_t>(storage_.get());
    data_ = reinterpret_cast<T*>(storage_.get() + (-base & (kCacheLineBytes - 1)));
  }
  T* get() const { return data_; }

 private:
  std::unique_ptr<unsigned char[]> storage_;
  T* data_ = nullptr;
};

}  // namespace slimtorch
