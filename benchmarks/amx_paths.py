"""Int8Linear int8_dynamic on the AMX path against the AVX-512 path and torch,
in one process (the README's AMX table):

    PYTHONPATH=python python -m benchmarks.amx_paths [--rounds 9] [--threads 2] [--shapes K,N,M ...]

Candidates per shape: ``ops.qlinear_dynamic`` with the active path set to
``amx`` and to ``avx512`` before each call, the AMX path again on bfloat16 x
(bf16 in, bf16 out, as in a model run with ``compute_dtype=torch.bfloat16``),
``F.linear`` on ``.bfloat16()``
tensors, and ``torch._int_mm`` with the per-row quantization of x and the
dequantization a user would write around it (from 17 rows: ``_int_mm`` needs
more than 16), and torch's compiled static int8 path (PT2E with
``X86InductorQuantizer``, ``torch.compile`` with freezing; needs torchao with
this torch) calibrated on the same x. Timed with
``slimtorch.benchmark.compare``; ratios are the
median per-round time of the other / time of the AMX path. Needs a CPU with
AMX (``slimtorch info``: ``amx on``).

``--weight-only`` times ``ops.qlinear_weight_only`` (bf16 tiles) instead: on
bfloat16 x against ``F.linear`` on ``.bfloat16()`` tensors, and on float32 x
against ``F.linear`` in float32.
"""

from __future__ import annotations

import argparse
import warnings

import torch
import torch.nn.functional as F

from benchmarks.bench_qgemm import not_measured_reason, pt2e_int8, pt2e_unavailable
from slimtorch import benchmark, ops
from slimtorch._native import cpu as native_cpu

# Batch 1 is left out: below 16 rows both paths run the same kernel, and the
# per-call path switch would be all this could measure.
SHAPES = [(768, 3072, 16), (768, 3072, 128), (768, 3072, 2048), (384, 1536, 16),
          (384, 1536, 128), (384, 1536, 2048), (1536, 384, 16), (1536, 384, 128), (1536, 384, 2048),
          (4096, 4096, 16), (4096, 4096, 128), (4096, 4096, 2048)]


def on_path(isa: str, fn):
    def run():
        native_cpu.set_active_isa(isa)
        return fn()
    return run


def candidates(k: int, n: int, m: int) -> dict:
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g) * 0.05, torch.randn(n, generator=g)
    packed = ops.qgemm_prepare_weight(w)
    xb, wb, bb = x.bfloat16(), w.bfloat16(), b.bfloat16()
    w_scale = w.abs().amax(1) / 127
    wq_t = torch.round(w / w_scale[:, None]).to(torch.int8).t().contiguous()

    def int_mm():
        xs = (x.abs().amax(1, keepdim=True) / 127).clamp_min(1e-12)
        return torch._int_mm(torch.round(x / xs).to(torch.int8), wq_t).float() * (xs * w_scale) + b

    found = {"amx": on_path("amx", lambda: ops.qlinear_dynamic(x, packed, b)),
             "amx_bf16": on_path("amx", lambda: ops.qlinear_dynamic(xb, packed, b)),
             "avx512": on_path("avx512", lambda: ops.qlinear_dynamic(x, packed, b)),
             "bf16": lambda: F.linear(xb, wb, bb)}
    if m > 16:
        found["int_mm"] = int_mm
    if pt2e_unavailable() is None:
        try:
            with torch.no_grad():
                compiled = pt2e_int8(torch.nn.Sequential(linear_of(w, b)), (x,))

            def pt2e():
                with torch.no_grad():  # the graph compiled (frozen) for inference; with grad it recompiles
                    return compiled(x)
            found["pt2e"] = pt2e
        except Exception as error:  # a baseline that fails is reported, not fatal
            print(f"PT2E int8 not measured at {k}->{n} x {m}: {not_measured_reason(error)}")
    return found


WEIGHT_ONLY_SHAPES = [(768, 3072, 128), (768, 3072, 2048), (3072, 768, 128), (3072, 768, 2048)]


def weight_only_candidates(k: int, n: int, m: int) -> dict:
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g) * 0.05, torch.randn(n, generator=g)
    packed = ops.qgemm_prepare_weight(w)
    xb, wb, bb = x.bfloat16(), w.bfloat16(), b.bfloat16()
    return {"wo_bf16": lambda: ops.qlinear_weight_only(xb, packed, b), "bf16": lambda: F.linear(xb, wb, bb),
            "wo": lambda: ops.qlinear_weight_only(x, packed, b), "fp32": lambda: F.linear(x, w, b)}


def weight_only_table(shapes: list, rounds: int) -> None:
    print("| K->N | rows | weight-only bf16 in/out ms | x torch .bfloat16() | weight-only fp32 ms | x torch fp32 |")
    print("|---|---|---|---|---|---|")
    for k, n, m in shapes:
        result = benchmark.compare(weight_only_candidates(k, n, m), rounds=rounds)
        print(f"| {k}->{n} | {m} | {result.seconds['wo_bf16'] * 1e3:.3f} | {result.ratio('bf16', 'wo_bf16'):.2f} | "
              f"{result.seconds['wo'] * 1e3:.3f} | {result.ratio('fp32', 'wo'):.2f} |", flush=True)


def linear_of(w: torch.Tensor, b: torch.Tensor) -> torch.nn.Linear:
    linear = torch.nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        linear.weight.copy_(w)
        linear.bias.copy_(b)
    return linear


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shapes", nargs="+", metavar="K,N,M", help="shapes to time (default: those of the table)")
    parser.add_argument("--weight-only", action="store_true", help="time int8_weight_only instead (see above)")
    args = parser.parse_args()
    default = WEIGHT_ONLY_SHAPES if args.weight_only else SHAPES
    shapes = [tuple(int(v) for v in text.split(",")) for text in args.shapes] if args.shapes else default
    if native_cpu is None or native_cpu.amx_status() != "on":
        raise SystemExit(f"AMX is not usable here: {native_cpu.amx_status() if native_cpu else 'no native module'}")
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    print(f"{benchmark.cpu_model()}, {args.threads} threads, {args.rounds} interleaved rounds")
    if args.weight_only:
        weight_only_table(shapes, args.rounds)
        return
    if pt2e_unavailable() is not None:
        print(f"PT2E int8 not measured: {pt2e_unavailable()}")
    print("| K->N | rows | AMX ms | x AVX-512 | x torch .bfloat16() | x torch _int_mm | x torch PT2E int8 "
          "| AMX bf16 in/out ms | x torch .bfloat16() |")
    print("|---|---|---|---|---|---|---|---|---|")
    try:
        for k, n, m in shapes:
            result = benchmark.compare(candidates(k, n, m), rounds=args.rounds)
            ratio = {c: f"{result.ratio(c, 'amx'):.2f}" for c in result.seconds if c != "amx"}
            print(f"| {k}->{n} | {m} | {result.seconds['amx'] * 1e3:.3f} | {ratio['avx512']} | {ratio['bf16']} | "
                  f"{ratio.get('int_mm', '')} | {ratio.get('pt2e', '')} | {result.seconds['amx_bf16'] * 1e3:.3f} | "
                  f"{result.ratio('bf16', 'amx_bf16'):.2f} |", flush=True)
    finally:
        native_cpu.set_active_isa("amx")


if __name__ == "__main__":
    main()
