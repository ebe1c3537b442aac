"""Layers that run compressed weights on slimtorch's kernels: plain
``nn.Module``s with ``from_dense(...)``, ``to_dense()`` and a state_dict that
holds only the packed data."""

from slimtorch.nn.int8_linear import Int8Linear
from slimtorch.nn.sparse_linear import SparseLinear

__all__ = [
    "Int8Linear",
    "SparseLinear",
]
