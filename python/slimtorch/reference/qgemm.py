"""Reference int8 GEMM / linear: per-output-channel symmetric int8 weights
times per-row asymmetric uint8 activations (dynamic, static) or float
activations (weight-only).

Conventions (DESIGN.md): quantize is ``clamp(round_half_even(x * (1/scale)) +
zero_point, qmin, qmax)`` with the float32 reciprocal multiply.

* Weights, per output channel n: ``scale[n] = max(max|w[n]| / 127, FLT_MIN)``,
  ``q = clamp(round(w * (1/scale)), -127, 127)`` (symmetric, zero point 0).
* Activations (dynamic), per row: ``lo = min(0, min x)``, ``hi = max(0, max x)``,
  ``scale = max(hi/255 - lo/255, FLT_MIN)``, ``zp = clamp(round(-lo * (1/scale)), 0, 255)``,
  ``a = clamp(round(x * (1/scale)) + zp, 0, 255)`` as uint8. A row holding NaN
  or +/-Inf gets scale NaN, zero point 0 and a = 0, so its output row is NaN.
* ``acc = a @ q.T`` exactly in int32; the epilogue is
  ``y = float(acc - zp * colsum) * (a_scale * w_scale) + bias`` with
  ``colsum[n] = sum_k q[n, k]``.
"""

from __future__ import annotations

import math

import torch

FLT_MIN = torch.finfo(torch.float32).tiny
BLOCK_N = 16  # output channels per packed block
GROUP_K = 4  # k values per 32-bit lane (vpdpbusd)


def _round_clamp(v: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    # torch.round is round-half-to-even.
    return torch.round(v.nan_to_num(nan=0.0)).clamp(lo, hi)


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric int8: (q int8 [N, K], scale float32 [N])."""
    w = weight.detach().float()
    amax = w.abs().amax(dim=1) if w.shape[1] > 0 else w.new_zeros(w.shape[0])
    scale = (amax / 127).clamp_min(FLT_MIN)
    q = _round_clamp(w * (1.0 / scale)[:, None], -127, 127).to(torch.int8)
    return q, scale


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


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row asymmetric uint8 of x [..., K]: (a uint8 [..., K], scale float32 [...],
    zero_point int32 [...])."""
    x = x.float()
    finite = torch.isfinite(x).all(dim=-1)
    if x.shape[-1] > 0:
        lo = x.amin(dim=-1).clamp_max(0.0)
        hi = x.amax(dim=-1).clamp_min(0.0)
    else:
        lo = hi = x.new_zeros(x.shape[:-1])
    scale = (hi / 255 - lo / 255).clamp_min(FLT_MIN)
    inv = 1.0 / scale
    zp = _round_clamp(-lo * inv, 0, 255)
    a = _round_clamp(x * inv[..., None], -512, 512)
    a = (a + zp[..., None]).clamp(0, 255)
    zero = torch.zeros((), dtype=x.dtype)
    a = torch.where(finite[..., None], a, zero).to(torch.uint8)
    scale = torch.where(finite, scale, torch.full((), float("nan")))
    zp = torch.where(finite, zp, zero).to(torch.int32)
    return a, scale, zp


def quantize_rows_static(x: torch.Tensor, x_scale: float, x_zero_point: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows quantized with a given per-tensor scale and zero point; same output
    as :func:`quantize_rows` (non-finite rows: scale NaN, zero point 0, a = 0)."""
    x = x.float()
    finite = torch.isfinite(x).all(dim=-1)
    scale = torch.tensor(x_scale, dtype=torch.float32)
    inv = 1.0 / scale
    a = (_round_clamp(x * inv, -512, 512) + x_zero_point).clamp(0, 255)
    a = torch.where(finite[..., None], a, torch.zeros(())).to(torch.uint8)
    scales = torch.where(finite, scale, torch.full((), float("nan")))
    zp = torch.where(finite, torch.tensor(x_zero_point, dtype=torch.int32), torch.zeros((), dtype=torch.int32))
    return a, scales, zp


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


def qlinear_weight_only(x: torch.Tensor, q: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Weight-only int8 linear: float32 ``(x @ q.T) * w_scale + bias``."""
    y = (x.float() @ q.float().T) * w_scale
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)
