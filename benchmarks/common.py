"""Settings every suite shares."""

from __future__ import annotations

import os

# `python -m benchmarks --quick` / `slimtorch bench --quick`: a small subset of each grid.
QUICK = os.environ.get("SLIMTORCH_BENCH_QUICK", "") not in ("", "0")
ROUNDS = 3 if QUICK else 7


def grid(full: list, quick: list) -> list:
    """The cases of a suite: ``quick`` in quick mode, else ``full``."""
    return quick if QUICK else full
