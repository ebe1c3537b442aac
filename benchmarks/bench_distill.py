"""distill suite: the Distiller's training step against a hand-written
training loop (baseline), and checkpointing (safetensors + JSON, atomic)
against ``torch.save`` (the pickle baseline slimtorch does not use).
"""

from __future__ import annotations

import copy

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


def _distiller() -> Distiller:
    teacher, student = _models()
    return Distiller(teacher, student, KDLoss(4.0, 0.5), torch.optim.Adam(student.parameters(), lr=1e-3),
                     progress=False)


def test_train_step(bench):
    teacher, student = _models()
    loss_fn = KDLoss(4.0, 0.5)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    x, y = _batch()

    def plain_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            t = teacher(x)
        loss_fn(student(x), t, y).backward()
        optimizer.step()

    distiller, batch = _distiller(), _batch()
    bench({"case": f"train step, batch {BATCH}"},
          {"plain_loop": plain_step, "distiller": lambda: distiller.train_step(batch)}, baseline="plain_loop")


def test_checkpoint(bench, tmp_path):
    distiller = _distiller()
    distiller.train_step(_batch())  # so the optimizer has state
    state = distiller.state_dict()
    bench({"case": "checkpoint of the training state"}, {
        "torch_save": lambda: torch.save(state, tmp_path / "state.pt"),
        "slimtorch": lambda: save_checkpoint(tmp_path / "checkpoints", 1, copy.copy(state), keep=1),
    }, baseline="torch_save", sample_seconds=0.0)
