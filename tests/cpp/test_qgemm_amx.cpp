// The AMX tile paths of the qgemm kernels: every tile edge case of the
// integer GEMM against a scalar oracle (exact int32), the linear epilogue
// bit-exact against the AVX-512 VNNI path, the bf16 weight-only path within
// its bound, and tile configuration per thread. Skips (passing) on
// CPUs or builds without AMX, and says so.
#include <cfloat>
#include <cmath>
#include <atomic>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "slimtorch/qgemm.h"
#if defined(SLIMTORCH_HAVE_AMX)
#include "../../csrc/cpu/qgemm_amx.h"

// Every shape of the grids below runs on the tiles, however small its weight.
static const bool all_shapes_on_amx = (slimtorch::set_amx_min_int_weight(0), true);
#endif

using namespace slimtorch;

namespace {

bool have_amx() {
  if (detected_isa() == Isa::kAmx) return true;
  std::printf("  skipped: %s\n", amx_status());
  return false;
}

struct Problem {
  int64_t m, k, n, lda, ldc;
  std::vector<uint8_t> a;
  std::vector<int8_t> q, packed;
  std::vector<int32_t> colsum;

  Problem(int64_t m_, int64_t k_, int64_t n_, uint32_t seed, int64_t lda_pad = 0, int64_t ldc_pad = 0)
      : m(m_), k(k_), n(n_), lda(k_ + lda_pad), ldc(n_ + ldc_pad) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> byte(0, 255), weight(-127, 127);
    a.resize(size_t(m * lda) + 1);
    for (auto& v : a) v = uint8_t(byte(rng));
    q.resize(size_t(n * k) + 1);
    for (auto& v : q) v = int8_t(weight(rng));
    packed.assign(size_t(qgemm_packed_bytes(n, k)) + 1, 0);
    colsum.assign(size_t(n) + 1, 0);
    CHECK(qgemm_pack(q.data(), n, k, k, packed.data(), colsum.data()) == Status::kOk);
  }

  int64_t expected(int64_t r, int64_t col) const {
    int64_t sum = 0;
    for (int64_t kk = 0; kk < k; ++kk) sum += int64_t(a[size_t(r * lda + kk)]) * q[size_t(col * k + kk)];
    return sum;
  }

  // qgemm_u8s8s32 on the active path; true when every entry is exact and the
  // padding columns of c are untouched.
  bool run_exact(int threads) const {
    std::vector<int32_t> c(size_t(m * ldc) + 1, 12345);
    if (qgemm_u8s8s32(a.data(), m, k, lda, packed.data(), n, c.data(), ldc, threads) != Status::kOk)
      return false;
    for (int64_t r = 0; r < m; ++r)
      for (int64_t col = 0; col < ldc; ++col) {
        const int64_t want = col < n ? expected(r, col) : 12345;
        if (c[size_t(r * ldc + col)] != want) return false;
      }
    return true;
  }
};

// A random n x k linear weight, packed: scales min_scale + |normal| / 100,
// bias normal, q uniform in [-127, 127], drawn from rng in that order.
struct LinearWeight {
  std::vector<float> w_scale, bias;
  std::vector<int8_t> q, packed;
  std::vector<int32_t> colsum;

  template <class Normal>
  LinearWeight(int64_t n, int64_t k, float min_scale, std::mt19937& rng, Normal& normal)
      : w_scale(size_t(n)), bias(size_t(n)), q(size_t(n * k)), packed(size_t(qgemm_packed_bytes(n, k))),
        colsum(size_t(n)) {
    for (auto& v : w_scale) v = min_scale + std::fabs(normal(rng)) * 0.01f;
    for (auto& v : bias) v = normal(rng);
    std::uniform_int_distribution<int> weight(-127, 127);
    for (auto& v : q) v = int8_t(weight(rng));
    CHECK(qgemm_pack(q.data(), n, k, k, packed.data(), colsum.data()) == Status::kOk);
  }
};

const int64_t kEdgeK[] = {1, 63, 64, 65, 127, 4096 + 4};
const int64_t kEdgeN[] = {1, 15, 16, 17, 33};
const int64_t kEdgeM[] = {0, 1, 15, 16, 17, 33};

}  // namespace

// "on" on AMX hardware, "on (emulated ...)" in SLIMTORCH_AMX_EMULATION builds.
bool amx_on() {
#if defined(SLIMTORCH_AMX_EMULATION)
  return std::string(amx_status()).rfind("on (emulated", 0) == 0;
#else
  return std::string(amx_status()) == "on";
#endif
}

TEST(amx_status_is_on_where_detected) {
  CHECK((detected_isa() == Isa::kAmx) == amx_on());
  if (detected_isa() != Isa::kAmx) return;  // ARM64 paths have larger values than kAmx
  CHECK(set_active_isa(Isa::kAvx512));
  CHECK(std::string(amx_status()).rfind("off: lowered", 0) == 0);
  CHECK(set_active_isa(Isa::kAmx));
  CHECK(amx_on());
}

TEST(amx_u8s8s32_tile_edges_exact) {
  if (!have_amx()) return;
  CHECK(set_active_isa(Isa::kAmx));
  for (int64_t k : kEdgeK)
    for (int64_t n : kEdgeN)
      for (int64_t m : kEdgeM) {
        const Problem p(m, k, n, uint32_t(m * 1000 + n * 10 + k));
        const bool ok = p.run_exact(2);
        if (!ok) std::printf("  m=%lld k=%lld n=%lld\n", (long long)m, (long long)k, (long long)n);
        CHECK(ok);
      }
}

TEST(amx_u8s8s32_strided_and_many_blocks) {
  if (!have_amx()) return;
  CHECK(set_active_isa(Isa::kAmx));
  // Row strides wider than K, several row and column blocks and both row
  // tails; K with a tail in one chunk (1100) and in several (9000), one column tile,
  // a weight over 1 MB (several column panels, uneven per thread), and
  // wide panels at few and many rows (each block's epilogue runs during the
  // next block's tile work).
  for (const Problem& p : {Problem(70, 200, 97, 1, 13, 5), Problem(100, 768, 130, 2, 64, 1),
                           Problem(48, 4, 300, 3, 0, 0), Problem(70, 1100, 20, 4, 0, 3),
                           Problem(81, 1100, 1000, 5, 0, 0), Problem(33, 4096, 300, 6, 64, 0),
                           Problem(100, 72, 1100, 7, 0, 0), Problem(40, 130, 2100, 8, 3, 0),
                           Problem(70, 9000, 130, 9, 0, 0)})
    for (int threads : {1, 2, 3}) CHECK(p.run_exact(threads));
}

TEST(amx_u8s8s32_extremes_at_max_k) {
  if (!have_amx()) return;
  CHECK(set_active_isa(Isa::kAmx));
  const int64_t m = 17, k = kQgemmMaxK, n = 17;
  std::vector<uint8_t> a(size_t(m * k), 255);
  std::vector<int8_t> q(size_t(n * k));
  for (int64_t row = 0; row < n; ++row)
    for (int64_t col = 0; col < k; ++col) q[size_t(row * k + col)] = row % 2 ? -127 : 127;
  std::vector<int8_t> packed(size_t(qgemm_packed_bytes(n, k)));
  CHECK(qgemm_pack(q.data(), n, k, k, packed.data(), nullptr) == Status::kOk);
  std::vector<int32_t> c(size_t(m * n), 0);
  CHECK(qgemm_u8s8s32(a.data(), m, k, k, packed.data(), n, c.data(), n, 2) == Status::kOk);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t col = 0; col < n; ++col)
      CHECK(c[size_t(r * n + col)] == (col % 2 ? -1 : 1) * int64_t(255) * 127 * k);
}

#if defined(SLIMTORCH_HAVE_AMX)
// Below kMinRows qgemm keeps the VNNI kernels; the tile kernel itself must
// still be exact for every row count (one or two row tiles, any tail).
TEST(amx_kernel_every_row_count) {
  if (!have_amx()) return;
  CHECK(set_active_isa(Isa::kAmx));
  for (int64_t m = 1; m <= 40; ++m)
    for (int64_t k : {4, 64, 68, 200}) {
      const int64_t n = 33;
      const Problem p(m, k, n, uint32_t(m + k));
      std::vector<int32_t> c(size_t(m * n), -1);
      amx_int_gemm(p.a.data(), m, k, p.lda, p.packed.data(), n, 2,
                   [&](int64_t m0, int rows, int64_t c0, int64_t cols, const int32_t* acc) {
                     for (int r = 0; r < rows; ++r)
                       std::memcpy(&c[size_t((m0 + r) * n + c0)], acc + r * kAmxAccStride, size_t(cols) * 4);
                   });
      bool ok = true;
      for (int64_t r = 0; r < m; ++r)
        for (int64_t col = 0; col < n; ++col) ok &= c[size_t(r * n + col)] == p.expected(r, col);
      CHECK(ok);
    }
}
#endif

// The linear epilogue is shared, and the sums are exact on both paths, so the
// float outputs must be identical bit for bit, dynamic and static, with zero
// points away from 0 (the colsum compensation) and a NaN row.
TEST(amx_linear_bit_exact_against_vnni) {
  if (!have_amx()) return;
  for (int64_t k : kEdgeK)
    for (int64_t n : kEdgeN)
      for (int64_t m : kEdgeM) {
        std::mt19937 rng(uint32_t(7 * m + 11 * n + k));
        std::normal_distribution<float> normal(0.5f, 2.0f);  // mostly-positive rows: zp > 0
        std::vector<float> x(size_t(m * k) + 1);
        for (auto& v : x) v = normal(rng);
        if (m > 3) x[size_t(2 * k)] = std::numeric_limits<float>::quiet_NaN();
        const LinearWeight w(n, k, 0.001f, rng, normal);
        const float x_scale = 0.03f;
        for (const float* scale : {static_cast<const float*>(nullptr), &x_scale}) {
          std::vector<float> y_amx(size_t(m * n) + 1, 0.0f), y_vnni(size_t(m * n) + 1, 1.0f);
          CHECK(set_active_isa(Isa::kAmx));
          CHECK(qlinear_u8s8(x.data(), m, k, k, w.packed.data(), w.w_scale.data(), w.colsum.data(), w.bias.data(),
                             n, y_amx.data(), n, scale, 77, 2) == Status::kOk);
          CHECK(set_active_isa(Isa::kAvx512));
          CHECK(qlinear_u8s8(x.data(), m, k, k, w.packed.data(), w.w_scale.data(), w.colsum.data(), w.bias.data(),
                             n, y_vnni.data(), n, scale, 77, 2) == Status::kOk);
          CHECK(std::memcmp(y_amx.data(), y_vnni.data(), size_t(m * n) * sizeof(float)) == 0);
        }
      }
  set_active_isa(detected_isa());
}

#if defined(SLIMTORCH_HAVE_AMX)
// From 4 row blocks per thread, with a small weight, the kernel quantizes
// each thread's rows itself (amx_int_gemm_prepares_rows): still bit for bit
// the VNNI path's output, float32 and bfloat16 in/out, dynamic and static,
// for thread counts whose row parts end inside a block.
TEST(amx_linear_rows_quantized_in_the_kernel_bit_exact) {
  if (!have_amx()) return;
  for (int threads : {2, 3})
    for (int64_t m : {int64_t(128 * threads), int64_t(128 * threads + 5), int64_t(1100)})
      for (int64_t k : {64, 65, 200})
        for (int64_t n : {17, 100}) {
          CHECK(amx_int_gemm_prepares_rows(m, n, k, threads));
          std::mt19937 rng(uint32_t(m + 3 * k + 5 * n + threads));
          std::normal_distribution<float> normal(0.5f, 2.0f);
          std::vector<float> x(size_t(m * k));
          for (auto& v : x) v = normal(rng);
          x[size_t(3 * k)] = std::numeric_limits<float>::quiet_NaN();
          std::vector<uint16_t> x16(x.size());
          for (size_t i = 0; i < x.size(); ++i) x16[i] = float_to_bf16(x[i]);
          const LinearWeight w(n, k, 0.001f, rng, normal);
          const float x_scale = 0.03f;
          for (const float* scale : {static_cast<const float*>(nullptr), &x_scale})
            for (DType dtype : {DType::kFloat32, DType::kBFloat16}) {
              const void* in = dtype == DType::kFloat32 ? static_cast<const void*>(x.data()) : x16.data();
              std::vector<float> y_amx(size_t(m * n), 0.0f), y_vnni(size_t(m * n), 1.0f);
              CHECK(set_active_isa(Isa::kAmx));
              CHECK(qlinear_u8s8(in, dtype, m, k, k, w.packed.data(), w.w_scale.data(), w.colsum.data(),
                                 w.bias.data(), n, y_amx.data(), dtype, n, scale, 77, threads) == Status::kOk);
              CHECK(set_active_isa(Isa::kAvx512));
              CHECK(qlinear_u8s8(in, dtype, m, k, k, w.packed.data(), w.w_scale.data(), w.colsum.data(),
                                 w.bias.data(), n, y_vnni.data(), dtype, n, scale, 77, threads) == Status::kOk);
              const size_t bytes = size_t(m * n) * (dtype == DType::kFloat32 ? 4 : 2);
              CHECK(std::memcmp(y_amx.data(), y_vnni.data(), bytes) == 0);
            }
        }
  CHECK(!amx_int_gemm_prepares_rows(4096, 4096, 4096, 1));    // one thread
  CHECK(!amx_int_gemm_prepares_rows(224, 64, 64, 2));         // under 4 row blocks per thread
  CHECK(amx_int_gemm_prepares_rows(256, 64, 64, 2));
  CHECK(!amx_int_gemm_prepares_rows(128, 4096, 4096, 2));     // a large weight and few rows
  CHECK(amx_int_gemm_prepares_rows(1024, 4096, 4096, 2));     // a large weight and many rows
  set_active_isa(detected_isa());
}

// The kernel calls prepare exactly once for every row, on disjoint ranges
// covering all rows, before it reads them; rows it cannot read in place
// (a row stride that is not a multiple of 64) are all prepared first and copied.
TEST(amx_prepare_makes_every_row_once_before_use) {
  if (!have_amx()) return;
  CHECK(set_active_isa(Isa::kAmx));
  for (int64_t lda_pad : {0, 8})
    for (int threads : {2, 3}) {
      const int64_t m = 300, k = 128, n = 40;
      const Problem p(m, k, n, 9, lda_pad);
      // Rows start on a cache line; prepare copies them in from p.a.
      const size_t bytes = size_t(m * p.lda) + 64;
      std::vector<uint8_t> storage(bytes + 64, 0xAB);
      uint8_t* rows = storage.data() + (64 - reinterpret_cast<uintptr_t>(storage.data()) % 64) % 64;
      std::vector<std::atomic<int>> made(static_cast<size_t>(m));
      const AmxPrepareRows prepare = [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          std::memcpy(rows + r * p.lda, &p.a[size_t(r * p.lda)], size_t(k));
          made[size_t(r)].fetch_add(1);
        }
      };
      std::vector<int32_t> c(size_t(m * n), -1);
      amx_int_gemm(rows, m, k, p.lda, p.packed.data(), n, threads,
                   [&](int64_t m0, int rows_in_block, int64_t c0, int64_t cols, const int32_t* acc) {
                     for (int r = 0; r < rows_in_block; ++r)
                       std::memcpy(&c[size_t((m0 + r) * n + c0)], acc + r * kAmxAccStride, size_t(cols) * 4);
                   },
                   &prepare);
      bool once = true, exact = true;
      for (int64_t r = 0; r < m; ++r) {
        once &= made[size_t(r)].load() == 1;
        for (int64_t col = 0; col < n; ++col) exact &= c[size_t(r * n + col)] == p.expected(r, col);
      }
      CHECK(once);
      CHECK(exact);
    }
  set_active_isa(detected_isa());
}
#endif

// Weight-only on bf16 tiles: test_qgemm.cpp's weight_only_bf16_bound covers
// every path that rounds x to bf16, the AMX tiles included.

// Tile configuration is thread state: two threads with different row tails
// (so different configurations) run at once, each on its own tiles, and the
// pool's workers each configure their own.
TEST(amx_threads_keep_their_own_tile_configuration) {
  if (!have_amx()) return;
  CHECK(set_active_isa(Isa::kAmx));
  const Problem first(17, 256, 48, 5), second(40, 130, 33, 6);
  bool ok_first = true, ok_second = true;
  std::thread t1([&] {
    for (int i = 0; i < 20; ++i) ok_first &= first.run_exact(1);
  });
  std::thread t2([&] {
    for (int i = 0; i < 20; ++i) ok_second &= second.run_exact(1);
  });
  t1.join();
  t2.join();
  CHECK(ok_first);
  CHECK(ok_second);
  // Pool: two chunks, each on its own thread.
  for (int i = 0; i < 5; ++i) CHECK(second.run_exact(2) && first.run_exact(2));
}

SLIMTORCH_TEST_MAIN()
