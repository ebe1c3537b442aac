"""quantize / dequantize against torch and against a plain float32 copy.

Run: PYTHONPATH=python python -m pytest benchmarks/bench_quantize.py --benchmark-enable \
        -p no:cacheprovider --benchmark-columns=median,rounds

Bandwidth definition (bytes the op must move, counted once):
  quantize   4 B read + 1 B written per element = 5 B
  dequantize 1 B read + 4 B written per element = 5 B
  copy       4 B read + 4 B written per element = 8 B  (dst.copy_(src), both preallocated)
Targets (same run, 2 threads: benchmarks/conftest.py): slimtorch >= 2x torch's time-per-call speed and
slimtorch's bandwidth >= 50% of the copy's. All ops allocate their output
(as torch's do); the copy does not. `python benchmarks/bench_quantize.py`
prints the ratios directly.
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


@pytest.mark.parametrize("n", SIZES)
def test_copy(benchmark, n):
    src, dst = _data(n), torch.empty(n)
    _run(benchmark, lambda: dst.copy_(src), "copy", n, "copy", 8)


@pytest.mark.parametrize("impl", ["slimtorch", "torch"])
@pytest.mark.parametrize("n", SIZES)
def test_quantize_per_tensor(benchmark, n, impl):
    x = _data(n)
    scale, zero_point = torch.tensor(0.03), torch.tensor(3, dtype=torch.int32)
    if impl == "slimtorch":
        fn = lambda: ops.quantize(x, scale, zero_point)  # noqa: E731
    else:
        fn = lambda: torch.quantize_per_tensor(x, 0.03, 3, torch.qint8)  # noqa: E731
    _run(benchmark, fn, "quantize_per_tensor", n, impl, 5)


@pytest.mark.parametrize("impl", ["slimtorch", "torch"])
@pytest.mark.parametrize("n", SIZES)
def test_quantize_per_channel(benchmark, n, impl):
    x = _data(n).reshape(-1, CHANNELS)
    scale, zero_point = ops.choose_qparams(x, axis=0)
    if impl == "slimtorch":
        fn = lambda: ops.quantize(x, scale, zero_point, axis=0)  # noqa: E731
    else:
        scale64, zero_point64 = scale.double(), zero_point.long()
        fn = lambda: torch.quantize_per_channel(x, scale64, zero_point64, 0, torch.qint8)  # noqa: E731
    _run(benchmark, fn, "quantize_per_channel", n, impl, 5)


@pytest.mark.parametrize("impl", ["slimtorch", "torch"])
@pytest.mark.parametrize("n", SIZES)
def test_dequantize_per_tensor(benchmark, n, impl):
    x = _data(n)
    scale, zero_point = torch.tensor(0.03), torch.tensor(3, dtype=torch.int32)
    if impl == "slimtorch":
        q = ops.quantize(x, scale, zero_point)
        fn = lambda: ops.dequantize(q, scale, zero_point)  # noqa: E731
    else:
        qt = torch.quantize_per_tensor(x, 0.03, 3, torch.qint8)
        fn = qt.dequantize
    _run(benchmark, fn, "dequantize_per_tensor", n, impl, 5)


@pytest.mark.parametrize("impl", ["slimtorch", "torch"])
@pytest.mark.parametrize("n", SIZES)
def test_dequantize_per_channel(benchmark, n, impl):
    x = _data(n).reshape(-1, CHANNELS)
    scale, zero_point = ops.choose_qparams(x, axis=0)
    if impl == "slimtorch":
        q = ops.quantize(x, scale, zero_point, axis=0)
        fn = lambda: ops.dequantize(q, scale, zero_point, axis=0)  # noqa: E731
    else:
        qt = torch.quantize_per_channel(x, scale.double(), zero_point.long(), 0, torch.qint8)
        fn = qt.dequantize
    _run(benchmark, fn, "dequantize_per_channel", n, impl, 5)


if __name__ == "__main__":
    # Ratio table: `python benchmarks/bench_quantize.py [runs]` runs the suite
    # `runs` times (default 1) and prints, per case, the median over runs of
    # the per-run medians: speed-up vs torch and % of the copy's bandwidth.
    import json
    import statistics
    import subprocess
    import sys
    import tempfile

    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    medians: dict[tuple, list[float]] = {}
    for _ in range(runs):
        with tempfile.NamedTemporaryFile(suffix=".json") as report:
            subprocess.run(
                [sys.executable, "-m", "pytest", __file__, "--benchmark-enable", "-q", "-p", "no:cacheprovider",
                 f"--benchmark-json={report.name}"],
                check=True,
            )
            for b in json.load(open(report.name))["benchmarks"]:
                key = (b["extra_info"]["op"], b["extra_info"]["n"], b["extra_info"]["impl"])
                medians.setdefault(key, []).append(b["stats"]["median"])
    median = {key: statistics.median(values) for key, values in medians.items()}
    for op in ["quantize_per_tensor", "quantize_per_channel", "dequantize_per_tensor", "dequantize_per_channel"]:
        for n in SIZES:
            ours, theirs, copy = median[(op, n, "slimtorch")], median[(op, n, "torch")], median[("copy", n, "copy")]
            print(f"{op:24s} n={n >> 20:3d}M  {ours * 1e3:8.3f} ms  x{theirs / ours:5.2f} vs torch  "
                  f"{5 * n / ours / 1e9:6.2f} GB/s = {100 * (5 * n / ours) / (8 * n / copy):5.1f}% of copy "
                  f"({8 * n / copy / 1e9:.2f} GB/s)")
