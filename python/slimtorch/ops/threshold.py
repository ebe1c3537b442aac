"""Magnitude thresholding: ``threshold_`` zeroes small weights in place,
``prune_mask`` returns the keep-mask. Pair them with
:func:`slimtorch.ops.magnitude_threshold` to prune to an exact sparsity."""

from __future__ import annotations

import torch

from slimtorch._checks import check_float_tensor, check_real

__all__ = ["prune_mask", "threshold_"]


# ---- op schemas and fake implementations (kernels assume validated arguments;
# registered by slimtorch.ops.backends) ----------------

@torch.library.custom_op("slimtorch::threshold_", mutates_args=("w",))
def _threshold_op(w: torch.Tensor, threshold: float) -> torch.Tensor:
    raise NotImplementedError  # replaced by the registered reference fallback


@_threshold_op.register_fake
def _(w: torch.Tensor, threshold: float) -> torch.Tensor:
    return w.new_empty((), dtype=torch.int64)


@torch.library.custom_op("slimtorch::prune_mask", mutates_args=())
def _prune_mask_op(w: torch.Tensor, threshold: float) -> torch.Tensor:
    raise NotImplementedError  # replaced by the registered reference fallback


@_prune_mask_op.register_fake
def _(w: torch.Tensor, threshold: float) -> torch.Tensor:
    return torch.empty_like(w, dtype=torch.bool, memory_format=torch.contiguous_format)


# ---- public API ----------------------------------------------------------------

def threshold_(w: torch.Tensor, threshold: float) -> int:
    """Zero, in place, every element of ``w`` with ``|w| <= threshold``.

    Args:
        w: float32, float16 or bfloat16 tensor of any shape and strides.
        threshold: a real number (not NaN). The comparison is done in float32;
            a negative threshold prunes nothing. NaN elements are always kept.

    Returns:
        The number of elements kept (``|w| > threshold`` or NaN).
    """
    check_float_tensor("w", w)
    threshold = check_real("threshold", threshold)
    return int(_threshold_op(w, threshold))


def prune_mask(w: torch.Tensor, threshold: float) -> torch.Tensor:
    """Keep-mask of ``w``: a bool tensor of ``w``'s shape, True where
    ``|w| > threshold`` (NaN elements: True). Same rules as :func:`threshold_`."""
    check_float_tensor("w", w)
    threshold = check_real("threshold", threshold)
    return _prune_mask_op(w, threshold)
