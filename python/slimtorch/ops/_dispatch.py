"""The one decision "may this call go straight to a CPU kernel?", and what
the CPU computes natively (:func:`cpu_bf16_status`).

An eager call on plain CPU tensors skips ``torch.library`` dispatch, which
costs more than a small layer's whole kernel; anything else (CUDA, a tensor
subclass such as FakeTensor, ``torch.compile``, ``export``, a dispatch mode
such as ``make_fx``, a gradient to compute, no native module) goes through
the registered op.
"""

from __future__ import annotations

import torch

from slimtorch import _native

__all__ = ["cpu_bf16_status", "eager_cpu", "eager_cpu_linear"]

_PLAIN = (torch.Tensor, torch.nn.Parameter)


def cpu_bf16_status() -> str:
    """Whether bfloat16 math runs natively on this CPU within slimtorch's ISA
    setting: ``"on: AMX-BF16"``, ``"on: AVX512-BF16"`` or ``"off: <why>"``.
    It follows the active path, so ``SLIMTORCH_ISA`` lowers it (AMX-BF16
    counts only on the amx path, AVX512-BF16 on the avx512 path or higher)."""
    if _native.cpu is None:
        return "off: the native CPU module is not built, so the CPU's features are unknown"
    isa = _native.cpu.active_isa()
    if isa == "amx":  # the amx path is active only where AMX-TILE, -INT8 and -BF16 all are
        return "on: AMX-BF16"
    from slimtorch.benchmark import cpu_has

    if isa == "avx512" and cpu_has("avx512_bf16"):
        return "on: AVX512-BF16"
    return f"off: the active ISA path ({isa}) has neither AMX-BF16 nor AVX512-BF16"


def _untraced() -> bool:
    return not torch.compiler.is_compiling() and torch._C._len_torch_dispatch_stack() == 0


def eager_cpu(*tensors: torch.Tensor) -> bool:
    """The native CPU module is loaded, every tensor is a plain CPU tensor
    (``None`` entries are skipped), and nothing traces the call."""
    if _native.cpu is None:
        return False
    for t in tensors:  # a plain loop: this runs on every eager call
        if t is not None and (type(t) not in _PLAIN or not t.is_cpu):
            return False
    return _untraced()


# Bound once: this module runs on every eager call, where attribute chains
# such as torch.nn.Parameter are a measurable part of a small layer's time.
_TENSOR = torch.Tensor
_PARAMETER = torch.nn.Parameter
_FLOAT32 = torch.float32
_BFLOAT16 = torch.bfloat16
_grad_enabled = torch.is_grad_enabled
_compiling = torch.compiler.is_compiling
_dispatch_depth = torch._C._len_torch_dispatch_stack


def eager_cpu_linear(x: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """:func:`eager_cpu` for a linear layer's float32 or bfloat16 input and a
    bias of float32 or x's dtype, both contiguous, with no gradient to
    compute: the kernel reads them in place (or from an exact float32 copy)
    and writes a fresh output. (Checks ordered cheapest first.)"""
    if (type(x) is not _TENSOR and type(x) is not _PARAMETER) or (x.dtype is not _FLOAT32
                                                                   and x.dtype is not _BFLOAT16) \
            or not x.is_cpu or not x.is_contiguous() or _native.cpu is None or (x.requires_grad and _grad_enabled()):
        return False
    if bias is not None and ((type(bias) is not _TENSOR and type(bias) is not _PARAMETER)
                             or (bias.dtype is not _FLOAT32 and bias.dtype is not x.dtype) or not bias.is_cpu
                             or not bias.is_contiguous() or (bias.requires_grad and _grad_enabled())):
        return False
    return not _compiling() and _dispatch_depth() == 0
