"""int8 GEMM / linear ops.

Weights are quantized once per output channel (symmetric int8, see
:func:`qgemm_quantize_weight`) and packed once (:func:`qgemm_pack_weight`) into
the kernel's VNNI 16x4 layout ``[ceil(N/16), ceil(K/4), 16, 4]`` with their
column sums. Three linear schemes use the packed weight:

* :func:`qlinear_dynamic` (``"int8_dynamic"``): each activation row is
  quantized on the fly to asymmetric uint8 (per-row scale and zero point;
  uint8 x int8 is what vpdpbusd multiplies natively, and an asymmetric row
  uses all 256 levels), accumulated exactly in int32, then a float epilogue
  applies scales and bias.
* :func:`qlinear_static` (``"int8_static"``): the same with a given
  per-tensor activation scale and zero point (from calibration).
* :func:`qlinear_weight_only` (``"int8_weight_only"``): float activations;
  the kernel converts int8 weights in registers and never materialises a
  float weight. A single row (batch 1) runs a GEMV kernel that sums in
  another order than the batched kernel, so its last bits may differ from
  the same row inside a batch; the integer schemes are bit-identical whatever
  the batch and thread count.

:func:`qgemm_quantize_rows` and :func:`qgemm_s32` expose the two integer
stages (row quantization, exact int32 accumulators) for testing and for
callers that want the integers; :func:`qgemm_fake_quantize_rows` gives the
rows the integer kernels multiply, as floats. Non-finite activations: in the
dynamic and static schemes a row holding NaN or +/-Inf gives a NaN output
row; weight-only follows IEEE float arithmetic like ``nn.Linear``.

Gradients: the three linear ops are differentiable with respect to ``x``
and ``bias`` (weights and scales are frozen; a SparseLinear that falls back
to these ops trains its bias as on its sparse kernel). The integer schemes
use the straight-through estimator: the activation quantization is treated
as the identity, so ``grad_x = grad_y @ dequantized_weight``.

This module holds the op schemas and fake implementations; the kernels are
registered by :mod:`slimtorch.ops.backends`.
"""

from __future__ import annotations

import math
import struct
from typing import NamedTuple

import torch

from slimtorch import _native
from slimtorch._checks import FLOAT_DTYPES, check_int, check_real, check_tensor
from slimtorch.ops._dispatch import eager_cpu, eager_cpu_linear
from slimtorch.ops.quantize import choose_qparams, quantize
from slimtorch.schemes import deprecated_alias

__all__ = [
    "MAX_K",
    "ActivationQParams",
    "PackedInt8Weight",
    "check_activation_scale",
    "check_activation_zero_point",
    "qgemm_fake_quantize_rows",
    "qgemm_prepare_weight",
    "qgemm_pack_weight",
    "qgemm_quantize_rows",
    "qgemm_quantize_weight",
    "qgemm_s32",
    "qlinear_dynamic",
    "qlinear_static",
    "qlinear_weight_only",
]

BLOCK_N = 16  # output channels per packed block
GROUP_K = 4  # k values per 32-bit lane (vpdpbusd)
# Largest K whose int32 accumulators cannot overflow: 255 * 127 * K < 2^31.
MAX_K = 66311
# Smallest activation scale accepted: a normal float32, so 1/scale is finite.
MIN_ACTIVATION_SCALE = torch.finfo(torch.float32).tiny
_MAX_FLOAT32 = torch.finfo(torch.float32).max


# ---- op schemas and fake implementations (kernels assume validated arguments) ----

@torch.library.custom_op("slimtorch::qgemm_quantize_rows", mutates_args=())
def _quantize_rows_op(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    raise NotImplementedError  # replaced by the registered reference fallback


@_quantize_rows_op.register_fake
def _(x):
    return (
        torch.empty_like(x, dtype=torch.uint8, memory_format=torch.contiguous_format),
        x.new_empty(x.shape[:-1], dtype=torch.float32),
        x.new_empty(x.shape[:-1], dtype=torch.int32),
    )


@torch.library.custom_op("slimtorch::qgemm_s32", mutates_args=())
def _qgemm_s32_op(a: torch.Tensor, packed: torch.Tensor, n: int) -> torch.Tensor:
    raise NotImplementedError  # replaced by the registered reference fallback


@_qgemm_s32_op.register_fake
def _(a, packed, n):
    return a.new_empty((*a.shape[:-1], n), dtype=torch.int32)


@torch.library.custom_op("slimtorch::qlinear_dynamic", mutates_args=())
def _dynamic_op(x: torch.Tensor, packed: torch.Tensor, w_scale: torch.Tensor, colsum: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
    raise NotImplementedError  # replaced by the registered reference fallback


@torch.library.custom_op("slimtorch::qlinear_static", mutates_args=())
def _static_op(x: torch.Tensor, packed: torch.Tensor, w_scale: torch.Tensor, colsum: torch.Tensor,
               bias: torch.Tensor | None, activation_scale: float, activation_zero_point: int) -> torch.Tensor:
    raise NotImplementedError  # replaced by the registered reference fallback


@torch.library.custom_op("slimtorch::qlinear_weight_only", mutates_args=())
def _weight_only_op(x: torch.Tensor, packed: torch.Tensor, w_scale: torch.Tensor,
                    bias: torch.Tensor | None) -> torch.Tensor:
    raise NotImplementedError  # replaced by the registered reference fallback


def _linear_fake(x: torch.Tensor, packed: torch.Tensor, w_scale: torch.Tensor, *_) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], w_scale.shape[0]))


for _op in (_dynamic_op, _static_op, _weight_only_op):
    _op.register_fake(_linear_fake)


def register_u8s8(register, u8s8) -> None:
    """Registers one backend's dynamic and static ops on its uint8 x int8
    kernel ``u8s8(x, packed, w_scale, colsum, bias, is_static,
    activation_scale, activation_zero_point)``; ``register`` is the backend's
    decorator factory (``register_cpu``, ``register_cuda``)."""

    @register(_dynamic_op)
    def _(x, packed, w_scale, colsum, bias):
        return u8s8(x, packed, w_scale, colsum, bias, False, 1.0, 0)

    @register(_static_op)
    def _(x, packed, w_scale, colsum, bias, activation_scale, activation_zero_point):
        return u8s8(x, packed, w_scale, colsum, bias, True, activation_scale, activation_zero_point)


def unpack_weight(packed: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """Inverse of the packing of :func:`qgemm_pack_weight`: q int8 ``[n, k]``."""
    blocks, groups = packed.shape[0], packed.shape[1]
    return packed.permute(0, 2, 1, 3).reshape(blocks * BLOCK_N, groups * GROUP_K)[:n, :k]


def _autograd_context(bias_index: int):
    """The setup_context of an op whose bias is input ``bias_index``."""

    def setup_context(ctx, inputs, output):
        x, packed, w_scale, bias = inputs[0], inputs[1], inputs[2], inputs[bias_index]
        ctx.save_for_backward(packed, w_scale)
        ctx.k = x.shape[-1]
        ctx.x_dtype = x.dtype
        ctx.n_inputs = len(inputs)
        ctx.bias_index = bias_index
        ctx.bias_dtype = None if bias is None else bias.dtype

    return setup_context


def _backward(ctx, grad):
    # The weight is frozen: gradients flow to x and to the bias only (straight
    # through the activation rounding of the dynamic and static ops).
    packed, w_scale = ctx.saved_tensors
    grads = [None] * ctx.n_inputs
    if ctx.needs_input_grad[0]:
        weight = unpack_weight(packed, w_scale.shape[0], ctx.k).float() * w_scale[:, None]
        grads[0] = (grad.float() @ weight).to(ctx.x_dtype)
    if ctx.needs_input_grad[ctx.bias_index]:
        grads[ctx.bias_index] = grad.reshape(math.prod(grad.shape[:-1]), grad.shape[-1]).sum(0).to(ctx.bias_dtype)
    return tuple(grads)


for _op, _bias_index in ((_dynamic_op, 4), (_static_op, 4), (_weight_only_op, 3)):
    _op.register_autograd(_backward, setup_context=_autograd_context(_bias_index))


# ---- the packed weight ----------------------------------------------------------------

class _PackedFields(NamedTuple):
    packed: torch.Tensor
    scale: torch.Tensor
    colsum: torch.Tensor
    in_features: int


class PackedInt8Weight(_PackedFields):
    """A linear weight ready for the int8 kernels (see :func:`qgemm_pack_weight`).

    ``packed``: int8 ``[ceil(N/16), ceil(K/4), 16, 4]`` with
    ``packed[nb, g, j, i] = q[16 nb + j, 4 g + i]`` (zero padded);
    ``scale``: float32 ``[N]`` per-channel scales; ``colsum``: int32 ``[N]``,
    ``colsum[n] = sum_k q[n, k]`` (zero-point compensation); ``in_features``:
    K, which the padded layout alone does not determine.

    One built by :func:`qgemm_pack_weight` owns its tensors and is validated
    once; one built by hand (or with ``_replace``) is validated on every call.
    Treat the tensors as read-only.
    """

    # Set by qgemm_pack_weight on a validated weight of plain CPU tensors: the
    # eager path's kernel arguments (addresses into this object's tensors, which
    # it keeps alive; a copy made by pickling or copy.copy drops them).
    _native_args = None

    def __reduce__(self):
        return _restore, tuple(self)

    @property
    def out_features(self) -> int:
        return self.scale.shape[0]


def _restore(packed: torch.Tensor, scale: torch.Tensor, colsum: torch.Tensor, in_features: int) -> PackedInt8Weight:
    """A copied weight (pickle, copy.deepcopy), validated again, with its own kernel arguments."""
    weight = _check_weight("weight", PackedInt8Weight(packed, scale, colsum, in_features), packed.device)
    _set_native_args(weight)
    return weight


def _set_native_args(weight: PackedInt8Weight) -> None:
    n, k = weight.scale.shape[0], weight.in_features
    if eager_cpu(weight.packed, weight.scale, weight.colsum) and k > 0:
        weight._native_args = (weight.packed.data_ptr(), weight.scale.data_ptr(), weight.colsum.data_ptr(),
                               n, k, (n,))


class ActivationQParams(NamedTuple):
    """A validated per-tensor activation scale (float32 value, normal, finite)
    and uint8 zero point, from :func:`check_activation_scale` /
    :func:`check_activation_zero_point`."""

    scale: float
    zero_point: int


# ---- validation -------------------------------------------------------------------

def _check_weight(name: str, weight: object, device: torch.device) -> PackedInt8Weight:
    if not isinstance(weight, PackedInt8Weight):
        raise TypeError(f"{name}: expected a PackedInt8Weight (from qgemm_prepare_weight), got {type(weight).__name__}")
    packed, scale, colsum, k = weight
    check_tensor(f"{name}.packed", packed, (torch.int8,))
    check_tensor(f"{name}.scale", scale, (torch.float32,))
    check_tensor(f"{name}.colsum", colsum, (torch.int32,))
    check_int(f"{name}.in_features", k, minimum=0)
    n = scale.shape[0] if scale.dim() == 1 else -1
    if scale.dim() != 1 or tuple(colsum.shape) != (n,):
        raise ValueError(f"{name}: expected scale and colsum of shape (N,), "
                         f"got {tuple(scale.shape)} and {tuple(colsum.shape)}")
    expected = (-(-n // BLOCK_N), -(-k // GROUP_K), BLOCK_N, GROUP_K)
    if tuple(packed.shape) != expected:
        raise ValueError(f"{name}.packed: expected shape {expected} for {n} outputs and {k} inputs, "
                         f"got {tuple(packed.shape)}")
    if not (packed.is_contiguous() and scale.is_contiguous() and colsum.is_contiguous()):
        raise ValueError(f"{name}: expected contiguous tensors (from qgemm_prepare_weight)")
    for part, tensor in (("packed", packed), ("scale", scale), ("colsum", colsum)):
        if tensor.device != device:
            raise ValueError(f"{name}.{part}: expected a tensor on {device} (the input's device), got {tensor.device}")
    return weight


def _check_input(name: str, x: object, dtypes, weight: object,
                 integer: bool) -> tuple[torch.Tensor, PackedInt8Weight | None]:
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
        raise ValueError(f"{name}: expected shape [..., {weight.in_features}] (the weight's in_features), "
                         f"got {tuple(x.shape)}")
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


def check_activation_zero_point(value: object, name: str = "activation_zero_point") -> int:
    """An activation zero point: an int in [0, 255] (uint8), or a one-element
    integer tensor holding one."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.dtype.is_floating_point or value.dtype == torch.bool:
            raise TypeError(f"{name}: expected an int or a one-element integer tensor, "
                            f"got {value.dtype} shape {tuple(value.shape)}")
        value = int(value.item())
    return check_int(name, value, minimum=0, maximum=255)


def _float32(value: float) -> float:
    if abs(value) <= _MAX_FLOAT32:
        return struct.unpack("f", struct.pack("f", value))[0]
    return math.copysign(math.inf, value)


def check_activation_scale(value: object, name: str = "activation_scale") -> float:
    """An activation scale: a number that is, in float32, normal, positive and
    finite (so 1/scale is finite too). Returned rounded to float32."""
    scale = check_real(name, value, allow_inf=False)
    scale32 = _float32(scale)
    if not MIN_ACTIVATION_SCALE <= scale32 < math.inf:
        raise ValueError(f"{name}: expected a positive finite float32 scale >= {MIN_ACTIVATION_SCALE}, got {scale}")
    return scale32


# ---- public API -----------------------------------------------------------------------

def qgemm_quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a linear weight per output channel to symmetric int8.

    Args:
        weight: float tensor ``[N, K]`` (float32, float16 or bfloat16), finite.

    Returns:
        ``(q, scale)``: int8 ``[N, K]`` with values in [-127, 127] and float32
        ``[N]``: the quantize family's symmetric per-channel ``choose_qparams``
        (``scale[n] = max(max|weight[n]| / 127, MIN_SCALE)``) and ``quantize``
        (``q = rint(float32(weight * (1/scale)))``).
    """
    weight = check_tensor("weight", weight, FLOAT_DTYPES)
    if weight.dim() != 2:
        raise ValueError(f"weight: expected a 2-d tensor [out_features, in_features], got shape {tuple(weight.shape)}")
    if not bool(torch.isfinite(weight).all()):
        raise ValueError("weight: contains NaN or Inf; int8 quantization needs finite weights")
    w = weight.detach()
    scale, zero_point = choose_qparams(w, axis=0, symmetric=True, dtype=torch.int8)
    if w.numel() == 0:
        return torch.zeros(w.shape, dtype=torch.int8, device=w.device), scale
    return quantize(w, scale, zero_point, axis=0, dtype=torch.int8), scale


def qgemm_pack_weight(q: torch.Tensor, scale: torch.Tensor) -> PackedInt8Weight:
    """Pack int8 weights ``q [N, K]`` (values in [-127, 127]) and their float32
    per-channel ``scale [N]`` (finite, > 0) for the kernels: the VNNI 16x4
    layout plus the column sums (see :class:`PackedInt8Weight`). Done once
    per layer; the result owns copies of its tensors."""
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
    if scale.numel() and not bool((torch.isfinite(scale) & (scale > 0)).all()):
        raise ValueError("scale: expected finite values > 0")
    q = q.detach()
    n, k = q.shape
    n_pad, k_pad = -(-n // BLOCK_N) * BLOCK_N, -(-k // GROUP_K) * GROUP_K
    padded = q.new_zeros((n_pad, k_pad))
    padded[:n, :k] = q
    packed = padded.view(n_pad // BLOCK_N, BLOCK_N, k_pad // GROUP_K, GROUP_K).permute(0, 2, 1, 3).contiguous()
    weight = PackedInt8Weight(packed, scale.detach().clone(memory_format=torch.contiguous_format),
                              q.sum(dim=1, dtype=torch.int32), k)
    _set_native_args(weight)
    return weight


def qgemm_prepare_weight(weight: torch.Tensor) -> PackedInt8Weight:
    """:func:`qgemm_quantize_weight` then :func:`qgemm_pack_weight`."""
    return qgemm_pack_weight(*qgemm_quantize_weight(weight))


def qgemm_quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize each row (last dimension) of ``x`` to asymmetric uint8, as the
    dynamic scheme does inside its kernel.

    Returns:
        ``(a, scale, zero_point)``: uint8 of x's shape, float32 and int32 of
        shape ``x.shape[:-1]``: per row, asymmetric uint8 ``choose_qparams`` and
        per-channel ``quantize`` of the quantize op family (details in
        :mod:`slimtorch.reference.qgemm`); a row with NaN/Inf gets scale NaN,
        zero point 0 and all-zero ``a``.
    """
    x, _ = _check_input("x", x, FLOAT_DTYPES, None, False)
    return _quantize_rows_op(x)


def qgemm_fake_quantize_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` with each row replaced by its uint8 quantization (as
    :func:`qgemm_quantize_rows`), dequantized: the values the dynamic
    integer kernels multiply, in ``x.dtype``. A row holding NaN or Inf
    becomes NaN. The gradient passes straight through the rounding."""
    x, _ = _check_input("x", x, FLOAT_DTYPES, None, False)
    codes, scale, zero_point = _quantize_rows_op(x.detach())
    dequantized = (codes.float() - zero_point.unsqueeze(-1).float()) * scale.unsqueeze(-1)
    if not x.requires_grad:
        return dequantized.to(x.dtype)
    return x + (dequantized.to(x.dtype) - x).detach()


def qgemm_s32(a: torch.Tensor, weight: PackedInt8Weight) -> torch.Tensor:
    """Exact int32 accumulators ``acc[..., n] = sum_k a[..., k] * q[n, k]``.

    Args:
        a: uint8 ``[..., K]`` (K <= MAX_K), e.g. from :func:`qgemm_quantize_rows`.
        weight: from :func:`qgemm_prepare_weight` / :func:`qgemm_pack_weight`.
    """
    a, weight = _check_input("a", a, (torch.uint8,), weight, True)
    return _qgemm_s32_op(a, weight.packed, weight.scale.shape[0])


def _eager_args(x: torch.Tensor, weight: object, bias: torch.Tensor | None) -> tuple | None:
    """The weight's kernel arguments when the eager CPU path applies: a
    validated CPU weight, a float32 or bfloat16 input of its width and a bias
    of its height (float32 or x's dtype); else None."""
    args = getattr(weight, "_native_args", None)
    if args is None or not eager_cpu_linear(x, bias) or x.dim() < 1 or x.shape[-1] != args[4] \
            or (bias is not None and bias.shape != args[5]):
        return None
    return args


def _eager_linear(x: torch.Tensor, weight: PackedInt8Weight, args: tuple, bias: torch.Tensor | None,
                  scheme: str, activation: ActivationQParams | None) -> torch.Tensor:
    """The native kernel on x's memory; ``weight`` (a local reference) keeps
    the tensors ``args`` points into alive until the kernel returns. Every
    scheme reads and writes a bfloat16 x in place (widened exactly, each
    output rounded once from its float32 value)."""
    if bias is not None and bias.dtype is not torch.float32:
        bias = bias.float()
    packed, scale, colsum, n, k, _ = args
    two_dim = x.dim() == 2
    x2 = x if two_dim else x.reshape(-1, k)
    m = x2.shape[0]
    y = x2.new_empty(m, n)  # x's dtype: cheaper than torch.empty(..., dtype=) on every call
    bias_ptr = 0 if bias is None else bias.data_ptr()
    code = _native.BF16_CODE if x.dtype is torch.bfloat16 else 0
    if scheme == "int8_weight_only":
        _native.cpu.qlinear_weight_only(x2.data_ptr(), m, k, k, packed, scale, bias_ptr, n, y.data_ptr(), n,
                                        torch.get_num_threads(), code, code)
    elif activation is None:
        _native.cpu.qlinear_u8s8(x2.data_ptr(), m, k, k, packed, scale, colsum, bias_ptr, n, y.data_ptr(), n,
                                 False, 1.0, 0, torch.get_num_threads(), code, code)
    else:
        _native.cpu.qlinear_u8s8(x2.data_ptr(), m, k, k, packed, scale, colsum, bias_ptr, n, y.data_ptr(), n,
                                 True, activation[0], activation[1], torch.get_num_threads(), code, code)
    return y if two_dim else y.view(*x.shape[:-1], n)


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
    args = _eager_args(x, weight, bias)
    if args is not None and args[4] <= MAX_K:
        return _eager_linear(x, weight, args, bias, "int8_dynamic", None)
    x, weight = _check_input("x", x, FLOAT_DTYPES, weight, True)
    bias = _check_bias(bias, weight.scale.shape[0], x.device)
    return _dynamic_op(x, weight.packed, weight.scale, weight.colsum, bias)


def qlinear_static(x: torch.Tensor, weight: PackedInt8Weight, activation_scale: float | None = None,
                   activation_zero_point: int | None = None, bias: torch.Tensor | None = None, *,
                   x_scale: float | None = None, x_zero_point: int | None = None) -> torch.Tensor:
    """Static int8 linear: ``x`` quantized with a given per-tensor
    ``activation_scale`` (> 0) and ``activation_zero_point`` (uint8, [0, 255]);
    otherwise as :func:`qlinear_dynamic`. ``x_scale`` / ``x_zero_point``:
    deprecated aliases."""
    if x_scale is not None or x_zero_point is not None:
        activation_scale = deprecated_alias("x_scale", x_scale, "activation_scale", activation_scale, None)
        activation_zero_point = deprecated_alias("x_zero_point", x_zero_point, "activation_zero_point",
                                                 activation_zero_point, None)
    if (type(activation_scale) is float and type(activation_zero_point) is int
            and MIN_ACTIVATION_SCALE <= activation_scale <= _MAX_FLOAT32 and 0 <= activation_zero_point <= 255):
        args = _eager_args(x, weight, bias)
        if args is not None and args[4] <= MAX_K:
            return _eager_linear(x, weight, args, bias, "int8_static", (activation_scale, activation_zero_point))
    x, weight = _check_input("x", x, FLOAT_DTYPES, weight, True)
    bias = _check_bias(bias, weight.scale.shape[0], x.device)
    if activation_scale is None or activation_zero_point is None:
        raise TypeError("activation_scale: qlinear_static needs activation_scale and activation_zero_point")
    return _static_op(x, weight.packed, weight.scale, weight.colsum, bias,
                      check_activation_scale(activation_scale), check_activation_zero_point(activation_zero_point))


def qlinear_weight_only(x: torch.Tensor, weight: PackedInt8Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Weight-only int8 linear: ``(x @ q.T) * scale + bias`` summed in float32
    with the int8 weight converted inside the kernel; output in x's dtype.

    Where the active CPU path multiplies bf16 natively (AMX tiles, or
    AVX512-BF16 on the avx512 path: ``slimtorch info`` shows
    ``weight_only_bf16``), from 16 rows on x is first rounded to bf16
    (relative error at most 2^-8 per element; the int8 weights are exact in
    bf16), about twice as fast; ``SLIMTORCH_ISA=avx2`` keeps x in float32."""
    args = _eager_args(x, weight, bias)
    if args is not None:
        return _eager_linear(x, weight, args, bias, "int8_weight_only", None)
    x, weight = _check_input("x", x, FLOAT_DTYPES, weight, False)
    bias = _check_bias(bias, weight.scale.shape[0], x.device)
    return _weight_only_op(x, weight.packed, weight.scale, bias)
