"""Single-process behaviour of the DDP helpers and the resumable sampler
(the two-process run is in test_distill_ddp.py)."""

from __future__ import annotations

import pytest
import torch

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
