// quantize / dequantize / choose_qparams on every ISA path against scalar oracles.
#include "slimtorch/quantize.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "check.h"

using namespace slimtorch;
using slimtorch::testing::supported_isas;

namespace {

std::vector<float> random_floats(int64_t n, uint32_t seed, float spread) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, spread);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = normal(rng);
  return v;
}

// The oracle, written out. `volatile` keeps the compiler from fusing the
// per-channel multiply and add (this file is not built with -ffp-contract=off).
int32_t oracle_quantize(float x, float scale, int32_t zp, bool per_channel, QType qtype) {
  const float inv = 1.0f / scale;
  float t;
  if (per_channel) {
    volatile float product = x * inv;
    t = product + float(zp);
  } else {
    t = std::fma(x, inv, float(zp));
  }
  if (std::isnan(t)) return zp;
  t = std::min(std::max(t, float(qtype_min(qtype))), float(qtype_max(qtype)));
  return int32_t(std::nearbyint(t));
}

int32_t level(const std::vector<uint8_t>& q, int64_t i, QType qtype) {
  return qtype == QType::kInt8 ? int32_t(int8_t(q[size_t(i)])) : int32_t(q[size_t(i)]);
}

}  // namespace

TEST(quantize_matches_oracle_on_every_path) {
  for (Isa isa : supported_isas()) {
    CHECK(set_active_isa(isa));
    for (QType qtype : {QType::kInt8, QType::kUInt8}) {
      // (outer, channels, inner): per tensor, long rows, short rows, across chunks.
      for (ChannelView view : {ChannelView{1, 1, 0}, ChannelView{1, 1, 1}, ChannelView{1, 1, 17},
                               ChannelView{1, 1, 70001}, ChannelView{3, 5, 33}, ChannelView{7, 9, 1},
                               ChannelView{4, 3, 15}, ChannelView{2, 70001, 1}, ChannelView{3, 2, 40000}}) {
        for (bool per_channel : {false, true}) {
          ChannelView used = view;
          if (!per_channel) used = ChannelView{1, 1, view.numel()};
          const int64_t n = used.numel();
          std::vector<float> x = random_floats(n, uint32_t(n + 7), 4.0f);
          if (n > 5) {
            x[0] = std::numeric_limits<float>::quiet_NaN();
            x[1] = std::numeric_limits<float>::infinity();
            x[2] = -std::numeric_limits<float>::infinity();
            x[3] = 1e30f;
            x[4] = 0.5f * 0.037f;  // near a rounding tie
          }
          std::vector<float> scale(size_t(used.channels));
          std::vector<int32_t> zp(size_t(used.channels));
          for (int64_t c = 0; c < used.channels; ++c) {
            scale[size_t(c)] = 0.037f + 0.001f * float(c % 13);
            zp[size_t(c)] = qtype_min(qtype) + int32_t((c * 37 + 11) % 256);
          }
          for (int threads : {1, 3}) {
            std::vector<uint8_t> q(static_cast<size_t>(n), 0xAB);
            CHECK(quantize(x.data(), DType::kFloat32, used, per_channel, scale.data(), zp.data(), qtype,
                           q.data(), threads) == Status::kOk);
            int64_t wrong = 0;
            for (int64_t i = 0; i < n; ++i) {
              const int64_t c = (i / used.inner) % used.channels;
              wrong += level(q, i, qtype) !=
                       oracle_quantize(x[size_t(i)], scale[size_t(c)], zp[size_t(c)], per_channel, qtype);
            }
            CHECK(wrong == 0);
            // Dequantize, fp32 out: (q - zp) * scale exactly.
            std::vector<float> out(static_cast<size_t>(n), -1.0f);
            CHECK(dequantize(q.data(), qtype, used, scale.data(), zp.data(), out.data(), DType::kFloat32,
                             threads) == Status::kOk);
            wrong = 0;
            for (int64_t i = 0; i < n; ++i) {
              const int64_t c = (i / used.inner) % used.channels;
              const float want = float(level(q, i, qtype) - zp[size_t(c)]) * scale[size_t(c)];
              wrong += float_to_bits(out[size_t(i)]) != float_to_bits(want);
            }
            CHECK(wrong == 0);
          }
        }
      }
    }
  }
  set_active_isa(detected_isa());
}

TEST(half_inputs_and_outputs_on_every_path) {
  for (Isa isa : supported_isas()) {
    CHECK(set_active_isa(isa));
    const int64_t n = 1037;
    const std::vector<float> source = random_floats(n, 5, 3.0f);
    for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
      std::vector<uint16_t> x(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i)
        x[size_t(i)] = dtype == DType::kFloat16 ? float_to_fp16(source[size_t(i)]) : float_to_bf16(source[size_t(i)]);
      const float scale = 0.0213f;
      const int32_t zp = -7;
      std::vector<uint8_t> q(static_cast<size_t>(n));
      CHECK(quantize(x.data(), dtype, {1, 1, n}, false, &scale, &zp, QType::kInt8, q.data(), 2) == Status::kOk);
      std::vector<uint16_t> out(static_cast<size_t>(n));
      CHECK(dequantize(q.data(), QType::kInt8, {1, 1, n}, &scale, &zp, out.data(), dtype, 2) == Status::kOk);
      int64_t wrong = 0;
      for (int64_t i = 0; i < n; ++i) {
        const float xf = half_to_float(x[size_t(i)], dtype);
        wrong += level(q, i, QType::kInt8) != oracle_quantize(xf, scale, zp, false, QType::kInt8);
        const float back = float(level(q, i, QType::kInt8) - zp) * scale;
        wrong += out[size_t(i)] != (dtype == DType::kFloat16 ? float_to_fp16(back) : float_to_bf16(back));
      }
      CHECK(wrong == 0);
    }
  }
  set_active_isa(detected_isa());
}

TEST(streamed_float32_output_any_alignment) {
  // Outputs of >= 16 MiB use non-temporal stores after an unaligned head.
  const int64_t n = (int64_t(4) << 20) + 21;
  std::vector<uint8_t> q(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) q[size_t(i)] = uint8_t(i * 7 + (i >> 9));
  std::vector<float> out(static_cast<size_t>(n) + 16);
  const float scale = 0.0173f;
  const int32_t zp = 5;
  for (Isa isa : supported_isas()) {
    CHECK(set_active_isa(isa));
    for (int64_t shift : {0, 1, 3}) {
      float* dst = out.data() + shift;
      CHECK(dequantize(q.data(), QType::kUInt8, {1, 1, n}, &scale, &zp, dst, DType::kFloat32, 2) == Status::kOk);
      int64_t wrong = 0;
      for (int64_t i = 0; i < n; ++i) wrong += dst[i] != float(int32_t(q[size_t(i)]) - zp) * scale;
      CHECK(wrong == 0);
    }
  }
  set_active_isa(detected_isa());
}

TEST(streamed_quantize_output_any_alignment) {
  // Outputs of >= 16 MiB use non-temporal stores (AVX-512) after an unaligned head.
  const int64_t n = (int64_t(16) << 20) + 37;
  const std::vector<float> x = random_floats(n, 17, 3.0f);
  std::vector<uint8_t> out(static_cast<size_t>(n) + 16);
  const float scale = 0.0173f;
  const int32_t zp = -3;
  for (int64_t shift : {0, 5}) {
    uint8_t* dst = out.data() + shift;
    for (bool per_channel : {false, true}) {
      CHECK(quantize(x.data(), DType::kFloat32, {1, 1, n}, per_channel, &scale, &zp, QType::kInt8, dst, 3) ==
            Status::kOk);
      int64_t wrong = 0;
      for (int64_t i = 0; i < n; i += 1) {
        wrong += int32_t(int8_t(dst[i])) != oracle_quantize(x[size_t(i)], scale, zp, per_channel, QType::kInt8);
      }
      CHECK(wrong == 0);
    }
  }
}

TEST(half_conversions) {
  CHECK(float_to_fp16(1.0f) == 0x3c00);
  CHECK(float_to_fp16(-2.0f) == 0xc000);
  CHECK(float_to_fp16(65504.0f) == 0x7bff);
  CHECK(float_to_fp16(65519.0f) == 0x7bff);
  CHECK(float_to_fp16(65520.0f) == 0x7c00);  // tie rounds to even: Inf
  CHECK(float_to_fp16(1.0f + 1.0f / 2048) == 0x3c00);          // tie to even (down)
  CHECK(float_to_fp16(1.0f + 3.0f / 2048) == 0x3c02);          // tie to even (up)
  CHECK(float_to_fp16(std::ldexp(1.0f, -24)) == 0x0001);       // smallest subnormal
  CHECK(float_to_fp16(std::ldexp(1.0f, -25)) == 0x0000);       // tie to even: 0
  CHECK(float_to_fp16(std::ldexp(3.0f, -25)) == 0x0002);       // tie to even: 2
  CHECK(float_to_fp16(std::ldexp(1023.5f, -24)) == 0x0400);    // rounds up into the normals
  CHECK(float_to_fp16(INFINITY) == 0x7c00);
  CHECK((float_to_fp16(NAN) & 0x7c00) == 0x7c00 && (float_to_fp16(NAN) & 0x3ff) != 0);
  // Round trip of every finite half.
  int64_t wrong = 0;
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00) continue;
    wrong += float_to_fp16(fp16_to_float(uint16_t(h))) != h;
  }
  CHECK(wrong == 0);
  CHECK(float_to_bf16(1.0f) == 0x3f80);
  CHECK(float_to_bf16(bits_to_float(0x3f808000u)) == 0x3f80);  // tie to even (down)
  CHECK(float_to_bf16(bits_to_float(0x3f818000u)) == 0x3f82);  // tie to even (up)
  CHECK(float_to_bf16(bits_to_float(0x7f7fffffu)) == 0x7f80);  // FLT_MAX rounds to Inf
  CHECK((float_to_bf16(NAN) & 0x7fff) > 0x7f80);
}

TEST(choose_qparams_conventions) {
  for (Isa isa : supported_isas()) {
    CHECK(set_active_isa(isa));
    float scale[3];
    int32_t zp[3];
    // Channel 0 all zero, channel 1 in [-1, 3], channel 2 in [2, 4] (range widened to 0).
    const int64_t inner = 50;
    std::vector<float> x(size_t(3 * inner), 0.0f);
    for (int64_t i = 0; i < inner; ++i) {
      x[size_t(inner + i)] = -1.0f + 4.0f * float(i) / float(inner - 1);
      x[size_t(2 * inner + i)] = 2.0f + 2.0f * float(i) / float(inner - 1);
    }
    CHECK(choose_qparams(x.data(), DType::kFloat32, {1, 3, inner}, false, QType::kUInt8, scale, zp, 2) == Status::kOk);
    CHECK(scale[0] == kMinChooseScale && zp[0] == 0);
    CHECK(scale[1] == float(4.0 / 255.0) && zp[1] == 64);
    CHECK(scale[2] == float(4.0 / 255.0) && zp[2] == 0);
    CHECK(choose_qparams(x.data(), DType::kFloat32, {1, 3, inner}, true, QType::kInt8, scale, zp, 2) == Status::kOk);
    CHECK(scale[1] == float(3.0 / 127.0) && zp[1] == 0 && scale[0] == kMinChooseScale);
    CHECK(choose_qparams(x.data(), DType::kFloat32, {1, 3, inner}, true, QType::kUInt8, scale, zp, 2) == Status::kOk);
    CHECK(zp[0] == 128 && zp[2] == 128);
    // Per tensor, and the same data viewed with short rows (inner = 1).
    CHECK(choose_qparams(x.data(), DType::kFloat32, {1, 1, 3 * inner}, false, QType::kInt8, scale, zp, 3) == Status::kOk);
    CHECK(scale[0] == float(5.0 / 255.0) && zp[0] == -128 + 51);
    std::vector<float> xt(x.size());
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t i = 0; i < inner; ++i) xt[size_t(i * 3 + c)] = x[size_t(c * inner + i)];
    CHECK(choose_qparams(xt.data(), DType::kFloat32, {inner, 3, 1}, false, QType::kUInt8, scale, zp, 2) == Status::kOk);
    CHECK(scale[1] == float(4.0 / 255.0) && zp[1] == 64 && scale[0] == kMinChooseScale);
    // Non-finite input anywhere is reported.
    for (int64_t where : {int64_t(0), int64_t(77), int64_t(3 * inner - 1)}) {
      for (float bad : {NAN, INFINITY, -INFINITY}) {
        std::vector<float> y = x;
        y[size_t(where)] = bad;
        CHECK(choose_qparams(y.data(), DType::kFloat32, {1, 3, inner}, false, QType::kInt8, scale, zp, 2) ==
              Status::kNonFinite);
        CHECK(choose_qparams(y.data(), DType::kFloat32, {1, 1, 3 * inner}, true, QType::kInt8, scale, zp, 1) ==
              Status::kNonFinite);
      }
    }
  }
  set_active_isa(detected_isa());
}

TEST(invalid_arguments_rejected) {
  float x[4] = {1, 2, 3, 4};
  uint8_t q[4];
  float out[4];
  const float good_scale = 0.5f;
  const int32_t good_zp = 0;
  bool bad_scale = false;
  for (float s : {0.0f, -1.0f, NAN, INFINITY, 1e-45f}) {
    CHECK(find_invalid_qparams(&s, &good_zp, 1, QType::kInt8, &bad_scale) == 0 && bad_scale);
    CHECK(quantize(x, DType::kFloat32, {1, 1, 4}, false, &s, &good_zp, QType::kInt8, q, 1) == Status::kInvalidArgument);
  }
  const int32_t zps[2] = {0, 128};
  const float scales[2] = {0.5f, 0.5f};
  CHECK(find_invalid_qparams(scales, zps, 2, QType::kInt8, &bad_scale) == 1 && !bad_scale);
  CHECK(find_invalid_qparams(scales, zps, 2, QType::kUInt8, &bad_scale) == -1);
  CHECK(dequantize(q, QType::kInt8, {1, 2, 2}, scales, zps, out, DType::kFloat32, 1) == Status::kInvalidArgument);
  CHECK(quantize(x, DType::kFloat32, {1, 2, 2}, false, scales, zps, QType::kUInt8, q, 1) == Status::kInvalidArgument);
  CHECK(quantize(x, DType::kFloat32, {-1, 1, 4}, false, &good_scale, &good_zp, QType::kInt8, q, 1) ==
        Status::kInvalidArgument);
  CHECK(quantize(nullptr, DType::kFloat32, {1, 1, 4}, false, &good_scale, &good_zp, QType::kInt8, q, 1) ==
        Status::kInvalidArgument);
  CHECK(quantize(x, DType::kFloat32, {1, 1, 4}, false, &good_scale, &good_zp, QType(7), q, 1) ==
        Status::kInvalidArgument);
  CHECK(quantize(nullptr, DType::kFloat32, {1, 1, 0}, false, &good_scale, &good_zp, QType::kInt8, nullptr, 1) ==
        Status::kOk);
  float s;
  int32_t z;
  CHECK(choose_qparams(nullptr, DType::kFloat32, {1, 1, 0}, false, QType::kInt8, &s, &z, 1) == Status::kOk);
  CHECK(s == kMinChooseScale && z == -128);  // asymmetric int8: range [0, 0] sits at qmin
}

SLIMTORCH_TEST_MAIN()
