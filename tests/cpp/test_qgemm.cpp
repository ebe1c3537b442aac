// qgemm kernels on every ISA path against scalar oracles written here from
// the contract in slimtorch/qgemm.h.
#include "slimtorch/qgemm.h"
#include "../../csrc/cpu/line_aligned.h"

#include <cfloat>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "check.h"

using namespace slimtorch;
using slimtorch::testing::kHalfIoPairs;
using slimtorch::testing::supported_isas;
using slimtorch::testing::to_half;

namespace {

struct Shape {
  int64_t m, k, n;
};

// 1s, group (4) / block (16) / column tile (64) / row tiles (2, 4, 6) +/- 1.
const Shape kShapes[] = {{1, 1, 1},   {1, 3, 5},    {2, 4, 16},  {3, 5, 17},  {5, 63, 63},
                         {6, 64, 64}, {7, 65, 65},  {13, 9, 129}, {1, 768, 77}, {40, 130, 200},
                         {20, 2500, 70}};  // last: K blocking over several row tiles

std::vector<int8_t> random_weights(int64_t n, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> dist(-127, 127);
  std::vector<int8_t> q(size_t(n * k));
  for (auto& v : q) v = int8_t(dist(rng));
  return q;
}

std::vector<int8_t> pack(const std::vector<int8_t>& q, int64_t n, int64_t k, std::vector<int32_t>* colsum) {
  std::vector<int8_t> packed(size_t(qgemm_packed_bytes(n, k)) + 1);  // +1: never a null pointer
  colsum->assign(size_t(n), -1);
  CHECK(qgemm_pack(q.data(), n, k, k, packed.data(), colsum->data()) == Status::kOk);
  return packed;
}

}  // namespace

TEST(line_aligned_scratch_starts_on_a_cache_line) {
  // Tile rows and wide vectors read the kernels' scratch; a row split across
  // two lines slowed the AMX tiles by a fifth. Every size and element type,
  // also after reset, starts on a 64-byte boundary and is writable to its end.
  LineAlignedArray<float> empty;
  CHECK(empty.get() == nullptr);
  for (size_t count : {size_t(1), size_t(3), size_t(16), size_t(1000), size_t(65537)}) {
    LineAlignedArray<uint8_t> bytes(count);
    LineAlignedArray<uint16_t> halves(count);
    LineAlignedArray<int32_t> ints(count);
    CHECK(reinterpret_cast<uintptr_t>(bytes.get()) % kCacheLineBytes == 0);
    CHECK(reinterpret_cast<uintptr_t>(halves.get()) % kCacheLineBytes == 0);
    CHECK(reinterpret_cast<uintptr_t>(ints.get()) % kCacheLineBytes == 0);
    std::memset(bytes.get(), 1, count);
    std::memset(ints.get(), 2, count * sizeof(int32_t));  // the sanitizers see an overrun
    empty.reset(count);
    CHECK(reinterpret_cast<uintptr_t>(empty.get()) % kCacheLineBytes == 0);
    empty.get()[count - 1] = 1.0f;
  }
}

TEST(pack_layout) {
  const int64_t n = 18, k = 6;
  const std::vector<int8_t> q = random_weights(n, k, 1);
  std::vector<int32_t> colsum;
  const std::vector<int8_t> packed = pack(q, n, k, &colsum);
  CHECK(qgemm_packed_bytes(n, k) == 2 * 2 * 64);
  for (int64_t nb = 0; nb < 2; ++nb)
    for (int64_t g = 0; g < 2; ++g)
      for (int64_t j = 0; j < 16; ++j)
        for (int64_t i = 0; i < 4; ++i) {
          const int64_t row = nb * 16 + j, col = g * 4 + i;
          const int8_t expected = row < n && col < k ? q[size_t(row * k + col)] : 0;
          CHECK(packed[size_t(((nb * 2 + g) * 16 + j) * 4 + i)] == expected);
        }
  for (int64_t row = 0; row < n; ++row) {
    int32_t sum = 0;
    for (int64_t col = 0; col < k; ++col) sum += q[size_t(row * k + col)];
    CHECK(colsum[size_t(row)] == sum);
  }
}

TEST(u8s8s32_exact_on_every_path) {
  for (Isa isa : supported_isas()) {
    CHECK(set_active_isa(isa));
    for (const Shape& s : kShapes) {
      for (int threads : {1, 3}) {
        std::mt19937 rng(uint32_t(s.m * 7 + s.k));
        std::uniform_int_distribution<int> byte(0, 255);
        std::vector<uint8_t> a(size_t(s.m * s.k));
        for (auto& v : a) v = uint8_t(byte(rng));
        const std::vector<int8_t> q = random_weights(s.n, s.k, 2);
        std::vector<int32_t> colsum;
        const std::vector<int8_t> packed = pack(q, s.n, s.k, &colsum);
        std::vector<int32_t> c(size_t(s.m * s.n), 12345);
        CHECK(qgemm_u8s8s32(a.data(), s.m, s.k, s.k, packed.data(), s.n, c.data(), s.n, threads) == Status::kOk);
        for (int64_t r = 0; r < s.m; ++r)
          for (int64_t col = 0; col < s.n; ++col) {
            int64_t sum = 0;
            for (int64_t kk = 0; kk < s.k; ++kk)
              sum += int64_t(a[size_t(r * s.k + kk)]) * q[size_t(col * s.k + kk)];
            CHECK(c[size_t(r * s.n + col)] == sum);
          }
      }
    }
  }
  set_active_isa(detected_isa());
}

TEST(u8s8s32_extremes_at_max_k) {
  // The largest products everywhere: no int16 saturation (AVX2) or int32 overflow.
  const int64_t k = kQgemmMaxK, n = 17;
  std::vector<uint8_t> a(size_t(k), 255);
  std::vector<int8_t> q(size_t(n * k));
  for (int64_t row = 0; row < n; ++row)
    for (int64_t col = 0; col < k; ++col) q[size_t(row * k + col)] = row % 2 ? -127 : 127;
  std::vector<int32_t> colsum;
  const std::vector<int8_t> packed = pack(q, n, k, &colsum);
  for (Isa isa : supported_isas()) {
    CHECK(set_active_isa(isa));
    std::vector<int32_t> c(static_cast<size_t>(n), 0);
    CHECK(qgemm_u8s8s32(a.data(), 1, k, k, packed.data(), n, c.data(), n, 2) == Status::kOk);
    CHECK(c[0] == int64_t(255) * 127 * k);
    CHECK(c[1] == -int64_t(255) * 127 * k);
  }
  set_active_isa(detected_isa());
}

TEST(quantize_rows_contract) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const int64_t k = 19;
  std::vector<float> x(size_t(4 * k), 0.0f);
  for (int64_t i = 0; i < k; ++i) x[size_t(k + i)] = float(i) - 6.0f;  // row 1: [-6, 12]
  x[size_t(2 * k + 5)] = nan;
  x[size_t(3 * k + 7)] = -inf;
  for (Isa isa : supported_isas()) {
    CHECK(set_active_isa(isa));
    std::vector<uint8_t> a(size_t(4 * k), 77);
    float scale[4];
    int32_t zp[4];
    CHECK(quantize_rows_u8(x.data(), 4, k, k, a.data(), k, scale, zp, 2) == Status::kOk);
    CHECK(scale[0] == FLT_EPSILON && zp[0] == 0 && a[0] == 0);
    const float s = float((12.0 - (-6.0)) / 255.0);
    CHECK(scale[1] == s);
    const int32_t z = int32_t(-std::nearbyint(-6.0 / double(s)));
    CHECK(zp[1] == z);
    for (int64_t i = 0; i < k; ++i) {
      volatile float prod = (float(i) - 6.0f) * (1.0f / s);  // volatile: two roundings, never an FMA
      const float t = prod + float(z);
      CHECK(a[size_t(k + i)] == uint8_t(std::nearbyint(std::fmin(std::fmax(t, 0.0f), 255.0f))));
      CHECK(a[size_t(2 * k + i)] == 0 && a[size_t(3 * k + i)] == 0);
    }
    CHECK(std::isnan(scale[2]) && std::isnan(scale[3]) && zp[2] == 0 && zp[3] == 0);
  }
  set_active_isa(detected_isa());
}

TEST(linear_modes_match_oracle) {
  for (Isa isa : supported_isas()) {
    CHECK(set_active_isa(isa));
    for (const Shape& s : kShapes) {
      std::mt19937 rng(uint32_t(s.n));
      std::normal_distribution<float> normal;
      std::vector<float> x(size_t(s.m * s.k)), w_scale(size_t(s.n)), bias(size_t(s.n));
      for (auto& v : x) v = 3.0f * normal(rng);
      for (auto& v : w_scale) v = 0.01f + std::fabs(normal(rng)) * 0.01f;
      for (auto& v : bias) v = normal(rng);
      const std::vector<int8_t> q = random_weights(s.n, s.k, 3);
      std::vector<int32_t> colsum;
      const std::vector<int8_t> packed = pack(q, s.n, s.k, &colsum);
      std::vector<float> y(size_t(s.m * s.n)), y_wo(size_t(s.m * s.n));
      CHECK(qlinear_u8s8(x.data(), s.m, s.k, s.k, packed.data(), w_scale.data(), colsum.data(),
                         bias.data(), s.n, y.data(), s.n, nullptr, 0, 2) == Status::kOk);
      CHECK(qlinear_weight_only(x.data(), s.m, s.k, s.k, packed.data(), w_scale.data(), bias.data(),
                                s.n, y_wo.data(), s.n, 2) == Status::kOk);
      std::vector<uint8_t> a(size_t(s.m * s.k) + 1);
      std::vector<float> a_scale(size_t(s.m));
      std::vector<int32_t> zp(size_t(s.m));
      CHECK(quantize_rows_u8(x.data(), s.m, s.k, s.k, a.data(), s.k, a_scale.data(), zp.data(), 1) == Status::kOk);
      for (int64_t r = 0; r < s.m; ++r)
        for (int64_t col = 0; col < s.n; ++col) {
          int64_t acc = 0;
          double dot = 0.0, mag = 0.0;
          for (int64_t kk = 0; kk < s.k; ++kk) {
            const int8_t wq = q[size_t(col * s.k + kk)];
            acc += int64_t(a[size_t(r * s.k + kk)] - zp[size_t(r)]) * wq;
            dot += double(x[size_t(r * s.k + kk)]) * wq;
            mag += std::fabs(double(x[size_t(r * s.k + kk)]) * wq);
          }
          const double p = double(acc) * (double(a_scale[size_t(r)]) * w_scale[size_t(col)]);
          const double got = y[size_t(r * s.n + col)];
          CHECK(std::fabs(got - (p + bias[size_t(col)])) <= 8 * FLT_EPSILON * (std::fabs(p) + std::fabs(bias[size_t(col)])));
          const double wo = dot * w_scale[size_t(col)] + bias[size_t(col)];
          // Paths with native bf16 round x to bf16 (relative 2^-8 at most) from
          // weight_only_bf16_min_rows() rows on.
          const int64_t bf16_rows = weight_only_bf16_min_rows();
          const double x_rounding = bf16_rows > 0 && s.m >= bf16_rows ? 1.0 / 256 : 0.0;
          const double bound = (x_rounding + (double(s.k) + 4) * FLT_EPSILON) * (mag * w_scale[size_t(col)] + std::fabs(bias[size_t(col)]));
          CHECK(std::fabs(double(y_wo[size_t(r * s.n + col)]) - wo) <= bound);
        }
    }
  }
  set_active_isa(detected_isa());
}

// Weight-only where the path rounds x to bf16 (AMX tiles, AVX512-BF16): the
// int8 weights are exact in bf16 and the products are summed in float32, so
// the result is within float32 summation error of the exact dot product of
// bf16(x) with q (and so within 2^-8 relative of the float32 result). Edges
// of the row tiles (6 rows; AMX 16), the 16-column blocks, the 32-value
// steps of the staged rows, and several row panels.
TEST(weight_only_bf16_bound) {
  for (Isa isa : supported_isas()) {
    CHECK(set_active_isa(isa));
    const int64_t bf16_rows = weight_only_bf16_min_rows();
    if (bf16_rows == 0) continue;
    std::printf("  weight-only bf16 on %s from %lld rows\n", isa_name(isa), (long long)bf16_rows);
    const auto within_bound = [](int64_t m, int64_t k, int64_t n) {
      std::mt19937 rng(uint32_t(m * 31 + n * 7 + k));
      std::normal_distribution<float> normal;
      std::vector<float> x(static_cast<size_t>(m * k)), w_scale(static_cast<size_t>(n)), bias(static_cast<size_t>(n));
      for (auto& v : x) v = 3.0f * normal(rng);
      for (auto& v : w_scale) v = 0.01f + std::fabs(normal(rng)) * 0.01f;
      for (auto& v : bias) v = normal(rng);
      const std::vector<int8_t> q = random_weights(n, k, uint32_t(k));
      std::vector<int32_t> colsum;
      const std::vector<int8_t> packed = pack(q, n, k, &colsum);
      std::vector<float> y(size_t(m * n));
      CHECK(qlinear_weight_only(x.data(), m, k, k, packed.data(), w_scale.data(), bias.data(), n, y.data(), n, 2) ==
            Status::kOk);
      bool ok = true;
      for (int64_t r = 0; r < m; ++r)
        for (int64_t col = 0; col < n; ++col) {
          double dot = 0.0, mag = 0.0;
          for (int64_t kk = 0; kk < k; ++kk) {
            const double xb = bf16_to_float(float_to_bf16(x[size_t(r * k + kk)]));
            dot += xb * q[size_t(col * k + kk)];
            mag += std::fabs(xb * q[size_t(col * k + kk)]);
          }
          const double ws = w_scale[size_t(col)], b = bias[size_t(col)];
          const double bound = (double(k) + 4) * FLT_EPSILON * (mag * ws + std::fabs(b));
          ok &= std::fabs(double(y[size_t(r * n + col)]) - (dot * ws + b)) <= bound;
        }
      if (!ok) std::printf("  m=%lld k=%lld n=%lld\n", (long long)m, (long long)k, (long long)n);
      return ok;
    };
    for (int64_t k : {1, 31, 32, 33, 63, 64, 65, 127, 4096 + 4})
      for (int64_t n : {1, 15, 16, 17, 33, 65})
        for (int64_t m : {bf16_rows, bf16_rows + 1, int64_t(17), int64_t(33), int64_t(40)}) CHECK(within_bound(m, k, n));
    CHECK(within_bound(600, 100, 40));
    CHECK(within_bound(200, 4100, 20));
  }
  set_active_isa(detected_isa());
}

TEST(half_activations_and_outputs_round_the_float32_result_once) {
  // x in bfloat16 / float16 is widened exactly, so the quantized rows and the
  // float32 results equal those of the widened x; the 16-bit output is each
  // float32 result rounded to nearest even (odd strides, both row tails; a
  // weight large enough for the AMX tiles where the CPU has them; columns
  // whose results are subnormal when there is no bias).
  const int64_t m = 37, k = 300, n = 260, ldx = 305, ldy = 270;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  const std::vector<int8_t> q = random_weights(n, k, 5);
  std::vector<int32_t> colsum;
  const std::vector<int8_t> packed = pack(q, n, k, &colsum);
  std::vector<float> w_scale(static_cast<size_t>(n)), bias(static_cast<size_t>(n));
  for (auto& v : w_scale) v = 0.01f + std::fabs(normal(rng)) * 0.01f;
  for (int64_t c : {1, 17, 40, 41, 42, 259}) w_scale[size_t(c)] = 3e-41f;
  for (auto& v : bias) v = normal(rng);
  int subnormal_outputs = 0;
  for (DType type : {DType::kBFloat16, DType::kFloat16}) {
    std::vector<uint16_t> x16(size_t(m * ldx));
    std::vector<float> x(size_t(m * ldx));
    for (size_t i = 0; i < x16.size(); ++i) {
      const float v = 3.0f * normal(rng);
      x16[i] = type == DType::kBFloat16 ? float_to_bf16(v) : float_to_fp16(v);
      x[i] = half_to_float(x16[i], type);
    }
    x16[5 * ldx + 3] = type == DType::kBFloat16 ? 0x7fc0 : 0x7e00;  // a NaN row: NaN outputs
    x[5 * ldx + 3] = half_to_float(x16[5 * ldx + 3], type);
    const float x_scale = 0.05f;
    for (Isa isa : supported_isas()) {
      CHECK(set_active_isa(isa));
      for (const float* scale : {static_cast<const float*>(nullptr), &x_scale})
        for (const float* b : {static_cast<const float*>(bias.data()), static_cast<const float*>(nullptr)}) {
          std::vector<float> y(size_t(m * ldy));
          std::vector<uint16_t> y16(size_t(m * ldy), 0xabcd);
          CHECK(qlinear_u8s8(x.data(), m, k, ldx, packed.data(), w_scale.data(), colsum.data(), b, n, y.data(), ldy,
                             scale, 7, 2) == Status::kOk);
          CHECK(qlinear_u8s8(x16.data(), type, m, k, ldx, packed.data(), w_scale.data(), colsum.data(), b, n,
                             y16.data(), type, ldy, scale, 7, 2) == Status::kOk);
          for (int64_t r = 0; r < m; ++r)
            for (int64_t col = 0; col < ldy; ++col) {
              const uint16_t got = y16[size_t(r * ldy + col)];
              if (col >= n) {
                CHECK(got == 0xabcd);  // past n: untouched
                continue;
              }
              const float want = y[size_t(r * ldy + col)];
              subnormal_outputs += std::fpclassify(want) == FP_SUBNORMAL;
              CHECK(got == (type == DType::kBFloat16 ? float_to_bf16(want) : float_to_fp16(want)));
            }
        }
    }
  }
  CHECK(subnormal_outputs > 0);
  set_active_isa(detected_isa());
}

TEST(weight_only_half_io_equals_float32_rounded_once) {
  // Weight-only with float16 / bfloat16 x or y equals, bit for bit, the
  // float32 entry point on the same path run on x widened exactly, with each
  // output rounded once (nearest even). Tile edges: k across the 4-k group
  // and the 32-k bf16 tile step, n across the 16-column block, m across the
  // row tiles and the AMX switch at 16 rows; rows packed, strided on whole
  // cache lines (bf16 x read in place by the AMX tiles), strided oddly and
  // starting off a cache line (staged); a subnormal row, a -0 and a NaN in x;
  // with and without bias.
  struct Layout {
    int64_t pad, multiple, offset;  // ldx = k + pad rounded up to `multiple`; x starts `offset` past a cache line
  };
  const Layout kLayouts[] = {{0, 1, 0}, {1, 32, 0}, {1, 32, 1}, {7, 1, 0}};
  int cases = 0;
  for (Isa isa : supported_isas()) {
    CHECK(set_active_isa(isa));
    for (const auto& pair : kHalfIoPairs)
      for (int64_t k : {1, 3, 31, 32, 33, 64, 65, 100, 256})
        for (int64_t n : {1, 15, 16, 17, 33, 65})
          for (int64_t m : {0, 1, 15, 16, 17, 33})
            for (const Layout& layout : kLayouts) {
              const DType x_type = pair[0], y_type = pair[1];
              const int64_t ldx = (k + layout.pad + layout.multiple - 1) / layout.multiple * layout.multiple;
              const int64_t ldy = n + 3;
              std::mt19937 rng(uint32_t(k * 1009 + n * 31 + m));
              std::normal_distribution<float> normal;
              const std::vector<int8_t> q = random_weights(n, k, uint32_t(k + n));
              std::vector<int32_t> colsum;
              const std::vector<int8_t> packed = pack(q, n, k, &colsum);
              std::vector<float> w_scale(static_cast<size_t>(n)), bias(static_cast<size_t>(n));
              for (auto& v : w_scale) v = 0.01f + std::fabs(normal(rng)) * 0.01f;
              for (auto& v : bias) v = normal(rng);
              // x as given (x_type) in a buffer aligned to 64 bytes, and widened.
              std::vector<float> x(size_t(m * ldx) + 1);
              for (size_t i = 0; i < x.size(); ++i)  // NaN between rows: never read
                x[i] = int64_t(i) % ldx < k ? 3.0f * normal(rng) : std::numeric_limits<float>::quiet_NaN();
              if (m > 2) {  // row 1 subnormal in x_type (visible without bias), row 2 with -0 and NaN
                for (int64_t i = 0; i < k; ++i) x[size_t(ldx + i)] *= x_type == DType::kFloat16 ? 1e-5f : 1e-39f;
                x[size_t(2 * ldx)] = -0.0f;
                x[size_t(2 * ldx + k - 1)] = std::numeric_limits<float>::quiet_NaN();
              }
              std::vector<uint16_t> storage(size_t(m * ldx) + 64);
              uint16_t* const x16 =
                  storage.data() + (-reinterpret_cast<uintptr_t>(storage.data()) & 63) / 2 + layout.offset;
              std::vector<float> fstorage(size_t(m * ldx) + 32);
              float* const x32 = fstorage.data() + (-reinterpret_cast<uintptr_t>(fstorage.data()) & 63) / 4 +
                                 layout.offset;
              for (int64_t i = 0; i < m * ldx; ++i) {
                if (x_type == DType::kFloat32) {
                  x32[i] = x[size_t(i)];
                } else {
                  x16[i] = to_half(x[size_t(i)], x_type);
                  x32[i] = half_to_float(x16[i], x_type);
                }
              }
              const void* x_in = x_type == DType::kFloat32 ? static_cast<const void*>(x32) : x16;
              std::vector<float> want(size_t(m * ldy) + 1, 0.0f), got32(size_t(m * ldy) + 1, -7.0f);
              std::vector<uint16_t> got16(size_t(m * ldy) + 1, 0xabcd);
              void* y_out = y_type == DType::kFloat32 ? static_cast<void*>(got32.data()) : got16.data();
              const float* b = m % 2 ? nullptr : bias.data();
              CHECK(qlinear_weight_only(x32, m, k, ldx, packed.data(), w_scale.data(), b, n, want.data(), ldy, 2) ==
                    Status::kOk);
              {  // NaN left in freed scratch (staged or widened rows): none of it may be read.
                const std::vector<float> poison(fstorage.size(), std::nanf(""));
                std::vector<float> junk(want.size());
                CHECK(qlinear_weight_only(poison.data(), m, k, ldx, packed.data(), w_scale.data(), b, n, junk.data(),
                                          ldy, 2) == Status::kOk);
              }
              CHECK(qlinear_weight_only(x_in, x_type, m, k, ldx, packed.data(), w_scale.data(), b, n, y_out, y_type,
                                        ldy, 2) == Status::kOk);
              bool ok = true;
              for (int64_t r = 0; r < m; ++r)
                for (int64_t col = 0; col < ldy; ++col) {
                  const size_t at = size_t(r * ldy + col);
                  if (y_type == DType::kFloat32) {
                    const float expected = col < n ? want[at] : -7.0f;  // past n: untouched
                    ok &= float_to_bits(got32[at]) == float_to_bits(expected);
                  } else {
                    ok &= got16[at] == (col < n ? to_half(want[at], y_type) : uint16_t(0xabcd));
                  }
                }
              if (!ok)
                std::printf("  %s x=%d y=%d m=%lld k=%lld n=%lld ldx=%lld offset=%lld\n", isa_name(isa),
                            int(x_type), int(y_type), (long long)m, (long long)k, (long long)n,
                            (long long)ldx, (long long)layout.offset);
              CHECK(ok);
              ++cases;
            }
  }
  CHECK(cases > 0);
  set_active_isa(detected_isa());
}

TEST(static_and_non_finite_rows) {
  const int64_t m = 3, k = 10, n = 20;
  std::vector<float> x(size_t(m * k), 0.5f);
  x[size_t(k + 3)] = std::numeric_limits<float>::quiet_NaN();
  const std::vector<int8_t> q = random_weights(n, k, 4);
  std::vector<int32_t> colsum;
  const std::vector<int8_t> packed = pack(q, n, k, &colsum);
  std::vector<float> w_scale(size_t(n), 0.1f), y(size_t(m * n));
  const float x_scale = 0.01f;
  for (Isa isa : supported_isas()) {
    CHECK(set_active_isa(isa));
    CHECK(qlinear_u8s8(x.data(), m, k, k, packed.data(), w_scale.data(), colsum.data(), nullptr, n,
                       y.data(), n, &x_scale, 100, 1) == Status::kOk);
    for (int64_t col = 0; col < n; ++col) {
      // 0.5 / 0.01 = 50 exactly representable steps: a - zp = 50 everywhere.
      const double expected = 50.0 * colsum[size_t(col)] * (0.01f * 0.1f);
      CHECK(std::fabs(y[size_t(col)] - expected) <= 1e-5 * (1 + std::fabs(expected)));
      CHECK(std::isnan(y[size_t(n + col)]));
      CHECK(y[size_t(2 * n + col)] == y[size_t(col)]);
    }
  }
  set_active_isa(detected_isa());
}

TEST(invalid_arguments_rejected) {
  int8_t packed[64] = {};
  int32_t colsum[1] = {0}, c[1];
  float w_scale[1] = {1.0f}, x[4] = {}, y[1];
  uint8_t a[4] = {};
  CHECK(qgemm_u8s8s32(a, 1, kQgemmMaxK + 1, kQgemmMaxK + 1, packed, 1, c, 1, 1) == Status::kInvalidArgument);
  CHECK(qgemm_u8s8s32(a, -1, 4, 4, packed, 1, c, 1, 1) == Status::kInvalidArgument);
  CHECK(qgemm_u8s8s32(a, 1, 4, 3, packed, 1, c, 1, 1) == Status::kInvalidArgument);  // lda < k
  CHECK(qgemm_u8s8s32(nullptr, 1, 4, 4, packed, 1, c, 1, 1) == Status::kInvalidArgument);
  const float bad_scale = 0.0f;
  CHECK(qlinear_u8s8(x, 1, 4, 4, packed, w_scale, colsum, nullptr, 1, y, 1, &bad_scale, 0, 1) == Status::kInvalidArgument);
  const float good_scale = 1.0f;
  CHECK(qlinear_u8s8(x, 1, 4, 4, packed, w_scale, colsum, nullptr, 1, y, 1, &good_scale, 256, 1) == Status::kInvalidArgument);
  CHECK(qlinear_u8s8(x, 1, 4, 4, packed, nullptr, colsum, nullptr, 1, y, 1, nullptr, 0, 1) == Status::kInvalidArgument);
  CHECK(qlinear_weight_only(x, 1, 4, 4, packed, w_scale, nullptr, 1, nullptr, 1, 1) == Status::kInvalidArgument);
  CHECK(qgemm_pack(nullptr, 1, 4, 4, packed, colsum) == Status::kInvalidArgument);
  CHECK(qgemm_u8s8s32(nullptr, 0, 4, 4, nullptr, 1, nullptr, 1, 1) == Status::kOk);  // empty
}

SLIMTORCH_TEST_MAIN()
