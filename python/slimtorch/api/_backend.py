"""The single door from the model-level API to the op and layer levels.

Everything in ``slimtorch.api`` that needs a core op (magnitude masks,
quantization parameters) or a compressed layer class goes through this module,
so the model level depends on one small, explicit surface:

- ``magnitude_masks(tensors, sparsity)`` -> keep-masks (``slimtorch.ops``)
- ``qparams_from_range(lo, hi)`` -> ``slimtorch.ops.choose_qparams``
- ``choose_qparams``, ``quantize``, ``dequantize``, ``fake_quantize_rows``,
  ``MIN_SCALE``: the op-level quantization rules QAT shares with the layers
- ``cpu_bf16_status()``: whether the CPU computes bfloat16 natively
- ``sparse_batches``: the shipped break-even data, the speed check's prior
- ``layer_class(name)`` -> ``slimtorch.nn.<name>``, resolved lazily so the
  compress registry names layer classes instead of importing them.
"""

from __future__ import annotations

import importlib

import torch

from slimtorch import ops as _ops

__all__ = ["magnitude_masks", "qparams_from_range", "layer_class", "choose_qparams", "quantize", "dequantize",
           "fake_quantize_rows", "MIN_SCALE", "cpu_bf16_status", "sparse_batches"]


magnitude_masks = _ops.magnitude_masks
choose_qparams = _ops.choose_qparams
quantize = _ops.quantize
dequantize = _ops.dequantize
fake_quantize_rows = _ops.qgemm_fake_quantize_rows
MIN_SCALE = _ops.MIN_SCALE
cpu_bf16_status = _ops.cpu_bf16_status
sparse_batches = _ops.sparse_batches


def qparams_from_range(lo: float, hi: float, *, symmetric: bool, dtype: torch.dtype) -> tuple[float, int]:
    """(scale, zero_point) of int8/uint8 quantization for values in [lo, hi]."""
    # choose_qparams over the two-element tensor [lo, hi] sees exactly the range [lo, hi].
    scale, zero_point = _ops.choose_qparams(torch.tensor([lo, hi], dtype=torch.float32), symmetric=symmetric,
                                            dtype=dtype)
    return float(scale), int(zero_point)


def layer_class(name: str) -> type[torch.nn.Module]:
    """``slimtorch.nn.<name>``; a clear error where that layer is not built in."""
    try:
        module = importlib.import_module("slimtorch.nn")
        return getattr(module, name)
    except (ImportError, AttributeError) as error:
        raise RuntimeError(f"slimtorch.nn.{name} is not available in this build of slimtorch") from error
