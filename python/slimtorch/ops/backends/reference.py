"""The pure-torch reference (:mod:`slimtorch.reference`) registered once per
op as the fallback for every device without a loaded native kernel. This is
the only production module that imports ``slimtorch.reference``."""

from __future__ import annotations

import math

from slimtorch import reference
from slimtorch.ops import qgemm, spmm
from slimtorch.ops._registry import register_fallback
from slimtorch.reference import qgemm as ref_qgemm

# ---- spmm ---------------------------------------------------------------------------------

register_fallback(spmm._sparse_linear_op,
                  lambda x, row_ptr, col_idx, values, row_scales, bias, in_features, bitmap=None:
                  reference.sparse_linear(x, row_ptr, col_idx, values, row_scales, bias, in_features))
register_fallback(spmm._sparse_linear_dynamic_op, reference.sparse_linear_dynamic)
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
