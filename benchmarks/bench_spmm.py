"""spmm family: ``SparseLinear`` against ``nn.Linear`` with the same pruned
weights (torch's dense GEMM) and against torch's CSR path (``F.linear`` with
a ``to_sparse_csr()`` weight). Baseline: dense; also against torch_csr.

The slimtorch rows time the sparse kernel itself (the layer's dense fallback
is switched off), so the table shows where the break-even lies; a default
SparseLinear runs whichever of sparse and dense is faster for the batch.
Grid: 4096->4096 at 50..95% sparsity, 768->3072 and 3072->768 at 90%, batch
1/16/128, and the 64->64 batch-1 call-overhead case; the large-batch case
(BERT batch 16 x sequence 128: 2048 rows, 90% sparse 768->3072 and
3072->768) also against ``.bfloat16()`` where the CPU has native bf16, with a
bf16-valued layer on bf16 inputs as ``compress_`` builds with
``compute_dtype=torch.bfloat16``. The default-dispatch case times bf16
layers at 80% sparsity as a user gets them (sparse or dense per batch, from
the shipped break-even data) against ``.bfloat16()``. Every call runs under
``torch.no_grad()``.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch import nn

from benchmarks.bench_qgemm import NATIVE_BF16
from benchmarks.common import grid
from slimtorch.benchmark import force_sparse_kernel
from slimtorch.nn import SparseLinear

CASES = grid([((4096, 4096), s) for s in (0.5, 0.7, 0.8, 0.9, 0.95)] + [((768, 3072), 0.9), ((3072, 768), 0.9)],
             [((768, 3072), 0.9), ((768, 3072), 0.95)])
BATCHES = grid([1, 16, 128], [1, 128])
LARGE_BATCH_SHAPES = grid([(768, 3072), (3072, 768)], [])
LARGE_BATCH = 2048
DEFAULT_DISPATCH_BATCHES = grid([1, 16, 128, 2048], [1, 128])


def pruned_linear(in_f: int, out_f: int, sparsity: float) -> nn.Linear:
    """nn.Linear whose weight has exactly round(sparsity * numel) zeros."""
    torch.manual_seed(0)
    linear = nn.Linear(in_f, out_f)
    with torch.no_grad():
        linear.weight.copy_(SparseLinear.from_dense(linear, sparsity=sparsity).to_dense().weight)
    return linear.requires_grad_(False)


def sparse_kernel(linear: nn.Linear, values_dtype: torch.dtype) -> SparseLinear:
    return force_sparse_kernel(SparseLinear.from_dense(linear, values_dtype=values_dtype).requires_grad_(False))


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0][0]}x{c[0][1]}-{c[1]:.0%}")
def test_sparse_linear(bench, case, batch):
    (in_f, out_f), sparsity = case
    linear = pruned_linear(in_f, out_f, sparsity)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        csr = linear.weight.to_sparse_csr()
    fp32, int8 = sparse_kernel(linear, torch.float32), sparse_kernel(linear, torch.int8)
    x = torch.randn(batch, in_f)
    with torch.no_grad():
        torch.testing.assert_close(fp32(x), linear(x), rtol=1e-4, atol=1e-4 * math.sqrt(in_f))
        torch.testing.assert_close(int8(x), linear(x), rtol=0.05, atol=0.05 * math.sqrt(in_f))
        bench({"shape": f"{in_f}->{out_f}", "sparsity": sparsity, "batch": batch}, {
            "dense": lambda: linear(x),
            "torch_csr": lambda: nn.functional.linear(x, csr, linear.bias),
            "slimtorch_fp32": lambda: fp32(x),
            "slimtorch_int8": lambda: int8(x),
        }, baseline="dense", also=("torch_csr",))


@pytest.mark.parametrize("shape", LARGE_BATCH_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_large_batch(bench, shape):
    in_f, out_f = shape
    linear = pruned_linear(in_f, out_f, 0.9)
    fp32 = sparse_kernel(linear, torch.float32)
    x = torch.randn(LARGE_BATCH, in_f)
    candidates = {"dense": lambda: linear(x), "slimtorch_fp32": lambda: fp32(x)}
    not_measured = {}
    if NATIVE_BF16:
        dense_bf16 = copy.deepcopy(linear).bfloat16()
        sparse_bf16 = sparse_kernel(linear, torch.bfloat16).bfloat16()  # the bias too, as in a bf16 model
        x_bf16 = x.bfloat16()
        candidates["bf16"] = lambda: dense_bf16(x_bf16)
        candidates["slimtorch_bf16"] = lambda: sparse_bf16(x_bf16)
    else:
        not_measured["bf16"] = not_measured["slimtorch_bf16"] = "no native bf16 on this CPU"
    with torch.no_grad():
        torch.testing.assert_close(fp32(x), linear(x), rtol=1e-4, atol=1e-4 * math.sqrt(in_f))
        bench({"shape": f"{in_f}->{out_f}", "sparsity": 0.9, "batch": LARGE_BATCH}, candidates, baseline="dense",
              also=("bf16",) if NATIVE_BF16 else (), not_measured=not_measured)


@pytest.mark.skipif(not NATIVE_BF16, reason="no native bf16 on this CPU")
@pytest.mark.parametrize("batch", DEFAULT_DISPATCH_BATCHES)
@pytest.mark.parametrize("shape", LARGE_BATCH_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_default_dispatch_bf16(bench, shape, batch):
    """A bf16-valued layer at 80% sparsity with its default dispatch: the
    sparse kernel at the batches its break-even data lets it, the dense bf16
    copy at the others; never slower than ``.bfloat16()``."""
    in_f, out_f = shape
    linear = pruned_linear(in_f, out_f, 0.8)
    dense_bf16 = copy.deepcopy(linear).bfloat16()
    layer = SparseLinear.from_dense(linear, values_dtype=torch.bfloat16).requires_grad_(False).bfloat16()
    x = torch.randn(batch, in_f).bfloat16()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), dense_bf16(x), rtol=0.02, atol=0.02 * math.sqrt(in_f))
        bench({"shape": f"{in_f}->{out_f}", "sparsity": 0.8, "batch": batch,
               "runs": "sparse" if batch in layer.sparse_batches else "dense"},
              {"bf16": lambda: dense_bf16(x), "slimtorch_bf16_auto": lambda: layer(x)}, baseline="bf16")


def test_call_overhead(bench):
    """64->64 at batch 1: the time is all per-call overhead."""
    linear = pruned_linear(64, 64, 0.9)
    layer = sparse_kernel(linear, torch.float32)
    x = torch.randn(1, 64)
    with torch.no_grad():
        bench({"shape": "64->64", "sparsity": 0.9, "batch": 1},
              {"dense": lambda: linear(x), "slimtorch_fp32": lambda: layer(x)}, baseline="dense")
