"""Latency of a dense model vs the same model after prune_channels(ratio=0.5).

    PYTHONPATH=python python -m pytest benchmarks/bench_structured.py \
        --benchmark-enable -p no:cacheprovider --benchmark-json=/tmp/structured.json

The speed-up of each model is median(dense) / median(pruned_0.5) of the rows
with the same ``model`` in ``extra_info``; both are measured in one process,
on one thread (the numbers are steadier on a shared machine).

``python benchmarks/bench_structured.py`` times dense and pruned calls
interleaved (so load drift hits both alike) and prints the medians and ratios.
"""

from __future__ import annotations

import functools
import pathlib
import sys

import pytest
import torch

from slimtorch import prune_channels

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "api"))
from structured_models import ResNetLike, bert, mlp  # noqa: E402

RATIO = 0.5


def _mlp():
    torch.manual_seed(0)
    return mlp(512, (2048, 2048), 512).eval(), (torch.randn(32, 512),), {}


def _cnn():
    torch.manual_seed(0)
    return ResNetLike(width=32).eval(), (torch.randn(4, 3, 32, 32),), {}


def _bert():
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = bert(hidden=256, layers=2, heads=4, intermediate=1024, vocab=1000)
    ids = torch.randint(0, 1000, (4, 64))
    return model, (), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


MODELS = {"mlp": _mlp, "cnn": _cnn, "bert": _bert}


@functools.cache
def _models(name: str):
    model, args, kwargs = MODELS[name]()
    pruned = prune_channels(model, kwargs if kwargs else args, RATIO)
    return {"dense": model, f"pruned_{RATIO}": pruned}, args, kwargs


@pytest.fixture
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("impl", ["dense", f"pruned_{RATIO}"])
@pytest.mark.parametrize("name", list(MODELS))
def test_latency(benchmark, one_thread, name, impl):
    models, args, kwargs = _models(name)
    model = models[impl]
    benchmark.extra_info.update(
        {"suite": "structured", "model": name, "impl": impl, "params": sum(p.numel() for p in model.parameters())}
    )
    with torch.inference_mode():
        model(*args, **kwargs)  # warm-up
        benchmark.pedantic(model, args=args, kwargs=kwargs, rounds=15, iterations=1, warmup_rounds=2)


def _interleaved(name: str, rounds: int = 15) -> tuple[float, float, int, int]:
    import statistics
    import time

    models, args, kwargs = _models(name)
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for _ in range(rounds + 2):
            for impl, model in models.items():
                start = time.perf_counter()
                model(*args, **kwargs)
                times[impl].append(time.perf_counter() - start)
    dense, pruned = (statistics.median(t[2:]) for t in times.values())
    n_dense, n_pruned = (sum(p.numel() for p in m.parameters()) for m in models.values())
    return dense, pruned, n_dense, n_pruned


if __name__ == "__main__":
    torch.set_num_threads(1)
    for name in MODELS:
        dense, pruned, n_dense, n_pruned = _interleaved(name)
        print(
            f"{name:5s} params {n_dense:>9d} -> {n_pruned:>9d} ({n_pruned / n_dense:.2f}x)   "
            f"median {dense * 1e3:8.2f} ms -> {pruned * 1e3:8.2f} ms   speed-up {dense / pruned:.2f}x"
        )
