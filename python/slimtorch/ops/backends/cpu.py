"""CPU kernels of ``slimtorch._C``, registered for device type ``cpu``.

Each kernel receives validated arguments (the public ops check them), lays
its inputs out as the native entry point expects, allocates the outputs with
torch and passes raw addresses. The native module picks the ISA path
(scalar, AVX2, AVX-512, ...) itself.
"""

from __future__ import annotations

import importlib
import math

import torch

from slimtorch import _native
from slimtorch.ops import qgemm, select, spmm, threshold
from slimtorch.ops._registry import register_cpu

# The module (slimtorch.ops.quantize is also the name of a function of slimtorch.ops).
quantize = importlib.import_module("slimtorch.ops.quantize")


def _rows(x: torch.Tensor, width: int, *, halves: bool = False) -> tuple[torch.Tensor, int]:
    """``x [..., width]`` as a float32 ``[M, width]`` view the kernels can read
    (unit stride along the row, rows at least ``width`` apart; a copy only
    where needed), and its row stride. ``halves``: float16 / bfloat16 x stays
    as it is (for kernels that read them)."""
    x2 = x.reshape(math.prod(x.shape[:-1]), width)  # not -1: width may be 0
    if x2.dtype != torch.float32 and not (halves and x2.dtype in (torch.float16, torch.bfloat16)):
        x2 = x2.float()
    m = x2.shape[0]
    if (x2.stride(-1) != 1 and width > 1) or (m > 1 and x2.stride(0) < width):
        x2 = x2.contiguous()
    return x2, (x2.stride(0) if m > 1 else width)


# ---- spmm ---------------------------------------------------------------------------------

def _sparse_args(row_ptr, col_idx, values, row_scales, in_features):
    return (row_ptr.shape[0] - 1, in_features, row_ptr.data_ptr(), col_idx.data_ptr(),
            col_idx.dtype == torch.int32, values.data_ptr(), spmm.VALUE_CODES[values.dtype],
            0 if row_scales is None else row_scales.data_ptr())


def _spmm(kernel, x, row_ptr, col_idx, values, row_scales, bias, in_features, bitmap=None):
    out_features = row_ptr.shape[0] - 1
    # Both kernels (float and dynamic int8) read and write x's dtype.
    x2, ldx = _rows(x, in_features, halves=True)
    batch = x2.shape[0]
    y = torch.empty((batch, out_features), dtype=x2.dtype)
    b = None if bias is None else bias.float().contiguous()
    code = _native.dtype_code(x2.dtype)
    kernel(*_sparse_args(row_ptr, col_idx, values, row_scales, in_features), values.shape[0],
           0 if bitmap is None else bitmap.data_ptr(), x2.data_ptr(), code, batch, ldx,
           0 if b is None else b.data_ptr(), y.data_ptr(), code, _native.num_threads())
    return y.reshape(*x.shape[:-1], out_features).to(x.dtype)


@register_cpu(spmm._sparse_linear_op)
def _(x, row_ptr, col_idx, values, row_scales, bias, in_features, bitmap=None):
    return _spmm(_native.cpu.spmm_forward, x, row_ptr, col_idx, values, row_scales, bias, in_features, bitmap)


@register_cpu(spmm._sparse_linear_dynamic_op)
def _(x, row_ptr, col_idx, values, row_scales, bias, in_features, bitmap=None):
    batch = math.prod(x.shape[:-1])
    if batch >= spmm.DYNAMIC_MIN_BATCH and in_features > 0 and _native.cpu.spmm_dynamic_supported(
            row_ptr.shape[0] - 1, in_features, col_idx.dtype == torch.int32, spmm.VALUE_CODES[values.dtype]):
        return _spmm(_native.cpu.spmm_forward_dynamic, x, row_ptr, col_idx, values, row_scales, bias, in_features)
    # The dequantized rows stay float32 (a half x dtype would round them).
    rows = qgemm.qgemm_fake_quantize_rows(x.float())
    # The bitmap too: eager calls run the batch-1 bitmap kernel on it, and a
    # compiled model must give the same bits.
    y = _spmm(_native.cpu.spmm_forward, rows, row_ptr, col_idx, values, row_scales, bias, in_features, bitmap)
    return y.to(x.dtype)


@register_cpu(spmm._grad_input_op)
def _(grad_y, row_ptr, col_idx, values, row_scales, in_features):
    out_features = row_ptr.shape[0] - 1
    g = grad_y.reshape(math.prod(grad_y.shape[:-1]), out_features).float().contiguous()
    grad_x = torch.empty((g.shape[0], in_features), dtype=torch.float32)
    _native.cpu.spmm_backward_input(*_sparse_args(row_ptr, col_idx, values, row_scales, in_features),
                                    g.data_ptr(), g.shape[0], grad_x.data_ptr(), _native.num_threads())
    return grad_x.reshape(*grad_y.shape[:-1], in_features).to(grad_y.dtype)


# ---- qgemm --------------------------------------------------------------------------------

@register_cpu(qgemm._quantize_rows_op)
def _(x):
    x2, ldx = _rows(x, x.shape[-1])
    m, k = x2.shape
    a = torch.empty((m, k), dtype=torch.uint8)
    scale = torch.empty(m, dtype=torch.float32)
    zero_point = torch.empty(m, dtype=torch.int32)
    _native.cpu.quantize_rows_u8(x2.data_ptr(), m, k, ldx, a.data_ptr(), k, scale.data_ptr(),
                                 zero_point.data_ptr(), _native.num_threads())
    lead = x.shape[:-1]
    return a.reshape(x.shape), scale.reshape(lead), zero_point.reshape(lead)


@register_cpu(qgemm._qgemm_s32_op)
def _(a, packed, n):
    k = a.shape[-1]
    a2 = a.reshape(math.prod(a.shape[:-1]), k).contiguous()
    m = a2.shape[0]
    c = torch.empty((m, n), dtype=torch.int32)
    _native.cpu.qgemm_u8s8s32(a2.data_ptr(), m, k, k, packed.data_ptr(), n, c.data_ptr(), n, _native.num_threads())
    return c.reshape(*a.shape[:-1], n)


def _u8s8(x, packed, w_scale, colsum, bias, is_static, activation_scale, activation_zero_point):
    n = w_scale.shape[0]
    x2, ldx = _rows(x, x.shape[-1], halves=True)  # read and written in x's dtype by the kernel
    m, k = x2.shape
    y = torch.empty((m, n), dtype=x2.dtype)
    if bias is not None and bias.dtype != torch.float32:
        bias = bias.float()
    code = _native.dtype_code(x2.dtype)
    _native.cpu.qlinear_u8s8(x2.data_ptr(), m, k, ldx, packed.data_ptr(), w_scale.data_ptr(), colsum.data_ptr(),
                             0 if bias is None else bias.data_ptr(), n, y.data_ptr(), n,
                             is_static, activation_scale, activation_zero_point, _native.num_threads(), code, code)
    return y.reshape(*x.shape[:-1], n)


qgemm.register_u8s8(register_cpu, _u8s8)


@register_cpu(qgemm._weight_only_op)
def _(x, packed, w_scale, bias):
    n = w_scale.shape[0]
    x2, ldx = _rows(x, x.shape[-1], halves=True)  # read and written in x's dtype by the kernel
    m, k = x2.shape
    y = torch.empty((m, n), dtype=x2.dtype)
    if bias is not None and bias.dtype != torch.float32:
        bias = bias.float()
    code = _native.dtype_code(x2.dtype)
    _native.cpu.qlinear_weight_only(x2.data_ptr(), m, k, ldx, packed.data_ptr(), w_scale.data_ptr(),
                                    0 if bias is None else bias.data_ptr(), n, y.data_ptr(), n,
                                    _native.num_threads(), code, code)
    return y.reshape(*x.shape[:-1], n)


# ---- threshold ----------------------------------------------------------------------------

@register_cpu(threshold._threshold_op)
def _(w, value):
    # The kernel walks a dense buffer; a strided view is thresholded through a copy.
    dense = w if w.is_contiguous() else w.contiguous()
    kept = _native.cpu.threshold_(dense.data_ptr(), _native.dtype_code(w.dtype), dense.numel(), value,
                                  _native.num_threads())
    if dense is not w:
        w.copy_(dense)
    return torch.tensor(kept, dtype=torch.int64)


@register_cpu(threshold._prune_mask_op)
def _(w, value):
    dense = w.contiguous()
    keep = torch.empty(w.shape, dtype=torch.bool)
    _native.cpu.prune_mask(dense.data_ptr(), _native.dtype_code(w.dtype), dense.numel(), value,
                           keep.data_ptr(), _native.num_threads())
    return keep


# ---- select -------------------------------------------------------------------------------

@register_cpu(select._threshold_op)
def _(tensors, sparsity):
    dense, data, dtypes, sizes, k = select._native_arguments(tensors, sparsity)
    value, _, _ = _native.cpu.magnitude_select(data, dtypes, sizes, k, _native.num_threads())
    del dense  # kept alive until the kernel returned
    return torch.tensor(value, dtype=torch.float32)


@register_cpu(select._masks_op)
def _(tensors, sparsity):
    dense, data, dtypes, sizes, k = select._native_arguments(tensors, sparsity)
    keep = [torch.empty(t.shape, dtype=torch.bool) for t in tensors]
    _native.cpu.magnitude_masks(data, dtypes, sizes, k, [m.data_ptr() for m in keep], _native.num_threads())
    del dense  # kept alive until the kernel returned
    return keep


# ---- quantize: the eager path's kernels, also behind the ops ----------------------------------

@register_cpu(quantize._choose_qparams_op)
def _(x, axis, symmetric, dtype):
    dense = x.contiguous()
    shape = quantize._qparam_shape(x.shape, axis)
    scale = torch.empty(shape, dtype=torch.float32)
    zero_point = torch.empty(shape, dtype=torch.int32)
    _native.cpu.choose_qparams(dense.data_ptr(), _native.dtype_code(x.dtype), *quantize._view(x.shape, axis),
                               symmetric, quantize._QTYPE_CODES[dtype], scale.data_ptr(), zero_point.data_ptr(),
                               _native.num_threads())
    return scale, zero_point


register_cpu(quantize._quantize_op)(quantize._quantize_cpu)
register_cpu(quantize._dequantize_op)(quantize._dequantize_cpu)
