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
  weights in registers and never materialises a float weight. A single row
  (batch 1) runs a GEMV kernel that sums in another order than the batched
  kernel, so its last bits may differ from the same row inside a batch; the
  integer modes are bit-identical whatever the batch and thread count.

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
from typing import NamedTuple

import torch

from slimtorch import _native
from slimtorch._checks import FLOAT_DTYPES, check_real, check_tensor
from slimtorch.reference import qgemm as ref

__all__ = [
    "MAX_K",
    "PackedInt8Weight",
    "qgemm_prepare_weight",
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


# ---- CUDA kernels (registered only when slimtorch._C_cuda is built) -----------------

if _native.cuda is not None and hasattr(_native.cuda, "qgemm_u8s8"):

    def _stream(t: torch.Tensor) -> int:
        return torch.cuda.current_stream(t.device).cuda_stream

    def _cuda_quantize(x: torch.Tensor, is_static: bool, x_scale: float, x_zero_point: int):
        """Rows of x as uint8 [M, round_up(K, 4)] (zero padded), scale, zero point."""
        k = x.shape[-1]
        x2 = x.reshape(math.prod(x.shape[:-1]), k).float().contiguous()
        m, k_pad = x2.shape[0], -(-k // GROUP_K) * GROUP_K
        a = torch.empty((m, k_pad), dtype=torch.uint8, device=x.device)
        scale = torch.empty(m, dtype=torch.float32, device=x.device)
        zero_point = torch.empty(m, dtype=torch.int32, device=x.device)
        _native.cuda.quantize_rows_u8(x2.data_ptr(), m, k, k, a.data_ptr(), k_pad, scale.data_ptr(),
                                      zero_point.data_ptr(), is_static, x_scale, x_zero_point, _stream(x))
        return a, scale, zero_point

    def _cuda_u8s8(x, packed, w_scale, colsum, bias, is_static, x_scale, x_zero_point):
        n = w_scale.shape[0]
        a, scale, zero_point = _cuda_quantize(x, is_static, x_scale, x_zero_point)
        m, k_pad = a.shape
        y = torch.empty((m, n), dtype=torch.float32, device=x.device)
        _native.cuda.qgemm_u8s8(a.data_ptr(), m, k_pad, k_pad, packed.data_ptr(), n, 0, 0,
                                zero_point.data_ptr(), scale.data_ptr(), w_scale.data_ptr(),
                                colsum.data_ptr(), 0 if bias is None else bias.data_ptr(),
                                y.data_ptr(), n, _stream(x))
        return y.reshape(*x.shape[:-1], n).to(x.dtype)

    @_quantize_rows_op.register_kernel("cuda")
    def _(x):
        k = x.shape[-1]
        a, scale, zero_point = _cuda_quantize(x, False, 1.0, 0)
        lead = x.shape[:-1]
        return a[:, :k].contiguous().reshape(x.shape), scale.reshape(lead), zero_point.reshape(lead)

    @_qgemm_s32_op.register_kernel("cuda")
    def _(a, packed, n):
        k = a.shape[-1]
        k_pad = -(-k // GROUP_K) * GROUP_K
        a2 = torch.nn.functional.pad(a.reshape(math.prod(a.shape[:-1]), k), (0, k_pad - k)).contiguous()
        m = a2.shape[0]
        c = torch.empty((m, n), dtype=torch.int32, device=a.device)
        _native.cuda.qgemm_u8s8(a2.data_ptr(), m, k_pad, k_pad, packed.data_ptr(), n, c.data_ptr(), n,
                                0, 0, 0, 0, 0, 0, 0, _stream(a))
        return c.reshape(*a.shape[:-1], n)

    @_dynamic_op.register_kernel("cuda")
    def _(x, packed, w_scale, colsum, bias):
        return _cuda_u8s8(x, packed, w_scale, colsum, bias, False, 1.0, 0)

    @_static_op.register_kernel("cuda")
    def _(x, packed, w_scale, colsum, bias, x_scale, x_zero_point):
        return _cuda_u8s8(x, packed, w_scale, colsum, bias, True, x_scale, x_zero_point)

    @_weight_only_op.register_kernel("cuda")
    def _(x, packed, w_scale, bias):
        n, k = w_scale.shape[0], x.shape[-1]
        x2 = x.reshape(math.prod(x.shape[:-1]), k).float().contiguous()
        m = x2.shape[0]
        y = torch.empty((m, n), dtype=torch.float32, device=x.device)
        _native.cuda.qlinear_weight_only(x2.data_ptr(), m, k, k, packed.data_ptr(), w_scale.data_ptr(),
                                         0 if bias is None else bias.data_ptr(), n, y.data_ptr(), n, _stream(x))
        return y.reshape(*x.shape[:-1], n).to(x.dtype)


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


# ---- the packed weight ----------------------------------------------------------------

class PackedInt8Weight(NamedTuple):
    """A linear weight ready for the int8 kernels (see :func:`qgemm_prepare_weight`).

    ``packed``: int8 ``[ceil(N/16), ceil(K/4), 16, 4]`` with
    ``packed[nb, g, j, i] = q[16 nb + j, 4 g + i]`` (zero padded);
    ``scale``: float32 ``[N]`` per-channel scales; ``colsum``: int32 ``[N]``,
    ``colsum[n] = sum_k q[n, k]`` (zero-point compensation); ``in_features``:
    K, which the padded layout alone does not determine.
    """

    packed: torch.Tensor
    scale: torch.Tensor
    colsum: torch.Tensor
    in_features: int

    @property
    def out_features(self) -> int:
        return self.scale.shape[0]


# ---- validation -------------------------------------------------------------------

def _check_weight(name: str, weight: object, device: torch.device) -> PackedInt8Weight:
    if not isinstance(weight, PackedInt8Weight):
        raise TypeError(f"{name}: expected a PackedInt8Weight (from qgemm_prepare_weight), got {type(weight).__name__}")
    packed, scale, colsum, k = weight
    check_tensor(f"{name}.packed", packed, (torch.int8,))
    check_tensor(f"{name}.scale", scale, (torch.float32,))
    check_tensor(f"{name}.colsum", colsum, (torch.int32,))
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise TypeError(f"{name}.in_features: expected a non-negative int, got {k!r}")
    n = scale.shape[0] if scale.dim() == 1 else -1
    if scale.dim() != 1 or tuple(colsum.shape) != (n,):
        raise ValueError(f"{name}: expected scale and colsum of shape (N,), got {tuple(scale.shape)} and {tuple(colsum.shape)}")
    expected = (-(-n // BLOCK_N), -(-k // GROUP_K), BLOCK_N, GROUP_K)
    if tuple(packed.shape) != expected:
        raise ValueError(f"{name}.packed: expected shape {expected} for {n} outputs and {k} inputs, got {tuple(packed.shape)}")
    if not (packed.is_contiguous() and scale.is_contiguous() and colsum.is_contiguous()):
        raise ValueError(f"{name}: expected contiguous tensors (from qgemm_prepare_weight)")
    for part, tensor in (("packed", packed), ("scale", scale), ("colsum", colsum)):
        if tensor.device != device:
            raise ValueError(f"{name}.{part}: expected a tensor on {device} (the input's device), got {tensor.device}")
    return weight


def _check_input(name: str, x: object, dtypes, weight: object, integer: bool) -> tuple[torch.Tensor, PackedInt8Weight | None]:
    """Checks x and, unless weight is None, the weight and that they match."""
    x = check_tensor(name, x, dtypes)
    if x.dim() < 1:
        raise ValueError(f"{name}: expected at least 1 dimension [..., in_features], got a 0-d tensor")
    k = x.shape[-1]
    if integer and k > MAX_K:
        raise ValueError(f"{name}: at most {MAX_K} features fit exact int32 accumulation, got {k}")
    if weight is None:
        return x, None
    weight = _check_weight("weight", weight, x.device)
    if k != weight.in_features:
        raise ValueError(f"{name}: expected shape [..., {weight.in_features}] (the weight's in_features), got {tuple(x.shape)}")
    return x, weight


def _check_bias(bias: object, n: int, device: torch.device) -> torch.Tensor | None:
    if bias is None:
        return None
    bias = check_tensor("bias", bias, FLOAT_DTYPES)
    if tuple(bias.shape) != (n,):
        raise ValueError(f"bias: expected shape ({n},), got {tuple(bias.shape)}")
    if bias.device != device:
        raise ValueError(f"bias: expected a tensor on {device} (the input's device), got {bias.device}")
    return bias.to(torch.float32).contiguous()


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
        ``[N]``: the quantize family's symmetric per-channel ``choose_qparams``
        (``scale[n] = max(max|weight[n]| / 127, eps)``) and ``quantize``
        (``q = rint(float32(weight * (1/scale)))``).
    """
    weight = check_tensor("weight", weight, FLOAT_DTYPES)
    if weight.dim() != 2:
        raise ValueError(f"weight: expected a 2-d tensor [out_features, in_features], got shape {tuple(weight.shape)}")
    if not bool(torch.isfinite(weight).all()):
        raise ValueError("weight: contains NaN or Inf; int8 quantization needs finite weights")
    return ref.quantize_weight(weight)


def qgemm_pack_weight(q: torch.Tensor, scale: torch.Tensor) -> PackedInt8Weight:
    """Pack int8 weights ``q [N, K]`` (values in [-127, 127]) and their float32
    per-channel ``scale [N]`` for the kernels: the VNNI 16x4 layout plus the
    column sums (see :class:`PackedInt8Weight`). Done once per layer."""
    q = check_tensor("q", q, (torch.int8,))
    if q.dim() != 2:
        raise ValueError(f"q: expected a 2-d tensor [out_features, in_features], got shape {tuple(q.shape)}")
    if q.numel() and int(q.min()) < -127:
        raise ValueError("q: expected symmetric int8 values in [-127, 127], found -128")
    scale = check_tensor("scale", scale, (torch.float32,))
    if tuple(scale.shape) != (q.shape[0],):
        raise ValueError(f"scale: expected shape ({q.shape[0]},), got {tuple(scale.shape)}")
    if scale.device != q.device:
        raise ValueError(f"scale: expected a tensor on {q.device} (the device of q), got {scale.device}")
    packed, colsum = ref.pack_weight(q)
    return PackedInt8Weight(packed, scale.contiguous(), colsum, q.shape[1])


def qgemm_prepare_weight(weight: torch.Tensor) -> PackedInt8Weight:
    """:func:`qgemm_quantize_weight` then :func:`qgemm_pack_weight`."""
    return qgemm_pack_weight(*qgemm_quantize_weight(weight))


def qgemm_quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize each row (last dimension) of ``x`` to asymmetric uint8, as the
    dynamic mode does inside its kernel.

    Returns:
        ``(a, scale, zero_point)``: uint8 of x's shape, float32 and int32 of
        shape ``x.shape[:-1]``: per row, asymmetric uint8 ``choose_qparams`` and
        per-channel ``quantize`` of the quantize op family (details in
        :mod:`slimtorch.reference.qgemm`); a row with NaN/Inf gets scale NaN,
        zero point 0 and all-zero ``a``.
    """
    x, _ = _check_input("x", x, FLOAT_DTYPES, None, False)
    return _quantize_rows_op(x)


def qgemm_s32(a: torch.Tensor, weight: PackedInt8Weight) -> torch.Tensor:
    """Exact int32 accumulators ``acc[..., n] = sum_k a[..., k] * q[n, k]``.

    Args:
        a: uint8 ``[..., K]`` (K <= MAX_K), e.g. from :func:`qgemm_quantize_rows`.
        weight: from :func:`qgemm_prepare_weight` / :func:`qgemm_pack_weight`.
    """
    a, weight = _check_input("a", a, (torch.uint8,), weight, True)
    return _qgemm_s32_op(a, weight.packed, weight.out_features)


def qlinear_dynamic(x: torch.Tensor, weight: PackedInt8Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Dynamic int8 linear: rows of ``x [..., K]`` quantized on the fly.

    Args:
        x: float32/float16/bfloat16 ``[..., K]``, any strides.
        weight: from :func:`qgemm_prepare_weight`.
        bias: optional float ``[N]``.

    Returns:
        ``[..., N]`` in x's dtype (computed in float32). A row of x with NaN/Inf
        gives a NaN output row.
    """
    x, weight = _check_input("x", x, FLOAT_DTYPES, weight, True)
    bias = _check_bias(bias, weight.out_features, x.device)
    return _dynamic_op(x, weight.packed, weight.scale, weight.colsum, bias)


def qlinear_static(x: torch.Tensor, weight: PackedInt8Weight, x_scale: float, x_zero_point: int,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """Static int8 linear: ``x`` quantized with a given per-tensor ``x_scale`` (> 0)
    and ``x_zero_point`` (uint8, [0, 255]); otherwise as :func:`qlinear_dynamic`."""
    x, weight = _check_input("x", x, FLOAT_DTYPES, weight, True)
    bias = _check_bias(bias, weight.out_features, x.device)
    return _static_op(x, weight.packed, weight.scale, weight.colsum, bias,
                      check_scale(x_scale), check_zero_point(x_zero_point))


def qlinear_weight_only(x: torch.Tensor, weight: PackedInt8Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Weight-only int8 linear: ``(x @ q.T) * scale + bias`` summed in float32
    with the int8 weight converted inside the kernel; output in x's dtype."""
    x, weight = _check_input("x", x, FLOAT_DTYPES, weight, False)
    bias = _check_bias(bias, weight.out_features, x.device)
    return _weight_only_op(x, weight.packed, weight.scale, bias)
