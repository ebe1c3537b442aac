"""int8 GEMM / linear ops.

Weights are quantized once per output channel (symmetric int8, see
:func:`qgemm_quantize_weight`) and packed once (:func:`qgemm_pack_weight`) into
the kernel's VNNI 16x4 layout ``[ceil(N/16), ceil(K/4), 16, 4]`` with their
column sums. Three linear modes use the packed weight:

* :func:`qlinear_dynamic`: each activation row is quantized on the fly to
  asymmetric uint8 (per-row scale and zero point; uint8 x int8 is what
  vpdpbusd multiplies natively, and an asymmetric row uses all 256 levels),
  accumulated exactly in int32, then a float epilogue applies scales and bias.
* :func:`qlinear_static`: the same with a given per-tensor activation scale and
  zero point (from calibration).
* :func:`qlinear_weight_only`: float activations; the kernel converts int8
  weights in registers and never materialises a float weight.

:func:`qgemm_quantize_rows` and :func:`qgemm_s32` expose the two integer
stages (row quantization, exact int32 accumulators) for testing and for
callers that want the integers. Non-finite activations: in the dynamic and
static modes a row holding NaN or +/-Inf gives a NaN output row; weight-only
follows IEEE float arithmetic like ``nn.Linear``.

Gradients: the three linear ops are differentiable with respect to ``x``
only (weights, scales and bias are frozen). The integer modes use the
straight-through estimator: the activation quantization is treated as the
identity, so ``grad_x = grad_y @ dequantized_weight``.
"""

from __future__ import annotations

import math
import numbers

import torch

from slimtorch import _native
from slimtorch.ops._checks import FLOAT_DTYPES, check_real, check_tensor
from slimtorch.reference import qgemm as ref

__all__ = [
    "MAX_K",
    "qgemm_pack_weight",
    "qgemm_quantize_rows",
    "qgemm_quantize_weight",
    "qgemm_s32",
    "qlinear_dynamic",
    "qlinear_static",
    "qlinear_weight_only",
]

BLOCK_N = ref.BLOCK_N
GROUP_K = ref.GROUP_K
# Largest K whose int32 accumulators cannot overflow: 255 * 127 * K < 2^31.
MAX_K = 66311


def _rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """x [..., K] as a float32 [M, K] view the kernels can read (unit stride
    along K, rows at least K apart), and its row stride."""
    k = x.shape[-1]
    x2 = x.reshape(math.prod(x.shape[:-1]), k)
    if x2.dtype != torch.float32:
        x2 = x2.float()
    m = x2.shape[0]
    if x2.stride(-1) != 1 and k > 1 or m > 1 and x2.stride(0) < k:
        x2 = x2.contiguous()
    return x2, (x2.stride(0) if m > 1 else k)


def _cpu_u8s8(x, packed, w_scale, colsum, bias, is_static, x_scale, x_zero_point):
    n = w_scale.shape[0]
    x2, ldx = _rows(x)
    m, k = x2.shape
    y = torch.empty((m, n), dtype=torch.float32)
    _native.cpu.qlinear_u8s8(
        x2.data_ptr(), m, k, ldx, packed.data_ptr(), w_scale.data_ptr(), colsum.data_ptr(),
        0 if bias is None else bias.data_ptr(), n, y.data_ptr(), n,
        is_static, x_scale, x_zero_point, _native.num_threads(),
    )
    return y.reshape(*x.shape[:-1], n).to(x.dtype)


def _cpu_weight_only(x, packed, w_scale, bias):
    n = w_scale.shape[0]
    x2, ldx = _rows(x)
    m, k = x2.shape
    y = torch.empty((m, n), dtype=torch.float32)
    _native.cpu.qlinear_weight_only(
        x2.data_ptr(), m, k, ldx, packed.data_ptr(), w_scale.data_ptr(),
        0 if bias is None else bias.data_ptr(), n, y.data_ptr(), n, _native.num_threads(),
    )
    return y.reshape(*x.shape[:-1], n).to(x.dtype)


def _linear_fake(x: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], w_scale.shape[0]))


def _unpacked(packed: torch.Tensor, w_scale: torch.Tensor, k: int) -> torch.Tensor:
    return ref.unpack_weight(packed, w_scale.shape[0], k)


# ---- torch.library ops (kernels assume validated arguments) ----------------

@torch.library.custom_op("slimtorch::qgemm_quantize_rows", mutates_args=())
def _quantize_rows_op(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _native.warn_fallback("qgemm_quantize_rows", x.device)
    return ref.quantize_rows(x)


@_quantize_rows_op.register_fake
def _(x):
    return (
        torch.empty_like(x, dtype=torch.uint8, memory_format=torch.contiguous_format),
        x.new_empty(x.shape[:-1], dtype=torch.float32),
        x.new_empty(x.shape[:-1], dtype=torch.int32),
    )


@_quantize_rows_op.register_kernel("cpu")
def _(x):
    if _native.cpu is None:
        _native.warn_fallback("qgemm_quantize_rows", x.device)
        return ref.quantize_rows(x)
    x2, ldx = _rows(x)
    m, k = x2.shape
    a = torch.empty((m, k), dtype=torch.uint8)
    scale = torch.empty(m, dtype=torch.float32)
    zero_point = torch.empty(m, dtype=torch.int32)
    _native.cpu.quantize_rows_u8(
        x2.data_ptr(), m, k, ldx, a.data_ptr(), k, scale.data_ptr(), zero_point.data_ptr(),
        _native.num_threads(),
    )
    lead = x.shape[:-1]
    return a.reshape(x.shape), scale.reshape(lead), zero_point.reshape(lead)


@torch.library.custom_op("slimtorch::qgemm_s32", mutates_args=())
def _qgemm_s32_op(a: torch.Tensor, packed: torch.Tensor, n: int) -> torch.Tensor:
    _native.warn_fallback("qgemm_s32", a.device)
    k = a.shape[-1]
    q = ref.unpack_weight(packed, n, k)
    return ref.qgemm_s32(a.reshape(math.prod(a.shape[:-1]), k), q).reshape(*a.shape[:-1], n)


@_qgemm_s32_op.register_fake
def _(a, packed, n):
    return a.new_empty((*a.shape[:-1], n), dtype=torch.int32)


@_qgemm_s32_op.register_kernel("cpu")
def _(a, packed, n):
    k = a.shape[-1]
    if _native.cpu is None:
        _native.warn_fallback("qgemm_s32", a.device)
        return ref.qgemm_s32(a.reshape(math.prod(a.shape[:-1]), k), ref.unpack_weight(packed, n, k)).reshape(*a.shape[:-1], n)
    a2 = a.reshape(math.prod(a.shape[:-1]), k).contiguous()
    m = a2.shape[0]
    c = torch.empty((m, n), dtype=torch.int32)
    _native.cpu.qgemm_u8s8s32(a2.data_ptr(), m, k, k, packed.data_ptr(), n, c.data_ptr(), n,
                              _native.num_threads())
    return c.reshape(*a.shape[:-1], n)


@torch.library.custom_op("slimtorch::qlinear_dynamic", mutates_args=())
def _dynamic_op(x: torch.Tensor, packed: torch.Tensor, w_scale: torch.Tensor, colsum: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
    _native.warn_fallback("qlinear_dynamic", x.device)
    return ref.qlinear_dynamic(x, _unpacked(packed, w_scale, x.shape[-1]), w_scale, bias)


@_dynamic_op.register_fake
def _(x, packed, w_scale, colsum, bias):
    return _linear_fake(x, w_scale)


@_dynamic_op.register_kernel("cpu")
def _(x, packed, w_scale, colsum, bias):
    if _native.cpu is None:
        _native.warn_fallback("qlinear_dynamic", x.device)
        return ref.qlinear_dynamic(x, _unpacked(packed, w_scale, x.shape[-1]), w_scale, bias)
    return _cpu_u8s8(x, packed, w_scale, colsum, bias, False, 1.0, 0)


@torch.library.custom_op("slimtorch::qlinear_static", mutates_args=())
def _static_op(x: torch.Tensor, packed: torch.Tensor, w_scale: torch.Tensor, colsum: torch.Tensor,
               bias: torch.Tensor | None, x_scale: float, x_zero_point: int) -> torch.Tensor:
    _native.warn_fallback("qlinear_static", x.device)
    q = _unpacked(packed, w_scale, x.shape[-1])
    return ref.qlinear_static(x, q, w_scale, bias, x_scale, x_zero_point)


@_static_op.register_fake
def _(x, packed, w_scale, colsum, bias, x_scale, x_zero_point):
    return _linear_fake(x, w_scale)


@_static_op.register_kernel("cpu")
def _(x, packed, w_scale, colsum, bias, x_scale, x_zero_point):
    if _native.cpu is None:
        _native.warn_fallback("qlinear_static", x.device)
        q = _unpacked(packed, w_scale, x.shape[-1])
        return ref.qlinear_static(x, q, w_scale, bias, x_scale, x_zero_point)
    return _cpu_u8s8(x, packed, w_scale, colsum, bias, True, x_scale, x_zero_point)


@torch.library.custom_op("slimtorch::qlinear_weight_only", mutates_args=())
def _weight_only_op(x: torch.Tensor, packed: torch.Tensor, w_scale: torch.Tensor,
                    bias: torch.Tensor | None) -> torch.Tensor:
    _native.warn_fallback("qlinear_weight_only", x.device)
    return ref.qlinear_weight_only(x, _unpacked(packed, w_scale, x.shape[-1]), w_scale, bias)


@_weight_only_op.register_fake
def _(x, packed, w_scale, bias):
    return _linear_fake(x, w_scale)


@_weight_only_op.register_kernel("cpu")
def _(x, packed, w_scale, bias):
    if _native.cpu is None:
        _native.warn_fallback("qlinear_weight_only", x.device)
        return ref.qlinear_weight_only(x, _unpacked(packed, w_scale, x.shape[-1]), w_scale, bias)
    return _cpu_weight_only(x, packed, w_scale, bias)


# ---- gradients: with respect to x only (straight-through for the integer modes)

def _setup_context(ctx, inputs, output):
    x, packed, w_scale = inputs[0], inputs[1], inputs[2]
    ctx.save_for_backward(packed, w_scale)
    ctx.k = x.shape[-1]
    ctx.x_dtype = x.dtype
    ctx.n_inputs = len(inputs)


def _backward(ctx, grad):
    packed, w_scale = ctx.saved_tensors
    weight = _unpacked(packed, w_scale, ctx.k).float() * w_scale[:, None]
    grad_x = (grad.float() @ weight).to(ctx.x_dtype)
    return (grad_x,) + (None,) * (ctx.n_inputs - 1)


for _op in (_dynamic_op, _static_op, _weight_only_op):
    _op.register_autograd(_backward, setup_context=_setup_context)


# ---- validation -------------------------------------------------------------------

def _check_packed(packed: object, n: int | None = None, k: int | None = None) -> torch.Tensor:
    packed = check_tensor("packed", packed, (torch.int8,))
    if packed.dim() != 4 or tuple(packed.shape[2:]) != (BLOCK_N, GROUP_K):
        raise ValueError(
            f"packed: expected the layout [ceil(N/16), ceil(K/4), 16, 4] from qgemm_pack_weight, "
            f"got shape {tuple(packed.shape)}"
        )
    if not packed.is_contiguous():
        raise ValueError("packed: expected a contiguous tensor (from qgemm_pack_weight)")
    if n is not None and packed.shape[0] != -(-n // BLOCK_N):
        raise ValueError(f"packed: holds {packed.shape[0]} blocks of 16 output channels, "
                         f"expected {-(-n // BLOCK_N)} for {n} output channels")
    if k is not None and packed.shape[1] != -(-k // GROUP_K):
        raise ValueError(f"packed: holds {packed.shape[1]} groups of 4 input features, "
                         f"expected {-(-k // GROUP_K)} for x with {k} features")
    return packed


def _check_vector(name: str, value: object, dtypes, n: int, device: torch.device) -> torch.Tensor:
    value = check_tensor(name, value, dtypes)
    if value.dim() != 1 or value.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},), got {tuple(value.shape)}")
    if value.device != device:
        raise ValueError(f"{name}: expected a tensor on {device}, got {value.device}")
    return value


def _check_linear_args(x, packed, w_scale, colsum, bias, integer: bool):
    x = check_tensor("x", x, FLOAT_DTYPES)
    if x.dim() < 1:
        raise ValueError("x: expected at least 1 dimension [..., in_features], got a 0-d tensor")
    k = x.shape[-1]
    if integer and k > MAX_K:
        raise ValueError(f"x: at most {MAX_K} features fit exact int32 accumulation, got {k}")
    w_scale = check_tensor("w_scale", w_scale, (torch.float32,))
    if w_scale.dim() != 1:
        raise ValueError(f"w_scale: expected a 1-d tensor of per-channel scales, got shape {tuple(w_scale.shape)}")
    n = w_scale.shape[0]
    packed = _check_packed(packed, n, k)
    if packed.device != x.device:
        raise ValueError(f"packed: expected a tensor on {x.device} (the device of x), got {packed.device}")
    w_scale = _check_vector("w_scale", w_scale, (torch.float32,), n, x.device).contiguous()
    if colsum is not None:
        colsum = _check_vector("colsum", colsum, (torch.int32,), n, x.device).contiguous()
    if bias is not None:
        bias = _check_vector("bias", bias, FLOAT_DTYPES, n, x.device).to(torch.float32).contiguous()
    return x, packed, w_scale, colsum, bias


def check_zero_point(value: object) -> int:
    """An activation zero point: an int in [0, 255] (uint8)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.dtype.is_floating_point or value.dtype == torch.bool:
            raise TypeError(f"x_zero_point: expected an int or a one-element integer tensor, got {value.dtype} shape {tuple(value.shape)}")
        value = int(value.item())
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"x_zero_point: expected an int, got {type(value).__name__}")
    if not 0 <= int(value) <= 255:
        raise ValueError(f"x_zero_point: expected an int in [0, 255], got {value}")
    return int(value)


def check_scale(value: object) -> float:
    """An activation scale: a number that is, in float32, normal, positive and
    finite (so 1/scale is finite too). Returned rounded to float32."""
    scale = check_real("x_scale", value, allow_inf=False)
    scale32 = float(torch.tensor(scale, dtype=torch.float32))
    if not ref.FLT_MIN <= scale32 < float("inf"):
        raise ValueError(f"x_scale: expected a positive finite float32 scale >= {ref.FLT_MIN}, got {scale}")
    return scale32


# ---- public API -----------------------------------------------------------------------

def qgemm_quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a linear weight per output channel to symmetric int8.

    Args:
        weight: float tensor ``[N, K]`` (float32, float16 or bfloat16), finite.

    Returns:
        ``(q, scale)``: int8 ``[N, K]`` with values in [-127, 127] and float32
        ``[N]`` with ``scale[n] = max(max|weight[n]| / 127, FLT_MIN)`` and
        ``q = clamp(round_half_even(weight * (1/scale)), -127, 127)``.
    """
    weight = check_tensor("weight", weight, FLOAT_DTYPES)
    if weight.dim() != 2:
        raise ValueError(f"weight: expected a 2-d tensor [out_features, in_features], got shape {tuple(weight.shape)}")
    if not bool(torch.isfinite(weight).all()):
        raise ValueError("weight: contains NaN or Inf; int8 quantization needs finite weights")
    return ref.quantize_weight(weight)


def qgemm_pack_weight(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack int8 weights ``q [N, K]`` (values in [-127, 127]) for the kernels.

    Returns:
        ``(packed, colsum)``: int8 ``[ceil(N/16), ceil(K/4), 16, 4]`` with
        ``packed[nb, g, j, i] = q[16 nb + j, 4 g + i]`` (zero padded), and int32
        ``colsum[n] = sum_k q[n, k]`` (zero-point compensation).
    """
    q = check_tensor("q", q, (torch.int8,))
    if q.dim() != 2:
        raise ValueError(f"q: expected a 2-d tensor [out_features, in_features], got shape {tuple(q.shape)}")
    if q.numel() and int(q.min()) < -127:
        raise ValueError("q: expected symmetric int8 values in [-127, 127], found -128")
    return ref.pack_weight(q)


def qgemm_quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize each row (last dimension) of ``x`` to asymmetric uint8, as the
    dynamic mode does inside its kernel.

    Returns:
        ``(a, scale, zero_point)``: uint8 of x's shape, float32 and int32 of
        shape ``x.shape[:-1]``. Rules in :mod:`slimtorch.reference.qgemm`; a row
        with NaN/Inf gets scale NaN, zero point 0 and all-zero ``a``.
    """
    x = check_tensor("x", x, FLOAT_DTYPES)
    if x.dim() < 1:
        raise ValueError("x: expected at least 1 dimension, got a 0-d tensor")
    return _quantize_rows_op(x)


def qgemm_s32(a: torch.Tensor, packed: torch.Tensor, n: int) -> torch.Tensor:
    """Exact int32 accumulators ``acc[..., j] = sum_k a[..., k] * q[j, k]``.

    Args:
        a: uint8 ``[..., K]`` (K <= MAX_K).
        packed: packed weight from :func:`qgemm_pack_weight`.
        n: number of output channels N of the packed weight.
    """
    a = check_tensor("a", a, (torch.uint8,))
    if a.dim() < 1:
        raise ValueError("a: expected at least 1 dimension, got a 0-d tensor")
    if a.shape[-1] > MAX_K:
        raise ValueError(f"a: at most {MAX_K} features fit exact int32 accumulation, got {a.shape[-1]}")
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n: expected an int, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"n: expected a non-negative int, got {n}")
    packed = _check_packed(packed, n, a.shape[-1])
    if packed.device != a.device:
        raise ValueError(f"packed: expected a tensor on {a.device} (the device of a), got {packed.device}")
    return _qgemm_s32_op(a, packed, n)


def qlinear_dynamic(x: torch.Tensor, packed: torch.Tensor, w_scale: torch.Tensor, colsum: torch.Tensor,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """Dynamic int8 linear: rows of ``x [..., K]`` quantized on the fly.

    Args:
        x: float32/float16/bfloat16 ``[..., K]``, any strides.
        packed, colsum: from :func:`qgemm_pack_weight`; w_scale: float32 ``[N]``.
        bias: optional float ``[N]``.

    Returns:
        ``[..., N]`` in x's dtype (computed in float32). A row of x with NaN/Inf
        gives a NaN output row.
    """
    x, packed, w_scale, colsum, bias = _check_linear_args(x, packed, w_scale, colsum, bias, True)
    return _dynamic_op(x, packed, w_scale, colsum, bias)


def qlinear_static(x: torch.Tensor, packed: torch.Tensor, w_scale: torch.Tensor, colsum: torch.Tensor,
                   x_scale: float, x_zero_point: int, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Static int8 linear: ``x`` quantized with a given per-tensor ``x_scale`` (> 0)
    and ``x_zero_point`` (uint8, [0, 255]); otherwise as :func:`qlinear_dynamic`."""
    x, packed, w_scale, colsum, bias = _check_linear_args(x, packed, w_scale, colsum, bias, True)
    return _static_op(x, packed, w_scale, colsum, bias, check_scale(x_scale), check_zero_point(x_zero_point))


def qlinear_weight_only(x: torch.Tensor, packed: torch.Tensor, w_scale: torch.Tensor,
                        bias: torch.Tensor | None = None) -> torch.Tensor:
    """Weight-only int8 linear: ``(x @ q.T) * w_scale + bias`` in float32 with the
    int8 weight converted inside the kernel; output in x's dtype."""
    x, packed, w_scale, _, bias = _check_linear_args(x, packed, w_scale, None, bias, False)
    return _weight_only_op(x, packed, w_scale, bias)
