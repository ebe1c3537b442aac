"""The issue's speed targets, measured with interleaved calls (robust to a
noisy, shared machine): 4096->4096 at 90% sparsity, batch 1/16/128, fp32 and
int8 values against nn.Linear (same pruned weights) and torch's CSR path,
50% sparsity at batch 1, and the 64->64 call overhead.

    PYTHONPATH=python python benchmarks/targets.py [--threads 2] [--rounds 30]

Each round calls every implementation once, in turn; the ratios are of the
per-implementation medians over the rounds (one process, one run).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings

import torch
from torch import nn

from slimtorch.nn import SparseLinear


def interleaved(fns: dict, x: torch.Tensor, rounds: int, inner: int = 1) -> dict[str, float]:
    for fn in fns.values():
        fn(x)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(inner):
                fn(x)
            times[name].append((time.perf_counter() - start) / inner)
    return {name: statistics.median(t) for name, t in times.items()}


def pruned(in_f: int, out_f: int, sparsity: float) -> nn.Linear:
    torch.manual_seed(0)
    linear = nn.Linear(in_f, out_f)
    with torch.no_grad():
        linear.weight.copy_(SparseLinear.from_dense(linear, sparsity=sparsity).to_dense().weight)
    return linear


def sparse(linear: nn.Linear, dtype: torch.dtype) -> SparseLinear:
    layer = SparseLinear.from_dense(linear, values_dtype=dtype)
    layer._sparse_max_batch = math.inf  # the sparse kernel, not the dense fallback
    return layer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads={args.threads} rounds={args.rounds} (medians; ratio = baseline / slimtorch)")
    print("| case | batch | dense ms | torch CSR ms | fp32 ms | int8 ms | fp32 x dense | int8 x dense | fp32 x CSR | int8 x CSR |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sparse CSR beta warning
        for sparsity, batches in ((0.9, (1, 16, 128)), (0.5, (1,))):
            linear = pruned(4096, 4096, sparsity)
            csr = linear.weight.to_sparse_csr()
            fns = {
                "dense": linear,
                "csr": lambda x: nn.functional.linear(x, csr, linear.bias),
                "fp32": sparse(linear, torch.float32),
                "int8": sparse(linear, torch.int8),
            }
            for batch in batches:
                t = interleaved(fns, torch.randn(batch, 4096), args.rounds if batch < 128 else max(5, args.rounds // 3))
                print(f"| 4096->4096 {sparsity:.0%} | {batch} | {t['dense'] * 1e3:.3f} | {t['csr'] * 1e3:.3f} | "
                      f"{t['fp32'] * 1e3:.3f} | {t['int8'] * 1e3:.3f} | {t['dense'] / t['fp32']:.2f} | "
                      f"{t['dense'] / t['int8']:.2f} | {t['csr'] / t['fp32']:.2f} | {t['csr'] / t['int8']:.2f} |", flush=True)
        small = pruned(64, 64, 0.9)
        t = interleaved({"dense": small, "sparse": sparse(small, torch.float32)}, torch.randn(1, 64), 50, inner=200)
        print(f"\n64->64 batch 1 call: nn.Linear {t['dense'] * 1e6:.2f} us, SparseLinear {t['sparse'] * 1e6:.2f} us, "
              f"ratio {t['sparse'] / t['dense']:.2f} (target <= 2)")


if __name__ == "__main__":
    main()
