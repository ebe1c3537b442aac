"""Magnitude thresholding: ``threshold_`` zeroes small weights in place,
``prune_mask`` returns the keep-mask. Pair them with
:func:`slimtorch.ops.magnitude_threshold` to prune to an exact sparsity."""

from __future__ import annotations

import torch

from slimtorch import _native, reference
from slimtorch._checks import check_float_tensor, check_real

__all__ = ["prune_mask", "threshold_"]


# ---- torch.library ops (kernels assume validated arguments) ----------------

@torch.library.custom_op("slimtorch::threshold_", mutates_args=("w",))
def _threshold_op(w: torch.Tensor, threshold: float) -> torch.Tensor:
    _native.warn_fallback("threshold_", w.device)
    return torch.tensor(reference.threshold_(w, threshold), dtype=torch.int64)


@_threshold_op.register_fake
def _(w: torch.Tensor, threshold: float) -> torch.Tensor:
    return w.new_empty((), dtype=torch.int64)


@_threshold_op.register_kernel("cpu")
def _(w: torch.Tensor, threshold: float) -> torch.Tensor:
    if _native.cpu is None:
        _native.warn_fallback("threshold_", w.device)
        return torch.tensor(reference.threshold_(w, threshold), dtype=torch.int64)
    # The kernel walks a dense buffer; a strided view is thresholded through a copy.
    dense = w if w.is_contiguous() else w.contiguous()
    kept = _native.cpu.threshold_(
        dense.data_ptr(), _native.dtype_code(w.dtype), dense.numel(), threshold, _native.num_threads()
    )
    if dense is not w:
        w.copy_(dense)
    return torch.tensor(kept, dtype=torch.int64)


@torch.library.custom_op("slimtorch::prune_mask", mutates_args=())
def _prune_mask_op(w: torch.Tensor, threshold: float) -> torch.Tensor:
    _native.warn_fallback("prune_mask", w.device)
    return reference.prune_mask(w, threshold)


@_prune_mask_op.register_fake
def _(w: torch.Tensor, threshold: float) -> torch.Tensor:
    return torch.empty_like(w, dtype=torch.bool, memory_format=torch.contiguous_format)


@_prune_mask_op.register_kernel("cpu")
def _(w: torch.Tensor, threshold: float) -> torch.Tensor:
    if _native.cpu is None:
        _native.warn_fallback("prune_mask", w.device)
        return reference.prune_mask(w, threshold)
    dense = w.contiguous()
    keep = torch.empty(w.shape, dtype=torch.bool)
    _native.cpu.prune_mask(
        dense.data_ptr(), _native.dtype_code(w.dtype), dense.numel(), threshold,
        keep.data_ptr(), _native.num_threads(),
    )
    return keep


if _native.cuda is not None:

    @_threshold_op.register_kernel("cuda")
    def _(w: torch.Tensor, threshold: float) -> torch.Tensor:
        dense = w if w.is_contiguous() else w.contiguous()
        kept = torch.empty((), dtype=torch.int64, device=w.device)
        _native.cuda.threshold_(
            dense.data_ptr(), _native.dtype_code(w.dtype), dense.numel(), threshold,
            kept.data_ptr(), torch.cuda.current_stream(w.device).cuda_stream,
        )
        if dense is not w:
            w.copy_(dense)
        return kept

    @_prune_mask_op.register_kernel("cuda")
    def _(w: torch.Tensor, threshold: float) -> torch.Tensor:
        dense = w.contiguous()
        keep = torch.empty(w.shape, dtype=torch.bool, device=w.device)
        kept = torch.empty((), dtype=torch.int64, device=w.device)
        _native.cuda.prune_mask(
            dense.data_ptr(), _native.dtype_code(w.dtype), dense.numel(), threshold,
            keep.data_ptr(), kept.data_ptr(), torch.cuda.current_stream(w.device).cuda_stream,
        )
        return keep


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
