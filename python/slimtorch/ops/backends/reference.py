"""The pure-torch reference (:mod:`slimtorch.reference`) registered once per
op as the fallback for every device without a loaded native kernel. This is
the only production module that runs reference ops; besides it,
``slimtorch.ops.quantize`` reads the quantization constants (minimum scale,
integer ranges) from their one Python home, ``slimtorch.reference.quantize``."""

from __future__ import annotations

import importlib
import math

import torch

from slimtorch import reference
from slimtorch.ops import qgemm, select, spmm, threshold
from slimtorch.ops._registry import register_fallback
from slimtorch.reference import qgemm as ref_qgemm

# The module (slimtorch.ops.quantize is also the name of a function of slimtorch.ops).
quantize = importlib.import_module("slimtorch.ops.quantize")
ref_quantize = importlib.import_module("slimtorch.reference.quantize")

# ---- threshold, select ---------------------------------------------------------------------

register_fallback(threshold._threshold_op,
                  lambda w, value: torch.tensor(reference.threshold_(w, value), dtype=torch.int64))
register_fallback(threshold._prune_mask_op, reference.prune_mask)


def _magnitude_threshold(tensors, sparsity):
    # NaN (not an exception) for a NaN input, as the device kernels report it.
    if any(bool(t.isnan().any()) for t in tensors):
        value = math.nan
    else:
        value = reference.magnitude_threshold(tensors, sparsity)
    return torch.tensor(value, dtype=torch.float32, device=tensors[0].device)


register_fallback(select._threshold_op, _magnitude_threshold)
register_fallback(select._masks_op, reference.magnitude_masks)


# ---- quantize: the value checks the CPU kernels run natively -------------------------------

def _quantize(x, scale, zero_point, axis, dtype):
    quantize._check_qparam_values(scale, zero_point, dtype)
    return ref_quantize.quantize(x, scale, zero_point, axis, dtype)


def _dequantize(q, scale, zero_point, axis, dtype):
    quantize._check_qparam_values(scale, zero_point, q.dtype)
    return ref_quantize.dequantize(q, scale, zero_point, axis, dtype)


register_fallback(quantize._choose_qparams_op, ref_quantize.choose_qparams)
register_fallback(quantize._quantize_op, _quantize)
register_fallback(quantize._dequantize_op, _dequantize)

# ---- spmm ---------------------------------------------------------------------------------

def _without_bitmap(product):
    """The reference product for an op that also takes the weight's column
    bitmap: the bitmap only picks a CPU kernel, the product is the same."""
    def run(x, row_ptr, col_idx, values, row_scales, bias, in_features, bitmap=None):
        return product(x, row_ptr, col_idx, values, row_scales, bias, in_features)
    return run


register_fallback(spmm._sparse_linear_op, _without_bitmap(reference.sparse_linear))
register_fallback(spmm._sparse_linear_dynamic_op, _without_bitmap(reference.sparse_linear_dynamic))
register_fallback(spmm._grad_input_op, reference.sparse_linear_grad_input)


# ---- qgemm: the ops take the packed layout; the reference takes q [N, K] ----------------------

def _qgemm_s32(a, packed, n):
    k = a.shape[-1]
    q = ref_qgemm.unpack_weight(packed, n, k)
    return ref_qgemm.qgemm_s32(a.reshape(math.prod(a.shape[:-1]), k), q).reshape(*a.shape[:-1], n)


def _q(x, packed, w_scale):
    return ref_qgemm.unpack_weight(packed, w_scale.shape[0], x.shape[-1])


register_fallback(qgemm._quantize_rows_op, ref_qgemm.quantize_rows)
register_fallback(qgemm._qgemm_s32_op, _qgemm_s32)
register_fallback(qgemm._dynamic_op, lambda x, packed, w_scale, colsum, bias:
                  ref_qgemm.qlinear_dynamic(x, _q(x, packed, w_scale), w_scale, bias))
register_fallback(qgemm._static_op, lambda x, packed, w_scale, colsum, bias, scale, zero_point:
                  ref_qgemm.qlinear_static(x, _q(x, packed, w_scale), w_scale, bias, scale, zero_point))
register_fallback(qgemm._weight_only_op, lambda x, packed, w_scale, bias:
                  ref_qgemm.qlinear_weight_only(x, _q(x, packed, w_scale), w_scale, bias))
