"""Reference magnitude thresholding. The comparison is done in float32
(half-precision elements are exact in float32; the threshold is rounded to
float32 once), and NaN elements are kept: NaN <= t is false."""

import torch


def prune_mask(w: torch.Tensor, threshold: float) -> torch.Tensor:
    return ~(w.float().abs() <= threshold)


def threshold_(w: torch.Tensor, threshold: float) -> int:
    keep = prune_mask(w, threshold)
    w.masked_fill_(~keep, 0)
    return int(keep.sum())
