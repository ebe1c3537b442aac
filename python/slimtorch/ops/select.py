"""Magnitude selection: the global pruning threshold for a target sparsity, and
keep-masks that prune exactly ``round(sparsity * N)`` weights.

Both ops select over all given tensors together (N = their total size)
without concatenating them, exactly, by radix selection over the sign-cleared
float32 bit patterns of the magnitudes (histograms of key digits; no sort).
On CPU, inputs of >= 2^20 elements first try a sampled window: one streaming
pass counts the keys below it and keeps the few inside, then the radix select
runs on those; it falls back to the full histogram select if the sample
misleads it. Rules shared by both ops:

- Count: ``k = round(sparsity * N)`` with Python's ``round`` (half to even) —
  the count ``torch.nn.utils.prune`` uses.
- Magnitudes are compared in float32; fp16/bf16 values are exact in float32,
  so tensors of different dtypes may be mixed in one call.
- ``-0.0`` has magnitude 0; ``+/-Inf`` are valid (the largest) magnitudes;
  NaN has no rank and is rejected with ``ValueError``.
- Ties at the threshold: the tied elements that are pruned are the first ones
  in element order — tensor order, then row-major flat index within a tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from slimtorch import _native
from slimtorch._checks import check_float_tensor, check_fraction, check_same_device

__all__ = ["magnitude_masks", "magnitude_threshold"]

_NAN_MESSAGE = "tensors: expected no NaN values (NaN has no magnitude to rank)"


def _native_arguments(tensors: list[torch.Tensor], sparsity: float):
    """Dense buffers (non-contiguous tensors are copied; the caller keeps the
    list alive during the kernel call), their addresses, dtype codes, sizes,
    and the prune count k."""
    dense = [t if t.is_contiguous() else t.contiguous() for t in tensors]
    sizes = [t.numel() for t in dense]
    return (
        dense,
        [t.data_ptr() for t in dense],
        [_native.dtype_code(t.dtype) for t in dense],
        sizes,
        round(sparsity * sum(sizes)),
    )


# ---- torch.library ops (kernels assume validated arguments) ----------------
# slimtorch::magnitude_threshold returns a 0-dim float32 tensor on the tensors'
# device: the threshold, or NaN when a tensor holds NaN (on CUDA the kernel
# cannot raise without synchronizing; the public function raises).

@torch.library.custom_op("slimtorch::magnitude_threshold", mutates_args=())
def _threshold_op(tensors: list[torch.Tensor], sparsity: float) -> torch.Tensor:
    raise NotImplementedError  # replaced by the registered reference fallback


@_threshold_op.register_fake
def _(tensors: list[torch.Tensor], sparsity: float) -> torch.Tensor:
    return tensors[0].new_empty((), dtype=torch.float32)


@torch.library.custom_op("slimtorch::magnitude_masks", mutates_args=())
def _masks_op(tensors: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    raise NotImplementedError  # replaced by the registered reference fallback


@_masks_op.register_fake
def _(tensors: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    return [torch.empty(t.shape, dtype=torch.bool, device=t.device) for t in tensors]


# ---- public API ----------------------------------------------------------------

def _check_tensors(tensors: object) -> list[torch.Tensor]:
    if isinstance(tensors, torch.Tensor):
        tensors = [tensors]
    elif isinstance(tensors, (list, tuple)):
        tensors = list(tensors)
    else:
        raise TypeError(
            f"tensors: expected a tensor or a list/tuple of tensors, got {type(tensors).__name__}"
        )
    if not tensors:
        raise ValueError("tensors: expected at least one tensor, got an empty sequence")
    for i, t in enumerate(tensors):
        check_float_tensor(f"tensors[{i}]", t)
    check_same_device("tensors", tensors)
    # The ops have no autograd formula: selection is not differentiable.
    return [t.detach() for t in tensors]


def magnitude_threshold(tensors: torch.Tensor | Sequence[torch.Tensor], sparsity: float) -> float:
    """The largest magnitude pruned when pruning ``k = round(sparsity * N)``
    of the weights of ``tensors`` together (the k-th smallest ``|w|``).

    Pass it to :func:`slimtorch.ops.threshold_` / :func:`prune_mask`, which
    prune ``|w| <= threshold``: that prunes exactly k weights when no other
    weight has the same magnitude, and every tied weight otherwise (use
    :func:`magnitude_masks` for an exact count).

    Args:
        tensors: a tensor or a non-empty list/tuple of tensors, float32,
            float16 or bfloat16 (may be mixed), any shapes and strides, all
            on one device. No NaN.
        sparsity: fraction to prune, a number in [0, 1].

    Returns:
        The threshold as a Python float (exactly a magnitude present in the
        tensors), or ``-inf`` when k == 0 (nothing to prune; ``threshold_``
        with a negative threshold prunes nothing).

    Raises:
        TypeError / ValueError naming the bad argument; ValueError if a
        tensor holds NaN.
    """
    tensors = _check_tensors(tensors)
    sparsity = check_fraction("sparsity", sparsity)
    if tensors[0].device.type == "meta":
        raise ValueError("tensors: expected tensors with values, got meta tensors")
    value = float(_threshold_op(tensors, sparsity))
    if math.isnan(value):
        raise ValueError(_NAN_MESSAGE)
    return value


def magnitude_masks(tensors: torch.Tensor | Sequence[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    """Keep-masks that prune exactly ``k = round(sparsity * N)`` weights of
    ``tensors`` together: the k with the smallest ``|w|``.

    Ties at the threshold are broken in element order: of the weights whose
    magnitude equals the threshold, the first ones (tensor order, then
    row-major flat index) are pruned. Without ties the masks equal those of
    ``torch.nn.utils.prune.l1_unstructured`` (one tensor) and
    ``global_unstructured`` with ``L1Unstructured`` (several).

    Args:
        tensors: as for :func:`magnitude_threshold`.
        sparsity: fraction to prune, a number in [0, 1].

    Returns:
        One contiguous bool tensor per input, of its shape, on its device:
        True = keep. Always a list, also for a single tensor.
    """
    tensors = _check_tensors(tensors)
    sparsity = check_fraction("sparsity", sparsity)
    return list(_masks_op(tensors, sparsity))
