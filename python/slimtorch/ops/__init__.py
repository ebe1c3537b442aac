"""The op layer: the only door to native code.

Each op validates its arguments (``TypeError``/``ValueError`` naming the
argument), allocates outputs with torch, and dispatches through a
``torch.library`` op ``slimtorch::<name>`` with a fake implementation, so the
ops work under ``torch.compile(fullgraph=True)`` and ``torch.export``.
"""

from slimtorch.ops.qgemm import (
    PackedInt8Weight,
    qgemm_pack_weight,
    qgemm_prepare_weight,
    qgemm_quantize_rows,
    qgemm_quantize_weight,
    qgemm_s32,
    qlinear_dynamic,
    qlinear_static,
    qlinear_weight_only,
)
from slimtorch.ops.quantize import choose_qparams, dequantize, quantize
from slimtorch.ops.select import magnitude_masks, magnitude_threshold
from slimtorch.ops.spmm import SparseWeight, sparse_linear
from slimtorch.ops.threshold import prune_mask, threshold_

__all__ = [
    # threshold, select: magnitude pruning
    "magnitude_masks",
    "magnitude_threshold",
    "prune_mask",
    "threshold_",
    # quantize
    "choose_qparams",
    "dequantize",
    "quantize",
    # spmm: sparse linear
    "SparseWeight",
    "sparse_linear",
    # qgemm: int8 linear
    "PackedInt8Weight",
    "qgemm_pack_weight",
    "qgemm_prepare_weight",
    "qgemm_quantize_rows",
    "qgemm_quantize_weight",
    "qgemm_s32",
    "qlinear_dynamic",
    "qlinear_static",
    "qlinear_weight_only",
]
