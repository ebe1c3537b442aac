"""Argument validation for every public function of the package (ops, layers,
api, distill, structured, demo): one helper per kind of argument, so a mistake
gets the same error type and wording wherever it is made.

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
QUANTIZED_DTYPES = (torch.int8, torch.uint8)
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


def check_bool(name: str, value: object) -> bool:
    """A real ``bool`` (not 0/1, not a tensor)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")
    return value


def check_int(name: str, value: object, *, minimum: int | None = None, maximum: int | None = None,
              allow_none: bool = False) -> int | None:
    """An integer (``bool`` rejected) in ``[minimum, maximum]``; ``None`` if allowed."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        expected = "None or an int" if allow_none else "an int"
        raise TypeError(f"{name}: expected {expected}, got {type(value).__name__}")
    result = int(value)
    if (minimum is not None and result < minimum) or (maximum is not None and result > maximum):
        bounds = (f"in [{minimum}, {maximum}]" if minimum is not None and maximum is not None
                  else f">= {minimum}" if minimum is not None else f"<= {maximum}")
        raise ValueError(f"{name}: expected an int {bounds}, got {result}")
    return result


def check_choice(name: str, value: object, choices: Sequence[object]) -> object:
    """One of ``choices`` (compared with ``==``; unhashable values are simply not found)."""
    if not any(value is choice or (type(value) is type(choice) and value == choice) for choice in choices):
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_module(name: str, value: object) -> torch.nn.Module:
    """A ``torch.nn.Module``."""
    if not isinstance(value, torch.nn.Module):
        raise TypeError(f"{name}: expected a torch.nn.Module, got {type(value).__name__}")
    return value


def check_qdtype(name: str, value: object) -> torch.dtype:
    """A quantized dtype: ``torch.int8`` or ``torch.uint8``."""
    if value not in QUANTIZED_DTYPES:
        raise TypeError(f"{name}: expected torch.int8 or torch.uint8, got {value}")
    return value  # type: ignore[return-value]
