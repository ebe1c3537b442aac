"""The data and training part of ``slimtorch demo``.

scikit-learn's 8x8 handwritten digits (1797 images, 64 features, 10 classes),
split deterministically into train/val/test; a teacher MLP trained with plain
cross-entropy; a LeNet-300-100-shaped student (64-300-100-10) distilled from
it with :class:`slimtorch.distill.Distiller`; and :func:`run_demo`, the
``slimtorch demo`` pipeline: a CNN teacher (:func:`teacher_cnn`), gradual
pruning of the trained dense student with and without distillation over
several seeds (:func:`prune_student`), int8 ``SparseLinear`` kernel layers
(:func:`to_kernel_layers`), save / load back, and the table and plot.
"""

from __future__ import annotations

import functools
import math
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
    "teacher_cnn",
    "student_lenet",
    "random_shift",
    "train_classifier",
    "evaluate_accuracy",
    "distill_student",
    "run",
    "prune_student",
    "to_kernel_layers",
    "DemoResult",
    "run_demo",
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


class _DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 4 * 4, 128), nn.ReLU(),
            nn.Dropout(0.3), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.reshape(-1, 1, 8, 8))


def teacher_cnn() -> nn.Module:
    """A small CNN teacher on the 8x8 images (flat 64-pixel rows in, 10
    logits out): two 3x3 convolutions, max-pooling, a 128-wide hidden layer.
    It is the stronger teacher than :func:`teacher_mlp`, more so when trained
    with ``train_classifier(..., augment=True)``."""
    return _DigitsCNN()


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


def random_shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Moves a batch of flat 8x8 digit images by one random offset in
    {-1, 0, 1} x {-1, 0, 1} pixels (the same for the whole batch), filling
    the uncovered border with zeros."""
    dy, dx = torch.randint(-1, 2, (2,), generator=generator).tolist()
    images = x.reshape(-1, 8, 8)
    shifted = torch.zeros_like(images)
    rows, cols = slice(max(dy, 0), 8 + min(dy, 0)), slice(max(dx, 0), 8 + min(dx, 0))
    shifted[:, rows, cols] = images[:, max(-dy, 0):8 - max(dy, 0), max(-dx, 0):8 - max(dx, 0)]
    return shifted.reshape(x.shape)


def train_classifier(model: nn.Module, loader: DataLoader, *, epochs: int = 30, lr: float = 1e-3,
                     weight_decay: float = 1e-4, seed: int = 0, augment: bool = False) -> nn.Module:
    """Trains ``model`` with plain cross-entropy and Adam (used for the teacher).

    With ``augment=True`` every other batch, at random, is moved by one pixel
    (:func:`random_shift`): the teacher then generalises better, and a better
    teacher is what makes distillation beat hard labels.

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
    generator = torch.Generator().manual_seed(seed)
    # Its own seeded shuffling (as prune_student): the result depends on
    # ``seed`` only, not on what else consumed the loader's generator before.
    loader = DataLoader(loader.dataset, batch_size=loader.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            if augment and torch.rand((), generator=generator) < 0.5:
                x = random_shift(x, generator)
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


# ---- the full demo: prune + distil, int8 kernel layers, save, table, plot ----------


def prune_student(dense: nn.Module, teacher: nn.Module | None, data: DigitsData, *, final_sparsity: float,
                  epochs: int, seed: int = 0, temperature: float = 4.0, alpha: float = 0.5,
                  lr: float = 1e-3, scope: str = "global") -> tuple[nn.Module, list[tuple[float, float]]]:
    """Prunes a copy of the trained ``dense`` student gradually (AGP, global
    magnitude) to ``final_sparsity`` while training it for ``epochs`` epochs:
    with :class:`~slimtorch.distill.KDLoss` from ``teacher``, or with plain
    cross-entropy when ``teacher`` is None (the same schedule and optimizer).

    The sparsity ramps up over the first 60% of the steps at a constant
    learning rate; the rest fine-tunes at the final sparsity while the
    learning rate decays to 0 along a cosine. Returns the pruned student (masks still
    attached, eval mode) and the curve ``[(sparsity, test accuracy)]`` after
    every epoch.
    """
    import copy

    from slimtorch.api.pruning import AGPSchedule, prune_
    from slimtorch.distill import KDLoss

    epochs = _check_positive_int("epochs", epochs)
    student = copy.deepcopy(dense).train()
    # Its own shuffling, seeded: runs with and without a teacher see the same batches.
    loader = DataLoader(data.train, batch_size=data.train_loader.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    steps = epochs * len(loader)
    ramp = max(1, int(0.6 * steps))
    schedule = AGPSchedule(final_sparsity, 0, ramp, every=max(1, len(loader) // 2))
    prune_(student, schedule, scope=scope)
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    decay = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: 1.0 if step < ramp else 0.5 * (1 + math.cos(math.pi * (step - ramp) / max(1, steps - ramp))))
    kd = KDLoss(temperature, alpha) if teacher is not None else None
    curve: list[tuple[float, float]] = []
    for _ in range(epochs):
        student.train()
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            logits = student(x)
            if kd is None:
                loss = F.cross_entropy(logits, y)
            else:
                with torch.no_grad():
                    teacher_logits = teacher(x)
                loss = kd(logits, teacher_logits, y)
            loss.backward()
            optimizer.step()
            decay.step()
            schedule.step()
        curve.append((schedule.current_sparsity, evaluate_accuracy(student, data.test_loader)))
    return student.eval(), curve


def to_kernel_layers(model: nn.Module, values_dtype: torch.dtype = torch.int8, *,
                     bias_dtype: torch.dtype | None = None) -> nn.Module:
    """Replaces every ``nn.Linear`` of ``model`` (pruned or not; masks are
    made permanent first) by a :class:`~slimtorch.nn.SparseLinear` holding
    its nonzeros (int8 with per-row scales by default). ``bias_dtype``
    (float16 or bfloat16) rounds each bias to that dtype's precision first;
    the layer keeps it in float32 and :func:`slimtorch.save` stores it in the
    narrow dtype. In place; returns it."""
    from slimtorch.api.pruning import strip_
    from slimtorch.nn import SparseLinear

    if bias_dtype not in (None, torch.float16, torch.bfloat16):
        raise TypeError(f"bias_dtype: expected None, torch.float16 or torch.bfloat16, got {bias_dtype!r}")
    strip_(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear):
            if bias_dtype is not None and module.bias is not None:
                with torch.no_grad():
                    module.bias.copy_(module.bias.to(bias_dtype))
            model.set_submodule(name, SparseLinear.from_dense(module, values_dtype=values_dtype))
    return model.eval()


def _latencies_us(models: Sequence[nn.Module], x: torch.Tensor, rounds: int) -> tuple[list[float], list[float]]:
    """Microseconds per call of each model on ``x`` and its speed-up over the
    first model, timed interleaved by :func:`slimtorch.benchmark.compare`."""
    from slimtorch import benchmark

    with torch.inference_mode():
        timing = benchmark.compare({str(i): functools.partial(model, x) for i, model in enumerate(models)},
                                   baseline="0", rounds=rounds, sample_seconds=0.02, max_calls=2000, warmup=3)
    names = [str(i) for i in range(len(models))]
    return [timing.seconds[n] * 1e6 for n in names], [timing.ratios[n] for n in names]


@dataclass
class DemoResult:
    """What :func:`run_demo` measured (accuracies are test-set fractions)."""

    rows: list[dict[str, Any]]
    teacher_accuracy: float
    final_sparsity: float
    kd_accuracies: list[float]
    hard_accuracies: list[float]
    curves: dict[str, list[list[tuple[float, float]]]]  # per method, one (sparsity, accuracy) curve per seed
    files: dict[str, str]
    saved_seed: int = 0  # the distilled run saved and measured (best validation accuracy)

    def table(self) -> str:
        """The printed table: accuracy, bytes on disk, ratio and latency per model."""
        dense = self.rows[0]
        lines = [f"{'model':<34} {'test acc':>8} {'bytes':>9} {'ratio':>7} {'b1 us':>8} {'x dense':>7} "
                 f"{'b256 us':>9} {'x dense':>7}",
                 "-" * 98]
        for row in self.rows:
            lines.append(
                f"{row['model']:<34} {100 * row['accuracy']:>7.2f}% {row['bytes']:>9,d} "
                f"{dense['bytes'] / row['bytes']:>6.1f}x {row['latency_b1_us']:>8.1f} "
                f"{row['speedup_b1']:>6.2f}x {row['latency_b256_us']:>9.1f} {row['speedup_b256']:>6.2f}x")
        mean = lambda v: 100 * sum(v) / len(v)
        lines += ["",
                  f"teacher test accuracy: {100 * self.teacher_accuracy:.2f}%",
                  f"pruned to {100 * self.final_sparsity:.1f}% sparsity, test accuracy over "
                  f"{len(self.kd_accuracies)} seeds: with distillation {mean(self.kd_accuracies):.2f}% "
                  f"({', '.join(f'{100 * a:.2f}' for a in self.kd_accuracies)}), hard labels only "
                  f"{mean(self.hard_accuracies):.2f}% ({', '.join(f'{100 * a:.2f}' for a in self.hard_accuracies)})",
                  f"saved and measured: the distilled student of seed {self.saved_seed} (best validation accuracy)"]
        return "\n".join(lines)


def _plot(curves: dict[str, list[list[tuple[float, float]]]], path: str) -> None:
    """Accuracy against sparsity per method: the mean over seeds as a line,
    the range from the worst to the best seed as a band. Every seed follows
    the same sparsity schedule, so the curves share their x values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for index, (label, runs) in enumerate(curves.items()):
        sparsity = torch.tensor([[s for s, _ in run] for run in runs]).mean(dim=0) * 100
        accuracy = torch.tensor([[a for _, a in run] for run in runs]) * 100
        color = f"C{index}"
        ax.plot(sparsity, accuracy.mean(dim=0), color=color, marker="o", markersize=2.5,
                label=f"{label} (mean of {len(runs)} seeds)")
        ax.fill_between(sparsity, accuracy.amin(dim=0), accuracy.amax(dim=0), color=color, alpha=0.2,
                        label=f"{label}: min to max")
    ax.set_xlabel("sparsity (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("LeNet-300-100 student on digits:\naccuracy during gradual pruning")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_demo(out_dir: str = "slimtorch-demo", *, final_sparsity: float = 0.975, seeds: int = 5,
             teacher_epochs: int = 60, student_epochs: int = 30, prune_epochs: int = 120,
             temperature: float = 2.0, alpha: float = 0.5, prune_lr: float = 3e-3, latency_repeats: int = 21,
             log: Any = print) -> DemoResult:
    """The ``slimtorch demo`` pipeline; writes into ``out_dir``:
    ``dense_student.safetensors`` (fp32 weights, plain safetensors),
    ``student_sparse_fp32.safetensors.xz``, ``student_int8.safetensors.xz``
    (both ``slimtorch.save(..., compress=True)``) and ``accuracy_vs_sparsity.png``.

    The model saved is the distilled student with the best validation
    accuracy over the seeds (the test set only measures). Its int8 form has
    float16-precision biases (:func:`to_kernel_layers`). The int8 file is
    loaded back into a freshly built student with :func:`slimtorch.load_` and
    that model is what the table's last row measures."""
    import os

    import safetensors.torch

    from slimtorch._checks import check_fraction
    from slimtorch.api.serialization import load_, save

    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir: expected a str or os.PathLike, got {type(out_dir).__name__}")
    final_sparsity = check_fraction("final_sparsity", final_sparsity)
    seeds = _check_positive_int("seeds", seeds)
    latency_repeats = _check_positive_int("latency_repeats", latency_repeats)
    os.makedirs(out_dir, exist_ok=True)
    files = {name: os.path.join(out_dir, name) for name in (
        "dense_student.safetensors", "student_sparse_fp32.safetensors.xz", "student_int8.safetensors.xz",
        "accuracy_vs_sparsity.png")}

    data = load_digits_data(seed=0)
    torch.manual_seed(0)
    log(f"training the teacher (small CNN, one-pixel shifts, {teacher_epochs} epochs)")
    teacher = train_classifier(teacher_cnn(), data.train_loader, epochs=teacher_epochs, seed=0, augment=True)
    teacher_accuracy = evaluate_accuracy(teacher, data.test_loader)
    torch.manual_seed(1)
    log(f"training the dense student (64-300-100-10, {student_epochs} epochs)")
    dense = train_classifier(student_lenet(), data.train_loader, epochs=student_epochs, seed=1)
    safetensors.torch.save_file({k: v.contiguous() for k, v in dense.state_dict().items()},
                                files["dense_student.safetensors"])

    kd_acc, hard_acc = [], []
    curves: dict[str, list[list[tuple[float, float]]]] = {"with distillation": [], "hard labels": []}
    dense_accuracy = evaluate_accuracy(dense, data.test_loader)
    best, best_val, best_seed = None, -1.0, 0
    for seed in range(seeds):
        for teacher_or_none, accs, label in ((teacher, kd_acc, "with distillation"), (None, hard_acc, "hard labels")):
            log(f"pruning to {100 * final_sparsity:.0f}% sparsity, {label}, seed {seed}")
            pruned, curve = prune_student(dense, teacher_or_none, data, final_sparsity=final_sparsity,
                                          epochs=prune_epochs, seed=seed, temperature=temperature,
                                          alpha=alpha, lr=prune_lr)
            accs.append(curve[-1][1])
            curves[label].append([(0.0, dense_accuracy), *curve])
            if teacher_or_none is not None:
                val = evaluate_accuracy(pruned, data.val_loader)
                if val > best_val:
                    best, best_val, best_seed = pruned, val, seed
    assert best is not None

    from slimtorch.api.pruning import strip_

    strip_(best)  # before copying: a parametrized module's copy shares its class with the original
    sparse_fp32 = to_kernel_layers(_copy(best), torch.float32)
    save(sparse_fp32, files["student_sparse_fp32.safetensors.xz"], compress=True)
    save(to_kernel_layers(best, torch.int8, bias_dtype=torch.float16), files["student_int8.safetensors.xz"],
         compress=True)
    loaded = load_(student_lenet(), files["student_int8.safetensors.xz"]).eval()

    x1, x256 = data.test.tensors[0][:1].contiguous(), data.test.tensors[0][:256].contiguous()
    table = (("dense student (fp32)", dense, "dense_student.safetensors"),
             ("pruned student (sparse fp32)", sparse_fp32, "student_sparse_fp32.safetensors.xz"),
             ("pruned + int8 (kernel layers)", loaded, "student_int8.safetensors.xz"))
    models = [model for _, model, _ in table]
    (b1, b1_speedup), (b256, b256_speedup) = (_latencies_us(models, x1, latency_repeats),
                                              _latencies_us(models, x256, latency_repeats))
    rows = [{"model": name, "accuracy": evaluate_accuracy(model, data.test_loader),
             "bytes": os.path.getsize(files[path]), "latency_b1_us": b1[i], "latency_b256_us": b256[i],
             "speedup_b1": b1_speedup[i], "speedup_b256": b256_speedup[i]}
            for i, (name, model, path) in enumerate(table)]
    _plot(curves, files["accuracy_vs_sparsity.png"])
    return DemoResult(rows, teacher_accuracy, final_sparsity, kd_acc, hard_acc, curves, files, best_seed)


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


if __name__ == "__main__":
    print(run_demo().table())
