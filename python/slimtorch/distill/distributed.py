"""Distributed-data-parallel helpers for :class:`slimtorch.distill.Distiller`.

The same training script runs as one process or under
``torchrun --nproc_per_node=N``: :func:`init_distributed` reads torchrun's
environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) and starts the process group with gloo on
CPU or nccl on CUDA. Without those variables it is a no-op that reports a
single process.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = [
    "DistInfo",
    "init_distributed",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "rank_zero_only",
    "barrier",
    "all_reduce_sum",
    "all_gather_tensors",
    "broadcast_int",
    "average_gradients",
    "ShardedSampler",
]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the world size, and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}: environment variable must be an int, got {value!r}") from None


def init_distributed(backend: str | None = None, device: str | torch.device | None = None) -> DistInfo:
    """Starts the process group from torchrun's environment variables.

    Args:
        backend: ``"gloo"``, ``"nccl"`` or ``None`` (nccl when CUDA is
            available and ``device`` is not CPU, else gloo).
        device: the device to train on; ``None`` picks ``cuda:LOCAL_RANK``
            when CUDA is available, else CPU.

    Returns:
        :class:`DistInfo`. With ``WORLD_SIZE`` unset or 1 no process group is
        created and the result says rank 0 of 1. Calling it again once the
        group exists just reports it.
    """
    if backend is not None and backend not in ("gloo", "nccl"):
        raise ValueError(f"backend: expected 'gloo', 'nccl' or None, got {backend!r}")
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if device is None:
        device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    else:
        device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        if backend is None:
            backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the one that writes files."""
    return get_rank() == 0


def rank_zero_only(fn: F) -> F:
    """Decorator: runs ``fn`` on rank 0 only; other ranks get ``None``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs) if is_main_process() else None

    return wrapper  # type: ignore[return-value]


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _collective_device() -> torch.device:
    # nccl only moves CUDA tensors; gloo moves CPU tensors.
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# How long a collective waits for the backend's threads to let go of its
# tensors (they do within microseconds unless the CPU is oversubscribed).
_RELEASE_TIMEOUT_S = 2.0


@contextlib.contextmanager
def _released_on_exit(*tensors: torch.Tensor) -> Iterator[None]:
    """Around a collective on ``tensors``: on leaving, waits (up to
    _RELEASE_TIMEOUT_S) until the gloo worker thread that ran it has dropped
    its references. That thread lets go a moment after the collective
    returns; if it held the last reference while the interpreter shuts down,
    freeing the tensor would need the GIL and the process would abort
    ("terminate called without an active exception"). That happens when a
    script ends right after a collective while a DistributedDataParallel
    module exists, which keeps the process group and its threads alive past
    destroy_process_group(). Waiting leaves the last reference to Python."""
    use_count = getattr(torch.Tensor, "_use_count", None)
    if use_count is None or dist.get_backend() != "gloo":
        yield
        return
    before = [use_count(t) for t in tensors]
    yield
    deadline = time.monotonic() + _RELEASE_TIMEOUT_S
    for tensor, count in zip(tensors, before):
        while use_count(tensor) > count and time.monotonic() < deadline:
            time.sleep(1e-5)


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Sums a few Python numbers over all ranks (float64); identity in one process."""
    if not is_distributed():
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_collective_device())
    with _released_on_exit(tensor):
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def all_gather_tensors(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's copy of ``tensor`` (same shape and dtype on all ranks), on CPU."""
    if not is_distributed():
        return [tensor.detach().cpu()]
    local = tensor.detach().to(_collective_device()).contiguous()
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    with _released_on_exit(local, *gathered):
        dist.all_gather(gathered, local)
    return [t.cpu() for t in gathered]


def broadcast_int(value: int, src: int = 0) -> int:
    """Rank ``src``'s ``value`` on every rank."""
    if not is_distributed():
        return int(value)
    tensor = torch.tensor([int(value)], dtype=torch.int64, device=_collective_device())
    with _released_on_exit(tensor):
        dist.broadcast(tensor, src=src)
    return int(tensor.item())


def average_gradients(parameters: Sequence[torch.nn.Parameter]) -> None:
    """Averages the gradients of parameters that DDP does not manage (the
    projections inside a distillation loss) over all ranks."""
    if not is_distributed():
        return
    world = dist.get_world_size()
    for param in parameters:
        grad = param.grad
        if grad is not None:
            with _released_on_exit(grad):
                dist.all_reduce(grad, op=dist.ReduceOp.SUM)
            grad.div_(world)


class ShardedSampler(Sampler[int]):
    """A seeded, resumable, rank-sharded sampler (``DistributedSampler`` that can
    start mid-epoch).

    Epoch ``e`` visits ``randperm(num_samples, seed=seed + e)`` (or ``range``
    without shuffling). With ``pad=True`` the order is padded by repeating its
    head to a multiple of ``world_size`` so every rank gets the same number of
    samples (what training under DDP needs); rank ``r`` takes every
    ``world_size``-th index starting at ``r``. ``set_start(k)`` skips the
    first ``k`` samples of this rank's share, so a resumed run draws exactly
    the samples the interrupted run had not consumed.
    """

    def __init__(self, num_samples: int, *, shuffle: bool, seed: int = 0, rank: int = 0,
                 world_size: int = 1, pad: bool = True) -> None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
            raise ValueError(f"num_samples: expected an int >= 0, got {num_samples!r}")
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size: expected an int >= 1, got {world_size!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank: expected an int in [0, {world_size}), got {rank!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
        self.num_samples = num_samples
        self.shuffle = bool(shuffle)
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.pad = pad
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start(self, start: int) -> None:
        if start < 0:
            raise ValueError(f"start: expected an int >= 0, got {start}")
        self.start = int(start)

    def _shard_size(self) -> int:
        if self.pad:
            return math.ceil(self.num_samples / self.world_size)
        return len(range(self.rank, self.num_samples, self.world_size))

    def _indices(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        if self.pad and order:
            total = self._shard_size() * self.world_size
            while len(order) < total:
                order += order[: total - len(order)]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start :])

    def __len__(self) -> int:
        return max(self._shard_size() - self.start, 0)
