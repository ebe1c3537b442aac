"""Reference int8 GEMM / linear: per-output-channel symmetric int8 weights
times per-row asymmetric uint8 activations (dynamic, static) or float
activations (weight-only).

Quantization follows the ``quantize`` op family (:mod:`slimtorch.reference.quantize`,
whose ``choose_qparams`` / ``quantize`` this module calls):

* Weights, per output channel: ``choose_qparams`` symmetric int8 (scale
  ``max(max|w[n]| / 127, MIN_SCALE)``, zero point 0), then per-channel ``quantize``
  (``rint(float32(w * (1/scale)))``, values in [-127, 127]).
* Activations (dynamic), per row: ``choose_qparams`` asymmetric uint8 of the row
  (``lo = min(0, min x)``, ``hi = max(0, max x)``, scale ``max((hi - lo) / 255, eps)``,
  zero point ``clamp(-round(lo / scale), 0, 255)``), then per-channel ``quantize``
  along the rows: ``clamp(rint(float32(float32(x * (1/scale)) + zp)), 0, 255)``.
  A row holding NaN or +/-Inf gets scale NaN, zero point 0 and a = 0, so its
  output row is NaN (``choose_qparams`` itself rejects such input).
* Activations (static): per-tensor ``quantize`` with the given scale and zero
  point (one rounding of ``fma(x, 1/scale, zp)``, as ``torch.quantize_per_tensor``).
* ``acc = a @ q.T`` exactly in int32; the epilogue is
  ``y = float(acc - zp * colsum) * (a_scale * w_scale) + bias`` with
  ``colsum[n] = sum_k q[n, k]``.
"""

from __future__ import annotations

import math

import torch

from slimtorch.reference.quantize import qparams_from_range
from slimtorch.reference.quantize import quantize as quantize_affine

BLOCK_N = 16  # output channels per packed block
GROUP_K = 4  # k values per 32-bit lane (vpdpbusd)


def _row_range(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape[-1] == 0:
        zero = x.new_zeros(x.shape[:-1])
        return zero, zero
    return x.amin(dim=-1), x.amax(dim=-1)


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric int8: (q int8 [N, K], scale float32 [N])."""
    w = weight.detach().float()
    scale, zero_point = qparams_from_range(*_row_range(w), True, torch.int8)
    return quantize_affine(w, scale, zero_point, 0, torch.int8), scale


def pack_weight(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """VNNI 16x4 layout: packed[nb, g, j, i] = q[16 nb + j, 4 g + i] (zero padded),
    shape [ceil(N/16), ceil(K/4), 16, 4], and colsum[n] = sum_k q[n, k] (int32)."""
    n, k = q.shape
    n_pad, k_pad = -(-n // BLOCK_N) * BLOCK_N, -(-k // GROUP_K) * GROUP_K
    padded = q.new_zeros((n_pad, k_pad))
    padded[:n, :k] = q
    packed = padded.view(n_pad // BLOCK_N, BLOCK_N, k_pad // GROUP_K, GROUP_K).permute(0, 2, 1, 3)
    return packed.contiguous(), q.sum(dim=1, dtype=torch.int32)


def unpack_weight(packed: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """Inverse of :func:`pack_weight`: q int8 [n, k]."""
    blocks, groups = packed.shape[0], packed.shape[1]
    full = packed.permute(0, 2, 1, 3).reshape(blocks * BLOCK_N, groups * GROUP_K)
    return full[:n, :k]


def _mark_non_finite(x, a, scale, zp):
    finite = torch.isfinite(x).all(dim=-1)
    a = torch.where(finite[..., None], a, torch.zeros((), dtype=a.dtype))
    scale = torch.where(finite, scale, torch.full((), float("nan")))
    zp = torch.where(finite, zp, torch.zeros((), dtype=zp.dtype))
    return a, scale, zp


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row asymmetric uint8 of x [..., K]: (a uint8 [..., K], scale float32 [...],
    zero_point int32 [...])."""
    x = x.float()
    rows = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])
    lo, hi = _row_range(rows.nan_to_num(0.0, 0.0, 0.0))  # non-finite rows are replaced below
    scale, zp = qparams_from_range(lo, hi, False, torch.uint8)
    a = quantize_affine(rows, scale, zp, 0, torch.uint8)
    a, scale, zp = _mark_non_finite(rows, a, scale, zp)
    return a.reshape(x.shape), scale.reshape(x.shape[:-1]), zp.reshape(x.shape[:-1])


def quantize_rows_static(x: torch.Tensor, x_scale: float,
                         x_zero_point: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows quantized per tensor with the given scale and zero point; same
    outputs as :func:`quantize_rows` (non-finite rows: scale NaN, zero point 0, a = 0)."""
    x = x.float()
    scale = torch.tensor(x_scale, dtype=torch.float32)
    zp = torch.tensor(x_zero_point, dtype=torch.int32)
    a = quantize_affine(x, scale, zp, None, torch.uint8)
    lead = x.shape[:-1]
    return _mark_non_finite(x, a, scale.expand(lead), zp.expand(lead))


def qgemm_s32(a: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """acc[m, n] = sum_k a[m, k] * q[n, k], exact (int64 matmul, then int32)."""
    return (a.long() @ q.long().T).to(torch.int32)


def _epilogue(acc, zp, a_scale, w_scale, colsum, bias):
    comp = (acc.long() - zp.long()[:, None] * colsum.long()[None, :]).to(torch.int32)
    y = comp.float() * (a_scale[:, None] * w_scale[None, :])
    return y + bias.float() if bias is not None else y


def _linear(x, a, a_scale, zp, q, w_scale, bias):
    k = x.shape[-1]
    acc = qgemm_s32(a.reshape(math.prod(a.shape[:-1]), k), q)
    y = _epilogue(acc, zp.reshape(-1), a_scale.reshape(-1), w_scale, q.sum(1, dtype=torch.int32), bias)
    return y.reshape(*x.shape[:-1], q.shape[0]).to(x.dtype)


def qlinear_dynamic(x: torch.Tensor, q: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Dynamic int8 linear of x [..., K] with weights q [N, K]: output x.dtype [..., N]."""
    a, a_scale, zp = quantize_rows(x)
    return _linear(x, a, a_scale, zp, q, w_scale, bias)


def qlinear_static(x: torch.Tensor, q: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None,
                   x_scale: float, x_zero_point: int) -> torch.Tensor:
    """Static int8 linear: rows quantized with the given scale and zero point."""
    a, a_scale, zp = quantize_rows_static(x, x_scale, x_zero_point)
    return _linear(x, a, a_scale, zp, q, w_scale, bias)


def qlinear_weight_only(x: torch.Tensor, q: torch.Tensor, w_scale: torch.Tensor,
                        bias: torch.Tensor | None) -> torch.Tensor:
    """Weight-only int8 linear: float32 ``(x @ q.T) * w_scale + bias``."""
    y = (x.float() @ q.float().T) * w_scale
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)
