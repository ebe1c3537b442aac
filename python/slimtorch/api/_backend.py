"""The single door from the model-level API to the op and layer levels.

Everything in ``slimtorch.api`` that needs a core op (magnitude masks,
quantization parameters) or a compressed layer class goes through this module,
so the model level depends on one small, explicit surface:

- ``magnitude_masks(tensors, sparsity)`` -> keep-masks (``slimtorch.ops``)
- ``choose_qparams`` / ``quantize`` / ``dequantize`` (``slimtorch.ops``)
- ``layer_class(name)`` -> ``slimtorch.nn.<name>``, resolved lazily so the
  compress registry names layer classes instead of importing them.

While an op has not landed in ``slimtorch.ops`` yet, the interim pure-torch
versions below stand in for it (same contract); they are used nowhere else.
"""

from __future__ import annotations

import importlib

import torch

from slimtorch import ops as _ops

__all__ = ["magnitude_masks", "qparams_from_range", "layer_class"]


magnitude_masks = _ops.magnitude_masks


_QRANGE = {torch.int8: (-128, 127), torch.uint8: (0, 255)}


def _interim_choose_qparams(x: torch.Tensor, *, symmetric: bool, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    # DESIGN.md / quantize.h: range widened to include 0; division in double,
    # rounded to float32 once; scale at least 2**-23.
    qmin, qmax = _QRANGE[dtype]
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    if symmetric:
        scale = max(abs(lo), abs(hi)) / 127.0
        zero_point = 0 if dtype == torch.int8 else 128
    else:
        scale = (hi - lo) / (qmax - qmin)
    scale = max(float(torch.tensor(scale, dtype=torch.float32)), 2.0**-23)
    if not symmetric:
        zero_point = min(max(qmin - round(lo / scale), qmin), qmax)
    return torch.tensor([scale], dtype=torch.float32), torch.tensor([zero_point], dtype=torch.int32)


_choose_qparams = getattr(_ops, "choose_qparams", None)


def qparams_from_range(lo: float, hi: float, *, symmetric: bool, dtype: torch.dtype) -> tuple[float, int]:
    """(scale, zero_point) of int8/uint8 quantization for values in [lo, hi]."""
    x = torch.tensor([lo, hi], dtype=torch.float32)
    if _choose_qparams is None:
        scale, zero_point = _interim_choose_qparams(x, symmetric=symmetric, dtype=dtype)
    else:
        scale, zero_point = _choose_qparams(x, symmetric=symmetric, dtype=dtype)
    return float(scale.reshape(-1)[0]), int(zero_point.reshape(-1)[0])


def layer_class(name: str) -> type[torch.nn.Module]:
    """``slimtorch.nn.<name>``; a clear error where that layer is not built in."""
    try:
        module = importlib.import_module("slimtorch.nn")
        return getattr(module, name)
    except (ImportError, AttributeError) as error:
        raise RuntimeError(f"slimtorch.nn.{name} is not available in this build of slimtorch") from error
