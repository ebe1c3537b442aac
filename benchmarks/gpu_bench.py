"""GPU ratios for the CUDA kernels, each against the torch way in the same run
(CUDA-event timing, median of repeats). Needs a CUDA device; writes JSON.

    python benchmarks/gpu_bench.py OUT.json

Targets (issues 2-4): threshold over 100M >= 10x torch.kthvalue; quantize >=
70% of a device-to-device copy's bandwidth; SparseLinear at 90% >= 2x cuBLAS
dense at batch 1-16; int8 GEMM >= torch._int_mm at batch >= 64; weight-only
GEMV >= 1.5x bf16 F.linear at batch 1.
"""

from __future__ import annotations

import json
import statistics
import sys
import traceback

import torch
import torch.nn.functional as F

from slimtorch import nn as snn
from slimtorch import ops


def cuda_ms(fn, repeats: int = 20) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def select_vs_kthvalue(results: dict) -> None:
    w = torch.randn(100_000_000, device="cuda")
    k = round(0.9 * w.numel())
    ours = cuda_ms(lambda: ops.magnitude_threshold([w], 0.9), 5)
    theirs = cuda_ms(lambda: torch.kthvalue(w.abs(), k), 5)
    results["threshold_100M"] = {"slimtorch_ms": ours, "kthvalue_ms": theirs, "speedup": theirs / ours}


def quantize_vs_copy(results: dict) -> None:
    n = 1 << 28
    x, dst = torch.randn(n, device="cuda"), torch.empty(n, device="cuda")
    scale, zp = torch.tensor(0.03, device="cuda"), torch.tensor(0, dtype=torch.int32, device="cuda")
    q = ops.quantize(x, scale, zp)
    copy = cuda_ms(lambda: dst.copy_(x))
    quant = cuda_ms(lambda: ops.quantize(x, scale, zp))
    dequant = cuda_ms(lambda: ops.dequantize(q, scale, zp))
    copy_bw = 8 * n / copy
    results["quantize_256M"] = {
        "copy_ms": copy, "quantize_ms": quant, "dequantize_ms": dequant,
        "quantize_pct_of_copy": 100 * (5 * n / quant) / copy_bw,
        "dequantize_pct_of_copy": 100 * (5 * n / dequant) / copy_bw,
    }


def sparse_vs_cublas(results: dict) -> None:
    linear = torch.nn.Linear(4096, 4096)
    sparse = snn.SparseLinear.from_dense(linear, sparsity=0.9).cuda()
    linear = linear.cuda()
    with torch.no_grad():
        for batch in (1, 4, 16):
            x = torch.randn(batch, 4096, device="cuda")
            dense_ms, ours = cuda_ms(lambda: linear(x)), cuda_ms(lambda: sparse(x))
            results[f"sparse90_4096_b{batch}"] = {"dense_ms": dense_ms, "slimtorch_ms": ours, "speedup": dense_ms / ours}


def int8_vs_torch(results: dict) -> None:
    linear = torch.nn.Linear(4096, 4096)
    dynamic = snn.Int8Linear.from_dense(linear, mode="dynamic").cuda()
    weight_only = snn.Int8Linear.from_dense(linear, mode="weight_only").cuda()
    linear = linear.cuda()
    w8 = torch.randint(-127, 128, (4096, 4096), dtype=torch.int8, device="cuda")
    with torch.no_grad():
        for batch in (64, 256, 1024):
            x = torch.randn(batch, 4096, device="cuda")
            a8 = torch.randint(-127, 128, (batch, 4096), dtype=torch.int8, device="cuda")
            int_mm = cuda_ms(lambda: torch._int_mm(a8, w8.t()))
            ours = cuda_ms(lambda: dynamic(x))
            results[f"int8_dynamic_b{batch}"] = {"int_mm_ms": int_mm, "slimtorch_ms": ours, "speedup": int_mm / ours}
        x = torch.randn(1, 4096, device="cuda")
        w_bf16, xb = linear.weight.bfloat16(), x.bfloat16()
        bf16 = cuda_ms(lambda: F.linear(xb, w_bf16))
        ours = cuda_ms(lambda: weight_only(x))
        results["int8_weight_only_b1"] = {"bf16_ms": bf16, "slimtorch_ms": ours, "speedup": bf16 / ours}


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
