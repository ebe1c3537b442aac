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

from slimtorch import _native, reference
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


def _reference_threshold(tensors: list[torch.Tensor], sparsity: float) -> torch.Tensor:
    if any(bool(t.isnan().any()) for t in tensors):
        value = math.nan
    else:
        value = reference.magnitude_threshold(tensors, sparsity)
    return torch.tensor(value, dtype=torch.float32, device=tensors[0].device)


# ---- torch.library ops (kernels assume validated arguments) ----------------
# slimtorch::magnitude_threshold returns a 0-dim float32 tensor on the tensors'
# device: the threshold, or NaN when a tensor holds NaN (on CUDA the kernel
# cannot raise without synchronizing; the public function raises).

@torch.library.custom_op("slimtorch::magnitude_threshold", mutates_args=())
def _threshold_op(tensors: list[torch.Tensor], sparsity: float) -> torch.Tensor:
    _native.warn_fallback("magnitude_threshold", tensors[0].device)
    return _reference_threshold(tensors, sparsity)


@_threshold_op.register_fake
def _(tensors: list[torch.Tensor], sparsity: float) -> torch.Tensor:
    return tensors[0].new_empty((), dtype=torch.float32)


@_threshold_op.register_kernel("cpu")
def _(tensors: list[torch.Tensor], sparsity: float) -> torch.Tensor:
    if _native.cpu is None:
        _native.warn_fallback("magnitude_threshold", tensors[0].device)
        return _reference_threshold(tensors, sparsity)
    dense, data, dtypes, sizes, k = _native_arguments(tensors, sparsity)
    threshold, _, _ = _native.cpu.magnitude_select(data, dtypes, sizes, k, _native.num_threads())
    del dense
    return torch.tensor(threshold, dtype=torch.float32)


@torch.library.custom_op("slimtorch::magnitude_masks", mutates_args=())
def _masks_op(tensors: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    _native.warn_fallback("magnitude_masks", tensors[0].device)
    return reference.magnitude_masks(tensors, sparsity)


@_masks_op.register_fake
def _(tensors: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    return [torch.empty(t.shape, dtype=torch.bool, device=t.device) for t in tensors]


@_masks_op.register_kernel("cpu")
def _(tensors: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    if _native.cpu is None:
        _native.warn_fallback("magnitude_masks", tensors[0].device)
        return reference.magnitude_masks(tensors, sparsity)
    dense, data, dtypes, sizes, k = _native_arguments(tensors, sparsity)
    keep = [torch.empty(t.shape, dtype=torch.bool) for t in tensors]
    _native.cpu.magnitude_masks(
        data, dtypes, sizes, k, [m.data_ptr() for m in keep], _native.num_threads()
    )
    del dense
    return keep


if _native.cuda is not None and hasattr(_native.cuda, "magnitude_select"):

    def _cuda_select(tensors: list[torch.Tensor], sparsity: float) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Launches the selection on the current stream. Returns the dense
        inputs (the caching allocator keeps their memory for the stream's
        pending work) and the device result int64[4]: threshold bits
        (sign-extended int32), count_less, ties_to_prune, NaN flag."""
        dense, data, dtypes, sizes, k = _native_arguments(tensors, sparsity)
        device = tensors[0].device
        workspace = torch.empty(_native.cuda.select_workspace_size(), dtype=torch.uint8, device=device)
        result = torch.empty(4, dtype=torch.int64, device=device)
        _native.cuda.magnitude_select(
            data, dtypes, sizes, k, workspace.data_ptr(), result.data_ptr(),
            torch.cuda.current_stream(device).cuda_stream,
        )
        return dense, result

    @_threshold_op.register_kernel("cuda")
    def _(tensors: list[torch.Tensor], sparsity: float) -> torch.Tensor:
        with torch.cuda.device(tensors[0].device):
            _, result = _cuda_select(tensors, sparsity)
            threshold = result[0].to(torch.int32).view(torch.float32)
            return torch.where(result[3] != 0, torch.nan, threshold)

    @_masks_op.register_kernel("cuda")
    def _(tensors: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
        device = tensors[0].device
        with torch.cuda.device(device):
            dense, result = _cuda_select(tensors, sparsity)
            # The one synchronization: NaN must raise, and only the device knows.
            if bool(result[3]):
                raise ValueError(_NAN_MESSAGE)
            keep = [torch.empty(t.shape, dtype=torch.bool, device=device) for t in tensors]
            tile = _native.cuda.mask_tile_elements()
            largest = max(t.numel() for t in dense)
            tiles = torch.empty(-(-largest // tile) + 1, dtype=torch.int64, device=device)
            ties_seen = torch.zeros((), dtype=torch.int64, device=device)
            stream = torch.cuda.current_stream(device).cuda_stream
            for t, m in zip(dense, keep):  # in element order: ties are numbered across tensors
                _native.cuda.magnitude_mask(
                    t.data_ptr(), _native.dtype_code(t.dtype), t.numel(), result.data_ptr(),
                    ties_seen.data_ptr(), tiles.data_ptr(), m.data_ptr(), stream,
                )
            return keep


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
