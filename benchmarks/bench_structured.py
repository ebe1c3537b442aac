"""structured suite: latency of a dense model (baseline) against the same
model after ``prune_channels(ratio=0.5)``: an MLP, a small ResNet-like CNN
and a small BERT. One thread: the numbers are steadier on a shared machine.
"""

from __future__ import annotations

import pytest
import torch
from tests.api.structured_models import ResNetLike, bert, mlp

from slimtorch import prune_channels

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


@pytest.fixture
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("name", list(MODELS))
def test_latency(bench, one_thread, name):
    model, args, kwargs = MODELS[name]()
    pruned = prune_channels(model, kwargs if kwargs else args, RATIO)
    params = {impl: sum(p.numel() for p in m.parameters()) for impl, m in (("dense", model), ("pruned", pruned))}
    with torch.inference_mode():
        bench({"model": name, "params dense": params["dense"], "params pruned": params["pruned"]},
              {"dense": lambda: model(*args, **kwargs), f"pruned_{RATIO}": lambda: pruned(*args, **kwargs)},
              baseline="dense", rounds=15)
