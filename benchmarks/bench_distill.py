"""Distiller overhead against a hand-written training loop, and checkpoint
cost against ``torch.save`` (the pickle baseline slimtorch does not use).

Run (ratios matter, not absolute times; the machine is shared):
    PYTHONPATH=python python -m pytest benchmarks/bench_distill.py -p no:cacheprovider \
        -o python_files='bench_*.py' --benchmark-enable --benchmark-columns=median,iqr,rounds
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from slimtorch.distill import Distiller, KDLoss, save_checkpoint

BATCH = 64


def _models() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    student = nn.Sequential(nn.Linear(64, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    return teacher.eval().requires_grad_(False), student


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(BATCH, 64, generator=generator), torch.randint(0, 10, (BATCH,), generator=generator)


@pytest.mark.benchmark(group="train-step")
def test_step_plain_loop(benchmark) -> None:
    teacher, student = _models()
    loss_fn = KDLoss(4.0, 0.5)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    x, y = _batch()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            t = teacher(x)
        loss_fn(student(x), t, y).backward()
        optimizer.step()

    benchmark(step)


@pytest.mark.benchmark(group="train-step")
def test_step_distiller(benchmark) -> None:
    teacher, student = _models()
    distiller = Distiller(teacher, student, KDLoss(4.0, 0.5), torch.optim.Adam(student.parameters(), lr=1e-3),
                          progress=False)
    batch = _batch()
    benchmark(distiller.train_step, batch)


def _state() -> dict:
    teacher, student = _models()
    distiller = Distiller(teacher, student, KDLoss(4.0, 0.5), torch.optim.Adam(student.parameters(), lr=1e-3),
                          progress=False)
    distiller.train_step(_batch())  # so the optimizer has state
    return distiller.state_dict()


@pytest.mark.benchmark(group="checkpoint")
def test_checkpoint_torch_save_baseline(benchmark, tmp_path: Path) -> None:
    state = _state()
    benchmark(torch.save, state, tmp_path / "state.pt")


@pytest.mark.benchmark(group="checkpoint")
def test_checkpoint_safetensors_json_atomic(benchmark, tmp_path: Path) -> None:
    state = _state()
    benchmark(save_checkpoint, tmp_path, 1, copy.copy(state), keep=1)
