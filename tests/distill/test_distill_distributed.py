"""Single-process behaviour of the DDP helpers and the resumable sampler
(the two-process run is in test_distill_ddp.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from slimtorch.distill import distributed as D


@pytest.mark.parametrize("n, world", [(10, 1), (10, 2), (10, 3), (7, 4), (1, 2), (0, 2)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_sharded_sampler_partitions_with_padding(n: int, world: int, shuffle: bool) -> None:
    shards = []
    for rank in range(world):
        sampler = D.ShardedSampler(n, shuffle=shuffle, seed=3, rank=rank, world_size=world)
        sampler.set_epoch(2)
        shards.append(list(sampler))
        assert len(sampler) == len(shards[-1])
    assert len({len(s) for s in shards}) == 1  # equal share per rank: DDP steps stay in lockstep
    flat = [i for s in shards for i in s]
    assert set(flat) == set(range(n))
    assert len(flat) - n < world  # at most world - 1 padded repeats
    # without padding (evaluation) every sample is seen exactly once
    unpadded = [i for r in range(world)
                for i in D.ShardedSampler(n, shuffle=shuffle, seed=3, rank=r, world_size=world, pad=False)]
    assert sorted(unpadded) == list(range(n))


def test_sharded_sampler_epochs_seeds_and_start() -> None:
    def order(epoch: int, seed: int = 0, start: int = 0) -> list[int]:
        sampler = D.ShardedSampler(50, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        sampler.set_start(start)
        return list(sampler)

    assert order(1) == order(1)
    assert order(1) != order(2) and order(1, seed=1) != order(1)
    assert sorted(order(4)) == list(range(50))
    assert order(3, start=17) == order(3)[17:]
    assert len(D.ShardedSampler(5, shuffle=False)) == 5
    assert list(D.ShardedSampler(5, shuffle=False)) == [0, 1, 2, 3, 4]


def test_sharded_sampler_bad_arguments() -> None:
    with pytest.raises(ValueError, match="^num_samples"):
        D.ShardedSampler(-1, shuffle=True)
    with pytest.raises(ValueError, match="^world_size"):
        D.ShardedSampler(4, shuffle=True, world_size=0)
    with pytest.raises(ValueError, match="^rank"):
        D.ShardedSampler(4, shuffle=True, rank=2, world_size=2)
    with pytest.raises(TypeError, match="^seed"):
        D.ShardedSampler(4, shuffle=True, seed=0.5)
    with pytest.raises(ValueError, match="^start"):
        D.ShardedSampler(4, shuffle=True).set_start(-1)


def test_single_process_helpers(monkeypatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = D.init_distributed(device="cpu")
    assert (info.rank, info.world_size, info.device) == (0, 1, torch.device("cpu"))
    assert not D.is_distributed() and D.is_main_process()
    assert D.all_reduce_sum([1, 2.5]) == [1.0, 2.5]
    assert D.broadcast_int(7) == 7
    assert len(D.all_gather_tensors(torch.arange(3))) == 1
    assert D.rank_zero_only(lambda: "ran")() == "ran"
    with pytest.raises(ValueError, match="^backend"):
        D.init_distributed(backend="mpi")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="^WORLD_SIZE"):
        D.init_distributed()


@pytest.fixture
def gloo_group(tmp_path: Path):
    """A one-process gloo group for the test (destroyed after it)."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _late_release(monkeypatch, name: str, delay: float) -> None:
    """``dist.<name>`` keeps a reference to its first tensor argument for
    ``delay`` seconds after it returns, as gloo's worker thread may."""
    real = getattr(dist, name)

    def op(*args, **kwargs):
        result = real(*args, **kwargs)
        first = args[0][0] if isinstance(args[0], list) else args[0]
        holder = [first.view(first.shape)]  # a view holds a reference to its base
        threading.Timer(delay, holder.clear).start()
        return result

    monkeypatch.setattr(dist, name, op)


@pytest.mark.parametrize("name, call", [
    ("all_reduce", lambda: D.all_reduce_sum([1.0, 2.0])),
    ("broadcast", lambda: D.broadcast_int(5)),
    ("all_gather", lambda: D.all_gather_tensors(torch.arange(4.0))),
    ("all_reduce", lambda: D.average_gradients([_param_with_grad()])),
])
def test_collectives_wait_until_the_backend_lets_go_of_their_tensors(gloo_group, monkeypatch, name, call):
    """gloo's worker thread drops its references to a collective's tensors a
    moment after the collective returns. Were its reference the last one at
    interpreter shutdown, the process would abort; so every helper returns
    only once the backend has let go."""
    monkeypatch.setattr(D, "is_distributed", lambda: True)
    _late_release(monkeypatch, name, 0.2)
    start = time.monotonic()
    call()
    assert time.monotonic() - start >= 0.2


def _param_with_grad() -> torch.nn.Parameter:
    param = torch.nn.Parameter(torch.ones(3))
    param.grad = torch.full((3,), 2.0)
    return param


def test_release_wait_gives_up_after_its_timeout(gloo_group, monkeypatch):
    monkeypatch.setattr(D, "_RELEASE_TIMEOUT_S", 0.05)
    tensor = torch.zeros(3)
    start = time.monotonic()
    with D._released_on_exit(tensor):
        dist.all_reduce(tensor)
        kept = tensor.view(3)  # never released: the wait must not hang
    assert 0.05 <= time.monotonic() - start < 1.0 and kept._base is tensor
