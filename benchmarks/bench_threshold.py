"""threshold_ against torch.where(w.abs() > t, w, 0) at 1M, 16M and 64M fp32.

Both get a fresh copy of the weights before every round (untimed), so both
start from the same cache state.
"""

from __future__ import annotations

import os

import pytest
import torch

from slimtorch import ops

SIZES = {"1M": 1 << 20, "16M": 1 << 24, "64M": 1 << 26}
if os.environ.get("SLIMTORCH_BENCH_QUICK", "") not in ("", "0"):  # slimtorch bench --quick
    SIZES = {"1M": 1 << 20}
THRESHOLD = 0.5  # prunes ~38% of standard-normal weights


@pytest.fixture(scope="module", params=list(SIZES))
def weights(request):
    torch.manual_seed(0)
    original = torch.randn(SIZES[request.param])
    return request.param, original, original.clone()


@pytest.mark.parametrize("impl", ["slimtorch", "torch"])
def test_threshold(benchmark, weights, impl):
    label, original, work = weights
    benchmark.extra_info.update(suite="ops", op="threshold_", n=label, impl=impl)
    if impl == "slimtorch":
        run = lambda: ops.threshold_(work, THRESHOLD)  # noqa: E731
    else:
        run = lambda: torch.where(work.abs() > THRESHOLD, work, 0)  # noqa: E731
    def refresh() -> None:
        work.copy_(original)

    rounds = 20 if original.numel() <= (1 << 24) else 6
    benchmark.pedantic(run, setup=refresh, rounds=rounds, warmup_rounds=1)
