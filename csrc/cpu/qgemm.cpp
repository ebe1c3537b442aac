// int8 GEMM / linear kernels (layout and contracts: slimtorch/qgemm.h).
//
// Structure: the output is cut into tiles of at most kRows[isa] rows x
// kBlocks[isa] * 16 columns. A micro-kernel computes one tile's accumulators
// over the whole K into a small stack buffer; an epilogue turns them into
// int32 or float output. Tiles are spread over threads column-tile-major, so
// each thread streams its own slice of the packed weight once per row panel.
//
// Integer paths (u8 activations x s8 weights, exact int32):
//   AVX-512 VNNI: vpdpbusd on the packed 16x4 groups, one broadcast per row.
//   AVX2: vpdpbusd's 8-bit pairs would saturate in vpmaddubsw's int16 sums
//     (255 * 127 * 2 > 32767), so both operands are widened to int16 and
//     multiplied with vpmaddwd (int16 x int16 -> int32 pair sums), which is
//     exact for these ranges.
//   ARM64 i8mm: USMMLA (u8 x s8, 2 rows x 2 channels x 8 k per instruction).
//   ARM64 dot product: UDOT with the weights offset to unsigned (w + 128),
//     corrected by 128 * the row's byte sum.
//   ARM64 NEON: int16 products (exact) added in pairs into int32.
//   scalar: plain loops over the same layout.
//   (The per-path files qgemm_<isa>.cpp explain each kernel.)
// Weight-only path (float activations): each 32-bit lane of a packed group
// holds 4 int8 weights; shifting lane i into the top byte and shifting back
// arithmetically sign-extends it, cvtdq2ps makes it float, and an FMA with
// the broadcast activation accumulates (NEON: a table lookup puts the group
// in k-major order first). The float weight exists only in registers.
#include "slimtorch/qgemm.h"

#if defined(SLIMTORCH_HAVE_AMX)
#include "qgemm_amx.h"
#endif

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <memory>

#include "dispatch.h"
#include "half_rows.h"
#include "line_aligned.h"
#include "qgemm_paths.h"

namespace slimtorch {
namespace {

using namespace qgemm_paths;

// Below this many multiply-adds a chunk is not worth a thread wake-up.
constexpr int64_t kMinMacsPerChunk = int64_t(1) << 18;
// Row elements per chunk of the row-quantization pass.
constexpr int64_t kMinQuantizeElements = int64_t(1) << 15;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Sizes whose element offsets (row * stride, rounded up to whole blocks)
// overflow int64 are rejected before any index is formed.
constexpr int64_t kMaxDim = INT64_MAX / 4;
inline bool offsets_fit(int64_t rows, int64_t stride) {
  int64_t product = 0;
  return rows <= kMaxDim && stride <= kMaxDim && !__builtin_mul_overflow(rows + 64, stride + 64, &product);
}

// ---- tile shapes per path ----------------------------------------------------

struct TileShape {
  int rows;
  int blocks;
};

enum class IntPath { kScalar, kAvx2, kVnni, kNeon, kDotprod, kI8mm };

IntPath int_path() {
  const Isa isa = active_isa();
#if SLIMTORCH_X86
  if (isa >= Isa::kAvx512 && cpu_has_avx512_vnni()) return IntPath::kVnni;
  if (isa >= Isa::kAvx2) return IntPath::kAvx2;  // also AVX-512 CPUs without VNNI
#elif SLIMTORCH_ARM64
  if (isa >= Isa::kI8mm) return IntPath::kI8mm;
  if (isa >= Isa::kDotprod) return IntPath::kDotprod;
  if (isa >= Isa::kNeon) return IntPath::kNeon;
#endif
  (void)isa;
  return IntPath::kScalar;
}

// Register budgets: VNNI 6x4 = 24 zmm accumulators + 4 weights + 1 broadcast;
// AVX2 2x2 blocks = 8 ymm accumulators + 4 activation pairs + 2 weights (16 ymm);
// float AVX-512 4x4 = 16 accumulators + 4 raw + 4 converted weights + 1.
// ARM64 (32 q registers): NEON 2x1 = 16 accumulators + 8 widened weights;
// dot product 4x1 = 16 accumulators + 4 weights + 4 activation rows + 4 row
// sums; i8mm 4x1 = 16 accumulators (2x2 blocks) + 8 weight pairs + 2 row pairs.
TileShape int_shape(IntPath path) {
  switch (path) {
    case IntPath::kVnni: return {6, 4};
    case IntPath::kAvx2: return {2, 2};
    case IntPath::kNeon: return {2, 1};
    case IntPath::kDotprod: return {4, 1};
    case IntPath::kI8mm: return {4, 1};
    case IntPath::kScalar: return {1, 1};
  }
  return {1, 1};
}

const IntTiles& int_tiles(IntPath path) {
  static const IntTiles scalar = SLIMTORCH_TILE_TABLE(int_tile_scalar);
  switch (path) {
#if SLIMTORCH_X86
    case IntPath::kVnni: return int_tiles_vnni;
    case IntPath::kAvx2: return int_tiles_avx2;
#elif SLIMTORCH_ARM64
    case IntPath::kNeon: return int_tiles_neon;
    case IntPath::kDotprod: return int_tiles_dotprod;
    case IntPath::kI8mm: return int_tiles_i8mm;
#endif
    default: break;
  }
  return scalar;
}

// The per-ISA functions of the float-side work (weight-only tiles, the
// epilogues, the row quantization and its min/max scan), chosen together.
// Float tiles: NEON 4x1 = 16 accumulators + 4 activation rows + 4 converted weights.
struct VectorPath {
  TileShape float_shape;
  const FloatTiles* float_tiles;
  void (*float_epilogue)(const float* acc, const float* w_scale, const float* bias, float* y, int64_t ldy,
                         int rows, int64_t cols);
  void (*linear_epilogue)(const LinearEpilogue& e, const int32_t* acc, int64_t m0, int rows, int64_t c0,
                          int64_t cols);
  void (*quantize_row)(const float* x, int64_t k, float inv, int32_t zp, bool fused, uint8_t* a);
  void (*minmax)(const float* x, int64_t k, float* lo, float* hi, bool* finite);
  void (*to_bf16)(const float* in, int64_t n, uint16_t* out);  // round to nearest even, NaN stays NaN
  void (*bf16_to_float)(const uint16_t* in, int64_t n, float* out);  // exact
  // The linear epilogue writing bfloat16 (LinearEpilogue::y_bf16) as to_bf16
  // rounds; null where the path has none (a block buffer and to_bf16 then).
  void (*linear_epilogue_bf16)(const LinearEpilogue& e, const int32_t* acc, int64_t m0, int rows, int64_t c0,
                               int64_t cols);
  // Weight-only tiles on bf16 pairs (x rounded to bf16) from kBf16MinRows
  // rows; null where the path has none.
  const BF16Tiles* bf16_tiles = nullptr;
};

const VectorPath& vector_path(Isa isa) {
  static const FloatTiles scalar_tiles = SLIMTORCH_TILE_TABLE(float_tile_scalar);
  static const VectorPath scalar{{1, 1}, &scalar_tiles, float_epilogue_scalar, linear_epilogue_scalar,
                                 quantize_row_scalar, minmax_scalar, to_bf16_scalar, bf16_to_float_scalar, nullptr};
#if SLIMTORCH_X86
  static const VectorPath avx512{{4, 4}, &float_tiles_avx512, float_epilogue_avx512, linear_epilogue_avx512,
                                 quantize_row_avx512, minmax_avx512, to_bf16_avx512, bf16_to_float_avx512,
                                 linear_epilogue_bf16_avx512};
  static const VectorPath avx2{{3, 1}, &float_tiles_avx2, float_epilogue_scalar, linear_epilogue_avx2,
                               quantize_row_avx2, minmax_avx2, to_bf16_scalar, bf16_to_float_scalar, nullptr};
#if defined(SLIMTORCH_HAVE_AVX512_BF16)
  // The AVX-512 path on CPUs with AVX512-BF16 (every one with AMX; AMD Zen 4
  // and later, Intel Cooper Lake): bf16 outputs rounded by VCVTNEPS2BF16
  // (same results; AMD EPYC Zen 4, bf16 in/out int8_dynamic 768->3072 x 2048
  // and x 128: 2.08-2.09 -> 2.18-2.19x and 2.22-2.26 -> 2.36-2.42x torch's bf16
  // Linear) and the weight-only bf16 tiles (on the amx path weight-only takes
  // the AMX tiles first, amx_weight_only_wanted).
  static const VectorPath avx512_bf16 = [] {
    VectorPath path = avx512;
    path.to_bf16 = to_bf16_avx512bf16;
    path.linear_epilogue_bf16 = linear_epilogue_bf16_avx512bf16;
    path.bf16_tiles = &bf16_tiles_avx512;
    return path;
  }();
  // isa.cpp grants the amx path only with AVX512-BF16.
  if (isa >= Isa::kAmx || (isa >= Isa::kAvx512 && cpu_has_avx512_bf16())) return avx512_bf16;
#endif
  return isa >= Isa::kAvx512 ? avx512 : isa >= Isa::kAvx2 ? avx2 : scalar;
#elif SLIMTORCH_ARM64
  static const VectorPath neon{{4, 1}, &float_tiles_neon, float_epilogue_scalar, linear_epilogue_neon,
                               quantize_row_neon, minmax_neon, to_bf16_scalar, bf16_to_float_scalar, nullptr};
  return isa >= Isa::kNeon ? neon : scalar;
#else
  (void)isa;
  return scalar;
#endif
}

// ---- tiling over threads ------------------------------------------------------------

// Calls body(first_row_tile, last_row_tile, nb0, blocks) for every work item:
// (column tile, row panel) pairs in column-tile-major order; rows are split
// into panels only when there are too few column tiles to feed every thread.
// make_scratch() gives each chunk of work items its own scratch, passed to
// body(scratch, ...) (the overload below has none).
template <typename MakeScratch, typename Body>
void for_each_panel(int64_t m, int64_t n, int64_t k, TileShape shape, int n_threads,
                    const MakeScratch& make_scratch, const Body& body) {
  if (m <= 0 || n <= 0) return;
  const int64_t n_blocks = ceil_div(n, kQgemmBlockN);
  const int64_t col_tiles = ceil_div(n_blocks, shape.blocks);
  const int64_t row_tiles = ceil_div(m, shape.rows);
  int64_t panels = 1;
  if (col_tiles < 2 * int64_t(n_threads))
    panels = std::min(row_tiles, ceil_div(2 * int64_t(n_threads), col_tiles));
  const int64_t items = col_tiles * panels;
  const int64_t macs_per_item =
      ceil_div(m, panels) * shape.blocks * kQgemmBlockN * std::max<int64_t>(k, 1);
  const int64_t grain = std::max<int64_t>(1, kMinMacsPerChunk / macs_per_item);
  parallel_for(n_threads, items, grain, [&](int64_t begin, int64_t end, int) {
    auto scratch = make_scratch();
    for (int64_t item = begin; item < end; ++item) {
      const int64_t col_tile = item / panels, panel = item % panels;
      const int64_t nb0 = col_tile * shape.blocks;
      const int blocks = int(std::min<int64_t>(shape.blocks, n_blocks - nb0));
      body(scratch, row_tiles * panel / panels, row_tiles * (panel + 1) / panels, nb0, blocks);
    }
  });
}

template <typename Body>
void for_each_panel(int64_t m, int64_t n, int64_t k, TileShape shape, int n_threads, const Body& body) {
  for_each_panel(m, n, k, shape, n_threads, [] { return 0; },
                 [&](int, int64_t first, int64_t last, int64_t nb0, int blocks) { body(first, last, nb0, blocks); });
}

// Calls body(m0, rows, nb0, blocks) for every output tile.
template <typename Body>
void for_each_tile(int64_t m, int64_t n, int64_t k, TileShape shape, int n_threads,
                   const Body& body) {
  for_each_panel(m, n, k, shape, n_threads, [&](int64_t first, int64_t last, int64_t nb0, int blocks) {
    for (int64_t t = first; t < last; ++t) {
      const int64_t m0 = t * shape.rows;
      body(m0, int(std::min<int64_t>(shape.rows, m - m0)), nb0, blocks);
    }
  });
}

constexpr int kTileAcc = kMaxTileRows * kMaxTileCols;
// The most rows a finish callback of int_gemm receives (AMX blocks; the
// other paths' tiles have at most kMaxTileRows).
constexpr int kMaxFinishRows = 32;
static_assert(kMaxTileRows <= kMaxFinishRows, "a tile's rows fit a finish block");
// K block of the integer GEMM: with long rows the 64-column weight panel
// (64 * K bytes) and the activation panel stop fitting in L2 together; in
// K blocks of this many bytes the weight sub-panel (64 KB) stays in L2 while
// every row tile of the panel passes over it.
constexpr int64_t kIntKBlock = 1024;

// prepare(begin, end), when given: makes rows [begin, end) of a (quantizes
// them); the AMX kernel calls it on the thread that then multiplies them
// (amx_int_gemm_prepares_rows says where), any other path for all rows first.
using PrepareRows = std::function<void(int64_t begin, int64_t end)>;

// Integer GEMM over all tiles: a is [m][k] with k a multiple of 4 (row stride
// lda); calls finish(m0, rows, c0, cols, acc) with each tile's accumulators.
template <typename Finish>
void int_gemm(const uint8_t* a, int64_t m, int64_t k, int64_t lda, const int8_t* packed, int64_t n,
              int n_threads, const Finish& finish, const PrepareRows* prepare = nullptr) {
#if defined(SLIMTORCH_HAVE_AMX)
  static_assert(kAmxAccStride == kMaxTileCols, "AMX blocks hand over accumulators as the tiles do");
  static_assert(kAmxBlockRows <= kMaxFinishRows, "an AMX block's rows fit a finish block");
  if (amx_int_gemm_wanted(m, n, k)) return amx_int_gemm(a, m, k, lda, packed, n, n_threads, finish, prepare);
#endif
  if (prepare != nullptr) (*prepare)(0, m);  // the active path changed since the caller asked
  const IntPath path = int_path();
  const TileShape shape = int_shape(path);
  const IntTiles& tiles = int_tiles(path);
  const int64_t block_stride = k / kQgemmGroupK * kGroupBytes;
  for_each_panel(m, n, k, shape, n_threads, [&](int64_t first, int64_t last, int64_t nb0, int blocks) {
    const int64_t c0 = nb0 * kQgemmBlockN;
    const int64_t cols = std::min<int64_t>(blocks * kQgemmBlockN, n - c0);
    const int8_t* b = packed + nb0 * block_stride;
    const auto rows_of = [&](int64_t t) { return int(std::min<int64_t>(shape.rows, m - t * shape.rows)); };
    if (k <= kIntKBlock || last - first == 1) {
      alignas(64) int32_t acc[kTileAcc];
      for (int64_t t = first; t < last; ++t) {
        const int64_t m0 = t * shape.rows;
        tiles[rows_of(t) - 1][blocks - 1](a + m0 * lda, lda, k, b, block_stride, acc, false);
        finish(m0, rows_of(t), c0, cols, acc);
      }
      return;
    }
    const LineAlignedArray<int32_t> acc(size_t((last - first) * kTileAcc));
    for (int64_t k0 = 0; k0 < k; k0 += kIntKBlock) {
      const int64_t kc = std::min(kIntKBlock, k - k0);
      for (int64_t t = first; t < last; ++t)
        tiles[rows_of(t) - 1][blocks - 1](a + t * shape.rows * lda + k0, lda, kc,
                                           b + k0 / kQgemmGroupK * kGroupBytes, block_stride,
                                           acc.get() + (t - first) * kTileAcc, k0 > 0);
    }
    for (int64_t t = first; t < last; ++t)
      finish(t * shape.rows, rows_of(t), c0, cols, acc.get() + (t - first) * kTileAcc);
  });
}

// ---- row quantization -----------------------------------------------------------------

// Quantization follows the quantize op family (csrc/cpu/quantize.cpp,
// python/slimtorch/reference/quantize.py). This file is compiled with
// -ffp-contract=off (CMakeLists.txt) so that "x * inv + zp" below is two
// roundings exactly where the reference rounds twice.
constexpr float kMinScale = FLT_EPSILON;  // smallest scale choose_qparams returns

struct RowParams {
  float scale;     // NaN for a row with NaN/Inf
  int32_t zp;
  bool finite;
};

// choose_qparams, asymmetric uint8: scale and zero point computed in double.
RowParams dynamic_params(float lo, float hi, bool finite) {
  if (!finite) return {std::numeric_limits<float>::quiet_NaN(), 0, false};
  const double lo_d = std::min(double(lo), 0.0), hi_d = std::max(double(hi), 0.0);
  const float scale = std::max(float((hi_d - lo_d) / 255.0), kMinScale);
  const double zp = std::clamp(-std::nearbyint(lo_d / double(scale)), 0.0, 255.0);
  return {scale, int32_t(zp), true};
}

// Row r of x as float32: in place for float32 x, else widened into `buffer`
// (k floats).
inline const float* float_row(const HalfConversions& half, const void* x, DType dtype, int64_t r, int64_t ldx,
                              int64_t k, float* buffer) {
  if (dtype == DType::kFloat32) return static_cast<const float*>(x) + r * ldx;
  half.widen(static_cast<const uint16_t*>(x) + r * ldx, k, buffer);
  return buffer;
}

// Quantizes rows [begin, end) on the calling thread: dynamic (static_scale
// == nullptr) or static. Writes per-row scale (NaN for non-finite rows) and
// zero point.
void quantize_row_range(const void* x, DType x_dtype, int64_t k, int64_t ldx, uint8_t* a, int64_t lda,
                        float* scale, int32_t* zero_point, const float* static_scale, int32_t static_zp,
                        int64_t begin, int64_t end) {
  const VectorPath& path = vector_path(active_isa());
  const HalfConversions half = half_conversions(x_dtype);  // 16-bit x
  LineAlignedArray<float> widened;
  if (x_dtype != DType::kFloat32) widened.reset(size_t(std::max<int64_t>(k, 1)));
  for (int64_t r = begin; r < end; ++r) {
    const float* row = float_row(half, x, x_dtype, r, ldx, k, widened.get());
    uint8_t* out = a + r * lda;
    float lo, hi;
    bool finite;
    RowParams params;
    if (static_scale == nullptr) {
      path.minmax(row, k, &lo, &hi, &finite);
      params = dynamic_params(lo, hi, finite);
    } else {
      path.minmax(row, k, &lo, &hi, &finite);  // only the finiteness is used
      params = {finite ? *static_scale : std::numeric_limits<float>::quiet_NaN(),
                finite ? static_zp : 0, finite};
    }
    scale[r] = params.scale;
    zero_point[r] = params.zp;
    if (params.finite)
      path.quantize_row(row, k, 1.0f / params.scale, params.zp, static_scale != nullptr, out);
    else if (k > 0) std::memset(out, 0, size_t(k));
  }
}

// quantize_row_range over rows [0, m) on n_threads threads.
void quantize_rows(const void* x, DType x_dtype, int64_t m, int64_t k, int64_t ldx, uint8_t* a, int64_t lda,
                   float* scale, int32_t* zero_point, const float* static_scale,
                   int32_t static_zp, int n_threads) {
  const int64_t grain = std::max<int64_t>(1, kMinQuantizeElements / std::max<int64_t>(k, 1));
  parallel_for(n_threads, m, grain, [&](int64_t begin, int64_t end, int) {
    quantize_row_range(x, x_dtype, k, ldx, a, lda, scale, zero_point, static_scale, static_zp, begin, end);
  });
}

}  // namespace

HalfConversions half_conversions(DType dtype) {
  if (dtype == DType::kBFloat16) {
    const VectorPath& path = vector_path(active_isa());
    return {path.bf16_to_float, path.to_bf16};
  }
  return {[](const uint16_t* in, int64_t n, float* out) {
            for (int64_t i = 0; i < n; ++i) out[i] = fp16_to_float(in[i]);
          },
          [](const float* in, int64_t n, uint16_t* out) {
            for (int64_t i = 0; i < n; ++i) out[i] = float_to_fp16(in[i]);
          }};
}

int64_t qgemm_packed_bytes(int64_t n, int64_t k) {
  return ceil_div(n, kQgemmBlockN) * ceil_div(k, kQgemmGroupK) * kGroupBytes;
}

Status qgemm_pack(const int8_t* q, int64_t n, int64_t k, int64_t ldq, int8_t* packed,
                  int32_t* colsum) {
  if (n < 0 || k < 0 || ldq < k || (n > 0 && k > 0 && (q == nullptr || packed == nullptr)) ||
      !offsets_fit(n, ldq))
    return Status::kInvalidArgument;
  const int64_t groups = ceil_div(k, kQgemmGroupK);
  const int64_t blocks = ceil_div(n, kQgemmBlockN);
  for (int64_t nb = 0; nb < blocks; ++nb)
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t j = 0; j < kQgemmBlockN; ++j)
        for (int64_t i = 0; i < kQgemmGroupK; ++i) {
          const int64_t row = nb * kQgemmBlockN + j, col = g * kQgemmGroupK + i;
          packed[((nb * groups + g) * kQgemmBlockN + j) * kQgemmGroupK + i] =
              row < n && col < k ? q[row * ldq + col] : int8_t(0);
        }
  if (colsum != nullptr)
    for (int64_t row = 0; row < n; ++row) {
      int32_t sum = 0;
      for (int64_t col = 0; col < k; ++col) sum += q[row * ldq + col];
      colsum[row] = sum;
    }
  return Status::kOk;
}

Status quantize_rows_u8(const float* x, int64_t m, int64_t k, int64_t ldx, uint8_t* a,
                        int64_t lda, float* scale, int32_t* zero_point, int n_threads) {
  return quantize_rows_u8(x, DType::kFloat32, m, k, ldx, a, lda, scale, zero_point, n_threads);
}

Status quantize_rows_u8(const void* x, DType x_dtype, int64_t m, int64_t k, int64_t ldx, uint8_t* a,
                        int64_t lda, float* scale, int32_t* zero_point, int n_threads) {
  if (m < 0 || k < 0 || ldx < k || lda < k ||
      (m > 0 && (scale == nullptr || zero_point == nullptr || (k > 0 && (x == nullptr || a == nullptr)))) ||
      !offsets_fit(m, ldx) || !offsets_fit(m, lda))
    return Status::kInvalidArgument;
  quantize_rows(x, x_dtype, m, k, ldx, a, lda, scale, zero_point, nullptr, 0, n_threads);
  return Status::kOk;
}

Status qgemm_u8s8s32(const uint8_t* a, int64_t m, int64_t k, int64_t lda, const int8_t* packed,
                     int64_t n, int32_t* c, int64_t ldc, int n_threads) {
  if (m < 0 || n < 0 || k < 0 || k > kQgemmMaxK || lda < k || ldc < n ||
      (m > 0 && n > 0 && (c == nullptr || (k > 0 && (a == nullptr || packed == nullptr)))) ||
      !offsets_fit(m, lda) || !offsets_fit(m, ldc) || !offsets_fit(n, k))
    return Status::kInvalidArgument;
  if (m == 0 || n == 0) return Status::kOk;
  // Rows whose length is not a whole number of 4-byte groups are copied into
  // a zero-padded buffer (see IntTileFn).
  const int64_t k_pad = ceil_div(k, kQgemmGroupK) * kQgemmGroupK;
  LineAlignedArray<uint8_t> padded;
  if (k_pad != k) {
    padded.reset(size_t(m * k_pad));
    for (int64_t r = 0; r < m; ++r) {
      std::memcpy(padded.get() + r * k_pad, a + r * lda, size_t(k));
      std::memset(padded.get() + r * k_pad + k, 0, size_t(k_pad - k));
    }
    a = padded.get();
    lda = k_pad;
  }
  int_gemm(a, m, k_pad, lda, packed, n, n_threads,
           [&](int64_t m0, int rows, int64_t c0, int64_t cols, const int32_t* acc) {
             for (int r = 0; r < rows; ++r)
               std::memcpy(c + (m0 + r) * ldc + c0, acc + r * kMaxTileCols, size_t(cols) * sizeof(int32_t));
           });
  return Status::kOk;
}

Status qlinear_u8s8(const float* x, int64_t m, int64_t k, int64_t ldx, const int8_t* packed,
                    const float* w_scale, const int32_t* colsum, const float* bias, int64_t n,
                    float* y, int64_t ldy, const float* x_scale, int32_t x_zero_point,
                    int n_threads) {
  return qlinear_u8s8(x, DType::kFloat32, m, k, ldx, packed, w_scale, colsum, bias, n, y, DType::kFloat32, ldy,
                      x_scale, x_zero_point, n_threads);
}

Status qlinear_u8s8(const void* x, DType x_dtype, int64_t m, int64_t k, int64_t ldx, const int8_t* packed,
                    const float* w_scale, const int32_t* colsum, const float* bias, int64_t n,
                    void* y, DType y_dtype, int64_t ldy, const float* x_scale, int32_t x_zero_point,
                    int n_threads) {
  if (m < 0 || n < 0 || k < 0 || k > kQgemmMaxK || ldx < k || ldy < n ||
      (m > 0 && n > 0 && (y == nullptr || w_scale == nullptr || colsum == nullptr ||
                          (k > 0 && (x == nullptr || packed == nullptr)))) ||
      !offsets_fit(m, ldx) || !offsets_fit(m, ldy) || !offsets_fit(n, k))
    return Status::kInvalidArgument;
  if (x_scale != nullptr && (!(*x_scale > 0.0f) || !std::isfinite(*x_scale) ||
                             x_zero_point < 0 || x_zero_point > 255))
    return Status::kInvalidArgument;
  if (m == 0 || n == 0) return Status::kOk;
  // Quantized rows, padded to whole 4-byte groups so the micro-kernels never
  // take the partial-group path; the pad bytes meet zero weights. The AMX
  // path reads whole 64-byte rows (see qgemm_amx.h).
  int64_t lda = ceil_div(k, kQgemmGroupK) * kQgemmGroupK;
  bool prepared_by_gemm = false;  // rows quantized inside the AMX kernel, part by part
#if defined(SLIMTORCH_HAVE_AMX)
  if (amx_int_gemm_wanted(m, n, k)) {
    lda = ceil_div(k, kAmxRowAlign) * kAmxRowAlign;
    prepared_by_gemm = amx_int_gemm_prepares_rows(m, n, k, n_threads);
  }
#endif
  // Rows start on cache lines (lda is a multiple of 64 on the AMX path).
  const LineAlignedArray<uint8_t> a_storage(size_t(std::max<int64_t>(m * lda, 1)));
  uint8_t* const a = a_storage.get();
  std::unique_ptr<float[]> row_scale(new float[size_t(m)]);
  std::unique_ptr<int32_t[]> row_zp(new int32_t[size_t(m)]);
  if (lda > k)
    for (int64_t r = 0; r < m; ++r) std::memset(a + r * lda + k, 0, size_t(lda - k));
  const PrepareRows quantize = [&](int64_t begin, int64_t end) {
    quantize_row_range(x, x_dtype, k, ldx, a, lda, row_scale.get(), row_zp.get(), x_scale, x_zero_point, begin,
                       end);
  };
  const PrepareRows* prepare = prepared_by_gemm ? &quantize : nullptr;
  if (!prepared_by_gemm)
    quantize_rows(x, x_dtype, m, k, ldx, a, lda, row_scale.get(), row_zp.get(), x_scale, x_zero_point,
                  n_threads);

  const VectorPath& path = vector_path(active_isa());
  const auto linear_epilogue = path.linear_epilogue;
  const int64_t k_pad = ceil_div(k, kQgemmGroupK) * kQgemmGroupK;
  const bool bf16_epilogue = y_dtype == DType::kBFloat16 && path.linear_epilogue_bf16 != nullptr;
  if (y_dtype == DType::kFloat32 || bf16_epilogue) {
    LinearEpilogue epilogue{row_zp.get(), row_scale.get(), w_scale, colsum, bias, nullptr, ldy};
    if (bf16_epilogue) {
      epilogue.y_bf16 = static_cast<uint16_t*>(y);
    } else {
      epilogue.y = static_cast<float*>(y);
    }
    const auto finish = bf16_epilogue ? path.linear_epilogue_bf16 : linear_epilogue;
    int_gemm(a, m, k_pad, lda, packed, n, n_threads,
             [&](int64_t m0, int rows, int64_t c0, int64_t cols, const int32_t* acc) {
               finish(epilogue, acc, m0, rows, c0, cols);
             },
             prepare);
    return Status::kOk;
  }
  // 16-bit output: each block's float32 results go through a block buffer
  // (the epilogue sees the block as a problem of its own) and are rounded once.
  const HalfConversions half = half_conversions(y_dtype);
  int_gemm(a, m, k_pad, lda, packed, n, n_threads,
           [&](int64_t m0, int rows, int64_t c0, int64_t cols, const int32_t* acc) {
             alignas(64) float block[kMaxFinishRows * kMaxTileCols];
             const LinearEpilogue local{row_zp.get() + m0, row_scale.get() + m0, w_scale + c0, colsum + c0,
                                        bias ? bias + c0 : nullptr, block, kMaxTileCols};
             linear_epilogue(local, acc, 0, rows, 0, cols);
             for (int r = 0; r < rows; ++r)
               half.round(block + r * kMaxTileCols, cols, static_cast<uint16_t*>(y) + (m0 + r) * ldy + c0);
           },
           prepare);
  return Status::kOk;
}

namespace {

// Rows [m0, m0 + rows) of x as float32 rows of k_pad values (zero past k) at `out`.
void widen_rows(const HalfConversions& half, const void* x, DType dtype, int64_t m0, int rows, int64_t k,
                int64_t ldx, int64_t k_pad, float* out) {
  for (int r = 0; r < rows; ++r) {
    float* dst = out + r * k_pad;
    if (k > 0) {
      const float* row = float_row(half, x, dtype, m0 + r, ldx, k, dst);
      if (row != dst) std::copy(row, row + k, dst);
    }
    std::fill(dst + k, dst + k_pad, 0.0f);
  }
}

// Writes output rows [m0, m0 + rows), columns [c0, c0 + cols) from their
// float32 sums acc (row stride kMaxTileCols): acc * w_scale + bias, in y's dtype.
struct WeightOnlyOutput {
  const VectorPath& path;
  const float* w_scale;
  const float* bias;
  void* y;
  DType y_dtype;
  int64_t ldy;
  HalfConversions y_half;

  void operator()(const float* acc, int64_t m0, int rows, int64_t c0, int64_t cols) const {
    const float* const tile_bias = bias ? bias + c0 : nullptr;
    if (y_dtype == DType::kFloat32) {
      path.float_epilogue(acc, w_scale + c0, tile_bias, static_cast<float*>(y) + m0 * ldy + c0, ldy, rows, cols);
      return;
    }
    alignas(64) float block[kMaxTileRows * kMaxTileCols];
    path.float_epilogue(acc, w_scale + c0, tile_bias, block, kMaxTileCols, rows, cols);
    for (int r = 0; r < rows; ++r)
      y_half.round(block + r * kMaxTileCols, cols, static_cast<uint16_t*>(y) + (m0 + r) * ldy + c0);
  }
};

#if defined(SLIMTORCH_HAVE_AVX512_BF16)
// From this many rows weight-only runs on bf16 pairs where the path has them,
// as on the AMX tiles (amx_weight_only_wanted), so x is rounded from the
// same row count on both. AMD EPYC Zen 4, 2 threads, against the float32
// tiles: 1.2-1.6x faster at 16 rows; at 12 rows 1.05-1.35x, at 8 rows
// 0.86-1.14x, at 4 rows 0.54-0.91x.
constexpr int64_t kBf16MinRows = 16;

// Weight-only with x rounded to bf16 and the int8 weights widened exactly to
// bf16 (path.bf16_tiles): x is staged once as bf16 rows of whole 32-value
// steps (a bfloat16 x of such rows is read in place), and each work item
// stages its column tile's weights once as pair rows, which every row tile
// of the item then reads (K * 32 bytes per 16 columns: L2, not L1).
void weight_only_bf16(const VectorPath& path, const void* x, DType x_dtype, int64_t m, int64_t k, int64_t ldx,
                      const int8_t* packed, int64_t n, const WeightOnlyOutput& output, int n_threads) {
  const int64_t width = ceil_div(k, 32) * 32;  // bf16 values per staged row
  const uint16_t* xb = static_cast<const uint16_t*>(x);
  int64_t ldb = ldx;
  LineAlignedArray<uint16_t> xb_storage;
  if (x_dtype != DType::kBFloat16 || width != k) {
    xb_storage.reset(size_t(m * width));
    uint16_t* const staged = xb_storage.get();
    parallel_for(n_threads, m, std::max<int64_t>(1, kMinQuantizeElements / width), [&](int64_t begin, int64_t end, int) {
      rows_to_bf16_avx512(x, x_dtype, ldx, k, width, staged, begin, end);
    });
    xb = staged;
    ldb = width;
  }
  const int64_t groups = ceil_div(k, kQgemmGroupK), block_stride = groups * kGroupBytes;
  const int64_t staged_groups = width / kQgemmGroupK, pairs = width / 2;
  const int64_t staged_stride = staged_groups * 2 * kBf16PairBytes;  // bytes per 16-column block
  const TileShape shape{kMaxTileRows, kMaxTileBlocks};
  for_each_panel(m, n, width, shape, n_threads,
                 [&] { return LineAlignedArray<uint8_t>(size_t(kMaxTileBlocks * staged_stride)); },
                 [&](LineAlignedArray<uint8_t>& staged, int64_t first, int64_t last, int64_t nb0, int blocks) {
    for (int j = 0; j < blocks; ++j)
      weight_groups_to_bf16_avx512(packed + (nb0 + j) * block_stride, 0, staged_groups, groups,
                                   staged.get() + j * staged_stride);
    const int64_t c0 = nb0 * kQgemmBlockN;
    const int64_t cols = std::min<int64_t>(blocks * kQgemmBlockN, n - c0);
    for (int64_t t = first; t < last; ++t) {
      const int64_t m0 = t * shape.rows;
      const int rows = int(std::min<int64_t>(shape.rows, m - m0));
      alignas(64) float acc[kMaxTileRows * kMaxTileCols];
      (*path.bf16_tiles)[rows - 1][blocks - 1](xb + m0 * ldb, ldb, pairs, staged.get(), staged_stride, acc);
      output(acc, m0, rows, c0, cols);
    }
  });
}
#endif

}  // namespace

int64_t weight_only_bf16_min_rows() {
#if defined(SLIMTORCH_HAVE_AVX512_BF16)
  if (vector_path(active_isa()).bf16_tiles != nullptr) return kBf16MinRows;
#endif
  return 0;
}

Status qlinear_weight_only(const float* x, int64_t m, int64_t k, int64_t ldx,
                           const int8_t* packed, const float* w_scale, const float* bias,
                           int64_t n, float* y, int64_t ldy, int n_threads) {
  return qlinear_weight_only(x, DType::kFloat32, m, k, ldx, packed, w_scale, bias, n, y, DType::kFloat32, ldy,
                             n_threads);
}

Status qlinear_weight_only(const void* x, DType x_dtype, int64_t m, int64_t k, int64_t ldx,
                           const int8_t* packed, const float* w_scale, const float* bias,
                           int64_t n, void* y, DType y_dtype, int64_t ldy, int n_threads) {
  if (m < 0 || n < 0 || k < 0 || ldx < k || ldy < n ||
      (m > 0 && n > 0 && (y == nullptr || w_scale == nullptr ||
                          (k > 0 && (x == nullptr || packed == nullptr)))) ||
      !offsets_fit(m, ldx) || !offsets_fit(m, ldy) || !offsets_fit(n, k))
    return Status::kInvalidArgument;
  if (m == 0 || n == 0) return Status::kOk;
#if defined(SLIMTORCH_HAVE_AMX)
  if (amx_weight_only_wanted(m, k)) {
    amx_weight_only(x, x_dtype, m, k, ldx, packed, w_scale, bias, n, y, y_dtype, ldy, n_threads);
    return Status::kOk;
  }
#endif
  const VectorPath& path = vector_path(active_isa());
  const WeightOnlyOutput output{path, w_scale, bias, y, y_dtype, ldy, half_conversions(y_dtype)};
#if defined(SLIMTORCH_HAVE_AVX512_BF16)
  if (path.bf16_tiles != nullptr && m >= kBf16MinRows && k > 0) {
    weight_only_bf16(path, x, x_dtype, m, k, ldx, packed, n, output, n_threads);
    return Status::kOk;
  }
#endif
  const int64_t k_pad = ceil_div(k, kQgemmGroupK) * kQgemmGroupK;
  const TileShape shape = path.float_shape;
  const int64_t block_stride = k_pad / kQgemmGroupK * kGroupBytes;
  // float32 rows of whole 4-k groups are read in place; other rows are
  // widened (zero past k) tile by tile into a buffer of each thread's chunk
  // of work items, so 16-bit x is never copied whole.
  const bool in_place = x_dtype == DType::kFloat32 && k_pad == k;
  const HalfConversions x_half = half_conversions(x_dtype);  // 16-bit x
  const auto make_widened = [&] {
    LineAlignedArray<float> widened;
    if (!in_place) widened.reset(size_t(shape.rows * k_pad));
    return widened;
  };
  for_each_panel(m, n, k_pad, shape, n_threads, make_widened,
                 [&](LineAlignedArray<float>& widened, int64_t first, int64_t last, int64_t nb0, int blocks) {
    const int64_t c0 = nb0 * kQgemmBlockN;
    const int64_t cols = std::min<int64_t>(blocks * kQgemmBlockN, n - c0);
    for (int64_t t = first; t < last; ++t) {
      const int64_t m0 = t * shape.rows;
      const int rows = int(std::min<int64_t>(shape.rows, m - m0));
      const float* tile_x = static_cast<const float*>(x) + m0 * ldx;
      int64_t tile_ldx = ldx;
      if (!in_place) {
        widen_rows(x_half, x, x_dtype, m0, rows, k, ldx, k_pad, widened.get());
        tile_x = widened.get();
        tile_ldx = k_pad;
      }
      alignas(64) float acc[kMaxTileRows * kMaxTileCols];
      (*path.float_tiles)[rows - 1][blocks - 1](tile_x, tile_ldx, k_pad, packed + nb0 * block_stride, block_stride,
                                                acc);
      output(acc, m0, rows, c0, cols);
    }
  });
  return Status::kOk;
}

}  // namespace slimtorch
