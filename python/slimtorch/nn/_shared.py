"""Tensors that several layers hold together (the int8 table of an embedding
and its tied head) stay shared when the model is converted: ``model.to(...)``
calls each layer's ``_apply`` with one conversion function, and the layers
route their tensors through :func:`convert_once`, so every holder of a tensor
gets the same converted tensor back."""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch

# {conversion function: {(id(tensor), tag): (weak original, weak result)}}; weak
# references only, so nothing is kept alive once the conversion is over.
_CONVERTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def convert_once(fn: Callable, tensor: torch.Tensor, tag: str = "",
                 how: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """``(how or fn)(tensor)``, computed once per conversion ``fn``, tensor
    and ``tag`` while the result is alive: a second layer holding the same
    tensor gets the first one's result."""
    how = how or fn
    try:
        memo = _CONVERTED.setdefault(fn, {})
    except TypeError:  # a function without weak references: nothing to share it through
        return how(tensor)
    key = (id(tensor), tag)
    original, result = memo.get(key, (None, None))
    if original is not None and original() is tensor and result() is not None:
        return result()
    converted = how(tensor)
    memo[key] = (weakref.ref(tensor), weakref.ref(converted))
    return converted
