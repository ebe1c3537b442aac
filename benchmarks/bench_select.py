"""select family: global magnitude selection over several tensors at 1M, 16M
and 64M fp32 weights, split into four tensors of different sizes as a model's
layers are.

- ``magnitude_threshold`` against ``torch.kthvalue(w.abs(), k)`` on the
  weights already concatenated into one tensor (the concatenation is not
  timed, which favours torch);
- ``magnitude_masks`` (exact-count keep-masks) against what
  ``torch.nn.utils.prune.global_unstructured`` computes: topk of the smallest
  magnitudes over the concatenated weights (skipped at 64M: topk takes too long).
Baseline: torch.
"""

from __future__ import annotations

import functools

import pytest
import torch

from benchmarks.common import ROUNDS, grid
from slimtorch import ops

SIZES = grid({"1M": 1 << 20, "16M": 1 << 24, "64M": 1 << 26}, {"1M": 1 << 20})
SPARSITY = 0.5
SPLIT = (0.4, 0.3, 0.2, 0.1)


def rounds(label: str) -> int:
    return min(ROUNDS, 3) if SIZES[label] > (1 << 24) else ROUNDS  # kthvalue takes seconds at 64M


@functools.cache
def weights(label: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    torch.manual_seed(0)
    n = SIZES[label]
    sizes = [int(n * f) for f in SPLIT[:-1]]
    sizes.append(n - sum(sizes))
    tensors = [torch.randn(s) for s in sizes]
    return tensors, torch.cat(tensors)


@pytest.mark.parametrize("label", list(SIZES))
def test_magnitude_threshold(bench, label):
    tensors, concatenated = weights(label)
    k = round(SPARSITY * concatenated.numel())
    assert ops.magnitude_threshold(tensors, SPARSITY) == float(torch.kthvalue(concatenated.abs(), k).values)
    bench({"op": "magnitude_threshold", "n": label}, {
        "torch": lambda: float(torch.kthvalue(concatenated.abs(), k).values),
        "slimtorch": lambda: ops.magnitude_threshold(tensors, SPARSITY),
    }, baseline="torch", rounds=rounds(label))


@pytest.mark.parametrize("label", list(SIZES))
def test_magnitude_masks(bench, label):
    tensors, concatenated = weights(label)
    if concatenated.numel() > (1 << 24):
        pytest.skip("topk over 64M weights takes too long for a routine run")
    k = round(SPARSITY * concatenated.numel())

    def torch_masks() -> list[torch.Tensor]:
        keep = torch.ones(concatenated.numel(), dtype=torch.bool)
        keep[torch.topk(concatenated.abs(), k, largest=False).indices] = False
        return list(keep.split([t.numel() for t in tensors]))

    bench({"op": "magnitude_masks", "n": label},
          {"torch": torch_masks, "slimtorch": lambda: ops.magnitude_masks(tensors, SPARSITY)}, baseline="torch",
          rounds=rounds(label))
