// Boundary values of every size and offset parameter of the public kernel
// API: zero, one, negative, INT64 extremes, offsets at nnz, empty rows. The
// kernels must answer with a status (never read or write out of bounds; the
// sanitizer build checks that) and give exact results on the edges they accept.
#include <cstdint>
#include <limits>
#include <cmath>
#include <vector>

#include "check.h"
#include "slimtorch/qgemm.h"
#include "slimtorch/spmm.h"
#include "slimtorch/threshold.h"

using namespace slimtorch;

namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
constexpr int64_t kMin = std::numeric_limits<int64_t>::min();

// A 3x4 matrix with an empty first and last row: row 1 holds columns 0 and 3.
struct Small {
  std::vector<int64_t> row_ptr{0, 0, 2, 2};
  std::vector<uint16_t> col{0, 3};
  std::vector<float> values{2.0f, -1.0f};
  SparseMatrix matrix() const {
    SparseMatrix w;
    w.rows = 3;
    w.cols = 4;
    w.row_ptr = row_ptr.data();
    w.col_idx = col.data();
    w.values = values.data();
    return w;
  }
};

}  // namespace

TEST(spmm_exact_on_empty_rows_and_offsets_at_nnz) {
  for (Isa isa : testing::supported_isas()) {
    set_active_isa(isa);
    Small s;
    for (int64_t batch : {1, 2, 17}) {
      std::vector<float> x(batch * 4), y(batch * 3, 99.0f);
      for (int64_t i = 0; i < batch * 4; ++i) x[i] = float(i % 5);
      CHECK(spmm_forward(s.matrix(), x.data(), batch, 4, nullptr, y.data(), 1) == Status::kOk);
      for (int64_t b = 0; b < batch; ++b) {
        CHECK(y[b * 3 + 0] == 0.0f && y[b * 3 + 2] == 0.0f);
        CHECK(y[b * 3 + 1] == 2.0f * x[b * 4 + 0] - x[b * 4 + 3]);
      }
    }
  }
  set_active_isa(detected_isa());
}

TEST(spmm_zero_sizes) {
  std::vector<int64_t> row_ptr{0};
  SparseMatrix w;
  w.rows = 0;
  w.cols = 0;
  w.row_ptr = row_ptr.data();
  float y = 7.0f;
  CHECK(spmm_forward(w, nullptr, 0, 0, nullptr, &y, 1) == Status::kOk);
  Small s;
  CHECK(spmm_forward(s.matrix(), nullptr, 0, 4, nullptr, nullptr, 1) == Status::kOk);  // batch 0
  CHECK(y == 7.0f);
}

TEST(spmm_rejects_bad_sizes) {
  Small s;
  std::vector<float> x(8), y(6);
  for (int64_t batch : {int64_t(-1), kMin, kMax}) {
    CHECK(spmm_forward(s.matrix(), x.data(), batch, 4, nullptr, y.data(), 1) == Status::kInvalidArgument);
  }
  for (int64_t ldx : {int64_t(-1), int64_t(0), int64_t(3), kMin}) {
    CHECK(spmm_forward(s.matrix(), x.data(), 2, ldx, nullptr, y.data(), 1) == Status::kInvalidArgument);
  }
  for (int64_t rows : {int64_t(-1), kMin}) {
    SparseMatrix w = s.matrix();
    w.rows = rows;
    CHECK(spmm_forward(w, x.data(), 2, 4, nullptr, y.data(), 1) == Status::kInvalidArgument);
  }
  for (int64_t cols : {int64_t(-1), kMin, int64_t(65537)}) {  // 16-bit columns hold at most 65536
    SparseMatrix w = s.matrix();
    w.cols = cols;
    CHECK(spmm_forward(w, x.data(), 2, cols > 0 ? cols : 4, nullptr, y.data(), 1) == Status::kInvalidArgument);
  }
  SparseMatrix no_offsets = s.matrix();
  no_offsets.row_ptr = nullptr;
  CHECK(spmm_forward(no_offsets, x.data(), 2, 4, nullptr, y.data(), 1) == Status::kInvalidArgument);
  CHECK(spmm_forward(s.matrix(), nullptr, 2, 4, nullptr, y.data(), 1) == Status::kInvalidArgument);
  CHECK(spmm_forward(s.matrix(), x.data(), 2, 4, nullptr, nullptr, 1) == Status::kInvalidArgument);
  std::vector<float> grad(8);
  CHECK(spmm_backward_input(s.matrix(), y.data(), -1, grad.data(), 1) == Status::kInvalidArgument);
  CHECK(spmm_backward_input(s.matrix(), y.data(), kMax, grad.data(), 1) == Status::kInvalidArgument);
  CHECK(spmm_backward_input(s.matrix(), y.data(), 0, grad.data(), 1) == Status::kOk);
}

TEST(spmm_backward_exact_on_empty_rows) {
  Small s;
  std::vector<float> grad_y{1.0f, 3.0f, 5.0f}, grad_x(4, 99.0f);
  CHECK(spmm_backward_input(s.matrix(), grad_y.data(), 1, grad_x.data(), 1) == Status::kOk);
  CHECK(grad_x[0] == 6.0f && grad_x[1] == 0.0f && grad_x[2] == 0.0f && grad_x[3] == -3.0f);
}

TEST(qgemm_pack_sizes) {
  CHECK(qgemm_packed_bytes(0, 0) >= 0);
  CHECK(qgemm_packed_bytes(-1, 4) < 0 || qgemm_packed_bytes(-1, 4) == 0);
  std::vector<int8_t> q(4, 1);
  std::vector<int8_t> packed(qgemm_packed_bytes(1, 4) > 0 ? qgemm_packed_bytes(1, 4) : 1);
  std::vector<int32_t> colsum(1);
  CHECK(qgemm_pack(q.data(), 1, 4, 4, packed.data(), colsum.data()) == Status::kOk);
  CHECK(colsum[0] == 4);
  CHECK(qgemm_pack(q.data(), -1, 4, 4, packed.data(), colsum.data()) == Status::kInvalidArgument);
  CHECK(qgemm_pack(q.data(), 1, -1, 4, packed.data(), colsum.data()) == Status::kInvalidArgument);
  CHECK(qgemm_pack(q.data(), 1, 4, 3, packed.data(), colsum.data()) == Status::kInvalidArgument);  // ldq < k
  CHECK(qgemm_pack(q.data(), kMax, kMax, kMax, packed.data(), colsum.data()) == Status::kInvalidArgument);
  CHECK(qgemm_pack(nullptr, 1, 4, 4, packed.data(), colsum.data()) == Status::kInvalidArgument);
}

// The three GEMM entry points: exact results at 1 x 1 x 1 and zero sizes;
// negative, overflowing and inconsistent sizes and missing pointers rejected.
TEST(qgemm_entry_point_sizes) {
  std::vector<int8_t> q{3};
  std::vector<int8_t> packed(size_t(qgemm_packed_bytes(1, 1)));
  std::vector<int32_t> colsum(1);
  CHECK(qgemm_pack(q.data(), 1, 1, 1, packed.data(), colsum.data()) == Status::kOk);
  std::vector<uint8_t> a{7};
  std::vector<int32_t> c(1, -1);
  CHECK(qgemm_u8s8s32(a.data(), 1, 1, 1, packed.data(), 1, c.data(), 1, 1) == Status::kOk);
  CHECK(c[0] == 21);
  CHECK(qgemm_u8s8s32(nullptr, 0, 1, 1, packed.data(), 1, c.data(), 1, 1) == Status::kOk);
  CHECK(qgemm_u8s8s32(a.data(), 1, 1, 1, packed.data(), 0, nullptr, 0, 1) == Status::kOk);
  for (int64_t bad : {int64_t(-1), kMin, kMax}) {
    CHECK(qgemm_u8s8s32(a.data(), bad, 1, 1, packed.data(), 1, c.data(), 1, 1) == Status::kInvalidArgument);
    CHECK(qgemm_u8s8s32(a.data(), 1, 1, 1, packed.data(), bad, c.data(), 1, 1) == Status::kInvalidArgument);
    CHECK(qgemm_u8s8s32(a.data(), 1, bad, 1, packed.data(), 1, c.data(), 1, 1) == Status::kInvalidArgument);
  }
  CHECK(qgemm_u8s8s32(a.data(), 2, 1, kMax, packed.data(), 1, c.data(), 1, 1) == Status::kInvalidArgument);
  CHECK(qgemm_u8s8s32(a.data(), 2, 1, 1, packed.data(), 1, c.data(), kMax, 1) == Status::kInvalidArgument);
  CHECK(qgemm_u8s8s32(a.data(), 1, 2, 1, packed.data(), 1, c.data(), 1, 1) == Status::kInvalidArgument);  // lda < k
  CHECK(qgemm_u8s8s32(a.data(), 1, kQgemmMaxK + 1, kQgemmMaxK + 1, packed.data(), 1, c.data(), 1, 1) ==
        Status::kInvalidArgument);
  CHECK(qgemm_u8s8s32(a.data(), 1, 1, 1, nullptr, 1, c.data(), 1, 1) == Status::kInvalidArgument);

  std::vector<float> x{2.0f}, w_scale{0.5f}, bias{1.0f}, y(1, -1.0f);
  CHECK(qlinear_weight_only(x.data(), 1, 1, 1, packed.data(), w_scale.data(), bias.data(), 1, y.data(), 1, 1) ==
        Status::kOk);
  CHECK(y[0] == 2.0f * 3.0f * 0.5f + 1.0f);
  CHECK(qlinear_u8s8(x.data(), 1, 1, 1, packed.data(), w_scale.data(), colsum.data(), bias.data(), 1, y.data(), 1,
                     nullptr, 0, 1) == Status::kOk);
  CHECK(std::isfinite(y[0]));
  for (int64_t bad : {int64_t(-1), kMin, kMax}) {
    CHECK(qlinear_weight_only(x.data(), bad, 1, 1, packed.data(), w_scale.data(), nullptr, 1, y.data(), 1, 1) ==
          Status::kInvalidArgument);
    CHECK(qlinear_weight_only(x.data(), 1, 1, 1, packed.data(), w_scale.data(), nullptr, bad, y.data(), 1, 1) ==
          Status::kInvalidArgument);
    CHECK(qlinear_u8s8(x.data(), bad, 1, 1, packed.data(), w_scale.data(), colsum.data(), nullptr, 1, y.data(), 1,
                       nullptr, 0, 1) == Status::kInvalidArgument);
    CHECK(qlinear_u8s8(x.data(), 1, bad, 1, packed.data(), w_scale.data(), colsum.data(), nullptr, 1, y.data(), 1,
                       nullptr, 0, 1) == Status::kInvalidArgument);
  }
  CHECK(qlinear_weight_only(x.data(), 2, 1, kMax, packed.data(), w_scale.data(), nullptr, 1, y.data(), 1, 1) ==
        Status::kInvalidArgument);
  CHECK(qlinear_u8s8(x.data(), 2, 1, 1, packed.data(), w_scale.data(), colsum.data(), nullptr, 1, y.data(), kMax,
                     nullptr, 0, 1) == Status::kInvalidArgument);
  CHECK(qlinear_u8s8(x.data(), 1, 1, 1, packed.data(), w_scale.data(), nullptr, nullptr, 1, y.data(), 1,
                     nullptr, 0, 1) == Status::kInvalidArgument);  // colsum missing
  const float zero_scale = 0.0f, nan_scale = NAN;
  CHECK(qlinear_u8s8(x.data(), 1, 1, 1, packed.data(), w_scale.data(), colsum.data(), nullptr, 1, y.data(), 1,
                     &zero_scale, 0, 1) == Status::kInvalidArgument);
  CHECK(qlinear_u8s8(x.data(), 1, 1, 1, packed.data(), w_scale.data(), colsum.data(), nullptr, 1, y.data(), 1,
                     &nan_scale, 0, 1) == Status::kInvalidArgument);
  CHECK(qlinear_u8s8(x.data(), 1, 1, 1, packed.data(), w_scale.data(), colsum.data(), nullptr, 1, y.data(), 1,
                     &w_scale[0], 256, 1) == Status::kInvalidArgument);  // zero point out of uint8
}

TEST(quantize_rows_sizes) {
  std::vector<float> x{0.0f, 1.0f, -1.0f, 2.0f};
  std::vector<uint8_t> a(4);
  float scale = 0.0f;
  int32_t zero_point = -1;
  CHECK(quantize_rows_u8(x.data(), 1, 4, 4, a.data(), 4, &scale, &zero_point, 1) == Status::kOk);
  CHECK(scale > 0.0f && zero_point >= 0 && zero_point <= 255);
  CHECK(quantize_rows_u8(x.data(), 0, 4, 4, a.data(), 4, &scale, &zero_point, 1) == Status::kOk);
  for (int64_t m : {int64_t(-1), kMin, kMax})
    CHECK(quantize_rows_u8(x.data(), m, 4, 4, a.data(), 4, &scale, &zero_point, 1) == Status::kInvalidArgument);
  CHECK(quantize_rows_u8(x.data(), 1, 4, 3, a.data(), 4, &scale, &zero_point, 1) == Status::kInvalidArgument);
  CHECK(quantize_rows_u8(x.data(), 1, 4, 4, a.data(), 3, &scale, &zero_point, 1) == Status::kInvalidArgument);
  CHECK(quantize_rows_u8(x.data(), 1, kMax, kMax, a.data(), kMax, &scale, &zero_point, 1) ==
        Status::kInvalidArgument);
}

TEST(threshold_sizes) {
  std::vector<float> w{0.5f, -2.0f, 0.0f};
  int64_t kept = -1;
  CHECK(threshold_inplace(w.data(), DType::kFloat32, 0, 1.0f, 1, &kept) == Status::kOk && kept == 0);
  CHECK(threshold_inplace(w.data(), DType::kFloat32, 3, 1.0f, 1, &kept) == Status::kOk && kept == 1);
  CHECK(w[0] == 0.0f && w[1] == -2.0f && w[2] == 0.0f);
  for (int64_t n : {int64_t(-1), kMin})
    CHECK(threshold_inplace(w.data(), DType::kFloat32, n, 1.0f, 1, &kept) == Status::kInvalidArgument);
  std::vector<uint8_t> keep(3, 7);
  CHECK(prune_mask(w.data(), DType::kFloat32, 3, 1.0f, keep.data(), 1, &kept) == Status::kOk && kept == 1);
  CHECK(keep[0] == 0 && keep[1] == 1 && keep[2] == 0);
  CHECK(prune_mask(w.data(), DType::kFloat32, -1, 1.0f, keep.data(), 1, &kept) == Status::kInvalidArgument);
}

SLIMTORCH_TEST_MAIN()
