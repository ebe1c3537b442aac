"""Layers that run compressed weights on slimtorch's kernels: plain
``nn.Module``s with ``from_dense(...)``, ``to_dense()`` and a state_dict that
holds only the packed data."""

from slimtorch.nn.sparse_linear import SparseLinear

__all__ = ["SparseLinear"]
