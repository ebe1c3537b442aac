"""The one decision "may this call go straight to a CPU kernel?".

An eager call on plain CPU tensors skips ``torch.library`` dispatch, which
costs more than a small layer's whole kernel; anything else (CUDA, a tensor
subclass such as FakeTensor, ``torch.compile``, ``export``, a dispatch mode
such as ``make_fx``, a gradient to compute, no native module) goes through
the registered op.
"""

from __future__ import annotations

import torch

from slimtorch import _native

__all__ = ["eager_cpu", "eager_cpu_float32"]

_PLAIN = (torch.Tensor, torch.nn.Parameter)


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
_grad_enabled = torch.is_grad_enabled
_compiling = torch.compiler.is_compiling
_dispatch_depth = torch._C._len_torch_dispatch_stack


def eager_cpu_float32(x: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """:func:`eager_cpu` for a linear layer's float32 input and bias, both
    contiguous, with no gradient to compute: the kernel reads them in place
    and writes a fresh float32 output. (Checks ordered cheapest first.)"""
    if (type(x) is not _TENSOR and type(x) is not _PARAMETER) or x.dtype is not _FLOAT32 or not x.is_cpu \
            or not x.is_contiguous() or _native.cpu is None or (x.requires_grad and _grad_enabled()):
        return False
    if bias is not None and ((type(bias) is not _TENSOR and type(bias) is not _PARAMETER)
                             or bias.dtype is not _FLOAT32 or not bias.is_cpu or not bias.is_contiguous()
                             or (bias.requires_grad and _grad_enabled())):
        return False
    return not _compiling() and _dispatch_depth() == 0
