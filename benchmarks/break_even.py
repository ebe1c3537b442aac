"""Measures where SparseLinear's sparse kernel stops beating nn.Linear, per
batch size and values kind; prints the BREAK_EVEN_DENSITY table used by
python/slimtorch/nn/sparse_linear.py.

    PYTHONPATH=python python benchmarks/break_even.py [--threads 2] [--reps 5]

For every shape, batch and density, the sparse kernel (dense fallback off)
and nn.Linear with the same weights are timed alternately in one process
(min of --reps calls each). The break-even of a batch is the highest density
at which the sparse kernel is at least --margin times faster on every shape
of its size class (dense weight within CACHED_WEIGHT_BYTES: "cached", else "large").
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn

from slimtorch.nn import SparseLinear
from slimtorch.nn.sparse_linear import CACHED_WEIGHT_BYTES

SHAPES = [(768, 3072), (3072, 768), (4096, 4096)]
BATCHES = [1, 16, 128]
DENSITIES = [0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]


def best_time(fn, x, reps: int) -> float:
    fn(x)
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--margin", type=float, default=1.1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    wins: dict[tuple[str, str, int], dict[float, bool]] = {}
    with torch.no_grad():
        for in_f, out_f in SHAPES:
            linear = nn.Linear(in_f, out_f)
            size = "cached" if 4 * in_f * out_f <= CACHED_WEIGHT_BYTES else "large"
            for density in DENSITIES:
                pruned = SparseLinear.from_dense(linear, sparsity=1 - density).to_dense()
                for kind, dtype in (("float", torch.float32), ("int8", torch.int8)):
                    layer = SparseLinear.from_dense(pruned, values_dtype=dtype)
                    layer._sparse_max_batch = math.inf  # the sparse kernel only
                    for batch in BATCHES:
                        x = torch.randn(batch, in_f)
                        dense_t = min(best_time(pruned, x, args.reps) for _ in range(2))
                        sparse_t = best_time(layer, x, args.reps)
                        dense_t = min(dense_t, best_time(pruned, x, args.reps))
                        ratio = dense_t / sparse_t
                        cell = wins.setdefault((kind, size, batch), {})
                        cell[density] = cell.get(density, True) and ratio >= args.margin
                        print(f"{in_f}->{out_f} {kind:5s} density {density:.2f} batch {batch:3d}: "
                              f"dense {dense_t * 1e3:8.3f} ms sparse {sparse_t * 1e3:8.3f} ms  x{ratio:.2f}", flush=True)
    print("\nBREAK_EVEN_DENSITY = {")
    for kind, size in sorted({(k, z) for k, z, _ in wins}):
        cells = []
        for batch in BATCHES:
            ok = [d for d, w in wins[(kind, size, batch)].items() if w]
            cells.append(f"({batch}, {max(ok) if ok else 0.0})")
        print(f'    ("{kind}", "{size}"): ({", ".join(cells)}),')
    print("}")


if __name__ == "__main__":
    main()
