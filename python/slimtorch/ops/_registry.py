"""How a kernel joins an op: the pure-torch reference is registered once per
op as the fallback for every device, and each backend module
(:mod:`slimtorch.ops.backends`) registers its kernels for its device type.

A CPU kernel registered here runs only while the native CPU module is
loaded; otherwise the call goes to the op's fallback, which warns once per
(op, device type) that the slower reference runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from slimtorch import _native

__all__ = ["register_fallback", "register_cpu", "register_cuda"]

_FALLBACKS: dict[str, Callable] = {}


def _device(args: tuple) -> torch.device:
    for arg in args:
        if isinstance(arg, torch.Tensor):
            return arg.device
        if isinstance(arg, (list, tuple)) and arg and isinstance(arg[0], torch.Tensor):
            return arg[0].device
    return torch.device("cpu")


def register_fallback(op, reference_fn: Callable) -> None:
    """``reference_fn`` (same arguments as ``op``) runs wherever no kernel of
    the call's device type is registered or loaded."""
    name = op._name.split("::")[-1]

    def fallback(*args):
        _native.warn_fallback(name, _device(args))
        return reference_fn(*args)

    _FALLBACKS[op._name] = fallback
    op.register_kernel(None, fallback)


def register_cpu(op) -> Callable[[Callable], Callable]:
    """Decorator: ``fn`` is ``op``'s CPU kernel while ``slimtorch._C`` is loaded."""

    def decorate(fn: Callable) -> Callable:
        def kernel(*args):
            if _native.cpu is None:
                return _FALLBACKS[op._name](*args)
            return fn(*args)

        op.register_kernel("cpu", kernel)
        return fn

    return decorate


def register_cuda(op) -> Callable[[Callable], Callable]:
    """Decorator: ``fn`` is ``op``'s CUDA kernel where ``slimtorch._C_cuda`` is built."""

    def decorate(fn: Callable) -> Callable:
        if _native.cuda is not None:
            op.register_kernel("cuda", fn)
        return fn

    return decorate
