"""Sparse linear benchmarks: SparseLinear vs nn.Linear with the same pruned
weights (dense MKL/oneDNN) and vs torch's CSR path (F.linear with a
``to_sparse_csr()`` weight).

    PYTHONPATH=python python -m pytest benchmarks/bench_spmm.py --benchmark-enable \
        --benchmark-json=build/bench_spmm.json -p no:cacheprovider -q
    python benchmarks/report.py build/bench_spmm.json --out build/bench_spmm

Default (quick) grid: 4096->4096 at sparsity 50..95%, batch 1/16/128, plus
the 64->64 call-overhead case; SLIMTORCH_BENCH_FULL=1 adds 768->3072 and
3072->768. Threads: SLIMTORCH_BENCH_THREADS (default 2). Every call runs
under torch.no_grad() (inference). The slimtorch rows time the sparse kernel
itself (the layer's dense fallback is switched off), so the table shows where
the break-even lies; a default SparseLinear runs min(sparse, dense).
"""

from __future__ import annotations

import math
import os
import warnings

import pytest
import torch
from torch import nn

from slimtorch.nn import SparseLinear

THREADS = int(os.environ.get("SLIMTORCH_BENCH_THREADS", "2"))
FULL = os.environ.get("SLIMTORCH_BENCH_FULL", "") not in ("", "0")
SHAPES = [(768, 3072), (3072, 768), (4096, 4096)] if FULL else [(4096, 4096)]
SPARSITIES = [0.5, 0.7, 0.8, 0.9, 0.95]
BATCHES = [1, 16, 128]
if os.environ.get("SLIMTORCH_BENCH_QUICK", "") not in ("", "0"):  # slimtorch bench --quick
    SHAPES, SPARSITIES, BATCHES = [(768, 3072)], [0.9, 0.95], [1, 128]


@pytest.fixture(autouse=True)
def _inference():
    # Threads: benchmarks/conftest.py (SLIMTORCH_BENCH_THREADS, default 2).
    with torch.no_grad():
        yield


_cache: dict = {}


def _pruned_linear(in_f: int, out_f: int, sparsity: float | None) -> nn.Linear:
    """nn.Linear whose weight has exactly round(sparsity * numel) zeros (cached)."""
    key = (in_f, out_f, sparsity)
    if key not in _cache:
        torch.manual_seed(0)
        linear = nn.Linear(in_f, out_f)
        if sparsity:
            layer = SparseLinear.from_dense(linear, sparsity=sparsity)
            with torch.no_grad():
                linear.weight.copy_(layer.to_dense().weight)
        _cache[key] = linear.requires_grad_(False)
    return _cache[key]


def _sparse_layer(linear: nn.Linear, values_dtype: torch.dtype) -> SparseLinear:
    layer = SparseLinear.from_dense(linear, values_dtype=values_dtype).requires_grad_(False)
    layer._sparse_max_batch = math.inf  # time the sparse kernel, never the dense fallback
    return layer


def _info(benchmark, suite, shape, batch, sparsity, impl):
    benchmark.extra_info.update(suite=suite, shape=f"{shape[0]}->{shape[1]}", batch=batch,
                                sparsity=sparsity, impl=impl, threads=THREADS)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_dense(benchmark, shape, batch):
    # Dense time does not depend on how many weights are zero: one run per
    # shape and batch serves as the baseline of every sparsity (report.py).
    linear = _pruned_linear(*shape, 0.9)
    x = torch.randn(batch, shape[0])
    _info(benchmark, "spmm", shape, batch, None, "dense")
    benchmark(linear, x)


@pytest.mark.parametrize("impl", ["torch_csr", "slimtorch_fp32", "slimtorch_int8"])
@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_sparse(benchmark, shape, batch, sparsity, impl):
    linear = _pruned_linear(*shape, sparsity)
    x = torch.randn(batch, shape[0])
    if impl == "torch_csr":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            csr = linear.weight.to_sparse_csr()
        bias = linear.bias
        fn = lambda inp: nn.functional.linear(inp, csr, bias)  # noqa: E731
    else:
        fn = _sparse_layer(linear, torch.float32 if impl == "slimtorch_fp32" else torch.int8)
        torch.testing.assert_close(fn(x), linear(x), rtol=0.05, atol=0.05 * math.sqrt(shape[0]))
    _info(benchmark, "spmm", shape, batch, sparsity, impl)
    benchmark(fn, x)


@pytest.mark.parametrize("impl", ["dense", "slimtorch_fp32"])
def test_call_overhead(benchmark, impl):
    # 64->64 at batch 1: the time is all call overhead.
    linear = _pruned_linear(64, 64, 0.9)
    layer = linear if impl == "dense" else _sparse_layer(linear, torch.float32)
    x = torch.randn(1, 64)
    _info(benchmark, "overhead", (64, 64), 1, 0.9, impl)
    benchmark.pedantic(layer, (x,), rounds=200, iterations=200, warmup_rounds=5)
