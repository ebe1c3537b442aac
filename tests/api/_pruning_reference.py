"""The row-wise pruning reference shared by the pruning tests (imported by
name: pytest puts tests/api on sys.path)."""

from __future__ import annotations

import torch


def expected_row_keep(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Per row, prune the round(s * cols) lowest scores; ties: lower column first."""
    keep = torch.ones(scores.shape, dtype=torch.bool)
    count = round(sparsity * scores.shape[1])
    for r in range(scores.shape[0]):
        order = sorted(range(scores.shape[1]), key=lambda c: (float(scores[r, c]), c))
        for c in order[:count]:
            keep[r, c] = False
    return keep
