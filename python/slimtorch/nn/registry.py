"""The layer classes ``slimtorch.save`` / ``load_`` know, registered by the
layers themselves: how to describe a layer (its format name and the
constructor arguments of an empty layer that its state_dict then fills) and
how to build one back from a file's description."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from torch import nn

__all__ = ["LayerClass", "LAYER_CLASSES", "register_layer_class"]


@dataclass(frozen=True)
class LayerClass:
    """``init_args(layer)``: constructor keyword arguments of an empty layer
    like ``layer``; ``format_of(layer)``: its format name; ``build(init)``:
    the empty layer for a file's recorded ``init`` (spellings of earlier
    files included); ``old_keys``: state_dict keys of earlier files and the
    keys they are now; ``replaces``: the dense module types a layer of this
    class stands in for; ``sizes``: the constructor arguments that must equal
    the same attributes of the module it replaces."""

    init_args: Callable[[nn.Module], dict]
    format_of: Callable[[nn.Module], str]
    build: Callable[[dict], nn.Module]
    old_keys: Mapping[str, str] = field(default_factory=dict)
    replaces: tuple[type, ...] = (nn.Linear,)
    sizes: tuple[str, ...] = ("in_features", "out_features")

    def upgrade_keys(self, tensors: dict, prefix: str) -> None:
        """Renames, in place, the earlier keys of the layer at ``prefix``."""
        for old, new in self.old_keys.items():
            if prefix + old in tensors and prefix + new not in tensors:
                tensors[prefix + new] = tensors.pop(prefix + old)


LAYER_CLASSES: dict[str, LayerClass] = {}


def register_layer_class(class_name: str, format_of: Callable[[nn.Module], str],
                         build: Callable[[dict], nn.Module], old_keys: Mapping[str, str] | None = None, *,
                         replaces: tuple[type, ...] = (nn.Linear,),
                         sizes: tuple[str, ...] = ("in_features", "out_features")) -> Callable:
    """Decorator registering ``init_args(layer) -> dict`` for the layer class ``class_name``."""

    def decorate(init_args: Callable[[nn.Module], dict]) -> Callable:
        LAYER_CLASSES[class_name] = LayerClass(init_args, format_of, build, dict(old_keys or {}), replaces, sizes)
        return init_args

    return decorate
