"""Modules that compute a linear map but are not ``nn.Linear``, and their
conversion to one: the single place where another linear-like module type
(a framework's own linear layer) is taught to pruning, calibration and
``compress_``."""

from __future__ import annotations

import torch
from torch import nn


def is_hf_conv1d(module: nn.Module) -> bool:
    """Hugging Face's ``Conv1D`` (GPT-2 style): ``y = x @ weight + bias`` with
    ``weight [in, out]``. Recognised by name so transformers is never imported."""
    cls = type(module)
    return cls.__name__ == "Conv1D" and cls.__module__.startswith("transformers")


def is_linear_like(module: nn.Module) -> bool:
    """An ``nn.Linear`` or a module computing the same map with its own weight layout."""
    return isinstance(module, nn.Linear) or is_hf_conv1d(module)


def linear_features(module: nn.Module) -> tuple[int, int]:
    """``(in_features, out_features)`` of the linear map a linear-like module computes."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if not is_hf_conv1d(module):
        raise TypeError(f"module: expected an nn.Linear or a linear-like module, got {type(module).__name__}")
    return module.weight.shape[0], module.weight.shape[1]  # Conv1D: weight [in, out]


@torch.no_grad()
def as_linear(module: nn.Module) -> nn.Linear:
    """``module`` itself if it is an ``nn.Linear``; otherwise a new
    ``nn.Linear`` computing the same map (a ``Conv1D`` weight is transposed
    once, into a copy: the module is not changed)."""
    if isinstance(module, nn.Linear):
        return module
    in_features, out_features = linear_features(module)
    weight, bias = module.weight.detach(), module.bias
    linear = nn.Linear(in_features, out_features, bias=bias is not None, device=weight.device, dtype=weight.dtype)
    linear.weight.copy_(weight.T)
    if bias is not None:
        linear.bias.copy_(bias)
    return linear.train(module.training)
