"""Argument validation shared by the ops: native code only ever sees valid input.

Every check raises ``TypeError`` (wrong kind of object or dtype) or
``ValueError`` (wrong value or shape) whose message starts with the argument's
name and says what was expected.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
SUPPORTED_DEVICES = ("cpu", "cuda")


def _names(dtypes: Sequence[torch.dtype]) -> str:
    return ", ".join(str(d).removeprefix("torch.") for d in dtypes)


def check_tensor(
    name: str, value: object, dtypes: Sequence[torch.dtype] | None = None
) -> torch.Tensor:
    """``value`` is a tensor on a supported device, with one of ``dtypes``."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if dtypes is not None and value.dtype not in dtypes:
        raise TypeError(f"{name}: expected dtype {_names(dtypes)}, got {value.dtype}")
    if not value.is_cpu and value.device.type not in SUPPORTED_DEVICES and value.device.type != "meta":
        raise ValueError(f"{name}: expected a cpu or cuda tensor, got device {value.device}")
    return value


def check_float_tensor(name: str, value: object) -> torch.Tensor:
    return check_tensor(name, value, FLOAT_DTYPES)


def check_real(name: str, value: object, *, allow_inf: bool = True) -> float:
    """A real Python number or a one-element tensor; never NaN; returned as float."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name}: expected a number or a one-element tensor, got shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    result = float(value)
    if math.isnan(result):
        raise ValueError(f"{name}: expected a number, got NaN")
    if not allow_inf and math.isinf(result):
        raise ValueError(f"{name}: expected a finite number, got {result}")
    return result


def check_fraction(name: str, value: object) -> float:
    """A number in [0, 1] (sparsities, ratios)."""
    result = check_real(name, value)
    if not 0.0 <= result <= 1.0:
        raise ValueError(f"{name}: expected a number in [0, 1], got {result}")
    return result


def check_same_device(name: str, tensors: Sequence[torch.Tensor]) -> torch.device:
    device = tensors[0].device
    for i, tensor in enumerate(tensors):
        if tensor.device != device:
            raise ValueError(
                f"{name}: all tensors must be on one device, but {name}[0] is on "
                f"{device} and {name}[{i}] is on {tensor.device}"
            )
    return device


def check_axis(name: str, axis: object, ndim: int) -> int | None:
    """``None`` or an int in [-ndim, ndim); returned non-negative."""
    if axis is None:
        return None
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"{name}: expected None or an int, got {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}: expected an axis in [{-ndim}, {ndim}) for a {ndim}-d tensor, got {axis}")
    return axis % ndim
