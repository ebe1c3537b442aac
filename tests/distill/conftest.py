"""The distill tests train tiny models: one thread is faster than several
(no OpenMP hand-offs on a busy machine) and keeps runs reproducible."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
