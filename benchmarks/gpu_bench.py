"""GPU ratios of the CUDA kernels, each against the torch way in the same run,
timed by :func:`slimtorch.benchmark.compare` (every call followed by
``torch.cuda.synchronize()``, so a sample is the kernel's whole time). Needs a
CUDA device; writes JSON. Run by benchmarks/gpu_check.sh on a GPU machine:

    python benchmarks/gpu_bench.py OUT.json

Cases: threshold over 100M weights against torch.kthvalue; quantize and
dequantize against a device-to-device copy; SparseLinear at 90% against
cuBLAS dense at batch 1-16; the int8 GEMM against torch._int_mm at batch
64-1024; weight-only GEMV against bf16 F.linear at batch 1.
"""

from __future__ import annotations

import json
import sys
import traceback

import torch
import torch.nn.functional as F

from slimtorch import nn as snn
from slimtorch import ops
from slimtorch.benchmark import compare


def timed(candidates: dict, baseline: str, rounds: int = 7) -> dict:
    def synced(fn):
        def call():
            fn()
            torch.cuda.synchronize()
        return call

    result = compare({name: synced(fn) for name, fn in candidates.items()}, baseline=baseline, rounds=rounds)
    return {**{f"{name}_ms": s * 1e3 for name, s in result.seconds.items()},
            **{f"x_{name}_vs_{baseline}": r for name, r in result.ratios.items() if name != baseline}}


def select_vs_kthvalue(results: dict) -> None:
    w = torch.randn(100_000_000, device="cuda")
    k = round(0.9 * w.numel())
    results["threshold_100M"] = timed({"kthvalue": lambda: torch.kthvalue(w.abs(), k),
                                       "slimtorch": lambda: ops.magnitude_threshold([w], 0.9)}, "kthvalue", rounds=5)


def quantize_vs_copy(results: dict) -> None:
    n = 1 << 28
    x, dst = torch.randn(n, device="cuda"), torch.empty(n, device="cuda")
    scale, zp = torch.tensor(0.03, device="cuda"), torch.tensor(0, dtype=torch.int32, device="cuda")
    q = ops.quantize(x, scale, zp)
    # copy moves 8 bytes per element, (de)quantize 5: share of the copy's bandwidth = 5/8 * x vs copy
    results["quantize_256M"] = timed({"copy": lambda: dst.copy_(x), "quantize": lambda: ops.quantize(x, scale, zp),
                                      "dequantize": lambda: ops.dequantize(q, scale, zp)}, "copy")


def sparse_vs_cublas(results: dict) -> None:
    linear = torch.nn.Linear(4096, 4096)
    sparse = snn.SparseLinear.from_dense(linear, sparsity=0.9).cuda()
    linear = linear.cuda()
    with torch.no_grad():
        for batch in (1, 4, 16):
            x = torch.randn(batch, 4096, device="cuda")
            results[f"sparse90_4096_b{batch}"] = timed({"dense": lambda: linear(x), "slimtorch": lambda: sparse(x)},
                                                       "dense")


def int8_vs_torch(results: dict) -> None:
    linear = torch.nn.Linear(4096, 4096)
    dynamic = snn.Int8Linear.from_dense(linear, scheme="int8_dynamic").cuda()
    weight_only = snn.Int8Linear.from_dense(linear, scheme="int8_weight_only").cuda()
    linear = linear.cuda()
    w8 = torch.randint(-127, 128, (4096, 4096), dtype=torch.int8, device="cuda")
    with torch.no_grad():
        for batch in (64, 256, 1024):
            x = torch.randn(batch, 4096, device="cuda")
            a8 = torch.randint(-127, 128, (batch, 4096), dtype=torch.int8, device="cuda")
            results[f"int8_dynamic_b{batch}"] = timed({"int_mm": lambda: torch._int_mm(a8, w8.t()),
                                                       "slimtorch": lambda: dynamic(x)}, "int_mm")
        x = torch.randn(1, 4096, device="cuda")
        w_bf16, xb = linear.weight.bfloat16(), x.bfloat16()
        results["int8_weight_only_b1"] = timed({"bf16": lambda: F.linear(xb, w_bf16),
                                                "slimtorch": lambda: weight_only(x)}, "bf16")


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu_bench: no CUDA device", file=sys.stderr)
        return 2
    results: dict = {"device": torch.cuda.get_device_name()}
    for case in (select_vs_kthvalue, quantize_vs_copy, sparse_vs_cublas, int8_vs_torch):
        try:
            case(results)
        except Exception:  # one failing case must not hide the others' numbers
            results[case.__name__ + "_error"] = traceback.format_exc()
    text = json.dumps(results, indent=2)
    print(text)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
