"""The op layer: the only door to native code.

Each op validates its arguments (``TypeError``/``ValueError`` naming the
argument), allocates outputs with torch, and dispatches through a
``torch.library`` op ``slimtorch::<name>`` with a fake implementation, so the
ops work under ``torch.compile(fullgraph=True)`` and ``torch.export``.
"""

from slimtorch.ops.quantize import choose_qparams, dequantize, quantize
from slimtorch.ops.select import magnitude_masks, magnitude_threshold
from slimtorch.ops.spmm import SparseWeight, sparse_linear
from slimtorch.ops.threshold import prune_mask, threshold_

__all__ = [
    "SparseWeight",
    "choose_qparams",
    "dequantize",
    "magnitude_masks",
    "magnitude_threshold",
    "prune_mask",
    "quantize",
    "sparse_linear",
    "threshold_",
]
