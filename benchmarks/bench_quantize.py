"""quantize / dequantize against torch and against a plain float32 copy.

Run: PYTHONPATH=python python -m pytest benchmarks/bench_quantize.py --benchmark-enable \
        -p no:cacheprovider --benchmark-columns=median,rounds

Bandwidth definition (bytes the op must move, counted once):
  quantize   4 B read + 1 B written per element = 5 B
  dequantize 1 B read + 4 B written per element = 5 B
  copy       4 B read + 4 B written per element = 8 B  (dst.copy_(src), both preallocated)
Targets (same run, 2 threads: benchmarks/conftest.py): slimtorch >= 2x torch's time-per-call speed and
slimtorch's bandwidth >= 50% of the copy's. "slimtorch" and "torch" allocate
their output; "slimtorch_out" writes into a preallocated ``out=`` tensor, as
the copy does, and is the one compared with the copy's bandwidth.
`python benchmarks/bench_quantize.py` prints the ratios, interleaved.
"""

from __future__ import annotations

import os

import pytest
import torch

from slimtorch import ops

SIZES = [1 << 20, 16 << 20, 64 << 20]
if os.environ.get("SLIMTORCH_BENCH_QUICK", "") not in ("", "0"):  # slimtorch bench --quick
    SIZES = [1 << 20]
ROUNDS = {1 << 20: 30, 16 << 20: 8, 64 << 20: 3}  # keep the 64M cases to seconds
CHANNELS = 1024  # per-channel cases: a [n / 1024, 1024] weight, quantized per row (axis 0)

pytestmark = pytest.mark.filterwarnings("ignore:.*quantized tensor creation functions:UserWarning")


def _data(n: int) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(n))


def _run(benchmark, fn, op: str, n: int, impl: str, bytes_per_element: int):
    benchmark.extra_info.update({"suite": "ops", "op": op, "n": n, "impl": impl, "bytes": bytes_per_element * n})
    benchmark.pedantic(fn, rounds=ROUNDS[n], iterations=1, warmup_rounds=1)


OPS = ["quantize_per_tensor", "quantize_per_channel", "dequantize_per_tensor", "dequantize_per_channel"]
IMPLS = ["slimtorch", "slimtorch_out", "torch"]  # slimtorch_out: into a preallocated out= tensor


def make_fn(op: str, n: int, impl: str):
    """The call to time: ``op`` on ``n`` elements the ``impl`` way."""
    if op == "copy":
        src, dst = _data(n), torch.empty(n)
        return lambda: dst.copy_(src)
    per_channel = op.endswith("per_channel")
    x = _data(n).reshape(-1, CHANNELS) if per_channel else _data(n)
    axis = 0 if per_channel else None
    if per_channel:
        scale, zero_point = ops.choose_qparams(x, axis=0)
    else:
        scale, zero_point = torch.tensor(0.03), torch.tensor(3, dtype=torch.int32)
    if op.startswith("quantize"):
        if impl == "torch":
            if per_channel:
                scale64, zero_point64 = scale.double(), zero_point.long()
                return lambda: torch.quantize_per_channel(x, scale64, zero_point64, 0, torch.qint8)
            return lambda: torch.quantize_per_tensor(x, 0.03, 3, torch.qint8)
        out = torch.empty(x.shape, dtype=torch.int8) if impl == "slimtorch_out" else None
        return lambda: ops.quantize(x, scale, zero_point, axis=axis, out=out)
    if impl == "torch":
        if per_channel:
            return torch.quantize_per_channel(x, scale.double(), zero_point.long(), 0, torch.qint8).dequantize
        return torch.quantize_per_tensor(x, 0.03, 3, torch.qint8).dequantize
    q = ops.quantize(x, scale, zero_point, axis=axis)
    out = torch.empty(x.shape) if impl == "slimtorch_out" else None
    return lambda: ops.dequantize(q, scale, zero_point, axis=axis, out=out)


@pytest.mark.parametrize("n", SIZES)
def test_copy(benchmark, n):
    _run(benchmark, make_fn("copy", n, "copy"), "copy", n, "copy", 8)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("op", OPS)
def test_quantize_ops(benchmark, op, n, impl):
    _run(benchmark, make_fn(op, n, impl), op, n, impl, 5)


if __name__ == "__main__":
    # Ratio table, interleaved (robust to a drifting, shared machine): every
    # round times each implementation of a case once (best of a short burst),
    # and a ratio is the median over rounds of the per-round ratio.
    #   python benchmarks/bench_quantize.py [--rounds R] [--threads T]
    # Speed-up vs torch compares the allocating calls (torch's functions
    # allocate); the bandwidth compares the out= call with the copy, both
    # between preallocated tensors. "floor" is a lower bound on any
    # implementation's time: torch reading the input once (x.sum(), for
    # quantize) or writing the float32 output once (out.fill_, for
    # dequantize); "2x possible" says whether torch's time / 2 is above it.
    import argparse
    import statistics
    import time
    import warnings

    parser = argparse.ArgumentParser(description="interleaved quantize / dequantize ratios")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")

    def best_of(fn, repeats: int) -> float:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        return best

    print(f"threads={args.threads} rounds={args.rounds}")
    print("| op | n | slimtorch ms | torch ms | x vs torch | out= ms | GB/s | % of copy | floor ms | 2x possible |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in SIZES:
        repeats = 10 if n <= 1 << 20 else 2
        for op in OPS:
            fns = {impl: make_fn(op, n, impl) for impl in IMPLS}
            fns["copy"] = make_fn("copy", n, "copy")
            source, sink = _data(n), torch.empty(n)
            fns["floor"] = source.sum if op.startswith("quantize") else (lambda: sink.fill_(1.0))
            times: dict[str, list[float]] = {impl: [] for impl in fns}
            for fn in fns.values():
                fn()
            for _ in range(args.rounds):
                for impl, fn in fns.items():
                    times[impl].append(best_of(fn, repeats))
            ratio = lambda a, b: statistics.median(x / y for x, y in zip(times[a], times[b]))  # noqa: E731
            out_ms = statistics.median(times["slimtorch_out"])
            print(f"| {op} | {n >> 20}M | {statistics.median(times['slimtorch']) * 1e3:.3f} | "
                  f"{statistics.median(times['torch']) * 1e3:.3f} | {ratio('torch', 'slimtorch'):.2f} | "
                  f"{out_ms * 1e3:.3f} | {5 * n / out_ms / 1e9:.1f} | "
                  f"{100 * 5 / 8 * ratio('copy', 'slimtorch_out'):.0f}% | {statistics.median(times['floor']) * 1e3:.3f} | "
                  f"{'yes' if ratio('torch', 'floor') >= 2 else 'no'} |", flush=True)
