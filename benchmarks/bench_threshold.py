"""threshold family: ``ops.threshold_`` (in place) against
``torch.where(w.abs() > t, w, 0)`` at 1M, 16M and 64M fp32 weights.
Baseline: torch."""

from __future__ import annotations

import pytest
import torch

from benchmarks.common import grid
from slimtorch import ops

SIZES = grid({"1M": 1 << 20, "16M": 1 << 24, "64M": 1 << 26}, {"1M": 1 << 20})
THRESHOLD = 0.5  # prunes about 38% of standard-normal weights


@pytest.mark.parametrize("label", list(SIZES))
def test_threshold(bench, label):
    torch.manual_seed(0)
    weights = torch.randn(SIZES[label])
    # threshold_ on already-thresholded weights does the same work: one compare and one store per element.
    work = weights.clone()
    bench({"op": "threshold_", "n": label}, {
        "torch": lambda: torch.where(weights.abs() > THRESHOLD, weights, 0),
        "slimtorch": lambda: ops.threshold_(work, THRESHOLD),
    }, baseline="torch")
