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

__all__ = ["magnitude_masks", "layer_class"]


def _interim_magnitude_masks(tensors: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    # Exactly round(sparsity * N) elements pruned over all tensors together;
    # ties broken by position (a stable sort: earlier tensor, lower flat index
    # pruned first). NaN sorts last, i.e. is never pruned before a number.
    flat = torch.cat([t.detach().reshape(-1).float().abs() for t in tensors]) if tensors else torch.empty(0)
    n_prune = round(sparsity * flat.numel())
    keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
    order = torch.sort(flat, stable=True).indices
    keep[order[:n_prune]] = False
    return [k.view(t.shape) for k, t in zip(keep.split([t.numel() for t in tensors]), tensors)]


magnitude_masks = getattr(_ops, "magnitude_masks", _interim_magnitude_masks)


def layer_class(name: str) -> type[torch.nn.Module]:
    """``slimtorch.nn.<name>``; a clear error where that layer is not built in."""
    try:
        module = importlib.import_module("slimtorch.nn")
        return getattr(module, name)
    except (ImportError, AttributeError) as error:
        raise RuntimeError(f"slimtorch.nn.{name} is not available in this build of slimtorch") from error
