"""How the model-level API feeds a user's batch to a model: one convention
for calibration, activation-aware pruning and the inputs ``compress_`` records."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

__all__ = ["run_batch"]


def run_batch(model: nn.Module, batch: object) -> object:
    """``model(**batch)`` for a mapping, ``model(*batch)`` for a tuple or list,
    else ``model(batch)``; returns the model's output."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)
