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

import os
import time
import warnings

import pytest
import torch
from torch import nn

from slimtorch.nn import Int8Linear

SHAPES = [(768, 3072), (3072, 768), (4096, 4096)]
BATCHES = [1, 16, 128]
if os.environ.get("SLIMTORCH_BENCH_QUICK", "") not in ("", "0"):  # slimtorch bench --quick
    SHAPES, BATCHES = [(768, 3072)], [1, 128]
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


# ---- interleaved ratios (python benchmarks/bench_qgemm.py) ---------------------------------
#
# On a shared machine the load drifts between pytest-benchmark's sequential
# runs, which skews ratios of medians. This mode interleaves: every round
# times each implementation once (best of 3 short bursts), and a ratio is the
# median over rounds of the per-round ratio.

def _burst(model, x, seconds=0.002) -> float:
    model(x)
    t0 = time.perf_counter()
    model(x)
    once = time.perf_counter() - t0
    reps = max(1, int(seconds / max(once, 1e-7)))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            model(x)
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def interleaved(shapes=SHAPES, batches=BATCHES, impls=IMPLS, rounds: int = 7) -> str:
    """Markdown table: median per-round time of each impl and median per-round
    speedups vs dense, fbgemm and the two torchao configs."""
    import statistics

    bases = ("dense", "fbgemm", "torchao_dyn", "torchao_wo")
    lines = ["| shape | batch | impl | ms (median) | " + " | ".join(f"x vs {b}" for b in bases) + " |",
             "|---" * (4 + len(bases)) + "|"]
    for shape in list(shapes) + [(64, 64)]:
        for batch in batches if shape != (64, 64) else [1]:
            models = {}
            for impl in impls if shape != (64, 64) else impls[:3]:
                try:
                    models[impl] = _model(impl, *shape)
                    _cache.clear()
                except pytest.skip.Exception:
                    continue
            x = torch.randn(batch, shape[0])
            times = {impl: [] for impl in models}
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for _ in range(rounds):
                    for impl, model in models.items():
                        times[impl].append(_burst(model, x))
            for impl in models:
                row = [f"{shape[0]}x{shape[1]}", str(batch), impl, f"{statistics.median(times[impl]) * 1e3:.4g}"]
                for base in bases:
                    if base in times and impl != base:
                        row.append(f"{statistics.median(b / t for b, t in zip(times[base], times[impl])):.2f}")
                    else:
                        row.append("")
                lines.append("| " + " | ".join(row) + " |")
            print(lines[-1 - len(models) + 1:] and "\n".join(lines[-len(models):]), flush=True)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import argparse
    import os

    parser = argparse.ArgumentParser(description="interleaved int8 linear ratios")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("SLIMTORCH_BENCH_THREADS", "2")))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", default=None, help="write the markdown table here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = interleaved(rounds=args.rounds)
    print(f"\nthreads={args.threads} OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(default)')}\n")
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table)
