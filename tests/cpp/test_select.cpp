// magnitude_select / magnitude_masks on every ISA path against a sorting oracle.
#include "slimtorch/select.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "check.h"

using namespace slimtorch;
using slimtorch::testing::supported_isas;

namespace {

// A test input: one buffer per segment, kept alive next to the Segment views.
struct Input {
  std::vector<std::vector<float>> f32;
  std::vector<std::vector<uint16_t>> f16;
  std::vector<Segment> segments;
  std::vector<float> magnitudes;  // |w| in element order, for the oracle
};

uint16_t to_bf16_truncated(float x) { return uint16_t(float_to_bits(x) >> 16); }

// float -> fp16 by truncating the mantissa (any fp16 value will do for the
// tests; the oracle reads the result back with fp16_to_float).
uint16_t to_fp16_truncated(float x) {
  const uint32_t b = float_to_bits(x);
  const uint16_t sign = uint16_t((b >> 16) & 0x8000);
  const uint32_t mantissa = (b >> 13) & 0x3ff;
  if (((b >> 23) & 0xff) == 0xff) return uint16_t(sign | 0x7c00 | (mantissa ? 0x200 : 0));
  const int exponent = int((b >> 23) & 0xff) - 127 + 15;
  if (exponent >= 31) return uint16_t(sign | 0x7c00);
  if (exponent <= 0) return exponent < -10 ? sign : uint16_t(sign | ((0x400 | mantissa) >> (1 - exponent)));
  return uint16_t(sign | (exponent << 10) | mantissa);
}

// values: generator of float values; dtypes cycle over the segments.
template <typename Gen>
Input make_input(const std::vector<int64_t>& sizes, const std::vector<DType>& dtypes, Gen&& gen) {
  Input in;
  in.f32.reserve(sizes.size());
  in.f16.reserve(sizes.size());
  for (size_t s = 0; s < sizes.size(); ++s) {
    const DType dtype = dtypes[s % dtypes.size()];
    std::vector<float> values(static_cast<size_t>(sizes[s]));
    for (auto& v : values) v = gen();
    if (dtype == DType::kFloat32) {
      in.f32.push_back(values);
      in.segments.push_back({in.f32.back().data(), dtype, sizes[s]});
      for (float v : values) in.magnitudes.push_back(std::fabs(v));
    } else {
      std::vector<uint16_t> bits;
      for (float v : values) {
        const uint16_t h = dtype == DType::kBFloat16 ? to_bf16_truncated(v) : to_fp16_truncated(v);
        bits.push_back(h);
        in.magnitudes.push_back(std::fabs(half_to_float(h, dtype)));
      }
      in.f16.push_back(bits);
      in.segments.push_back({in.f16.back().data(), dtype, sizes[s]});
    }
  }
  return in;
}

void check_against_oracle(const Input& in, const std::vector<int64_t>& order, int64_t k, int threads);

// The oracle: a stable sort of the magnitudes; the first k in this order
// (magnitude, then element order) are pruned.
std::vector<int64_t> oracle_order(const Input& in) {
  std::vector<int64_t> order(in.magnitudes.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return in.magnitudes[size_t(a)] < in.magnitudes[size_t(b)]; });
  return order;
}

// Checks selection and masks against the oracle for every k and thread count.
void check_against_oracle(const Input& in, const std::vector<int64_t>& ks,
                          const std::vector<int>& thread_counts) {
  const std::vector<int64_t> order = oracle_order(in);
  for (int64_t k : ks)
    for (int threads : thread_counts) check_against_oracle(in, order, k, threads);
}

void check_against_oracle(const Input& in, const std::vector<int64_t>& order, int64_t k, int threads) {
  const int64_t n = int64_t(in.magnitudes.size());
  std::vector<uint8_t> expected_keep(size_t(n), 1);
  for (int64_t i = 0; i < k; ++i) expected_keep[size_t(order[size_t(i)])] = 0;
  const float expected_threshold =
      k == 0 ? -std::numeric_limits<float>::infinity() : in.magnitudes[size_t(order[size_t(k - 1)])];

  MagnitudeSelection sel{};
  CHECK(magnitude_select(in.segments.data(), int(in.segments.size()), k, threads, &sel) == Status::kOk);
  CHECK(sel.threshold == expected_threshold);
  if (k > 0) {
    int64_t less = 0;
    for (float m : in.magnitudes) less += m < expected_threshold;
    CHECK(sel.count_less == less);
    CHECK(sel.ties_to_prune == k - less);
  }

  std::vector<std::vector<uint8_t>> keep;
  std::vector<uint8_t*> keep_ptrs;
  for (const Segment& s : in.segments) keep.emplace_back(size_t(s.n) + 1, 7);  // +1: overrun guard
  for (auto& m : keep) keep_ptrs.push_back(m.data());
  MagnitudeSelection sel2{};
  CHECK(magnitude_masks(in.segments.data(), int(in.segments.size()), k, keep_ptrs.data(), threads, &sel2) ==
        Status::kOk);
  CHECK(sel2.threshold == sel.threshold);
  size_t flat = 0;
  bool all_equal = true;
  for (size_t s = 0; s < keep.size(); ++s) {
    for (int64_t i = 0; i < in.segments[s].n; ++i) all_equal &= keep[s][size_t(i)] == expected_keep[flat++];
    CHECK(keep[s].back() == 7);
  }
  CHECK(all_equal);
}

float normal_value(std::mt19937& rng) { return std::normal_distribution<float>()(rng); }

}  // namespace

TEST(float32_random_matches_oracle_on_every_path) {
  std::mt19937 rng(1);
  for (Isa isa : supported_isas()) {
    CHECK(set_active_isa(isa));
    for (int64_t n : {0, 1, 7, 15, 16, 17, 33, 65536, 65537, 200001}) {
      const Input in = make_input({n}, {DType::kFloat32}, [&] { return normal_value(rng); });
      check_against_oracle(in, {0, std::min<int64_t>(1, n), n / 2, n}, {1, 3});
    }
  }
  set_active_isa(detected_isa());
}

TEST(mixed_dtypes_and_segments) {
  std::mt19937 rng(2);
  for (Isa isa : supported_isas()) {
    CHECK(set_active_isa(isa));
    const Input in = make_input({31, 0, 70001, 100000, 1, 17},
                                {DType::kFloat16, DType::kFloat32, DType::kBFloat16},
                                [&] { return normal_value(rng) * 3.0f; });
    const int64_t n = int64_t(in.magnitudes.size());
    check_against_oracle(in, {0, 1, n / 3, n - 1, n}, {2});
  }
  set_active_isa(detected_isa());
}

TEST(half_types_alone) {
  std::mt19937 rng(3);
  for (Isa isa : supported_isas()) {
    CHECK(set_active_isa(isa));
    for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
      for (int64_t n : {int64_t(33), int64_t(140000)}) {  // small and large digit layouts
        const Input in = make_input({n}, {dtype}, [&] { return normal_value(rng) * 1e-3f; });
        check_against_oracle(in, {1, n / 2, n}, {2});
      }
    }
  }
  set_active_isa(detected_isa());
}

TEST(ties_zeros_and_infinities) {
  std::mt19937 rng(4);
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> pool = {0.0f, -0.0f, 1.0f, -1.0f, 2.0f, inf, -inf};
  for (Isa isa : supported_isas()) {
    CHECK(set_active_isa(isa));
    for (int64_t n : {int64_t(40), int64_t(3 * 65536 + 7)}) {
      const Input in = make_input({n, 5, n / 3}, {DType::kFloat32, DType::kBFloat16, DType::kFloat16},
                                  [&] { return pool[rng() % pool.size()]; });
      const int64_t total = int64_t(in.magnitudes.size());
      check_against_oracle(in, {1, total / 7, total / 2, total - 3, total}, {1, 2, 3});
    }
    const Input zeros = make_input({100000, 3}, {DType::kFloat32}, [] { return 0.0f; });
    check_against_oracle(zeros, {1, 50000, 100003}, {2});
  }
  set_active_isa(detected_isa());
}

// Inputs of >= 2^20 elements take the sampled-window fast path: on ordinary
// data (no ties, the sample representative) the window holds the k-th key.
TEST(sampled_window_finds_the_key) {
  std::mt19937 rng(6);
  const int64_t n = (int64_t(1) << 20) + 7;
  for (DType dtype : {DType::kFloat32, DType::kBFloat16, DType::kFloat16}) {
    const Input in = make_input({n, 5, n / 3}, {dtype, DType::kFloat32, dtype}, [&] { return normal_value(rng); });
    const int64_t total = int64_t(in.magnitudes.size());
    for (Isa isa : supported_isas()) {
      CHECK(set_active_isa(isa));
      check_against_oracle(in, {total / 10, total / 2, total - total / 10}, {1, 3});
    }
  }
  set_active_isa(detected_isa());
}

// Inputs of >= 2^20 elements take the sampled-window fast path; these make
// the sample mislead it so that the exact fallback must run. The sample reads
// runs of 16 keys every n / 4096 elements.
TEST(sampled_window_fallbacks) {
  const int64_t n = (int64_t(1) << 20) + 12345, stride = n / 4096;
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  // 1. Sampled runs all zero, the rest random: the window is empty.
  // 2. Sampled runs spread over [0, 1), the rest inside a narrow band around
  //    0.5: far more keys fall in the window than it may store.
  // 3. A fraction of the sampled runs zero: the window sits too low.
  for (int variant = 0; variant < 3; ++variant) {
    int64_t index = 0;
    const Input in = make_input({n}, {DType::kFloat32}, [&] {
      const bool sampled = index++ % stride < 16;
      if (variant == 0) return sampled ? 0.0f : uniform(rng) + 0.1f;
      if (variant == 1) return sampled ? uniform(rng) : 0.5f + 1e-3f * (uniform(rng) - 0.5f);
      return sampled && (index / stride) % 3 == 0 ? 0.0f : uniform(rng);
    });
    for (Isa isa : supported_isas()) {
      CHECK(set_active_isa(isa));
      check_against_oracle(in, {n / 2}, {2});
    }
  }
  set_active_isa(detected_isa());
}

TEST(nan_is_reported) {
  for (Isa isa : supported_isas()) {
    CHECK(set_active_isa(isa));
    for (int64_t at : {int64_t(0), int64_t(16), int64_t(99999)}) {
      std::vector<float> w(100000, 1.0f);
      w[size_t(at)] = -std::numeric_limits<float>::quiet_NaN();
      const Segment seg{w.data(), DType::kFloat32, int64_t(w.size())};
      MagnitudeSelection sel{};
      CHECK(magnitude_select(&seg, 1, 0, 2, &sel) == Status::kNonFinite);
      CHECK(magnitude_select(&seg, 1, 500, 2, &sel) == Status::kNonFinite);
      std::vector<uint8_t> keep(w.size());
      uint8_t* keep_ptr = keep.data();
      CHECK(magnitude_masks(&seg, 1, 500, &keep_ptr, 2, &sel) == Status::kNonFinite);
    }
    const uint16_t half_nan[3] = {0x3c00, 0x7e00, 0x0001};  // fp16 1.0, NaN, subnormal
    const Segment seg{half_nan, DType::kFloat16, 3};
    MagnitudeSelection sel{};
    CHECK(magnitude_select(&seg, 1, 1, 1, &sel) == Status::kNonFinite);
  }
  set_active_isa(detected_isa());
}

TEST(invalid_arguments_rejected) {
  float w[2] = {1.0f, 2.0f};
  MagnitudeSelection sel{};
  const Segment ok{w, DType::kFloat32, 2};
  CHECK(magnitude_select(&ok, 1, 3, 1, &sel) == Status::kInvalidArgument);   // k > n
  CHECK(magnitude_select(&ok, 1, -1, 1, &sel) == Status::kInvalidArgument);  // k < 0
  CHECK(magnitude_select(&ok, 1, 1, 1, nullptr) == Status::kInvalidArgument);
  CHECK(magnitude_select(nullptr, 1, 0, 1, &sel) == Status::kInvalidArgument);
  const Segment negative{w, DType::kFloat32, -1};
  CHECK(magnitude_select(&negative, 1, 0, 1, &sel) == Status::kInvalidArgument);
  const Segment null_data{nullptr, DType::kFloat32, 2};
  CHECK(magnitude_select(&null_data, 1, 0, 1, &sel) == Status::kInvalidArgument);
  const Segment bad_dtype{w, DType(7), 2};
  CHECK(magnitude_select(&bad_dtype, 1, 0, 1, &sel) == Status::kInvalidArgument);
  CHECK(magnitude_masks(&ok, 1, 1, nullptr, 1, &sel) == Status::kInvalidArgument);
  // Nothing to select: fine, and -inf.
  CHECK(magnitude_select(nullptr, 0, 0, 1, &sel) == Status::kOk);
  CHECK(std::isinf(sel.threshold) && sel.threshold < 0);
}

SLIMTORCH_TEST_MAIN()
