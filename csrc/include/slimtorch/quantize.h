// Affine int8 / uint8 quantization: choose_qparams, quantize, dequantize.
//
// Layout: every tensor is a dense row-major buffer viewed as
// [outer, channels, inner]; channel c's elements are
// x[(o * channels + c) * inner + i]. Per-tensor quantization is the view
// [1, 1, n]. `scale` and `zero_point` hold one value per channel.
//
// Formulas (bit-exact with torch 2.13 on CPU, measured; see
// python/slimtorch/ops/quantize.py for the full contract):
//   inv = float32(1 / scale)
//   per tensor:  q = clamp(rint(fma(x, inv, zp)), qmin, qmax)
//                    (torch.quantize_per_tensor: one rounding of x*inv + zp)
//   per channel: q = clamp(rint((x * inv) + zp), qmin, qmax)
//                    (torch.quantize_per_channel: multiply, round, add, round)
//   rint rounds half to even. NaN -> zp, +/-Inf -> qmax/qmin.
//   dequantize:  out = float32(q - zp) * scale, rounded once to the output dtype.
// Half-precision inputs are converted to float32 exactly first.
#pragma once

#include <math.h>

#include "slimtorch/cuda.h"

#if defined(__CUDACC__)
#define SLIMTORCH_HOST_DEVICE __host__ __device__
#else
#define SLIMTORCH_HOST_DEVICE
#endif

namespace slimtorch {

enum class QType : int { kInt8 = 0, kUInt8 = 1 };

SLIMTORCH_HOST_DEVICE inline int32_t qtype_min(QType qtype) { return qtype == QType::kInt8 ? -128 : 0; }
SLIMTORCH_HOST_DEVICE inline int32_t qtype_max(QType qtype) { return qtype == QType::kInt8 ? 127 : 255; }

// The smallest scale choose_qparams returns (float32 machine epsilon, the
// clamp torch's observers use): an all-zero channel gets this scale.
constexpr float kMinChooseScale = 1.1920928955078125e-07f;  // 2^-23

// Shape of a buffer viewed as [outer, channels, inner].
struct ChannelView {
  int64_t outer = 1, channels = 1, inner = 0;
  SLIMTORCH_HOST_DEVICE int64_t numel() const { return outer * channels * inner; }
};

// Quantization parameters are valid when every scale is finite, > 0 and has
// a finite float32 reciprocal, and every zero point lies in [qmin, qmax].
// Returns -1 when all are valid, else the first invalid channel, with
// *bad_scale telling whether its scale (true) or zero point (false) failed.
int64_t find_invalid_qparams(const float* scale, const int32_t* zero_point, int64_t channels,
                             QType qtype, bool* bad_scale);

// Scale and zero point for the value range [lo, hi] (both finite):
//  asymmetric: range widened to include 0; scale = (hi - lo) / (qmax - qmin),
//              zp = qmin - rint(lo / scale), clamped to [qmin, qmax];
//  symmetric:  scale = max(|lo|, |hi|) / 127; zp = 0 (int8) or 128 (uint8).
// Division in double, rounded to float32 once; scale is at least kMinChooseScale.
// Shared by the CPU and CUDA kernels so both give identical bits.
SLIMTORCH_HOST_DEVICE inline void qparams_from_range(float lo, float hi, bool symmetric, QType qtype,
                                                     float* scale, int32_t* zero_point) {
  const int32_t qmin = qtype_min(qtype), qmax = qtype_max(qtype);
  lo = lo < 0.0f ? lo : 0.0f;
  hi = hi > 0.0f ? hi : 0.0f;
  float s;
  if (symmetric) {
    const double amax = -double(lo) > double(hi) ? -double(lo) : double(hi);
    s = float(amax / 127.0);
  } else {
    s = float((double(hi) - double(lo)) / double(qmax - qmin));
  }
  *scale = s > kMinChooseScale ? s : kMinChooseScale;
  if (symmetric) {
    *zero_point = qtype == QType::kInt8 ? 0 : 128;
    return;
  }
  double zp = double(qmin) - rint(double(lo) / double(*scale));  // rint: half to even
  zp = zp < double(qmin) ? double(qmin) : (zp > double(qmax) ? double(qmax) : zp);
  *zero_point = int32_t(zp);
}

// Per-channel min/max of x, then qparams_from_range. Returns kNonFinite when
// x holds NaN or Inf (outputs unspecified). An empty channel counts as [0, 0].
Status choose_qparams(const void* x, DType dtype, ChannelView view, bool symmetric, QType qtype,
                      float* scale, int32_t* zero_point, int n_threads);

// q (int8 or uint8 bytes) = quantize(x). per_channel selects the formula
// (see above); with per_channel false, view.channels must be 1.
// Returns kInvalidArgument for invalid parameters (find_invalid_qparams).
Status quantize(const void* x, DType dtype, ChannelView view, bool per_channel,
                const float* scale, const int32_t* zero_point, QType qtype, void* q,
                int n_threads);

// out (out_dtype) = dequantize(q).
Status dequantize(const void* q, QType qtype, ChannelView view, const float* scale,
                  const int32_t* zero_point, void* out, DType out_dtype, int n_threads);

namespace cuda {
// Device versions (every pointer is a device pointer; launched on `stream`,
// never synchronizing). Parameters must already be valid: the op layer
// checks them on the host. choose_qparams needs `workspace`: 2 * channels + 1
// int32; afterwards workspace[2 * channels] != 0 iff x held NaN or Inf
// (scale / zero_point are then unspecified).
Status choose_qparams(const void* x, DType dtype, ChannelView view, bool symmetric, QType qtype,
                      float* scale, int32_t* zero_point, int32_t* workspace, Stream stream);
Status quantize(const void* x, DType dtype, ChannelView view, bool per_channel,
                const float* scale, const int32_t* zero_point, QType qtype, void* q,
                Stream stream);
Status dequantize(const void* q, QType qtype, ChannelView view, const float* scale,
                  const int32_t* zero_point, void* out, DType out_dtype, Stream stream);
}  // namespace cuda

}  // namespace slimtorch
