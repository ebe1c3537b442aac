"""The op layer: the only door to native code.

Each op validates its arguments (``TypeError``/``ValueError`` naming the
argument), allocates outputs with torch, and dispatches through a
``torch.library`` op ``slimtorch::<name>`` with a fake implementation, so the
ops work under ``torch.compile(fullgraph=True)`` and ``torch.export``. Eager
calls on plain CPU tensors go straight to the native kernel (decided in
``slimtorch.ops._dispatch``). Kernels are registered per backend by
:mod:`slimtorch.ops.backends`, with the pure-torch reference as the fallback.
"""

from slimtorch._native import build_info
from slimtorch.ops import backends  # noqa: F401  (registers the kernels)
from slimtorch.ops.qgemm import (
    MAX_K,
    ActivationQParams,
    PackedInt8Weight,
    check_activation_scale,
    check_activation_zero_point,
    qgemm_fake_quantize_rows,
    qgemm_pack_weight,
    qgemm_prepare_weight,
    qgemm_quantize_rows,
    qgemm_quantize_weight,
    qgemm_s32,
    qlinear_dynamic,
    qlinear_static,
    qlinear_weight_only,
)
from slimtorch.ops.quantize import MIN_SCALE, choose_qparams, dequantize, quantize
from slimtorch.ops.select import magnitude_masks, magnitude_threshold
from slimtorch.ops.spmm import (
    VALUE_DTYPES,
    SparseWeight,
    sparse_linear,
    sparse_linear_dynamic,
    sparse_max_batch,
)
from slimtorch.ops.threshold import prune_mask, threshold_

__all__ = [
    "build_info",
    # threshold, select: magnitude pruning
    "magnitude_masks",
    "magnitude_threshold",
    "prune_mask",
    "threshold_",
    # quantize
    "MIN_SCALE",
    "choose_qparams",
    "dequantize",
    "quantize",
    # spmm: sparse linear
    "VALUE_DTYPES",
    "SparseWeight",
    "sparse_linear",
    "sparse_linear_dynamic",
    "sparse_max_batch",
    # qgemm: int8 linear
    "MAX_K",
    "ActivationQParams",
    "PackedInt8Weight",
    "check_activation_scale",
    "check_activation_zero_point",
    "qgemm_fake_quantize_rows",
    "qgemm_pack_weight",
    "qgemm_prepare_weight",
    "qgemm_quantize_rows",
    "qgemm_quantize_weight",
    "qgemm_s32",
    "qlinear_dynamic",
    "qlinear_static",
    "qlinear_weight_only",
]
