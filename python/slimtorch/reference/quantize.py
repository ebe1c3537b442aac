"""Reference affine quantization (the oracle for slimtorch.ops.quantize).

Arguments are assumed valid (the op layer checks them). ``axis`` is ``None``
(per tensor; ``scale``/``zero_point`` hold one value) or a non-negative axis
(per channel; one value per index along ``axis``). Formulas, measured on
torch 2.13's CPU kernels, with ``inv = float32(1 / scale)``:

* per tensor:  ``q = clamp(rint(fma(x, inv, zp)), qmin, qmax)`` — one rounding
  of ``x * inv + zp`` (``torch.quantize_per_tensor``);
* per channel: ``q = clamp(rint(float32(float32(x * inv) + zp)), qmin, qmax)``
  (``torch.quantize_per_channel``);
* ``rint`` rounds half to even; NaN -> ``zp``; +/-Inf -> ``qmax``/``qmin``;
* dequantize: ``float32(q - zp) * scale``, rounded once to the output dtype.
"""

from __future__ import annotations

import torch

QRANGE = {torch.int8: (-128, 127), torch.uint8: (0, 255)}
MIN_SCALE = torch.finfo(torch.float32).eps  # smallest scale choose_qparams returns


def _per_channel_shape(x: torch.Tensor, axis: int | None) -> list[int]:
    shape = [1] * x.dim()
    if axis is not None:
        shape[axis] = x.shape[axis]
    return shape


def _fma_float32(x: torch.Tensor, inv: torch.Tensor, zp: torch.Tensor) -> torch.Tensor:
    """float32(x * inv + zp) rounded once, like a hardware fused multiply-add.

    x * inv is exact in float64 (24 + 24 significant bits). The sum is made
    exact with TwoSum, rounded to float64 "to odd" (toward the odd neighbour
    when inexact), which rounds correctly to float32 afterwards (53 >= 24 + 2).
    """
    product = x.double() * inv.double()
    zp = zp.double()
    total = product + zp
    back = total - product
    error = (product - (total - back)) + (zp - back)
    even = (total.view(torch.int64) & 1) == 0
    inexact = (error != 0) & even & torch.isfinite(total)
    toward = torch.where(error > 0, torch.inf, -torch.inf).to(torch.float64)
    return torch.where(inexact, torch.nextafter(total, toward), total).float()


def quantize(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int | None, dtype: torch.dtype
) -> torch.Tensor:
    qmin, qmax = QRANGE[dtype]
    shape = _per_channel_shape(x, axis)
    x = x.float()
    inv = (1.0 / scale.float()).reshape(shape)
    zp = zero_point.float().reshape(shape)
    t = _fma_float32(x, inv, zp) if axis is None else (x * inv) + zp
    t = torch.where(torch.isnan(t), zp, t)
    return t.clamp(qmin, qmax).round().to(dtype)


def dequantize(
    q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int | None, dtype: torch.dtype
) -> torch.Tensor:
    shape = _per_channel_shape(q, axis)
    levels = q.int() - zero_point.int().reshape(shape)
    return (levels.float() * scale.float().reshape(shape)).to(dtype)


def qparams_from_range(
    lo: torch.Tensor, hi: torch.Tensor, symmetric: bool, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (float32) and zero point (int32) for the ranges [lo, hi]."""
    qmin, qmax = QRANGE[dtype]
    lo = lo.double().clamp(max=0.0)
    hi = hi.double().clamp(min=0.0)
    if symmetric:
        scale = (torch.maximum(-lo, hi) / 127.0).float().clamp(min=MIN_SCALE)
        zero_point = torch.full_like(scale, 0 if dtype == torch.int8 else 128, dtype=torch.int32)
        return scale, zero_point
    scale = ((hi - lo) / (qmax - qmin)).float().clamp(min=MIN_SCALE)
    zero_point = (qmin - torch.round(lo / scale.double())).clamp(qmin, qmax).to(torch.int32)
    return scale, zero_point


def choose_qparams(
    x: torch.Tensor, axis: int | None, symmetric: bool, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raises ValueError if x holds NaN or Inf; an empty channel counts as [0, 0]."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x: expected finite values, found NaN or Inf (choose_qparams needs a finite range)")
    rows = x.float().reshape(1, -1) if axis is None else x.float().movedim(axis, 0).reshape(x.shape[axis], -1)
    if rows.shape[1] == 0:
        lo = hi = torch.zeros(rows.shape[0], device=x.device)
    else:
        lo, hi = rows.amin(dim=1), rows.amax(dim=1)
    scale, zero_point = qparams_from_range(lo, hi, symmetric, dtype)
    if axis is None:
        return scale.reshape(()), zero_point.reshape(())
    return scale, zero_point
