// qgemm paths for AVX-512 (x86-64; per-function target attributes).
// -Wpsabi: the skeletons of qgemm_paths.h pass vectors between inline
// functions that `flatten` merges into one target function, so no vector
// crosses a real call and GCC's note on the vector ABI does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
#include "narrow.h"
#include "qgemm_paths.h"

// GCC 12 reports its own _mm512_undefined_*() placeholders inside the
// AVX-512 intrinsic headers as uninitialized; the warning is a known false
// positive (GCC bug 105593) and would drown real ones.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#define SLIMTORCH_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))
#define SLIMTORCH_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
// Kernels built from the skeletons of qgemm_paths.h (see there).
#define SLIMTORCH_AVX512_KERNEL __attribute__((target("avx512f,avx512bw,avx512vl"), flatten))
#define SLIMTORCH_VNNI_KERNEL __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"), flatten))
#if defined(SLIMTORCH_HAVE_AMX)
// Variants for CPUs with AVX512-BF16 (the amx path, which isa.cpp grants only
// with it, and the avx512 path where the CPU has it; the compiler's support
// comes with AMX's).
#define SLIMTORCH_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#define SLIMTORCH_AVX512_BF16_KERNEL \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16"), flatten))
#endif

namespace slimtorch::qgemm_paths {
namespace {

// The primitives of the skeletons in qgemm_paths.h.
struct Avx512 {
  static constexpr int kLanes = 16;
  SLIMTORCH_AVX512 static inline __m512i load(const int32_t* p) { return _mm512_loadu_si512(p); }
  SLIMTORCH_AVX512 static inline __m512i load(const int8_t* p) { return _mm512_loadu_si512(p); }
  SLIMTORCH_AVX512 static inline __m512 load(const float* p) { return _mm512_loadu_ps(p); }
  SLIMTORCH_AVX512 static inline void store(int32_t* p, __m512i v) { _mm512_storeu_si512(p, v); }
  SLIMTORCH_AVX512 static inline void store(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
  SLIMTORCH_AVX512 static inline __m512 splat(float v) { return _mm512_set1_ps(v); }
  SLIMTORCH_AVX512 static inline __m512i shift_left(__m512i v, int bits) { return _mm512_slli_epi32(v, bits); }
  SLIMTORCH_AVX512 static inline __m512 top_byte_to_float(__m512i v) {
    return _mm512_cvtepi32_ps(_mm512_srai_epi32(v, 24));
  }
  SLIMTORCH_AVX512 static inline __m512 fma(__m512 x, __m512 w, __m512 c) { return _mm512_fmadd_ps(x, w, c); }
  SLIMTORCH_AVX512 static inline __m512 affine(__m512 v, __m512 scale, __m512 zp, bool fused) {
    return fused ? _mm512_fmadd_ps(v, scale, zp) : _mm512_add_ps(_mm512_mul_ps(v, scale), zp);
  }
  // The row quantization's levels: the rows are finite there, so only the
  // top needs a float clamp; the saturating packs take care of the bottom (see narrow.h).
  SLIMTORCH_AVX512 static inline __m512i levels(__m512 t) {
    return _mm512_cvtps_epi32(_mm512_min_ps(t, _mm512_set1_ps(255.0f)));
  }
  SLIMTORCH_AVX512 static inline void store_bytes(uint8_t* a, __m512i (&levels)[4]) {
    _mm512_storeu_si512(a, narrow_to_bytes64<false>(levels));
  }
};

// The integer group step: vpdpbusd, one broadcast of each row's 4 bytes.
struct VnniIntStep {
  template <int R, int V>
  SLIMTORCH_VNNI static inline void run(__m512i (&c)[R][V], const uint8_t* a, int64_t lda, const int8_t* b,
                                        int64_t block_stride, int64_t g) {
    __m512i w[V];
    SLIMTORCH_UNROLL
    for (int blk = 0; blk < V; ++blk) w[blk] = Avx512::load(vector_weights<Avx512>(b, block_stride, g, blk));
    SLIMTORCH_UNROLL
    for (int r = 0; r < R; ++r) {
      int32_t v;
      std::memcpy(&v, a + r * lda + 4 * g, 4);
      const __m512i av = _mm512_set1_epi32(v);
      SLIMTORCH_UNROLL
      for (int blk = 0; blk < V; ++blk) c[r][blk] = _mm512_dpbusd_epi32(c[r][blk], av, w[blk]);
    }
  }
};

template <int R, int B>
SLIMTORCH_VNNI_KERNEL void int_tile_vnni_kernel(const uint8_t* a, int64_t lda, int64_t k, const int8_t* b,
                                                int64_t block_stride, int32_t* acc, bool accumulate) {
  tile_loop<Avx512, VnniIntStep, R, B>(a, lda, k, b, block_stride, acc, accumulate);
}

template <int R, int B>
SLIMTORCH_AVX512_KERNEL void float_tile_avx512_kernel(const float* x, int64_t ldx, int64_t k, const int8_t* b,
                                                      int64_t block_stride, float* acc) {
  tile_loop<Avx512, LaneWidenedFloatStep<Avx512>, R, B>(x, ldx, k, b, block_stride, acc, false);
}

// One row (GEMV), AVX-512: the cheaper conversion. A 16-byte quarter of a
// packed group holds 4 channels x 4 k; vpmovsxbd widens it to 16 int32 lanes
// (channel-major), and the FMA pairs them with x[4g..4g+3] broadcast 4 times.
// Each quarter keeps its own accumulator of (channel, k mod 4) partial sums,
// added across k mod 4 once at the end: 3 ops per 16 weights instead of 4.
template <int R, int B>
SLIMTORCH_AVX512 void float_row_avx512(
    const float* x, int64_t, int64_t k, const int8_t* b, int64_t block_stride, float* acc) {
  static_assert(R == 1, "one row");
  __m512 c[B][4];
  SLIMTORCH_UNROLL
  for (int blk = 0; blk < B; ++blk)
    SLIMTORCH_UNROLL
    for (int q = 0; q < 4; ++q) c[blk][q] = _mm512_setzero_ps();
  const int64_t groups = k / 4;
  for (int64_t g = 0; g < groups; ++g) {
    const __m512 xv = _mm512_broadcast_f32x4(_mm_loadu_ps(x + 4 * g));
    SLIMTORCH_UNROLL
    for (int blk = 0; blk < B; ++blk) {
      const int8_t* w = b + blk * block_stride + g * kGroupBytes;
      SLIMTORCH_UNROLL
      for (int q = 0; q < 4; ++q) {
        const __m512i wi = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 16 * q)));
        c[blk][q] = _mm512_fmadd_ps(xv, _mm512_cvtepi32_ps(wi), c[blk][q]);
      }
    }
  }
  alignas(64) float partial[16];
  for (int blk = 0; blk < B; ++blk)
    for (int q = 0; q < 4; ++q) {
      _mm512_store_ps(partial, c[blk][q]);
      for (int ch = 0; ch < 4; ++ch)
        acc[blk * kQgemmBlockN + 4 * q + ch] =
            (partial[4 * ch] + partial[4 * ch + 1]) + (partial[4 * ch + 2] + partial[4 * ch + 3]);
    }
}

}  // namespace

const IntTiles int_tiles_vnni = SLIMTORCH_TILE_TABLE(int_tile_vnni_kernel);
// One row takes the GEMV kernel (float_row_avx512).
const FloatTiles float_tiles_avx512 = {
    SLIMTORCH_TILE_ROW(float_row_avx512, 1),         SLIMTORCH_TILE_ROW(float_tile_avx512_kernel, 2),
    SLIMTORCH_TILE_ROW(float_tile_avx512_kernel, 3), SLIMTORCH_TILE_ROW(float_tile_avx512_kernel, 4),
    SLIMTORCH_TILE_ROW(float_tile_avx512_kernel, 5), SLIMTORCH_TILE_ROW(float_tile_avx512_kernel, 6)};

namespace {

// float -> bfloat16 bits in the low half of each lane, rounded to nearest
// even by integer arithmetic (VCVTNEPS2BF16 would flush subnormals); NaN
// stays a quiet NaN.
SLIMTORCH_AVX512 inline __m256i round_to_bf16(__m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  __m512i h = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16);
  const __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(bits, _mm512_set1_epi32(0x7fffffff)),
                                                _mm512_set1_epi32(0x7f800000));
  h = _mm512_mask_or_epi32(h, nan, _mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40));
  return _mm512_cvtepi32_epi16(h);
}

// How a float32 vector becomes bfloat16 bits: IntegerRounding everywhere,
// NativeRounding where the CPU has AVX512-BF16, bit for bit the same results.
struct IntegerRounding {
  SLIMTORCH_AVX512 static inline __m256i bf16(__m512 v) { return round_to_bf16(v); }
};
#if defined(SLIMTORCH_HAVE_AMX)
struct NativeRounding {
  // VCVTNEPS2BF16 rounds to nearest even and quiets a NaN as round_to_bf16
  // does, in one instruction instead of nine, but reads subnormal input as
  // zero: a vector holding one (rare) takes the integer rounding. Callers are
  // SLIMTORCH_AVX512_BF16_KERNEL functions, which inline this.
  SLIMTORCH_AVX512_BF16 static inline __m256i bf16(__m512 v) {
    if (__builtin_expect(_mm512_fpclass_ps_mask(v, 0x20) != 0, 0)) return round_to_bf16(v);  // 0x20: subnormal
    return __m256i(_mm512_cvtneps_pbh(v));
  }
};
#endif

// Two vectors of 16 results, rounded to bf16, as one 64-byte store.
template <typename Rounding>
SLIMTORCH_AVX512 inline void store_bf16_pair(uint16_t* out, __m512 first, __m512 second) {
  const __m256i low = Rounding::bf16(first), high = Rounding::bf16(second);
  _mm512_storeu_si512(out, _mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1));
}

// The linear epilogue into float32 (e.y) or, with kBf16, into bfloat16
// (e.y_bf16), each output rounded once from its float32 value: kVectors
// column vectors from column c0 + c (the last with lanes last_live), their
// colsum, scale and bias in registers for all rows (the stores to y may
// alias every pointer of e, as far as the compiler knows, so in the other
// order they would be reloaded for every vector).
template <bool kBf16, typename Rounding, bool kBias, int kVectors>
SLIMTORCH_AVX512 inline void linear_epilogue_vectors(const LinearEpilogue& e, const int32_t* acc, int64_t m0,
                                                     int rows, int64_t c0, int64_t c, __mmask16 last_live) {
  __m512i cs[kVectors];
  __m512 ws[kVectors], b[kVectors];
  __mmask16 live[kVectors];
  for (int v = 0; v < kVectors; ++v) {
    live[v] = v == kVectors - 1 ? last_live : __mmask16(0xffff);
    const int64_t col = c0 + c + 16 * v;
    cs[v] = _mm512_maskz_loadu_epi32(live[v], e.colsum + col);
    ws[v] = _mm512_maskz_loadu_ps(live[v], e.w_scale + col);
    b[v] = kBias ? _mm512_maskz_loadu_ps(live[v], e.bias + col) : _mm512_setzero_ps();
  }
  const int32_t* const zero_point = e.zero_point + m0;
  const float* const row_scale = e.row_scale + m0;
  const int64_t ldy = e.ldy;
  const int32_t* a = acc + c;
  for (int r = 0; r < rows; ++r, a += kMaxTileCols) {
    const __m512i zp = _mm512_set1_epi32(zero_point[r]);
    const __m512 rs = _mm512_set1_ps(row_scale[r]);
    __m512 p[kVectors];
    for (int v = 0; v < kVectors; ++v) {
      const __m512i sums = _mm512_sub_epi32(_mm512_loadu_si512(a + 16 * v), _mm512_mullo_epi32(zp, cs[v]));
      p[v] = _mm512_mul_ps(_mm512_cvtepi32_ps(sums), _mm512_mul_ps(rs, ws[v]));
      if (kBias) p[v] = _mm512_add_ps(p[v], b[v]);
    }
    const int64_t out = (m0 + r) * ldy + c0 + c;
    if (kVectors == 2 && kBf16) {
      store_bf16_pair<Rounding>(e.y_bf16 + out, p[0], p[kVectors - 1]);
    } else {
      for (int v = 0; v < kVectors; ++v) {
        if (kBf16) {
          _mm256_mask_storeu_epi16(e.y_bf16 + out + 16 * v, live[v], Rounding::bf16(p[v]));
        } else {
          _mm512_mask_storeu_ps(e.y + out + 16 * v, live[v], p[v]);
        }
      }
    }
  }
}

// bf16 y goes a pair of vectors (a 32-column block) at a time, so that each
// row's outputs leave as one 64-byte store; one vector at a time wrote every
// row's line in two halves, 32 rows apart. Measured on the AMX path, 1
// thread, bf16 in/out, 2048 rows: 768 -> 768 1.57 -> 1.50 ms, 768 -> 3072
// 5.50 -> 5.26 ms. float32 y (two lines a row) measured slower that way
// (768 -> 3072: 5.8 -> 6.2 ms), so it stays one vector at a time.
template <bool kBf16, typename Rounding, bool kBias>
SLIMTORCH_AVX512 inline void linear_epilogue_columns(const LinearEpilogue& e, const int32_t* acc, int64_t m0,
                                                     int rows, int64_t c0, int64_t cols) {
  int64_t c = 0;
  if (kBf16)
    for (; c + 32 <= cols; c += 32)
      linear_epilogue_vectors<kBf16, Rounding, kBias, 2>(e, acc, m0, rows, c0, c, __mmask16(0xffff));
  for (; c < cols; c += 16) {
    const __mmask16 live = cols - c >= 16 ? __mmask16(0xffff) : __mmask16((1u << (cols - c)) - 1);
    linear_epilogue_vectors<kBf16, Rounding, kBias, 1>(e, acc, m0, rows, c0, c, live);
  }
}

template <bool kBf16, typename Rounding = IntegerRounding>
SLIMTORCH_AVX512 inline void linear_epilogue_to(const LinearEpilogue& e, const int32_t* acc, int64_t m0, int rows,
                                                int64_t c0, int64_t cols) {
  if (e.bias) {
    linear_epilogue_columns<kBf16, Rounding, true>(e, acc, m0, rows, c0, cols);
  } else {
    linear_epilogue_columns<kBf16, Rounding, false>(e, acc, m0, rows, c0, cols);
  }
}

}  // namespace

SLIMTORCH_AVX512 void linear_epilogue_avx512(
    const LinearEpilogue& e, const int32_t* acc, int64_t m0, int rows, int64_t c0, int64_t cols) {
  linear_epilogue_to<false>(e, acc, m0, rows, c0, cols);
}

SLIMTORCH_AVX512 void linear_epilogue_bf16_avx512(
    const LinearEpilogue& e, const int32_t* acc, int64_t m0, int rows, int64_t c0, int64_t cols) {
  linear_epilogue_to<true>(e, acc, m0, rows, c0, cols);
}

// y[r][c] = acc * w_scale[c] + bias[c]
SLIMTORCH_AVX512 void float_epilogue_avx512(
    const float* acc, const float* w_scale, const float* bias, float* y, int64_t ldy, int rows,
    int64_t cols) {
  for (int r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 live = cols - c >= 16 ? __mmask16(0xffff) : __mmask16((1u << (cols - c)) - 1);
      __m512 p = _mm512_mul_ps(_mm512_loadu_ps(acc + r * kMaxTileCols + c),
                               _mm512_maskz_loadu_ps(live, w_scale + c));
      if (bias) p = _mm512_add_ps(p, _mm512_maskz_loadu_ps(live, bias + c));
      _mm512_mask_storeu_ps(y + r * ldy + c, live, p);
    }
}

#if defined(SLIMTORCH_HAVE_AMX)
namespace {
// float_epilogue_avx512 into bfloat16 y, each result rounded once; a pair
// of column vectors at a time, then one, as linear_epilogue_columns does
// for bf16 y (1 thread, 2048 x 768 -> 3072: 10.6-10.8 -> 9.5-9.9 ms). (For float32 y
// the row order is faster: it writes each row's two lines back to back.)
template <bool kBias>
SLIMTORCH_AVX512_BF16 inline void float_epilogue_bf16_columns(const float* acc, const float* w_scale,
                                                              const float* bias, uint16_t* y, int64_t ldy, int rows,
                                                              int64_t cols) {
  int64_t c = 0;
  for (; c + 32 <= cols; c += 32) {
    const __m512 ws0 = _mm512_loadu_ps(w_scale + c), ws1 = _mm512_loadu_ps(w_scale + c + 16);
    const __m512 b0 = kBias ? _mm512_loadu_ps(bias + c) : _mm512_setzero_ps();
    const __m512 b1 = kBias ? _mm512_loadu_ps(bias + c + 16) : _mm512_setzero_ps();
    const float* a = acc + c;
    for (int r = 0; r < rows; ++r, a += kMaxTileCols) {
      __m512 p0 = _mm512_mul_ps(_mm512_loadu_ps(a), ws0), p1 = _mm512_mul_ps(_mm512_loadu_ps(a + 16), ws1);
      if (kBias) {
        p0 = _mm512_add_ps(p0, b0);
        p1 = _mm512_add_ps(p1, b1);
      }
      store_bf16_pair<NativeRounding>(y + r * ldy + c, p0, p1);
    }
  }
  for (; c < cols; c += 16) {
    const __mmask16 live = cols - c >= 16 ? __mmask16(0xffff) : __mmask16((1u << (cols - c)) - 1);
    const __m512 ws = _mm512_maskz_loadu_ps(live, w_scale + c);
    const __m512 b = kBias ? _mm512_maskz_loadu_ps(live, bias + c) : _mm512_setzero_ps();
    const float* a = acc + c;
    for (int r = 0; r < rows; ++r, a += kMaxTileCols) {
      __m512 p = _mm512_mul_ps(_mm512_loadu_ps(a), ws);
      if (kBias) p = _mm512_add_ps(p, b);
      _mm256_mask_storeu_epi16(y + r * ldy + c, live, NativeRounding::bf16(p));
    }
  }
}
}  // namespace

// ---- weight-only on AVX512-BF16: vdpbf16ps -------------------------------------------
//
// vdpbf16ps adds to each float32 lane the two products of a bf16 pair: lane
// j of a staged weight row holds channel j's (k = 2p, 2p + 1), the x side is
// row r's pair broadcast to every lane. Products of bf16 values are exact in
// float32; each pair's sum is added with one rounding.

namespace {

template <int R, int B>
SLIMTORCH_AVX512_BF16_KERNEL void bf16_tile_kernel(const uint16_t* xb, int64_t ldb, int64_t pairs,
                                                   const uint8_t* wb, int64_t w_stride, float* acc) {
  __m512 c[R][B];
  SLIMTORCH_UNROLL
  for (int r = 0; r < R; ++r)
    SLIMTORCH_UNROLL
    for (int j = 0; j < B; ++j) c[r][j] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    __m512bh w[B];
    SLIMTORCH_UNROLL
    for (int j = 0; j < B; ++j) w[j] = (__m512bh)_mm512_loadu_si512(wb + j * w_stride + p * kBf16PairBytes);
    SLIMTORCH_UNROLL
    for (int r = 0; r < R; ++r) {
      int32_t pair;
      std::memcpy(&pair, xb + r * ldb + 2 * p, sizeof pair);
      const __m512bh a = (__m512bh)_mm512_set1_epi32(pair);
      SLIMTORCH_UNROLL
      for (int j = 0; j < B; ++j) c[r][j] = _mm512_dpbf16_ps(c[r][j], a, w[j]);
    }
  }
  SLIMTORCH_UNROLL
  for (int r = 0; r < R; ++r)
    SLIMTORCH_UNROLL
    for (int j = 0; j < B; ++j) _mm512_storeu_ps(acc + r * kMaxTileCols + j * kQgemmBlockN, c[r][j]);
}

}  // namespace

const BF16Tiles bf16_tiles_avx512 = SLIMTORCH_TILE_TABLE(bf16_tile_kernel);

SLIMTORCH_AVX512_BF16 void rows_to_bf16_avx512(const void* x, DType dtype, int64_t ldx, int64_t k, int64_t width,
                                               uint16_t* xb, int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    uint16_t* out = xb + r * width;
    for (int64_t i = 0; i < width; i += 16) {
      const int64_t live_count = std::max<int64_t>(std::min<int64_t>(k - i, 16), 0);
      const __mmask16 live = __mmask16((uint32_t(1) << live_count) - 1);
      const auto* halves = static_cast<const uint16_t*>(x) + r * ldx + i;
      __m256i v;
      if (dtype == DType::kBFloat16) {
        v = _mm256_maskz_loadu_epi16(live, halves);
      } else {
        const __m512 f = dtype == DType::kFloat32
                             ? _mm512_maskz_loadu_ps(live, static_cast<const float*>(x) + r * ldx + i)
                             : _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(live, halves));
        v = __m256i(_mm512_cvtneps_pbh(f));
      }
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), v);
    }
  }
}

// Each packed k-group (64 bytes: 16 channels x 4 int8) becomes two pair rows:
// lane j of the first = bf16(q[j][0]) | bf16(q[j][1]) << 16, the second the
// same for k 2 and 3. int8 -> float -> its top 16 bits is exact bf16.
namespace {
// The float32 bits of the signed byte in the top 8 bits of each lane.
SLIMTORCH_AVX512 inline __m512i as_float_bits(__m512i byte_at_top) {
  return _mm512_castps_si512(_mm512_cvtepi32_ps(_mm512_srai_epi32(byte_at_top, 24)));
}
}  // namespace

SLIMTORCH_AVX512_BF16 void weight_groups_to_bf16_avx512(const int8_t* block, int64_t g0, int64_t count,
                                                        int64_t groups, uint8_t* out) {
  const __m512i high = _mm512_set1_epi32(int32_t(0xffff0000u));
  for (int64_t g = g0; g < g0 + count; ++g, out += 2 * kBf16PairBytes) {
    if (g >= groups) {
      std::memset(out, 0, size_t(2 * kBf16PairBytes));
      continue;
    }
    const __m512i v = _mm512_loadu_si512(block + g * kGroupBytes);
    const __m512i k0 = _mm512_srli_epi32(as_float_bits(_mm512_slli_epi32(v, 24)), 16);
    const __m512i k1 = _mm512_and_si512(as_float_bits(_mm512_slli_epi32(v, 16)), high);
    const __m512i k2 = _mm512_srli_epi32(as_float_bits(_mm512_slli_epi32(v, 8)), 16);
    const __m512i k3 = _mm512_and_si512(as_float_bits(v), high);
    _mm512_storeu_si512(out, _mm512_or_si512(k0, k1));
    _mm512_storeu_si512(out + kBf16PairBytes, _mm512_or_si512(k2, k3));
  }
}

SLIMTORCH_AVX512_BF16_KERNEL void float_epilogue_bf16_avx512bf16(const float* acc, const float* w_scale, const float* bias,
                                                          uint16_t* y, int64_t ldy, int rows, int64_t cols) {
  if (bias) {
    float_epilogue_bf16_columns<true>(acc, w_scale, bias, y, ldy, rows, cols);
  } else {
    float_epilogue_bf16_columns<false>(acc, w_scale, bias, y, ldy, rows, cols);
  }
}
#endif

SLIMTORCH_AVX512_KERNEL void quantize_row_avx512(const float* x, int64_t k, float inv, int32_t zp, bool fused,
                                                 uint8_t* a) {
  const __m512 scale = _mm512_set1_ps(inv), zpv = _mm512_set1_ps(float(zp));
  const __m512 lo = _mm512_setzero_ps(), hi = _mm512_set1_ps(255.0f);
  for (int64_t i = quantize_row_loop<Avx512>(x, k, inv, zp, fused, a); i < k; i += 16) {
    const __mmask16 live = k - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (k - i)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(live, x + i);
    const __m512 t = _mm512_min_ps(_mm512_max_ps(Avx512::affine(v, scale, zpv, fused), lo), hi);
    _mm_mask_storeu_epi8(a + i, live, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(t)));
  }
}

namespace {
template <typename Rounding>
SLIMTORCH_AVX512 inline void to_bf16_with(const float* in, int64_t n, uint16_t* out) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 live = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1);
    _mm256_mask_storeu_epi16(out + i, live, Rounding::bf16(_mm512_maskz_loadu_ps(live, in + i)));
  }
}
}  // namespace

SLIMTORCH_AVX512 void to_bf16_avx512(const float* in, int64_t n, uint16_t* out) {
  to_bf16_with<IntegerRounding>(in, n, out);
}

#if defined(SLIMTORCH_HAVE_AMX)
SLIMTORCH_AVX512_BF16_KERNEL void to_bf16_avx512bf16(const float* in, int64_t n, uint16_t* out) {
  to_bf16_with<NativeRounding>(in, n, out);
}

SLIMTORCH_AVX512_BF16_KERNEL void linear_epilogue_bf16_avx512bf16(
    const LinearEpilogue& e, const int32_t* acc, int64_t m0, int rows, int64_t c0, int64_t cols) {
  linear_epilogue_to<true, NativeRounding>(e, acc, m0, rows, c0, cols);
}
#endif

// bfloat16 bits -> float32 (exact: the bits become the top half).
SLIMTORCH_AVX512 void bf16_to_float_avx512(const uint16_t* in, int64_t n, float* out) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 live = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1);
    const __m512i bits = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(live, in + i)), 16);
    _mm512_mask_storeu_ps(out + i, live, _mm512_castsi512_ps(bits));
  }
}

SLIMTORCH_AVX512 void minmax_avx512(const float* x, int64_t k, float* lo, float* hi, bool* finite) {
  // Four independent min/max chains: one chain waits on the min/max latency
  // for every vector, which bounds a row already in cache.
  __m512 mn[4], mx[4];
  for (int j = 0; j < 4; ++j) mn[j] = mx[j] = _mm512_setzero_ps();
  __mmask16 bad = 0;
  int64_t i = 0;
  for (; i + 64 <= k; i += 64)
    for (int j = 0; j < 4; ++j) {
      const __m512 v = _mm512_loadu_ps(x + i + 16 * j);
      bad |= _mm512_cmp_ps_mask(_mm512_sub_ps(v, v), _mm512_setzero_ps(), _CMP_NEQ_UQ);
      mn[j] = _mm512_min_ps(mn[j], v);
      mx[j] = _mm512_max_ps(mx[j], v);
    }
  for (; i < k; i += 16) {
    const __mmask16 live = k - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (k - i)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(live, x + i);  // dead lanes read as 0
    bad |= _mm512_cmp_ps_mask(_mm512_sub_ps(v, v), _mm512_setzero_ps(), _CMP_NEQ_UQ);
    mn[0] = _mm512_min_ps(mn[0], v);
    mx[0] = _mm512_max_ps(mx[0], v);
  }
  *lo = _mm512_reduce_min_ps(_mm512_min_ps(_mm512_min_ps(mn[0], mn[1]), _mm512_min_ps(mn[2], mn[3])));
  *hi = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(mx[0], mx[1]), _mm512_max_ps(mx[2], mx[3])));
  *finite = bad == 0;
}

}  // namespace slimtorch::qgemm_paths
