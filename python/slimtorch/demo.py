"""The data and training part of ``slimtorch demo``.

scikit-learn's 8x8 handwritten digits (1797 images, 64 features, 10 classes),
split deterministically into train/val/test; a teacher MLP trained with plain
cross-entropy; a LeNet-300-100-shaped student (64-300-100-10) distilled from
it with :class:`slimtorch.distill.Distiller`. Pruning, quantization, the
native kernels and saving are wired in by the ``demo`` command on top of these
functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

__all__ = [
    "DigitsData",
    "load_digits_data",
    "teacher_mlp",
    "student_lenet",
    "train_classifier",
    "evaluate_accuracy",
    "distill_student",
    "run",
]


@dataclass(frozen=True)
class DigitsData:
    """The three splits as tensors (``x`` float32 in [0, 1], ``y`` int64) and loaders."""

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    train_loader: DataLoader
    val_loader: DataLoader
    test_loader: DataLoader


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value}")
    return value


def load_digits_data(*, seed: int = 0, batch_size: int = 64, val_fraction: float = 0.2,
                     test_fraction: float = 0.2) -> DigitsData:
    """Loads scikit-learn's digits and splits them, stratified by class.

    The split depends only on ``seed`` (same seed, same split, on every
    machine). Pixel values 0..16 are scaled to [0, 1]. The training loader
    shuffles; the others do not.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
    batch_size = _check_positive_int("batch_size", batch_size)
    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            raise ValueError(f"{name}: expected a number in (0, 1), got {fraction!r}")
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"test_fraction: val_fraction + test_fraction must be < 1, got "
                         f"{val_fraction} + {test_fraction}")
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    index = torch.arange(len(y)).numpy()
    rest, test = train_test_split(index, test_size=test_fraction, random_state=seed, stratify=y.numpy())
    train, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction), random_state=seed,
                                  stratify=y.numpy()[rest])
    splits = [TensorDataset(x[torch.as_tensor(i)], y[torch.as_tensor(i)]) for i in (train, val, test)]
    generator = torch.Generator().manual_seed(seed)
    return DigitsData(
        *splits,
        train_loader=DataLoader(splits[0], batch_size=batch_size, shuffle=True, generator=generator),
        val_loader=DataLoader(splits[1], batch_size=256),
        test_loader=DataLoader(splits[2], batch_size=256),
    )


def _mlp(widths: Sequence[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def teacher_mlp(hidden: Sequence[int] = (512, 512), dropout: float = 0.2) -> nn.Sequential:
    """The teacher: 64 -> hidden... -> 10, ReLU and dropout between layers."""
    return _mlp([64, *hidden, 10], dropout)


def student_lenet() -> nn.Sequential:
    """The student, shaped like LeNet-300-100: 64 -> 300 -> 100 -> 10 (ReLU).
    Its Linear layers sit at indices 0, 2 and 4."""
    return _mlp([64, 300, 100, 10], 0.0)


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, loader: DataLoader) -> float:
    """Top-1 accuracy of ``model`` on ``loader`` (eval mode; mode restored)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if not isinstance(loader, DataLoader):
        raise TypeError(f"loader: expected a DataLoader, got {type(loader).__name__}")
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    correct = total = 0
    try:
        for x, y in loader:
            predicted = model(x.to(device)).argmax(dim=-1)
            correct += (predicted == y.to(device)).sum().item()
            total += len(y)
    finally:
        model.train(was_training)
    return correct / total if total else 0.0


def train_classifier(model: nn.Module, loader: DataLoader, *, epochs: int = 30, lr: float = 1e-3,
                     weight_decay: float = 1e-4, seed: int = 0) -> nn.Module:
    """Trains ``model`` with plain cross-entropy and Adam (used for the teacher).

    Returns the model, in eval mode.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if not isinstance(loader, DataLoader):
        raise TypeError(f"loader: expected a DataLoader, got {type(loader).__name__}")
    epochs = _check_positive_int("epochs", epochs)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr: expected a number > 0, got {lr!r}")
    torch.manual_seed(seed)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x.to(device)), y.to(device)).backward()
            optimizer.step()
    return model.eval()


def distill_student(teacher: nn.Module, student: nn.Module, data: DigitsData, *, epochs: int = 30,
                    lr: float = 1e-3, temperature: float = 4.0, alpha: float = 0.3,
                    seed: int = 0, **distiller_kwargs: Any) -> list[dict[str, Any]]:
    """Distils ``student`` from ``teacher`` with :class:`~slimtorch.distill.KDLoss`
    and Adam; extra keyword arguments go to :class:`~slimtorch.distill.Distiller`
    (``pruning``, ``checkpoint_dir``, ``log_path``, ``progress``, ...).

    Returns the per-epoch records of :meth:`Distiller.fit`.
    """
    from slimtorch.distill import Distiller, KDLoss

    if not isinstance(data, DigitsData):
        raise TypeError(f"data: expected DigitsData, got {type(data).__name__}")
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    distiller = Distiller(teacher, student, KDLoss(temperature, alpha), optimizer, seed=seed,
                          **distiller_kwargs)
    return distiller.fit(data.train_loader, epochs, val_loader=data.val_loader)


def run(*, teacher_epochs: int = 20, student_epochs: int = 20, seed: int = 0,
        progress: bool | None = None) -> dict[str, float]:
    """The whole data/training part of the demo; returns test accuracies."""
    data = load_digits_data(seed=seed)
    torch.manual_seed(seed)
    teacher = train_classifier(teacher_mlp(), data.train_loader, epochs=teacher_epochs, seed=seed)
    torch.manual_seed(seed + 1)
    student = student_lenet()
    distill_student(teacher, student, data, epochs=student_epochs, seed=seed, progress=progress)
    return {"teacher_test_accuracy": evaluate_accuracy(teacher, data.test_loader),
            "student_test_accuracy": evaluate_accuracy(student, data.test_loader)}


if __name__ == "__main__":
    for key, value in run(progress=True).items():
        print(f"{key:<24} {value:.4f}")
