"""Affine int8 / uint8 quantization: ``choose_qparams``, ``quantize``, ``dequantize``.

Conventions (all three ops):

* ``axis=None`` is per-tensor quantization: ``scale`` and ``zero_point`` are
  0-dim tensors (a 1-element 1-d tensor is accepted too). ``axis=k`` is per
  channel along dimension ``k`` (negative counts from the end): ``scale`` and
  ``zero_point`` are 1-d with ``x.shape[k]`` entries.
* ``scale`` is a float32 tensor; every value must be finite, > 0 and have a
  finite float32 reciprocal (>= 2.9389e-39). ``zero_point`` is an int32 tensor
  (``torch.quantize_per_channel`` accepts int32 zero points) with values in
  ``[qmin, qmax]``: [-128, 127] for ``torch.int8``, [0, 255] for ``torch.uint8``.
  Both must be on ``x``'s device. Value checks run inside the op (on CUDA
  they copy the few parameters to the host, one small synchronisation).
* Quantize, with ``inv = float32(1 / scale)``, rounding half to even, and
  results bit-exact with torch 2.13's CPU kernels (measured: the two torch
  functions round differently, so slimtorch follows each):

  - per tensor:  ``q = clamp(rint(fma(x, inv, zp)), qmin, qmax)`` — ``x * inv + zp``
    rounded to float32 once, as ``torch.quantize_per_tensor(...).int_repr()``;
  - per channel: ``q = clamp(rint((x * inv) + zp), qmin, qmax)`` with the product
    and the sum each rounded to float32, as ``torch.quantize_per_channel``.

  Both equal DESIGN.md's ``clamp(rint(x * inv) + zp)`` when ``zp == 0``; otherwise
  they differ from it only when ``x * inv`` is a half-integer or within one float32
  rounding of one (ties then go to the even ``q``, not to the even ``q - zp``).
  float16 / bfloat16 inputs are converted to float32 exactly, then the same formula.
  Non-finite input (torch's behaviour is not followed here): NaN -> ``zp``,
  ``+Inf`` -> ``qmax``, ``-Inf`` -> ``qmin``; finite values whose ``x * inv``
  overflows saturate like Inf.
* Dequantize: ``out = float32(q - zp) * scale``, rounded once to the output
  dtype (bit-exact with torch's ``.dequantize()`` for float32 output).
"""

from __future__ import annotations

import importlib
import math

import torch

from slimtorch import _native
from slimtorch._checks import check_axis, check_bool, check_float_tensor, check_qdtype, check_tensor
from slimtorch.ops._dispatch import eager_cpu

__all__ = ["choose_qparams", "dequantize", "quantize", "MIN_SCALE"]

# The module: slimtorch.reference.quantize is also the name of its function.
_reference = importlib.import_module("slimtorch.reference.quantize")
# The smallest scale choose_qparams returns: the rule's one home is the
# reference (and, in C++, csrc/include/slimtorch/quantize.h).
MIN_SCALE = _reference.MIN_SCALE

_QTYPE_CODES = {torch.int8: 0, torch.uint8: 1}
_QRANGE = _reference.QRANGE


def _view(shape: torch.Size, axis: int | None) -> tuple[int, int, int]:
    """(outer, channels, inner) of a contiguous tensor split around ``axis``."""
    numel = math.prod(shape)
    if axis is None:
        return 1, 1, numel
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])


def _qparam_shape(shape: torch.Size, axis: int | None) -> tuple[int, ...]:
    return () if axis is None else (shape[axis],)


def _check_qparam_values(scale: torch.Tensor, zero_point: torch.Tensor, dtype: torch.dtype) -> None:
    """Value checks with torch ops (CUDA and the reference fallback; the CPU
    kernels run the same checks natively)."""
    scale, zero_point = scale.reshape(-1).cpu(), zero_point.reshape(-1).cpu()
    bad = ~(torch.isfinite(scale) & (scale > 0) & torch.isfinite(1.0 / scale))
    qmin, qmax = _QRANGE[dtype]

    def where(i: int) -> str:
        return f" at index {i}" if scale.numel() > 1 else ""

    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(
            "scale: expected finite values > 0 with a finite float32 reciprocal "
            f"(>= 2.9389e-39), got {float(scale[i])}{where(i)}"
        )
    bad = (zero_point < qmin) | (zero_point > qmax)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(
            f"zero_point: expected values in [{qmin}, {qmax}] for {str(dtype).removeprefix('torch.')}, "
            f"got {int(zero_point[i])}{where(i)}"
        )


# ---- torch.library ops (arguments validated by the public wrappers; axis >= 0) ----

@torch.library.custom_op("slimtorch::choose_qparams", mutates_args=())
def _choose_qparams_op(
    x: torch.Tensor, axis: int | None, symmetric: bool, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    raise NotImplementedError  # replaced by the registered reference fallback


@_choose_qparams_op.register_fake
def _(x, axis, symmetric, dtype):
    shape = _qparam_shape(x.shape, axis)
    return x.new_empty(shape, dtype=torch.float32), x.new_empty(shape, dtype=torch.int32)


def _elementwise_op(name: str):
    """An op mapping ``x`` element by element to a contiguous tensor of
    ``dtype`` with the quantization parameters ``scale``/``zero_point``."""

    @torch.library.custom_op(f"slimtorch::{name}", mutates_args=())
    def op(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int | None,
           dtype: torch.dtype) -> torch.Tensor:
        raise NotImplementedError  # replaced by the registered reference fallback

    @op.register_fake
    def _(x, scale, zero_point, axis, dtype):
        return torch.empty_like(x, dtype=dtype, memory_format=torch.contiguous_format)

    return op


_quantize_op = _elementwise_op("quantize")
_dequantize_op = _elementwise_op("dequantize")


def _quantize_cpu(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int | None,
                  dtype: torch.dtype, out: torch.Tensor | None = None) -> torch.Tensor:
    """The native CPU kernel (the eager path, and the registered CPU kernel),
    into ``out`` (checked by the caller) or a new tensor."""
    dense, scale, zero_point = x.contiguous(), scale.contiguous(), zero_point.contiguous()
    q = torch.empty_like(dense, dtype=dtype) if out is None else out  # empty_like: cheaper than empty(shape)
    _native.cpu.quantize(
        dense.data_ptr(), _native.dtype_code(x.dtype), *_view(x.shape, axis), axis is not None,
        scale.data_ptr(), zero_point.data_ptr(), _QTYPE_CODES[dtype], q.data_ptr(), _native.num_threads(),
    )
    return q


def _dequantize_cpu(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int | None,
                    dtype: torch.dtype, out: torch.Tensor | None = None) -> torch.Tensor:
    """The native CPU kernel, into ``out`` (checked by the caller) or a new tensor."""
    dense, scale, zero_point = q.contiguous(), scale.contiguous(), zero_point.contiguous()
    result = torch.empty_like(dense, dtype=dtype) if out is None else out
    _native.cpu.dequantize(
        dense.data_ptr(), _QTYPE_CODES[q.dtype], *_view(q.shape, axis), scale.data_ptr(),
        zero_point.data_ptr(), result.data_ptr(), _native.dtype_code(dtype), _native.num_threads(),
    )
    return result


# ---- argument validation ----------------------------------------------------------

def _check_qparams(
    reference_name: str, x: torch.Tensor, scale: object, zero_point: object, axis: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Types, devices and shapes of scale / zero_point (values are checked in the op)."""
    scale = check_tensor("scale", scale, (torch.float32,))
    zero_point = check_tensor("zero_point", zero_point, (torch.int32,))
    for name, t in (("scale", scale), ("zero_point", zero_point)):
        if not (t.is_cpu and x.is_cpu) and t.device != x.device:
            raise ValueError(f"{name}: expected a tensor on {reference_name}'s device {x.device}, got {t.device}")
        if axis is None:
            if t.dim() > 1 or t.numel() != 1:
                raise ValueError(
                    f"{name}: expected a 0-dim or 1-element tensor for per-tensor quantization (axis=None), "
                    f"got shape {tuple(t.shape)}"
                )
        elif tuple(t.shape) != (x.shape[axis],):
            raise ValueError(
                f"{name}: expected shape ({x.shape[axis]},) = {reference_name}.shape[{axis}] for axis={axis}, "
                f"got shape {tuple(t.shape)}"
            )
    return scale, zero_point


def _check_out(out: object, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """``out`` is None, or a contiguous ``dtype`` tensor of ``like``'s shape and device."""
    if out is None:
        return None
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out: expected a torch.Tensor or None, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"out: expected dtype {str(dtype).removeprefix('torch.')}, got {out.dtype}")
    if out.shape != like.shape:
        raise ValueError(f"out: expected shape {tuple(like.shape)}, got {tuple(out.shape)}")
    if not (out.is_cpu and like.is_cpu) and out.device != like.device:
        raise ValueError(f"out: expected a tensor on {like.device}, got {out.device}")
    if not out.is_contiguous():
        raise ValueError("out: expected a contiguous tensor")
    if out.requires_grad:
        raise ValueError("out: expected a tensor that does not require grad")
    return out


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when the bytes of two (contiguous) tensors overlap."""
    a_end, b_end = a.data_ptr() + a.numel() * a.element_size(), b.data_ptr() + b.numel() * b.element_size()
    return a.numel() > 0 and b.numel() > 0 and a.data_ptr() < b_end and b.data_ptr() < a_end


def _run(cpu_kernel, op, source: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
         axis: int | None, dtype: torch.dtype, out: torch.Tensor | None) -> torch.Tensor:
    """Eager CPU calls go straight to the kernel (into ``out`` unless it
    overlaps ``source``, which the kernel reads while it writes); everything
    else (CUDA, tracing, compile, no native module) through the torch.library op."""
    if eager_cpu(source, scale, zero_point):
        if out is None or not _overlap(out, source):
            return cpu_kernel(source, scale, zero_point, axis, dtype, out)
        return out.copy_(cpu_kernel(source, scale, zero_point, axis, dtype))
    result = op(source, scale, zero_point, axis, dtype)
    return result if out is None else out.copy_(result)


# ---- public API ---------------------------------------------------------------------

def choose_qparams(
    x: torch.Tensor, *, axis: int | None = None, symmetric: bool = True, dtype: torch.dtype = torch.int8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point that map the range of ``x`` onto ``dtype``.

    Args:
        x: float32, float16 or bfloat16 tensor; must not contain NaN or Inf
            (``ValueError`` naming ``x``).
        axis: ``None`` for one (scale, zero_point) pair for the whole tensor,
            or the dimension along which each index gets its own pair.
        symmetric: ``True``: ``scale = max|x| / 127`` and ``zero_point = 0`` for
            int8, ``128`` for uint8 (the int8 grid shifted by 128, so -max|x|..max|x|
            maps to 1..255). ``False``: the range ``[min(x, 0), max(x, 0)]`` (it
            always includes 0, so 0 is exact) is spread over all 256 levels:
            ``scale = (hi - lo) / 255``, ``zero_point = qmin - rint(lo / scale)``.
        dtype: ``torch.int8`` or ``torch.uint8``.

    The arithmetic is done in float64 and the scale rounded to float32 once.
    The scale is at least ``torch.finfo(torch.float32).eps`` (2**-23, the clamp
    torch's observers use), so an all-zero tensor or channel (or an empty one)
    gets scale 2**-23, never 0 or NaN.

    Returns:
        ``(scale, zero_point)``: float32 and int32 tensors on ``x``'s device,
        0-dim for ``axis=None``, else of shape ``(x.shape[axis],)``. They go
        straight into :func:`quantize` / :func:`dequantize`, and into
        ``torch.quantize_per_channel`` (which accepts float32 scales and int32
        zero points) or, via ``float(scale)`` / ``int(zero_point)``,
        ``torch.quantize_per_tensor``.
    """
    check_float_tensor("x", x)
    axis = check_axis("axis", axis, x.dim())
    symmetric = check_bool("symmetric", symmetric)
    dtype = check_qdtype("dtype", dtype)
    return _choose_qparams_op(x, axis, symmetric, dtype)


def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, *, axis: int | None = None,
             dtype: torch.dtype = torch.int8, out: torch.Tensor | None = None) -> torch.Tensor:
    """Quantize ``x`` to ``dtype`` (formulas in the module docstring).

    Args:
        x: float32, float16 or bfloat16 tensor of any shape and strides.
        scale: float32 tensor, finite and > 0 (see the module docstring).
        zero_point: int32 tensor with values in ``dtype``'s range.
        axis: ``None`` (per tensor) or the per-channel dimension.
        dtype: ``torch.int8`` or ``torch.uint8``.
        out: optional preallocated result: a contiguous ``dtype`` tensor of
            ``x``'s shape on ``x``'s device. Reusing one buffer saves the
            allocation and, for large tensors, the page faults of first
            touching fresh memory. If it overlaps ``x`` the result is computed
            first, then copied in.

    Returns:
        A contiguous ``dtype`` tensor of ``x``'s shape (``out`` when given),
        bit-exact with
        ``torch.quantize_per_tensor(x, scale, zero_point, qint8|quint8).int_repr()``
        (``axis=None``) or ``torch.quantize_per_channel(...).int_repr()`` as
        torch's x86-64 CPU build computes them, for finite float32 input;
        NaN -> zero_point, +/-Inf -> qmax/qmin.
    """
    check_float_tensor("x", x)
    axis = check_axis("axis", axis, x.dim())
    dtype = check_qdtype("dtype", dtype)
    scale, zero_point = _check_qparams("x", x, scale, zero_point, axis)
    out = _check_out(out, x, dtype)
    return _run(_quantize_cpu, _quantize_op, x, scale, zero_point, axis, dtype, out)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, *, axis: int | None = None,
               dtype: torch.dtype = torch.float32, out: torch.Tensor | None = None) -> torch.Tensor:
    """``(q - zero_point) * scale`` as ``dtype``.

    Args:
        q: ``torch.int8`` or ``torch.uint8`` tensor (its dtype is the quantized
            type: ``zero_point`` must lie in its range).
        scale, zero_point, axis: as for :func:`quantize`.
        dtype: the output dtype: float32, float16 or bfloat16. The value is
            computed in float32 (exact integer difference, one multiply) and
            rounded once to ``dtype`` (round to nearest even).
        out: optional preallocated result, as for :func:`quantize` (a
            contiguous ``dtype`` tensor of ``q``'s shape).

    Returns:
        A contiguous ``dtype`` tensor of ``q``'s shape (``out`` when given).
        For float32 it is bit-exact with torch's ``.dequantize()`` of the same
        quantized tensor.
    """
    check_tensor("q", q, (torch.int8, torch.uint8))
    axis = check_axis("axis", axis, q.dim())
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"dtype: expected torch.float32, torch.float16 or torch.bfloat16, got {dtype}")
    scale, zero_point = _check_qparams("q", q, scale, zero_point, axis)
    out = _check_out(out, q, dtype)
    return _run(_dequantize_cpu, _dequantize_op, q, scale, zero_point, axis, dtype, out)
