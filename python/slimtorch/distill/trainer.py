"""The distillation trainer: :class:`Distiller`."""

from __future__ import annotations

import json
import math
import os
import random
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, IterableDataset, RandomSampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

from slimtorch._io import atomic_write_bytes
from slimtorch.distill import distributed as D
from slimtorch.distill.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)

__all__ = ["Distiller", "StepSchedule", "accuracy"]


@runtime_checkable
class StepSchedule(Protocol):
    """What :class:`Distiller` needs from a pruning schedule (e.g. the
    ``slimtorch.AGPSchedule`` attached by ``slimtorch.prune_``).

    ``step()`` is called once after every optimizer step and updates the masks
    when due; ``state_dict()`` returns JSON-serialisable values and/or tensors,
    stored in every checkpoint and given back to ``load_state_dict`` on resume.
    An optional ``current_sparsity`` attribute (or method) is logged each epoch.
    """

    def step(self) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Top-1 accuracy of ``[N, C]`` logits against ``[N]`` class indices."""
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise ValueError("logits: accuracy expects [N, C] class logits "
                         f"(pass metrics={{}} for models that are not classifiers), got "
                         f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}")
    if not isinstance(targets, torch.Tensor) or tuple(targets.shape) != (logits.shape[0],):
        raise ValueError(f"targets: accuracy expects [{logits.shape[0]}] class indices, got "
                         f"{tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__}")
    if logits.shape[0] == 0:
        return 0.0
    return (logits.argmax(dim=-1) == targets.to(logits.device)).double().mean().item()


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    if isinstance(value, Mapping):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value


def _split_batch(batch: Any) -> tuple[Any, Any]:
    """A batch is ``inputs``, ``(inputs,)`` or ``(inputs, targets)``; a mapping
    is keyword inputs and is also what the loss and metrics get as targets
    (so they can read e.g. an ``attention_mask`` or ``labels``)."""
    if isinstance(batch, Mapping):
        return batch, batch
    if isinstance(batch, (list, tuple)):
        if len(batch) == 1:
            return batch[0], None
        if len(batch) == 2:
            return batch[0], batch[1]
        raise ValueError(f"train_loader: a batch must be inputs, (inputs,) or (inputs, targets); "
                         f"got a {type(batch).__name__} of {len(batch)} items")
    return batch, None


def _batch_size(output: Any, targets: Any) -> int:
    values = [*targets.values()] if isinstance(targets, Mapping) else [targets]
    for value in (*values, output):
        if isinstance(value, torch.Tensor) and value.ndim > 0:
            return int(value.shape[0])
    return 1


def _forward(model: nn.Module, inputs: Any) -> Any:
    """``model(**inputs)`` for a mapping (a tokenizer's output), else ``model(inputs)``."""
    return model(**inputs) if isinstance(inputs, Mapping) else model(inputs)


def _check_path(name: str, value: object) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name}: expected None, a str or an os.PathLike, got {type(value).__name__}")
    return Path(value)


def _check_int(name: str, value: object, minimum: int, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected {'None or ' if allow_none else ''}an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return value


# --- RNG states as tensors (so they can go to safetensors and be gathered) ---

def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    version, internal, gauss = random.getstate()
    _np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state = {
        "torch": torch.get_rng_state(),
        "python": torch.tensor([version, *internal], dtype=torch.int64),
        "python_gauss": torch.tensor([gauss is not None, gauss or 0.0], dtype=torch.float64),
        "numpy": torch.tensor([*np_keys.tolist(), np_pos, np_has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor([np_gauss], dtype=torch.float64),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    python = state["python"].tolist()
    has_gauss, gauss = state["python_gauss"].tolist()
    random.setstate((python[0], tuple(python[1:]), gauss if has_gauss else None))
    numpy = state["numpy"].tolist()
    np.random.set_state(("MT19937", np.array(numpy[:624], dtype=np.uint32), numpy[624], numpy[625],
                         float(state["numpy_gauss"].item())))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class Distiller:
    """Trains ``student`` to imitate a frozen ``teacher``.

    Args:
        teacher: the frozen model. It is put in eval mode, its parameters get
            ``requires_grad=False`` and it runs under ``torch.no_grad``.
        student: the model trained. It may be pruned (pass the schedule as
            ``pruning``) or prepared for quantization-aware training (fake-quant
            modules train like any other); nothing here touches its masks.
        loss: called as ``loss(student_output, teacher_output, targets)``
            and returning a scalar (see :mod:`slimtorch.distill.losses`). Its
            own parameters (projections) must be in ``optimizer``.
        optimizer: a ``torch.optim.Optimizer`` over the student's (and the
            loss's) parameters.
        scheduler: optional ``torch.optim.lr_scheduler`` scheduler, stepped
            once per epoch or per optimizer step (``scheduler_interval``).
        pruning: optional :class:`StepSchedule`; ``step()`` runs after every
            optimizer step (after gradient clipping and the optimizer update).
        metrics: ``{name: fn(student_output, targets) -> number}`` computed on
            ``val_loader`` each epoch (sample-weighted mean over batches).
            ``None`` means ``{"accuracy": accuracy}``; ``{}`` computes none.
        device: where to train; default: ``cuda:<current>`` under an nccl
            process group, else the device of the student's parameters.
        bf16: run the forward passes under ``torch.autocast`` with bfloat16
            (losses are computed in float32).
        clip_grad_norm: clip the total gradient 2-norm of the trained
            parameters to this value before every optimizer step.
        checkpoint_dir: where checkpoints go (rank 0 writes them); one is
            written at the end of every epoch.
        checkpoint_every: also write one every this many optimizer steps.
        keep_checkpoints: how many checkpoints to keep (``None``: all).
        log_path: JSONL file with one record per epoch (rank 0 writes it).
        progress: tqdm progress bars; ``None``: only when stderr is a TTY.
            Never on ranks other than 0.
        seed: seeds the per-epoch shuffling of the training data.
        ddp_kwargs: extra arguments for ``DistributedDataParallel`` (e.g.
            ``find_unused_parameters=True``); used only under a process group.

    Under ``torchrun`` (a process group initialised, e.g. by
    :func:`slimtorch.distill.distributed.init_distributed`) the student is
    wrapped in ``DistributedDataParallel``, each rank trains on its shard of
    the data, the loss's own parameters get their gradients averaged, and rank
    0 alone writes checkpoints and logs.

    Determinism: the training loader is rebuilt each epoch with a seeded
    :class:`~slimtorch.distill.distributed.ShardedSampler` (same dataset,
    batch size, collate_fn, workers, drop_last) so a run resumed from a
    mid-epoch checkpoint skips exactly the consumed batches and, with the RNG
    states restored, ends with bit-identical weights. Random transforms that
    run inside DataLoader worker processes are not covered by this guarantee.
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        loss: nn.Module | Callable[..., torch.Tensor],
        optimizer: torch.optim.Optimizer,
        *,
        scheduler: Any = None,
        scheduler_interval: str = "epoch",
        pruning: StepSchedule | None = None,
        metrics: Mapping[str, Callable[[Any, Any], Any]] | None = None,
        device: str | torch.device | None = None,
        bf16: bool = False,
        clip_grad_norm: float | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        checkpoint_every: int | None = None,
        keep_checkpoints: int | None = 2,
        log_path: str | os.PathLike[str] | None = None,
        progress: bool | None = None,
        seed: int = 0,
        ddp_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher: expected an nn.Module, got {type(teacher).__name__}")
        if not isinstance(student, nn.Module):
            raise TypeError(f"student: expected an nn.Module, got {type(student).__name__}")
        if teacher is student:
            raise ValueError("student: must be a different module from teacher")
        if not callable(loss):
            raise TypeError(f"loss: expected an nn.Module or a callable, got {type(loss).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer: expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if scheduler is not None:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) or not all(
                    hasattr(scheduler, a) for a in ("step", "state_dict", "load_state_dict")):
                raise TypeError(f"scheduler: expected None or a torch.optim.lr_scheduler scheduler "
                                f"(ReduceLROnPlateau is not supported), got {type(scheduler).__name__}")
            if getattr(scheduler, "optimizer", optimizer) is not optimizer:
                raise ValueError("scheduler: is attached to a different optimizer")
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval: expected 'epoch' or 'step', got {scheduler_interval!r}")
        if pruning is not None and not isinstance(pruning, StepSchedule):
            raise TypeError(f"pruning: expected None or an object with step(), state_dict() and "
                            f"load_state_dict() (StepSchedule), got {type(pruning).__name__}")
        if metrics is None:
            metrics = {"accuracy": accuracy}
        if not isinstance(metrics, Mapping):
            raise TypeError(f"metrics: expected a mapping of name -> fn, got {type(metrics).__name__}")
        for name, fn in metrics.items():
            if not isinstance(name, str):
                raise TypeError(f"metrics: names must be strings, got {name!r}")
            if not name:
                raise ValueError("metrics: names must be non-empty")
            if not callable(fn):
                raise TypeError(f"metrics: {name!r} is not callable")
        if not isinstance(bf16, bool):
            raise TypeError(f"bf16: expected a bool, got {type(bf16).__name__}")
        if clip_grad_norm is not None:
            if isinstance(clip_grad_norm, bool) or not isinstance(clip_grad_norm, (int, float)):
                raise TypeError(f"clip_grad_norm: expected None or a number, got {type(clip_grad_norm).__name__}")
            if not (math.isfinite(clip_grad_norm) and clip_grad_norm > 0):
                raise ValueError(f"clip_grad_norm: expected a finite number > 0, got {clip_grad_norm}")
        self.checkpoint_dir = _check_path("checkpoint_dir", checkpoint_dir)
        self.checkpoint_every = _check_int("checkpoint_every", checkpoint_every, 1, allow_none=True)
        if self.checkpoint_every is not None and self.checkpoint_dir is None:
            raise ValueError("checkpoint_every: needs checkpoint_dir")
        self.keep_checkpoints = _check_int("keep_checkpoints", keep_checkpoints, 1, allow_none=True)
        self.log_path = _check_path("log_path", log_path)
        if progress is not None and not isinstance(progress, bool):
            raise TypeError(f"progress: expected None or a bool, got {type(progress).__name__}")
        self.seed = _check_int("seed", seed, 0)
        if ddp_kwargs is not None and not isinstance(ddp_kwargs, Mapping):
            raise TypeError(f"ddp_kwargs: expected None or a mapping, got {type(ddp_kwargs).__name__}")

        trainable = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if any(id(p) in trainable for p in teacher.parameters()):
            raise ValueError("optimizer: holds teacher parameters; the teacher is frozen")
        if not any(id(p) in trainable for p in student.parameters()):
            raise ValueError("optimizer: holds none of the student's parameters")
        self._loss_params = ([p for p in loss.parameters() if p.requires_grad]
                             if isinstance(loss, nn.Module) else [])
        missing = [p for p in self._loss_params if id(p) not in trainable]
        if missing:
            raise ValueError(f"optimizer: misses {len(missing)} trainable parameter(s) of loss "
                             "(e.g. FeatureLoss projections); add loss.parameters() to the optimizer")

        self.rank = D.get_rank()
        self.world_size = D.get_world_size()
        if device is None:
            if D.is_distributed() and torch.distributed.get_backend() == "nccl":
                device = torch.device("cuda", torch.cuda.current_device())
            else:
                device = next((p.device for p in student.parameters()), torch.device("cpu"))
        try:
            self.device = torch.device(device)
        except (TypeError, RuntimeError) as error:
            raise ValueError(f"device: not a device: {device!r} ({error})") from None

        self.teacher = teacher.to(self.device).eval().requires_grad_(False)
        self.student = student.to(self.device)
        self.loss = loss.to(self.device) if isinstance(loss, nn.Module) else loss
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scheduler_interval = scheduler_interval
        self.pruning = pruning
        self.metrics = dict(metrics)
        self.bf16 = bf16
        self.clip_grad_norm = float(clip_grad_norm) if clip_grad_norm is not None else None
        self.progress = progress
        self._model: nn.Module = student
        if D.is_distributed():
            device_ids = [self.device] if self.device.type == "cuda" else None
            self._model = DistributedDataParallel(student, device_ids=device_ids, **(ddp_kwargs or {}))

        # Position in the run; restored from checkpoints.
        self.epoch = 0  # epochs completed
        self.batch_in_epoch = 0  # batches of the current epoch already trained
        self.global_step = 0  # optimizer steps taken
        self._epoch_loss_sum = 0.0  # sum of this epoch's batch losses (this rank)
        self.history: list[dict[str, Any]] = []
        # True once this Distiller wrote or resumed the checkpoints in checkpoint_dir.
        self._owns_checkpoints = False

    # ------------------------------------------------------------------ data

    def _check_loader(self, name: str, loader: object, *, rebuilt: bool = True) -> DataLoader:
        """``rebuilt``: the loader will be rebuilt around a ShardedSampler, so it
        must be map-style with automatic batching."""
        if not isinstance(loader, DataLoader):
            raise TypeError(f"{name}: expected a torch.utils.data.DataLoader, got {type(loader).__name__}")
        if not rebuilt:
            return loader
        if isinstance(loader.dataset, IterableDataset):
            raise ValueError(f"{name}: an IterableDataset cannot be sharded or resumed; use a map-style dataset")
        if loader.batch_size is None:
            raise ValueError(f"{name}: needs automatic batching (batch_size=...); "
                             "a custom batch_sampler cannot be sharded or resumed")
        return loader

    @staticmethod
    def _shuffles(name: str, loader: DataLoader) -> bool:
        sampler = loader.sampler
        if isinstance(sampler, RandomSampler):
            if sampler.replacement or sampler._num_samples is not None:
                raise ValueError(f"{name}: RandomSampler with replacement or num_samples cannot be resumed")
            return True
        if isinstance(sampler, SequentialSampler):
            return False
        if isinstance(sampler, (DistributedSampler, D.ShardedSampler)):
            return bool(sampler.shuffle)
        raise ValueError(f"{name}: uses a custom sampler ({type(sampler).__name__}); Distiller needs "
                         "shuffle=True/False so it can shard and resume the data deterministically")

    def _rebuilt_loader(self, loader: DataLoader, sampler: D.ShardedSampler,
                        generator: torch.Generator | None) -> DataLoader:
        extra = {}
        if loader.num_workers > 0:
            extra = {"prefetch_factor": loader.prefetch_factor,
                     "multiprocessing_context": loader.multiprocessing_context}
        return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                          num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                          pin_memory=loader.pin_memory, drop_last=loader.drop_last,
                          timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
                          generator=generator, **extra)

    def _train_loader(self, loader: DataLoader, shuffle: bool, epoch: int, start_batch: int
                      ) -> tuple[DataLoader, int]:
        """The epoch's loader, starting after ``start_batch`` batches, and the
        number of batches in the whole epoch."""
        sampler = D.ShardedSampler(len(loader.dataset), shuffle=shuffle, seed=self.seed,
                                   rank=self.rank, world_size=self.world_size, pad=True)
        sampler.set_epoch(epoch)
        per_rank = len(sampler)
        batches = per_rank // loader.batch_size if loader.drop_last else math.ceil(per_rank / loader.batch_size)
        sampler.set_start(min(start_batch * loader.batch_size, per_rank))
        # A private generator for worker seeds, so building the loader never
        # draws from the global RNG (a resumed run builds it at another moment).
        generator = torch.Generator()
        generator.manual_seed((self.seed * 1_000_003 + epoch) % (2**63))
        return self._rebuilt_loader(loader, sampler, generator), batches

    # ------------------------------------------------------------- training

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _trained_parameters(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]

    def train_step(self, batch: Any) -> float:
        """One optimizer step on ``batch``; returns the loss value."""
        inputs, targets = _split_batch(_to_device(batch, self.device))
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            with torch.no_grad():
                teacher_output = _forward(self.teacher, inputs)
            student_output = _forward(self._model, inputs)
            loss = self.loss(student_output, teacher_output, targets)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise TypeError("loss: must return a one-element tensor")
        value = loss.item()
        # Under DDP every rank must stop together (a rank raising alone would
        # leave the others waiting in the gradient all-reduce): sum the loss
        # over the ranks, so a NaN/Inf anywhere is seen everywhere.
        if not math.isfinite(D.all_reduce_sum([value])[0] if D.is_distributed() else value):
            raise FloatingPointError(f"loss: is {value} at step {self.global_step}; lower the learning "
                                     "rate or set clip_grad_norm")
        loss.backward()
        D.average_gradients(self._loss_params)
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self._trained_parameters(), self.clip_grad_norm)
        self.optimizer.step()
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()
        if self.pruning is not None:
            self.pruning.step()
        return value

    def _show_progress(self) -> bool:
        if self.rank != 0:
            return False
        return self.progress if self.progress is not None else sys.stderr.isatty()

    def fit(self, train_loader: DataLoader, epochs: int, val_loader: DataLoader | None = None,
            *, resume: bool = False, overwrite: bool = False) -> list[dict[str, Any]]:
        """Trains until ``epochs`` epochs are complete.

        Args:
            train_loader: map-style DataLoader; batches are ``inputs``,
                ``(inputs, targets)``, or a mapping of keyword inputs (a
                tokenizer's output: the models are called as
                ``model(**batch)`` and the loss and metrics get the mapping
                as ``targets``). Only its dataset, batch size, shuffle
                flag, collate_fn, workers and drop_last are used (see the
                class docstring).
            epochs: total number of epochs of the run (a resumed run continues
                up to this number).
            val_loader: evaluated after every epoch (``val_loss`` and the
                metrics).
            resume: start from the newest complete checkpoint in
                ``checkpoint_dir`` if there is one.
            overwrite: without ``resume``, a ``checkpoint_dir`` that already
                holds checkpoints this Distiller did not write is refused
                (saving would delete them); ``overwrite=True`` starts afresh
                and lets the new run replace them.

        Returns:
            The per-epoch records (also written to ``log_path``).
        """
        train_loader = self._check_loader("train_loader", train_loader)
        shuffle = self._shuffles("train_loader", train_loader)
        epochs = _check_int("epochs", epochs, 1)
        if val_loader is not None:
            self._check_loader("val_loader", val_loader, rebuilt=D.is_distributed())
        if not isinstance(resume, bool):
            raise TypeError(f"resume: expected a bool, got {type(resume).__name__}")
        if not isinstance(overwrite, bool):
            raise TypeError(f"overwrite: expected a bool, got {type(overwrite).__name__}")
        if resume:
            if self.checkpoint_dir is None:
                raise ValueError("resume: needs checkpoint_dir")
            self.resume()
        elif self.checkpoint_dir is not None and not overwrite and not self._owns_checkpoints:
            # Rank 0 looks; every rank raises together.
            newest = list_checkpoints(self.checkpoint_dir)[-1][0] if self.rank == 0 and \
                list_checkpoints(self.checkpoint_dir) else -1
            newest = D.broadcast_int(newest)
            if newest >= 0:
                raise ValueError(f"checkpoint_dir: {str(self.checkpoint_dir)!r} already holds checkpoints of "
                                 f"another run (newest: step {newest}); pass resume=True to continue that run "
                                 f"or overwrite=True to replace its checkpoints")

        from tqdm.auto import tqdm

        self.teacher.eval()
        show = self._show_progress()
        while self.epoch < epochs:
            self.student.train()
            loader, batches = self._train_loader(train_loader, shuffle, self.epoch, self.batch_in_epoch)
            # A manual bar (not tqdm(loader)) so it stays open for the epoch's metrics.
            bar = tqdm(total=batches, initial=self.batch_in_epoch, disable=not show,
                       desc=f"epoch {self.epoch + 1}/{epochs}", dynamic_ncols=True, leave=True)
            for batch in loader:
                value = self.train_step(batch)
                self._epoch_loss_sum += value
                self.batch_in_epoch += 1
                self.global_step += 1
                bar.set_postfix(loss=f"{self._epoch_loss_sum / self.batch_in_epoch:.4f}", refresh=False)
                bar.update(1)
                if (self.checkpoint_every is not None and self.global_step % self.checkpoint_every == 0
                        and self.batch_in_epoch < batches):
                    self.save_checkpoint()
            record = self._end_epoch(val_loader)
            bar.set_postfix({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in record.items()
                             if k not in ("epoch", "step")}, refresh=True)
            bar.close()
            if self.checkpoint_dir is not None:
                self.save_checkpoint()
        D.barrier()
        return list(self.history)

    def _end_epoch(self, val_loader: DataLoader | None) -> dict[str, Any]:
        loss_sum, batches = D.all_reduce_sum([self._epoch_loss_sum, self.batch_in_epoch])
        record: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "step": self.global_step,
            "train_loss": loss_sum / batches if batches else float("nan"),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
        }
        if val_loader is not None:
            record.update(self.evaluate(val_loader))
        if self.pruning is not None:
            sparsity = getattr(self.pruning, "current_sparsity", None)
            if callable(sparsity):
                sparsity = sparsity()
            if sparsity is not None:
                record["sparsity"] = float(sparsity)
        if self.scheduler is not None and self.scheduler_interval == "epoch":
            self.scheduler.step()
        self.history.append(record)
        self._write_log()
        self.epoch += 1
        self.batch_in_epoch = 0
        self._epoch_loss_sum = 0.0
        return record

    def _write_log(self) -> None:
        # The whole file is rewritten atomically each epoch (it has one short
        # line per epoch), so after a crash and resume it holds exactly the
        # records of the epochs the checkpoint covers -- no duplicates.
        if self.log_path is None or self.rank != 0:
            return
        lines = "".join(json.dumps(_json_safe(r), allow_nan=False) + "\n" for r in self.history)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.log_path, lines.encode("utf-8"))

    @torch.no_grad()
    def evaluate(self, loader: DataLoader) -> dict[str, float]:
        """``val_loss`` and ``val_<metric>`` of the student on ``loader``
        (sample-weighted means, reduced over all ranks)."""
        loader = self._check_loader("val_loader", loader, rebuilt=D.is_distributed())
        if D.is_distributed():
            sampler = D.ShardedSampler(len(loader.dataset), shuffle=False, rank=self.rank,
                                       world_size=self.world_size, pad=False)
            loader = self._rebuilt_loader(loader, sampler, torch.Generator().manual_seed(self.seed))
        was_training = self.student.training
        self.student.eval()
        names = list(self.metrics)
        sums = [0.0] * (len(names) + 1)
        count = 0
        try:
            for batch in loader:
                inputs, targets = _split_batch(_to_device(batch, self.device))
                with self._autocast():
                    teacher_output = _forward(self.teacher, inputs)
                    # the bare student, not DDP: ranks may see different batch counts
                    student_output = _forward(self.student, inputs)
                    loss = self.loss(student_output, teacher_output, targets)
                n = _batch_size(student_output, targets)
                sums[0] += float(loss) * n
                for i, name in enumerate(names, start=1):
                    sums[i] += float(self.metrics[name](student_output, targets)) * n
                count += n
        finally:
            self.student.train(was_training)
        *sums, count = D.all_reduce_sum([*sums, count])
        if count == 0:
            return {}
        result = {"val_loss": sums[0] / count}
        for i, name in enumerate(names, start=1):
            result[f"val_{name}"] = sums[i] / count
        return result

    # ----------------------------------------------------------- checkpoints

    def _position(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch": self.batch_in_epoch, "global_step": self.global_step,
                "epoch_loss_sum": self._epoch_loss_sum,
                "world_size": self.world_size, "seed": self.seed}

    def state_dict(self) -> dict[str, Any]:
        """The full training state (collective under DDP: every rank calls it)."""
        local = _rng_state(self.device)
        rng = {}
        for key in sorted(local):
            for rank, tensor in enumerate(D.all_gather_tensors(local[key])):
                rng.setdefault(f"rank{rank}", {})[key] = tensor
        return {
            "position": self._position(),
            "model": self.student.state_dict(),
            "loss": self.loss.state_dict() if isinstance(self.loss, nn.Module) else {},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "pruning": self.pruning.state_dict() if self.pruning is not None else None,
            "rng": rng,
            "history": [_json_safe(r) for r in self.history],
        }

    def save_checkpoint(self) -> Path | None:
        """Writes a checkpoint of the current state (rank 0 writes; all ranks
        must call it). Returns the path on rank 0, else ``None``."""
        if self.checkpoint_dir is None:
            raise ValueError("checkpoint_dir: not set, cannot save a checkpoint")
        state = self.state_dict()
        self._owns_checkpoints = True
        if self.rank != 0:
            return None
        return save_checkpoint(self.checkpoint_dir, self.global_step, state, keep=self.keep_checkpoints)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores a state from :meth:`state_dict` / a checkpoint."""
        position = state["position"]
        if position["seed"] != self.seed:
            raise ValueError(f"seed: the checkpoint was written with seed={position['seed']}, "
                             f"this Distiller has seed={self.seed}; use the same seed to resume")
        if position["world_size"] != self.world_size:
            warnings.warn(f"resuming a checkpoint written with {position['world_size']} processes on "
                          f"{self.world_size}: the data order differs from an uninterrupted run",
                          RuntimeWarning, stacklevel=2)
        self.student.load_state_dict(state["model"])
        if isinstance(self.loss, nn.Module):
            self.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            if state["scheduler"] is None:
                raise ValueError("scheduler: given, but the checkpoint has no scheduler state")
            self.scheduler.load_state_dict(state["scheduler"])
        if self.pruning is not None:
            if state["pruning"] is None:
                raise ValueError("pruning: given, but the checkpoint has no pruning state")
            self.pruning.load_state_dict(state["pruning"])
        rng = state["rng"]
        key = f"rank{self.rank}" if f"rank{self.rank}" in rng else "rank0"
        _set_rng_state(rng[key], self.device)
        self.epoch = int(position["epoch"])
        self.batch_in_epoch = int(position["batch"])
        self.global_step = int(position["global_step"])
        self._epoch_loss_sum = float(position["epoch_loss_sum"])
        self.history = [dict(r) for r in state["history"]]
        self._write_log()

    def _check_state(self, state: Mapping[str, Any]) -> None:
        """Raises ``ValueError`` when ``state`` lacks a part :meth:`load_state_dict`
        reads or holds one of the wrong kind (a damaged checkpoint), before
        anything is restored."""
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"state: {what} is missing or malformed")

        need(isinstance(state, Mapping), "the state")
        position = state.get("position")
        need(isinstance(position, Mapping), "position")
        for key in ("epoch", "batch", "global_step", "world_size", "seed"):
            value = position.get(key)
            need(isinstance(value, int) and not isinstance(value, bool) and value >= 0, f"position/{key}")
        loss_sum = position.get("epoch_loss_sum")
        need(isinstance(loss_sum, (int, float)) and not isinstance(loss_sum, bool), "position/epoch_loss_sum")
        for key in ("model", "loss", "optimizer"):
            need(isinstance(state.get(key), Mapping), key)
        need(all(isinstance(v, torch.Tensor) for v in state["model"].values()), "model")
        for key in ("scheduler", "pruning"):
            need(key in state and (state[key] is None or isinstance(state[key], Mapping)), key)
        rng = state.get("rng")
        need(isinstance(rng, Mapping) and isinstance(rng.get("rank0"), Mapping), "rng")
        for ranks in rng.values():
            need(isinstance(ranks, Mapping), "rng")
            for key, size in (("torch", None), ("python", 626), ("python_gauss", 2), ("numpy", 626),
                              ("numpy_gauss", 1)):
                value = ranks.get(key)
                need(isinstance(value, torch.Tensor) and value.dim() == 1
                     and (size is None or value.numel() == size), f"rng/{key}")
        history = state.get("history")
        need(isinstance(history, list) and all(isinstance(r, Mapping) for r in history), "history")

    def resume(self) -> Path | None:
        """Loads the newest complete checkpoint of ``checkpoint_dir`` (rank 0
        picks it, skipping damaged ones with a warning; every rank loads that
        one, and all of them raise together if any cannot). Returns its path,
        or ``None`` if there is none and training starts from scratch."""
        if self.checkpoint_dir is None:
            raise ValueError("checkpoint_dir: not set, nothing to resume from")
        found = None
        error: CheckpointError | None = None
        if self.rank == 0:
            try:
                found = latest_checkpoint(self.checkpoint_dir, validate=self._check_state)
            except CheckpointError as exc:
                error = exc
        # -2: rank 0 failed, -1: nothing to resume, else the step to load.
        step = D.broadcast_int(-2 if error else (-1 if found is None else int(found[1]["position"]["global_step"])))
        if step == -2:
            if error is not None:
                raise error
            raise CheckpointError(f"checkpoint_dir {str(self.checkpoint_dir)!r}: rank 0 found no usable checkpoint")
        self._owns_checkpoints = True
        if step == -1:
            return None
        if found is None:
            path = self.checkpoint_dir / f"step-{step:08d}.json"
            try:
                found = (path, load_checkpoint(path))
                self._check_state(found[1])
            except ValueError as exc:
                error = CheckpointError(f"rank {self.rank}: {exc}")
        failed = D.all_reduce_sum([error is not None])[0]
        if failed:
            raise error or CheckpointError(f"checkpoint_dir {str(self.checkpoint_dir)!r}: another rank could not "
                                           f"read the checkpoint of step {step}")
        self.load_state_dict(found[1])
        return found[0]


def _json_safe(record: Mapping[str, Any]) -> dict[str, Any]:
    """Non-finite floats become None so the JSONL stays strict JSON."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
