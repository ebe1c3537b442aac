// threshold_inplace / prune_mask on every ISA path against a scalar oracle.
#include "slimtorch/threshold.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "check.h"

using namespace slimtorch;
using slimtorch::testing::supported_isas;

namespace {

std::vector<float> random_floats(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(size_t(n), 0.0f);
  for (auto& x : v) x = normal(rng);
  if (n > 3) {
    v[0] = std::numeric_limits<float>::quiet_NaN();
    v[1] = -std::numeric_limits<float>::infinity();
    v[2] = -0.0f;
  }
  return v;
}

uint16_t to_bf16_truncated(float x) { return uint16_t(float_to_bits(x) >> 16); }

}  // namespace

TEST(float32_matches_oracle_on_every_path) {
  for (Isa isa : supported_isas()) {
    CHECK(set_active_isa(isa));
    for (int64_t n : {0, 1, 7, 15, 16, 17, 33, 65537, 200001}) {
      for (int threads : {1, 2, 3}) {
        std::vector<float> w = random_floats(n, uint32_t(n));
        std::vector<uint8_t> keep(size_t(n), 7);
        int64_t kept_mask = -1, kept = -1;
        CHECK(prune_mask(w.data(), DType::kFloat32, n, 0.5f, keep.data(), threads, &kept_mask) == Status::kOk);
        const std::vector<float> original = w;
        CHECK(threshold_inplace(w.data(), DType::kFloat32, n, 0.5f, threads, &kept) == Status::kOk);
        int64_t expected_kept = 0;
        for (int64_t i = 0; i < n; ++i) {
          const bool k = !(std::fabs(original[size_t(i)]) <= 0.5f);
          expected_kept += k;
          CHECK(keep[size_t(i)] == uint8_t(k));
          if (k) CHECK(float_to_bits(w[size_t(i)]) == float_to_bits(original[size_t(i)]));
          else CHECK(float_to_bits(w[size_t(i)]) == 0u);
        }
        CHECK(kept == expected_kept);
        CHECK(kept_mask == expected_kept);
      }
    }
  }
  set_active_isa(detected_isa());
}

TEST(bfloat16_matches_oracle_on_every_path) {
  for (Isa isa : supported_isas()) {
    CHECK(set_active_isa(isa));
    for (int64_t n : {0, 1, 31, 32, 33, 70001}) {
      const std::vector<float> source = random_floats(n, 99);
      std::vector<uint16_t> w(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) w[size_t(i)] = to_bf16_truncated(source[size_t(i)]);
      const std::vector<uint16_t> original = w;
      int64_t kept = -1;
      CHECK(threshold_inplace(w.data(), DType::kBFloat16, n, 0.3f, 2, &kept) == Status::kOk);
      int64_t expected_kept = 0;
      for (int64_t i = 0; i < n; ++i) {
        const bool k = !(std::fabs(bf16_to_float(original[size_t(i)])) <= 0.3f);
        expected_kept += k;
        CHECK(w[size_t(i)] == (k ? original[size_t(i)] : 0));
      }
      CHECK(kept == expected_kept);
    }
  }
  set_active_isa(detected_isa());
}

TEST(threshold_bits) {
  CHECK(magnitude_bits_at_most(DType::kFloat32, -1.0f) == -1);
  CHECK(magnitude_bits_at_most(DType::kFloat32, -0.0f) == 0);
  CHECK(magnitude_bits_at_most(DType::kFloat16, 1.0f) == 0x3c00);
  CHECK(magnitude_bits_at_most(DType::kFloat16, 1e9f) == 0x7bff);  // largest finite half
  CHECK(magnitude_bits_at_most(DType::kFloat16, INFINITY) == 0x7c00);
  CHECK(magnitude_bits_at_most(DType::kBFloat16, 1.0f) == 0x3f80);
  CHECK(magnitude_bits_at_most(DType::kBFloat16, 1.0078125f - 1e-6f) == 0x3f80);
}

TEST(invalid_arguments_rejected) {
  int64_t kept = 0;
  float w[2] = {1.0f, 2.0f};
  CHECK(threshold_inplace(w, DType::kFloat32, -1, 0.5f, 1, &kept) == Status::kInvalidArgument);
  CHECK(threshold_inplace(nullptr, DType::kFloat32, 2, 0.5f, 1, &kept) == Status::kInvalidArgument);
  CHECK(threshold_inplace(w, DType::kFloat32, 2, NAN, 1, &kept) == Status::kInvalidArgument);
  CHECK(prune_mask(w, DType::kFloat32, 2, 0.5f, nullptr, 1, &kept) == Status::kInvalidArgument);
  CHECK(threshold_inplace(nullptr, DType::kFloat32, 0, 0.5f, 1, &kept) == Status::kOk);
}

SLIMTORCH_TEST_MAIN()
