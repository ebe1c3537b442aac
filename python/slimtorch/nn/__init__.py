"""Layers that run compressed weights on slimtorch's kernels: plain
``nn.Module``s with ``from_dense(...)``, ``to_dense()`` and a state_dict that
holds only the packed data. They hold state and call public ops
(:mod:`slimtorch.ops`) only."""

from slimtorch.nn.int8_embedding import Int8Embedding
from slimtorch.nn.int8_linear import Int8Linear
from slimtorch.nn.registry import LAYER_CLASSES, register_layer_class
from slimtorch.nn.sparse_linear import SparseLinear

__all__ = [
    "Int8Embedding",
    "Int8Linear",
    "LAYER_CLASSES",
    "SparseLinear",
    "register_layer_class",
]
