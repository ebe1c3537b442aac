"""magnitude_threshold (global, several tensors) against torch.kthvalue at 1M,
16M and 64M fp32 weights.

The weights are split into four tensors of different sizes, as a model's
layers are. slimtorch selects over them in place; the torch baseline is
``torch.kthvalue(w.abs().flatten(), k)`` on the weights already concatenated
into one tensor (the concatenation is not timed, which favours torch).
"""

from __future__ import annotations

import os

import pytest
import torch

from slimtorch import ops

SIZES = {"1M": 1 << 20, "16M": 1 << 24, "64M": 1 << 26}
if os.environ.get("SLIMTORCH_BENCH_QUICK", "") not in ("", "0"):  # slimtorch bench --quick
    SIZES = {"1M": 1 << 20}
SPARSITY = 0.5
# Split fractions: four "layers" of different sizes.
SPLIT = (0.4, 0.3, 0.2, 0.1)


@pytest.fixture(scope="module", params=list(SIZES))
def weights(request):
    torch.manual_seed(0)
    n = SIZES[request.param]
    sizes = [int(n * f) for f in SPLIT[:-1]]
    sizes.append(n - sum(sizes))
    tensors = [torch.randn(s) for s in sizes]
    return request.param, tensors, torch.cat(tensors)


@pytest.mark.parametrize("impl", ["slimtorch", "torch"])
def test_magnitude_threshold(benchmark, weights, impl):
    label, tensors, concatenated = weights
    benchmark.extra_info.update(suite="ops", op="magnitude_threshold", n=label, impl=impl)
    k = round(SPARSITY * concatenated.numel())
    if impl == "slimtorch":
        run = lambda: ops.magnitude_threshold(tensors, SPARSITY)  # noqa: E731
    else:
        run = lambda: float(torch.kthvalue(concatenated.abs().flatten(), k).values)  # noqa: E731
    assert ops.magnitude_threshold(tensors, SPARSITY) == float(torch.kthvalue(concatenated.abs(), k).values)
    # kthvalue takes seconds at 64M: few rounds there.
    big = concatenated.numel() > (1 << 24)
    rounds = (3 if big else 5) if impl == "torch" else (10 if big else 20)
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=1 if impl == "slimtorch" else 0)


@pytest.mark.parametrize("impl", ["slimtorch", "torch"])
def test_magnitude_masks(benchmark, weights, impl):
    """Exact-count keep-masks against what torch.nn.utils.prune.global_unstructured
    computes: topk of the smallest magnitudes over the concatenated weights."""
    label, tensors, concatenated = weights
    if concatenated.numel() > (1 << 24):
        pytest.skip("topk over 64M weights takes too long for a routine run")
    benchmark.extra_info.update(suite="ops", op="magnitude_masks", n=label, impl=impl)
    k = round(SPARSITY * concatenated.numel())

    def torch_masks() -> list[torch.Tensor]:
        keep = torch.ones(concatenated.numel(), dtype=torch.bool)
        keep[torch.topk(concatenated.abs(), k, largest=False).indices] = False
        return list(keep.split([t.numel() for t in tensors]))

    run = (lambda: ops.magnitude_masks(tensors, SPARSITY)) if impl == "slimtorch" else torch_masks
    rounds = 3 if impl == "torch" else 10
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=1 if impl == "slimtorch" else 0)
