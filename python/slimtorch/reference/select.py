"""Reference magnitude selection: concatenate, sort, count.

Magnitudes are compared in float32 (fp16/bf16 are exact in float32). The
k = round(sparsity * N) smallest magnitudes are pruned; among equal
magnitudes the earlier element is pruned first, in tensor order and then
row-major flat index order — a stable sort gives exactly that order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _magnitudes(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    flat = torch.cat([t.detach().reshape(-1).float().abs() for t in tensors])
    if flat.isnan().any():
        raise ValueError("tensors: expected no NaN values (NaN has no magnitude to rank)")
    return flat


def magnitude_threshold(tensors: Sequence[torch.Tensor], sparsity: float) -> float:
    """The k-th smallest |w| over all tensors (k = round(sparsity * N));
    -inf when k == 0."""
    flat = _magnitudes(tensors)
    k = round(sparsity * flat.numel())
    if k == 0:
        return float("-inf")
    return float(torch.sort(flat).values[k - 1])


def magnitude_masks(tensors: Sequence[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    """Keep-masks with exactly k = round(sparsity * N) False in total."""
    flat = _magnitudes(tensors)
    k = round(sparsity * flat.numel())
    keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[torch.sort(flat, stable=True).indices[:k]] = False
    return [m.reshape(t.shape) for m, t in zip(keep.split([t.numel() for t in tensors]), tensors)]
