"""int8 linear benchmarks (CPU, eager, inference): slimtorch Int8Linear
(dynamic and weight-only) against dense fp32 ``nn.Linear``, the deprecated
fbgemm path ``torch.ao.quantization.quantize_dynamic`` and torchao's
``Int8WeightOnlyConfig`` / ``Int8DynamicActivationInt8WeightConfig``.

    PYTHONPATH=python python -m pytest benchmarks/bench_qgemm.py --benchmark-enable \\
        --benchmark-json=build/bench_qgemm.json -p no:cacheprovider -q
    python benchmarks/report.py build/bench_qgemm.json --out build/bench_qgemm --also fbgemm

Grid: 768->3072, 3072->768, 4096->4096 at batch 1, 16, 128, plus the
64->64 batch-1 call-overhead case. Threads: SLIMTORCH_BENCH_THREADS (default 2,
set by benchmarks/conftest.py). Missing baselines (torchao not installed, a
torch without fbgemm) are skipped. Every call runs under torch.no_grad().
"""

from __future__ import annotations

import time
import warnings

import pytest
import torch
from torch import nn

from slimtorch.nn import Int8Linear

SHAPES = [(768, 3072), (3072, 768), (4096, 4096)]
BATCHES = [1, 16, 128]
IMPLS = ["dense", "slimtorch_dynamic", "slimtorch_weight_only", "fbgemm", "torchao_wo", "torchao_dyn"]

_cache: dict = {}


def _model(impl: str, in_f: int, out_f: int) -> nn.Module:
    key = (impl, in_f, out_f)
    if key in _cache:
        return _cache[key]
    torch.manual_seed(0)
    linear = nn.Linear(in_f, out_f).requires_grad_(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if impl == "dense":
            model = linear
        elif impl.startswith("slimtorch_"):
            model = Int8Linear.from_dense(linear, mode=impl.removeprefix("slimtorch_"))
        elif impl == "fbgemm":
            try:
                model = torch.ao.quantization.quantize_dynamic(nn.Sequential(linear), {nn.Linear}, dtype=torch.qint8)
            except (AttributeError, RuntimeError) as error:
                pytest.skip(f"fbgemm quantize_dynamic unavailable: {error}")
        else:
            quantization = pytest.importorskip("torchao.quantization")
            config = (quantization.Int8WeightOnlyConfig() if impl == "torchao_wo"
                      else quantization.Int8DynamicActivationInt8WeightConfig())
            model = nn.Sequential(linear)
            quantization.quantize_(model, config)
    _cache.clear()  # keep one model (up to 64 MB) alive at a time
    _cache[key] = model
    return model


def _measure(benchmark, fn, x) -> None:
    """pedantic with iterations sized so one round takes ~5 ms or one call."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fn(x)
        t0 = time.perf_counter()
        fn(x)
        once = time.perf_counter() - t0
        iterations = max(1, int(0.005 / max(once, 1e-7)))
        rounds = max(5, min(40, int(0.4 / (once * iterations))))
        benchmark.pedantic(fn, args=(x,), rounds=rounds, iterations=iterations, warmup_rounds=1)


def _info(benchmark, shape, batch, impl):
    benchmark.extra_info.update(suite="int8", shape=f"{shape[0]}x{shape[1]}", batch=batch, impl=impl,
                                threads=torch.get_num_threads())


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_int8_linear(benchmark, shape, batch, impl):
    model = _model(impl, *shape)
    _info(benchmark, shape, batch, impl)
    _measure(benchmark, model, torch.randn(batch, shape[0]))


@pytest.mark.parametrize("impl", ["dense", "slimtorch_dynamic", "slimtorch_weight_only"])
def test_call_overhead_64(benchmark, impl):
    """Batch-1 64->64: dominated by per-call overhead (the layer skips torch.library)."""
    model = _model(impl, 64, 64)
    _info(benchmark, (64, 64), 1, impl)
    _measure(benchmark, model, torch.randn(1, 64))
