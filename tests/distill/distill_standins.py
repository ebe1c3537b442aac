"""Small stand-ins shared by the distill tests and their subprocess scripts:
a magnitude-pruning schedule that follows the StepSchedule protocol (the real
``slimtorch.AGPSchedule`` is written elsewhere) and tiny models/data."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import TensorDataset

from slimtorch.demo import _mlp


class _Mask(nn.Module):
    def __init__(self, shape: torch.Size) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones(shape))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


class StepMagnitudePruning:
    """AGP-like schedule: sparsity goes from 0 to ``final`` on a cubic curve
    between ``start`` and ``end`` optimizer steps, masks recomputed every
    ``every`` steps; pruned weights stay exactly zero via a parametrization."""

    def __init__(self, layers: list[nn.Linear], final: float, start: int, end: int, every: int) -> None:
        self.layers = layers
        self.final, self.start, self.end, self.every = final, start, end, every
        self.steps = 0
        for layer in layers:
            parametrize.register_parametrization(layer, "weight", _Mask(layer.weight.shape))

    @property
    def current_sparsity(self) -> float:
        if self.steps < self.start:
            return 0.0
        progress = min(1.0, (self.steps - self.start) / (self.end - self.start))
        return self.final * (1 - (1 - progress) ** 3)

    def step(self) -> None:
        self.steps += 1
        if self.steps < self.start or (self.steps - self.start) % self.every:
            return
        sparsity = self.current_sparsity
        for layer in self.layers:
            with torch.no_grad():
                original = layer.parametrizations.weight.original
                mask = layer.parametrizations.weight[0].mask
                count = round(sparsity * original.numel())
                mask.fill_(1.0)
                if count:
                    order = original.abs().flatten().argsort(stable=True)
                    mask.view(-1)[order[:count]] = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])


def mlp(widths: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers of the given widths, ReLU (and dropout) between them."""
    return _mlp(widths, dropout)


def blobs(n: int, features: int = 8, classes: int = 3, seed: int = 0) -> TensorDataset:
    """Gaussian blobs: a toy classification problem that a small MLP learns.
    The centers are fixed; ``seed`` draws the samples."""
    centers = torch.randn(classes, features, generator=torch.Generator().manual_seed(12345)) * 3
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, classes, (n,), generator=generator)
    inputs = centers[targets] + torch.randn(n, features, generator=generator)
    return TensorDataset(inputs, targets)
