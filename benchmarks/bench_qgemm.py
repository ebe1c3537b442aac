"""qgemm family: ``Int8Linear`` (int8_dynamic, int8_weight_only), built by
``compress_`` without its speed check, against dense fp32 ``nn.Linear``
(baseline), torch's deprecated fbgemm ``quantize_dynamic``, torchao's
``Int8WeightOnlyConfig`` / ``Int8DynamicActivationInt8WeightConfig`` where
torchao is installed, and, on CPUs with native bf16 (``avx512_bf16`` or
``amx_bf16`` in /proc/cpuinfo: AMD Zen 4 and later, recent Xeons), the
baselines a user of such a CPU has:

- bf16: ``linear.bfloat16()`` on a bfloat16 input (the conversion of the
  input is not timed: a ``model.bfloat16()`` model passes bf16 between layers);
- int_mm_dynamic: what a user writes around ``torch._int_mm``: per-row
  symmetric int8 quantization of the input (amax / 127, round, clamp), the
  int8 x int8 -> int32 product with a per-channel int8 weight prepared once,
  and the dequantization ``acc * (x_scale * w_scale) + bias``, all timed;
- pt2e_int8: torch's compiled static int8 path (PT2E with
  ``X86InductorQuantizer``, ``torch.compile`` with freezing), where this torch
  has it; otherwise its row says why it was not measured.

Grid: 384->1536, 1536->384, 768->3072 at batch 1, 16, 128, 2048; 3072->768
and 4096->4096 at batch 1, 16, 128; the 64->64 batch-1 call-overhead case.
Every call runs under ``torch.no_grad()``.
"""

from __future__ import annotations

import copy
import functools
import warnings

import pytest
import torch
from torch import nn

from benchmarks.common import grid
from slimtorch import CompressConfig, compress_
from slimtorch.benchmark import cpu_has

CASES = grid([((i, o), b) for i, o in ((384, 1536), (1536, 384), (768, 3072)) for b in (1, 16, 128, 2048)]
             + [((i, o), b) for i, o in ((3072, 768), (4096, 4096)) for b in (1, 16, 128)],
             [((768, 3072), 1), ((768, 3072), 128)])
# Where torch's bf16 GEMM runs on bf16 instructions, .bfloat16() is the user's
# first alternative, and torch's int8 paths (oneDNN) are the next ones.
NATIVE_BF16 = cpu_has("avx512_bf16") or cpu_has("amx_bf16")


def dense_linear(in_f: int, out_f: int) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(in_f, out_f).requires_grad_(False)


def slimtorch_int8(linear: nn.Linear, scheme: str) -> nn.Module:
    model = nn.Sequential(copy.deepcopy(linear))
    compress_(model, CompressConfig(quantize=scheme, speed_check=False))
    return model


def fbgemm(linear: nn.Linear) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(nn.Sequential(copy.deepcopy(linear)), {nn.Linear},
                                                      dtype=torch.qint8)


def torchao(linear: nn.Linear, dynamic: bool) -> nn.Module:
    from torchao import quantization

    config = quantization.Int8DynamicActivationInt8WeightConfig() if dynamic else quantization.Int8WeightOnlyConfig()
    model = nn.Sequential(copy.deepcopy(linear))
    quantization.quantize_(model, config)
    return model


def int_mm_dynamic(linear: nn.Linear):
    """``x -> y`` the way a user writes dynamic int8 around ``torch._int_mm``."""
    w = linear.weight
    w_scale = (w.abs().amax(dim=1) / 127).clamp_min(torch.finfo(torch.float32).tiny)
    w_t = torch.round(w / w_scale[:, None]).clamp(-127, 127).to(torch.int8).t().contiguous()
    bias = linear.bias

    def forward(x: torch.Tensor) -> torch.Tensor:
        x_scale = (x.abs().amax(dim=1, keepdim=True) / 127).clamp_min(torch.finfo(torch.float32).tiny)
        xq = torch.round(x / x_scale).clamp(-127, 127).to(torch.int8)
        return torch._int_mm(xq, w_t).float() * (x_scale * w_scale) + bias

    return forward


@functools.cache
def pt2e_unavailable() -> str | None:
    """Why torch's PT2E int8 path cannot be measured here, or None."""
    for module in ("torch.ao.quantization.quantize_pt2e", "torchao.quantization.pt2e.quantize_pt2e"):
        try:
            __import__(module)
            return None
        except ImportError:
            continue
    return (f"torch {torch.__version__} has no torch.ao.quantization.quantize_pt2e and torchao (which now holds "
            "PT2E and X86InductorQuantizer) is not installed")


def pt2e_int8(model: nn.Module, args: tuple):
    """torch's static int8 path for x86: PT2E + X86InductorQuantizer, calibrated
    on ``args``, compiled with freezing (also used by the api suite)."""
    try:
        from torch.ao.quantization.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torch.ao.quantization.quantizer import x86_inductor_quantizer as x86
    except ImportError:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86
    import torch._inductor.config as inductor_config

    quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
    exported = torch.export.export(copy.deepcopy(model).eval(), args).module()
    prepared = prepare_pt2e(exported, quantizer)
    prepared(*args)
    converted = convert_pt2e(prepared)
    inductor_config.freezing = True
    compiled = torch.compile(converted)
    compiled(*args)
    return compiled


def not_measured_reason(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"


def baselines(linear: nn.Linear, x: torch.Tensor) -> tuple[dict, dict]:
    """{impl: callable} of every baseline this machine has, and {impl: why not measured}."""
    candidates, missing = {"dense": lambda: linear(x)}, {}
    try:
        model = fbgemm(linear)
        candidates["fbgemm"] = lambda: model(x)
    except (AttributeError, RuntimeError) as error:
        missing["fbgemm"] = f"quantize_dynamic failed: {error}"
    for impl, dynamic in (("torchao_wo", False), ("torchao_dyn", True)):
        try:
            model_ao = torchao(linear, dynamic)
            candidates[impl] = functools.partial(model_ao, x)
        except ImportError:
            missing[impl] = "torchao is not installed"
    if NATIVE_BF16:
        bf16, xb = copy.deepcopy(linear).bfloat16(), x.bfloat16()
        candidates["bf16"] = lambda: bf16(xb)
        int_mm = int_mm_dynamic(linear)
        candidates["int_mm_dynamic"] = lambda: int_mm(x)
        reason = pt2e_unavailable()
        if reason is None:
            try:
                compiled = pt2e_int8(nn.Sequential(linear), (x,))
                candidates["pt2e_int8"] = lambda: compiled(x)
            except Exception as error:  # any failure of torch's stack is reported, not fatal
                missing["pt2e_int8"] = not_measured_reason(error)
        else:
            missing["pt2e_int8"] = reason
    return candidates, missing


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0][0]}x{c[0][1]}-b{c[1]}")
def test_int8_linear(bench, case):
    (in_f, out_f), batch = case
    linear = dense_linear(in_f, out_f)
    x = torch.randn(batch, in_f)
    with torch.no_grad():
        candidates, missing = baselines(linear, x)
        for scheme in ("int8_dynamic", "int8_weight_only"):
            model = slimtorch_int8(linear, scheme)
            candidates[f"slimtorch_{scheme}"] = functools.partial(model, x)
        also = tuple(b for b in ("fbgemm", "bf16", "int_mm_dynamic", "pt2e_int8") if b in candidates)
        bench({"shape": f"{in_f}->{out_f}", "batch": batch}, candidates, baseline="dense", also=also,
              not_measured=missing)


def test_call_overhead(bench):
    """64->64 at batch 1: the time is all per-call overhead."""
    linear = dense_linear(64, 64)
    x = torch.randn(1, 64)
    with torch.no_grad():
        dynamic, weight_only = slimtorch_int8(linear, "int8_dynamic"), slimtorch_int8(linear, "int8_weight_only")
        bench({"shape": "64->64", "batch": 1},
              {"dense": lambda: linear(x), "slimtorch_int8_dynamic": lambda: dynamic(x),
               "slimtorch_int8_weight_only": lambda: weight_only(x)}, baseline="dense")
