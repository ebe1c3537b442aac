// spmm_forward / spmm_backward_input on every ISA path against a double-precision oracle.
#include "slimtorch/spmm.h"

#include "slimtorch/qgemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <tuple>
#include <vector>

#include "check.h"

using namespace slimtorch;
using slimtorch::testing::kHalfIoPairs;
using slimtorch::testing::supported_isas;
using slimtorch::testing::to_half;

namespace {

// A random packed matrix; value bytes are stored per type, `dense` holds the
// exact (widened, scaled) weights for the oracle.
struct Packed {
  int64_t rows, cols;
  std::vector<int64_t> row_ptr;
  std::vector<uint16_t> idx16;
  std::vector<int32_t> idx32;
  std::vector<float> f32;
  std::vector<uint16_t> half;  // fp16 or bf16 bits
  std::vector<int8_t> i8;
  std::vector<float> scales;
  std::vector<double> dense;
  std::vector<uint16_t> bitmap;  // [rows][ceil(cols / 16)]
  SparseMatrix matrix;
};

uint16_t to_bf16(float x) { return uint16_t(float_to_bits(x) >> 16); }  // truncation is fine here

Packed make(int64_t rows, int64_t cols, double density, SparseValues type, bool wide, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::bernoulli_distribution keep(density);
  Packed p;
  p.rows = rows;
  p.cols = cols;
  p.row_ptr.push_back(0);
  p.dense.assign(size_t(rows * cols), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    const float scale = 0.01f * float(r + 1);
    p.scales.push_back(scale);
    for (int64_t c = 0; c < cols; ++c) {
      if (!keep(rng)) continue;
      const float v = uniform(rng);
      double exact = v;
      switch (type) {
        case SparseValues::kFloat32: p.f32.push_back(v); break;
        case SparseValues::kFloat16: {
          // Values k/1024 in [-1, 1] are exact in fp16: 0x3c00 is 1.0.
          const int k = int(std::lround(v * 1024));
          const float q = float(k) / 1024.0f;
          uint16_t bits = 0;
          if (k != 0) {
            int e = 0;
            const float m = std::frexp(std::fabs(q), &e);  // q = m * 2^e, m in [0.5, 1)
            bits = uint16_t(((e - 1 + 15) << 10) | (int(std::lround(m * 2048)) & 0x3ff));
            if (q < 0) bits |= 0x8000;
          }
          p.half.push_back(bits);
          exact = fp16_to_float(bits);
          break;
        }
        case SparseValues::kBFloat16: p.half.push_back(to_bf16(v)); exact = bf16_to_float(to_bf16(v)); break;
        case SparseValues::kInt8: {
          const int8_t q = int8_t(std::lround(v * 127));
          p.i8.push_back(q);
          exact = double(q) * scale;
          break;
        }
      }
      const int64_t blocks = (cols + 15) / 16;
      if (p.bitmap.empty()) p.bitmap.assign(size_t(rows * blocks), 0);
      p.bitmap[size_t(r * blocks + c / 16)] |= uint16_t(1u << (c % 16));
      p.idx16.push_back(uint16_t(c));
      p.idx32.push_back(int32_t(c));
      p.dense[size_t(r * cols + c)] = exact;
    }
    p.row_ptr.push_back(int64_t(p.idx32.size()));
  }
  if (p.bitmap.empty()) p.bitmap.assign(size_t(rows * ((cols + 15) / 16)), 0);
  SparseMatrix& m = p.matrix;
  m.rows = rows;
  m.cols = cols;
  m.row_ptr = p.row_ptr.data();
  m.wide_idx = wide;
  m.col_idx = wide ? static_cast<const void*>(p.idx32.data()) : static_cast<const void*>(p.idx16.data());
  m.value_type = type;
  m.values = type == SparseValues::kFloat32 ? static_cast<const void*>(p.f32.data())
             : type == SparseValues::kInt8  ? static_cast<const void*>(p.i8.data())
                                            : static_cast<const void*>(p.half.data());
  m.row_scales = type == SparseValues::kInt8 ? p.scales.data() : nullptr;
  return p;
}

std::vector<float> random_vector(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = normal(rng);
  return v;
}

// |error| <= 1e-5 * (sum |terms| + 1): float32 accumulation of a few hundred terms.
bool close(double got, double want, double magnitude) { return std::fabs(got - want) <= 1e-5 * (magnitude + 1.0); }

// x as a kernel takes it in x_type (bits for 16-bit types) and as float32
// (the same values, widened exactly), for the 16-bit I/O tests.
struct HalfInput {
  DType x_type;
  std::vector<uint16_t> x16;
  std::vector<float> x32;
  const void* in() const { return x_type == DType::kFloat32 ? static_cast<const void*>(x32.data()) : x16.data(); }
};
HalfInput half_input(const std::vector<float>& x, DType x_type) {
  HalfInput h{x_type, std::vector<uint16_t>(x.size()), x};
  if (x_type != DType::kFloat32)
    for (size_t i = 0; i < x.size(); ++i) {
      h.x16[i] = to_half(x[i], x_type);
      h.x32[i] = half_to_float(h.x16[i], x_type);
    }
  return h;
}

// Output buffers of n values in y_type with one guard value past the end.
struct HalfOutput {
  DType y_type;
  std::vector<float> y32;
  std::vector<uint16_t> y16;
  void* out() { return y_type == DType::kFloat32 ? static_cast<void*>(y32.data()) : y16.data(); }
};
HalfOutput half_output(int64_t n, DType y_type) {
  return {y_type, std::vector<float>(size_t(n) + 1, -7.0f), std::vector<uint16_t>(size_t(n) + 1, 0xabcd)};
}

// The output holds the float32 results `want` (bit for bit), or each rounded
// once to y_type, and nothing past them.
bool rounded_once(const HalfOutput& got, const std::vector<float>& want, int64_t n) {
  const DType y_type = got.y_type;
  bool ok = got.y32.back() == -7.0f && got.y16.back() == 0xabcd;
  for (int64_t i = 0; i < n; ++i)
    ok &= y_type == DType::kFloat32 ? float_to_bits(got.y32[size_t(i)]) == float_to_bits(want[size_t(i)])
                                    : got.y16[size_t(i)] == to_half(want[size_t(i)], y_type);
  return ok;
}

}  // namespace

TEST(forward_matches_oracle_on_every_path) {
  const SparseValues types[] = {SparseValues::kFloat32, SparseValues::kFloat16, SparseValues::kBFloat16,
                                SparseValues::kInt8};
  for (Isa isa : supported_isas()) {
    CHECK(set_active_isa(isa));
    for (SparseValues type : types) {
      for (bool wide : {false, true}) {
        for (auto [rows, cols, density] : {std::tuple<int64_t, int64_t, double>{37, 300, 0.3},
                                           {1, 1, 1.0}, {5, 17, 0.0}, {64, 33, 0.9},
                                           {9, 100, 0.6}, {3, 1000, 0.5}}) {
          Packed p = make(rows, cols, density, type, wide, uint32_t(rows * 7 + cols));
          for (int64_t batch : {1, 2, 3, 4, 15, 16, 17, 33, 65, 130, 400}) {  // 400: panel-major on 3 threads
            const int64_t ldx = cols + 3;  // a padded row stride
            const std::vector<float> x = random_vector(batch * ldx, uint32_t(batch));
            const std::vector<float> bias = random_vector(rows, 99);
            for (int threads : {1, 3}) {
            for (bool use_bitmap : {false, true}) {
              SparseMatrix matrix = p.matrix;
              matrix.bitmap = use_bitmap ? p.bitmap.data() : nullptr;
              std::vector<float> y(size_t(batch * rows), -7.0f);
              CHECK(spmm_forward(matrix, x.data(), batch, ldx, bias.data(), y.data(), threads) == Status::kOk);
              for (int64_t b = 0; b < batch; ++b) {
                for (int64_t r = 0; r < rows; ++r) {
                  double want = bias[size_t(r)], magnitude = std::fabs(want);
                  for (int64_t c = 0; c < cols; ++c) {
                    const double term = p.dense[size_t(r * cols + c)] * x[size_t(b * ldx + c)];
                    want += term;
                    magnitude += std::fabs(term);
                  }
                  CHECK(close(y[size_t(b * rows + r)], want, magnitude));
                }
              }
            }
            }
          }
        }
      }
    }
  }
  set_active_isa(detected_isa());
}

TEST(bitmap_gemv_bf16_is_the_same_with_and_without_vbmi2) {
  // bfloat16 values expand from memory with AVX512_VBMI2, after a masked
  // load without it: the same lanes, the same sums, bit for bit.
  if (detected_isa() < Isa::kAvx512 || !cpu_has_avx512_vbmi2()) {
    std::printf("  skipped: no AVX512_VBMI2\n");
    return;
  }
  CHECK(set_active_isa(Isa::kAvx512));
  for (auto [rows, cols, density] : {std::tuple<int64_t, int64_t, double>{37, 300, 0.3}, {1, 1, 1.0},
                                     {64, 33, 0.9}, {9, 100, 0.6}, {3, 1000, 0.25}, {200, 768, 0.2}}) {
    Packed p = make(rows, cols, density, SparseValues::kBFloat16, false, uint32_t(rows * 5 + cols));
    if (p.bitmap.empty()) continue;  // no nonzeros
    SparseMatrix matrix = p.matrix;
    matrix.bitmap = p.bitmap.data();
    const std::vector<float> x = random_vector(cols, 3), bias = random_vector(rows, 4);
    const size_t n = size_t(rows);
    std::vector<float> with(n), without(n);
    CHECK(spmm_forward(matrix, x.data(), 1, cols, bias.data(), with.data(), 2) == Status::kOk);
    allow_avx512_vbmi2(false);
    CHECK(spmm_forward(matrix, x.data(), 1, cols, bias.data(), without.data(), 2) == Status::kOk);
    allow_avx512_vbmi2(true);
    CHECK(std::memcmp(with.data(), without.data(), with.size() * sizeof(float)) == 0);
    for (int64_t r = 0; r < rows; ++r) {
      double want = bias[size_t(r)], magnitude = std::fabs(want);
      for (int64_t c = 0; c < cols; ++c) {
        const double term = p.dense[size_t(r * cols + c)] * x[size_t(c)];
        want += term;
        magnitude += std::fabs(term);
      }
      CHECK(close(with[size_t(r)], want, magnitude));
    }
  }
  set_active_isa(detected_isa());
}

TEST(half_activations_and_outputs_equal_float32_rounded_once) {
  // float16 / bfloat16 x or y: bit for bit the float32 forward on the same
  // path run on x widened exactly, each output rounded once (nearest even).
  // Every path: gathers (1-3 rows), the bitmap GEMV, panels with a partial
  // last panel, built by several threads (1000 columns), panel-major (400
  // rows: each thread builds its own panels); padded rows (NaN between rows:
  // never read), empty batch.
  int cases = 0;
  for (Isa isa : supported_isas()) {
    CHECK(set_active_isa(isa));
    for (SparseValues type : {SparseValues::kFloat32, SparseValues::kBFloat16, SparseValues::kInt8})
      for (auto [rows, cols, density] : {std::tuple<int64_t, int64_t, double>{37, 300, 0.3}, {1, 1, 1.0},
                                         {64, 33, 0.9}, {9, 100, 0.6}, {5, 1000, 0.5}}) {
        Packed p = make(rows, cols, density, type, false, uint32_t(rows * 5 + cols));
        const std::vector<float> bias = random_vector(rows, 7);
        for (int64_t batch : {0, 1, 2, 3, 4, 17, 65, 130, 400}) {
          const int64_t ldx = cols + 3;
          std::vector<float> x = random_vector(batch * ldx + 1, uint32_t(batch + cols));
          for (int64_t i = 0; i < batch * ldx; ++i)
            if (i % ldx >= cols) x[size_t(i)] = std::nanf("");
          for (const auto& pair : kHalfIoPairs)
            for (bool use_bitmap : {false, true}) {
              const DType x_type = pair[0], y_type = pair[1];
              SparseMatrix matrix = p.matrix;
              matrix.bitmap = use_bitmap ? p.bitmap.data() : nullptr;
              const HalfInput in = half_input(x, x_type);
              const float* b = batch % 2 ? bias.data() : nullptr;
              std::vector<float> want(size_t(batch * rows) + 1);
              HalfOutput got = half_output(batch * rows, y_type);
              CHECK(spmm_forward(matrix, in.x32.data(), batch, ldx, b, want.data(), 3) == Status::kOk);
              // NaN left in the kernels' scratch (transposed panels): none of it may survive.
              const std::vector<float> poison(x.size(), std::nanf(""));
              std::vector<float> junk(want.size());
              CHECK(spmm_forward(matrix, poison.data(), batch, ldx, b, junk.data(), 3) == Status::kOk);
              CHECK(spmm_forward(matrix, in.in(), x_type, batch, ldx, b, got.out(), y_type, 3) == Status::kOk);
              const bool ok = rounded_once(got, want, batch * rows);
              if (!ok)
                std::printf("  %s values=%d x=%d y=%d rows=%lld cols=%lld batch=%lld bitmap=%d\n", isa_name(isa),
                            int(type), int(x_type), int(y_type), (long long)rows, (long long)cols, (long long)batch,
                            int(use_bitmap));
              CHECK(ok);
              ++cases;
            }
        }
      }
  }
  CHECK(cases > 0);
  set_active_isa(detected_isa());
}

namespace {

// Reverses the nonzeros of every odd row (columns then descend there).
void reverse_odd_rows(Packed& p) {
  for (int64_t r = 1; r < p.rows; r += 2) {
    const auto a = p.row_ptr[size_t(r)], b = p.row_ptr[size_t(r + 1)];
    std::reverse(p.idx16.begin() + a, p.idx16.begin() + b);
    std::reverse(p.idx32.begin() + a, p.idx32.begin() + b);
    if (!p.f32.empty()) std::reverse(p.f32.begin() + a, p.f32.begin() + b);
    if (!p.half.empty()) std::reverse(p.half.begin() + a, p.half.begin() + b);
    if (!p.i8.empty()) std::reverse(p.i8.begin() + a, p.i8.begin() + b);
  }
}

}  // namespace

TEST(column_blocks_match_oracle_and_round_once) {
  // Layers over 2048 inputs at 800 rows go block by block of columns on
  // every path (4+ panels per thread on 1 and 3 threads), with the nonzeros
  // regrouped per call: ascending rows and, in the second variant, odd rows
  // descending. 30 nonzeros a row over 3000 columns: too few per block,
  // one block. A 16-bit x and y give the float32 result rounded once.
  int cases = 0;
  for (Isa isa : supported_isas()) {
    CHECK(set_active_isa(isa));
    for (SparseValues type : {SparseValues::kFloat32, SparseValues::kFloat16, SparseValues::kBFloat16,
                              SparseValues::kInt8})
      for (auto [rows, cols, density] : {std::tuple<int64_t, int64_t, double>{5, 2100, 0.5}, {24, 2300, 0.06},
                                         {4, 3000, 0.01}})
        for (bool descending : {false, true}) {
          Packed p = make(rows, cols, density, type, rows % 2 == 0, uint32_t(rows + cols));
          if (descending) reverse_odd_rows(p);
          const int64_t batch = 800, ldx = cols + 1;
          const std::vector<float> x = random_vector(batch * ldx, uint32_t(cols)), bias = random_vector(rows, 3);
          std::vector<double> want(size_t(batch * rows)), magnitude(size_t(batch * rows));
          for (int64_t b = 0; b < batch; ++b)
            for (int64_t r = 0; r < rows; ++r) {
              double sum = bias[size_t(r)], size = std::fabs(sum);
              for (int64_t k = p.row_ptr[size_t(r)]; k < p.row_ptr[size_t(r + 1)]; ++k) {
                const int64_t c = p.idx32[size_t(k)];
                const double term = p.dense[size_t(r * cols + c)] * x[size_t(b * ldx + c)];
                sum += term;
                size += std::fabs(term);
              }
              want[size_t(b * rows + r)] = sum;
              magnitude[size_t(b * rows + r)] = size;
            }
          for (int threads : {1, 3}) {
            std::vector<float> y(size_t(batch * rows) + 1, -7.0f);
            CHECK(spmm_forward(p.matrix, x.data(), batch, ldx, bias.data(), y.data(), threads) == Status::kOk);
            bool ok = y.back() == -7.0f;
            for (int64_t i = 0; i < batch * rows; ++i) ok &= close(y[size_t(i)], want[size_t(i)], magnitude[size_t(i)]);
            const HalfInput in = half_input(x, DType::kBFloat16);
            std::vector<float> widened(size_t(batch * rows) + 1);
            HalfOutput got = half_output(batch * rows, DType::kBFloat16);
            CHECK(spmm_forward(p.matrix, in.x32.data(), batch, ldx, bias.data(), widened.data(), threads) ==
                  Status::kOk);
            CHECK(spmm_forward(p.matrix, in.in(), DType::kBFloat16, batch, ldx, bias.data(), got.out(),
                               DType::kBFloat16, threads) == Status::kOk);
            ok &= rounded_once(got, widened, batch * rows);
            if (!ok)
              std::printf("  %s values=%d rows=%lld cols=%lld descending=%d threads=%d\n", isa_name(isa), int(type),
                          (long long)rows, (long long)cols, int(descending), threads);
            CHECK(ok);
            ++cases;
          }
        }
  }
  CHECK(cases > 0);
  set_active_isa(detected_isa());
}

TEST(backward_matches_oracle) {
  Packed p = make(23, 41, 0.4, SparseValues::kInt8, false, 5);
  for (int64_t batch : {1, 6}) {
    const std::vector<float> gy = random_vector(batch * 23, 3);
    for (int threads : {1, 2}) {
      std::vector<float> gx(size_t(batch * 41), 123.0f);
      CHECK(spmm_backward_input(p.matrix, gy.data(), batch, gx.data(), threads) == Status::kOk);
      for (int64_t b = 0; b < batch; ++b) {
        for (int64_t c = 0; c < 41; ++c) {
          double want = 0.0, magnitude = 0.0;
          for (int64_t r = 0; r < 23; ++r) {
            const double term = p.dense[size_t(r * 41 + c)] * gy[size_t(b * 23 + r)];
            want += term;
            magnitude += std::fabs(term);
          }
          CHECK(close(gx[size_t(b * 41 + c)], want, magnitude));
        }
      }
    }
  }
}

// The dynamic int8 kernel against exact integer sums of the same row codes.
TEST(int8_dynamic_matches_integer_sums) {
  const Isa previous = active_isa();
  CHECK(set_active_isa(detected_isa()));
  for (auto [rows, cols, batch] : {std::tuple<int64_t, int64_t, int64_t>{37, 100, 65}, {5, 7, 1}, {64, 770, 128},
                                   {300, 64, 130}, {37, 100, 400}}) {  // 400: tile-major on 3 threads
    Packed p = make(rows, cols, 0.2, SparseValues::kInt8, false, uint32_t(rows + cols));
    if (!spmm_dynamic_supported(p.matrix)) {
      std::printf("  (int8_dynamic: no AVX-512 VNNI here, kernel not run)\n");
      break;
    }
    const std::vector<float> x = random_vector(batch * cols, 7), bias = random_vector(rows, 8);
    std::vector<float> y(static_cast<size_t>(batch * rows)), scale(static_cast<size_t>(batch));
    std::vector<uint8_t> codes(static_cast<size_t>(batch * cols));
    std::vector<int32_t> zero_point(static_cast<size_t>(batch));
    CHECK(quantize_rows_u8(x.data(), batch, cols, cols, codes.data(), cols, scale.data(), zero_point.data(), 1) ==
          Status::kOk);
    for (int threads : {1, 3}) {
      CHECK(spmm_forward_dynamic(p.matrix, x.data(), batch, cols, bias.data(), y.data(), threads) == Status::kOk);
      for (int64_t b = 0; b < batch; ++b)
        for (int64_t r = 0; r < rows; ++r) {
          int64_t acc = 0, sum = 0;
          for (int64_t k = p.row_ptr[size_t(r)]; k < p.row_ptr[size_t(r + 1)]; ++k) {
            acc += int64_t(p.i8[size_t(k)]) * codes[size_t(b * cols + p.idx16[size_t(k)])];
            sum += p.i8[size_t(k)];
          }
          const double want = double(acc - zero_point[size_t(b)] * sum) * scale[size_t(b)] * p.scales[size_t(r)] +
                              bias[size_t(r)];
          CHECK(close(y[size_t(b * rows + r)], want, std::fabs(want)));
        }
    }
  }
  CHECK(set_active_isa(previous));
}

TEST(int8_dynamic_half_io_equals_float32_rounded_once) {
  // The dynamic int8 kernel with float16 / bfloat16 x or y: bit for bit its
  // float32 entry point run on x widened exactly, each output rounded once.
  // Padded rows (NaN between rows: never read), a NaN row (NaN outputs),
  // batch across the 64-row tiles, several threads (tile-major from 400 rows).
  const Isa previous = active_isa();
  CHECK(set_active_isa(detected_isa()));
  int cases = 0;
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{37, 100}, {5, 7}, {64, 770}}) {
    Packed p = make(rows, cols, 0.2, SparseValues::kInt8, false, uint32_t(rows + 3 * cols));
    if (!spmm_dynamic_supported(p.matrix)) {
      std::printf("  (int8_dynamic: no AVX-512 VNNI here, kernel not run)\n");
      break;
    }
    const std::vector<float> bias = random_vector(rows, 9);
    for (int64_t batch : {1, 3, 65, 130, 400}) {
      const int64_t ldx = cols + 5;
      std::vector<float> x = random_vector(batch * ldx, uint32_t(batch * 7 + cols));
      for (int64_t i = 0; i < batch * ldx; ++i)
        if (i % ldx >= cols) x[size_t(i)] = std::nanf("");
      if (batch > 2) x[size_t(ldx + 2)] = std::nanf("");  // row 1: NaN outputs
      for (const auto& pair : kHalfIoPairs) {
        const DType x_type = pair[0], y_type = pair[1];
        const HalfInput in = half_input(x, x_type);
        const float* b = batch % 2 ? bias.data() : nullptr;
        std::vector<float> want(size_t(batch * rows));
        HalfOutput got = half_output(batch * rows, y_type);
        CHECK(spmm_forward_dynamic(p.matrix, in.x32.data(), batch, ldx, b, want.data(), 3) == Status::kOk);
        CHECK(spmm_forward_dynamic(p.matrix, in.in(), x_type, batch, ldx, b, got.out(), y_type, 3) == Status::kOk);
        const bool ok = rounded_once(got, want, batch * rows);
        if (!ok)
          std::printf("  x=%d y=%d rows=%lld cols=%lld batch=%lld\n", int(x_type), int(y_type), (long long)rows,
                      (long long)cols, (long long)batch);
        CHECK(ok);
        ++cases;
      }
    }
  }
  CHECK(set_active_isa(previous));
  if (cases == 0) std::printf("  (no case ran)\n");
}

TEST(invalid_arguments_are_rejected) {
  Packed p = make(4, 6, 0.5, SparseValues::kFloat32, false, 1);
  std::vector<float> x(24), y(16);
  CHECK(spmm_forward(p.matrix, x.data(), -1, 6, nullptr, y.data(), 1) == Status::kInvalidArgument);
  CHECK(spmm_forward(p.matrix, x.data(), 2, 5, nullptr, y.data(), 1) == Status::kInvalidArgument);
  CHECK(spmm_forward(p.matrix, x.data(), 2, 6, nullptr, nullptr, 1) == Status::kInvalidArgument);
  CHECK(spmm_forward(p.matrix, x.data(), 2, 6, nullptr, y.data(), 0) == Status::kInvalidArgument);
  SparseMatrix int8_without_scales = p.matrix;
  int8_without_scales.value_type = SparseValues::kInt8;
  CHECK(spmm_forward(int8_without_scales, x.data(), 1, 6, nullptr, y.data(), 1) == Status::kInvalidArgument);
  SparseMatrix too_wide = p.matrix;
  too_wide.cols = 70000;
  CHECK(spmm_forward(too_wide, x.data(), 1, 70000, nullptr, y.data(), 1) == Status::kInvalidArgument);
  // Nothing to do is fine, even without buffers.
  CHECK(spmm_forward(p.matrix, nullptr, 0, 6, nullptr, nullptr, 1) == Status::kOk);
  SparseMatrix empty;
  CHECK(spmm_backward_input(empty, nullptr, 3, nullptr, 1) == Status::kOk);
  // The dynamic kernel takes int8 values only.
  CHECK(!spmm_dynamic_supported(p.matrix));
  CHECK(spmm_forward_dynamic(p.matrix, x.data(), 2, 6, nullptr, y.data(), 1) == Status::kInvalidArgument);
}

SLIMTORCH_TEST_MAIN()
