"""Benchmarks run with: pytest benchmarks --benchmark-enable [--benchmark-json=out.json].

Every benchmark records ``benchmark.extra_info`` with at least ``suite`` and
``impl`` (``"slimtorch"`` or the name of the torch baseline it is compared
with), so ratios are always computed between runs of one process.
Benchmarks use 2 threads unless SLIMTORCH_BENCH_THREADS says otherwise.
"""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(autouse=True)
def bench_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("SLIMTORCH_BENCH_THREADS", "2")))
    yield
    torch.set_num_threads(previous)
