"""CUDA kernels of ``slimtorch._C_cuda``, registered for device type ``cuda``
where that module is built. Kernels launch on torch's current stream."""

from __future__ import annotations

import importlib
import math

import torch

from slimtorch import _native
from slimtorch.ops import qgemm, select, spmm, threshold
from slimtorch.ops._registry import register_cuda

# The module (slimtorch.ops.quantize is also the name of a function of slimtorch.ops).
quantize = importlib.import_module("slimtorch.ops.quantize")


def _stream(t: torch.Tensor) -> int:
    return torch.cuda.current_stream(t.device).cuda_stream


def _float_rows(x: torch.Tensor, width: int) -> torch.Tensor:
    return x.reshape(math.prod(x.shape[:-1]), width).float().contiguous()


# ---- spmm ---------------------------------------------------------------------------------

@register_cuda(spmm._sparse_linear_op)
def _(x, row_ptr, col_idx, values, row_scales, bias, in_features, bitmap=None):
    out_features = row_ptr.shape[0] - 1
    x2 = _float_rows(x, in_features)
    batch = x2.shape[0]
    y = torch.empty((batch, out_features), dtype=torch.float32, device=x.device)
    b = None if bias is None else bias.float().contiguous()
    _native.cuda.spmm_forward(
        out_features, in_features, row_ptr.data_ptr(), col_idx.data_ptr(),
        col_idx.dtype == torch.int32, values.data_ptr(), spmm.VALUE_CODES[values.dtype],
        0 if row_scales is None else row_scales.data_ptr(),
        x2.data_ptr(), batch, in_features, 0 if b is None else b.data_ptr(), y.data_ptr(), _stream(x),
    )
    return y.reshape(*x.shape[:-1], out_features).to(x.dtype)


@register_cuda(spmm._sparse_linear_dynamic_op)
def _(x, row_ptr, col_idx, values, row_scales, bias, in_features, bitmap=None):
    # No integer sparse kernel on CUDA: the quantized rows, dequantized (in
    # float32: a half x dtype would round them), through the float kernel.
    return spmm._sparse_linear_op(qgemm.qgemm_fake_quantize_rows(x.float()), row_ptr, col_idx, values, row_scales,
                                  bias, in_features).to(x.dtype)


# ---- qgemm --------------------------------------------------------------------------------

def _quantize(x: torch.Tensor, is_static: bool, activation_scale: float, activation_zero_point: int):
    """Rows of x as uint8 [M, round_up(K, 4)] (zero padded), scale, zero point."""
    k = x.shape[-1]
    x2 = _float_rows(x, k)
    m, k_pad = x2.shape[0], -(-k // qgemm.GROUP_K) * qgemm.GROUP_K
    a = torch.empty((m, k_pad), dtype=torch.uint8, device=x.device)
    scale = torch.empty(m, dtype=torch.float32, device=x.device)
    zero_point = torch.empty(m, dtype=torch.int32, device=x.device)
    _native.cuda.quantize_rows_u8(x2.data_ptr(), m, k, k, a.data_ptr(), k_pad, scale.data_ptr(),
                                  zero_point.data_ptr(), is_static, activation_scale, activation_zero_point,
                                  _stream(x))
    return a, scale, zero_point


def _u8s8(x, packed, w_scale, colsum, bias, is_static, activation_scale, activation_zero_point):
    n = w_scale.shape[0]
    a, scale, zero_point = _quantize(x, is_static, activation_scale, activation_zero_point)
    m, k_pad = a.shape
    y = torch.empty((m, n), dtype=torch.float32, device=x.device)
    _native.cuda.qgemm_u8s8(a.data_ptr(), m, k_pad, k_pad, packed.data_ptr(), n, 0, 0,
                            zero_point.data_ptr(), scale.data_ptr(), w_scale.data_ptr(),
                            colsum.data_ptr(), 0 if bias is None else bias.data_ptr(),
                            y.data_ptr(), n, _stream(x))
    return y.reshape(*x.shape[:-1], n).to(x.dtype)


@register_cuda(qgemm._quantize_rows_op)
def _(x):
    k = x.shape[-1]
    a, scale, zero_point = _quantize(x, False, 1.0, 0)
    lead = x.shape[:-1]
    return a[:, :k].contiguous().reshape(x.shape), scale.reshape(lead), zero_point.reshape(lead)


@register_cuda(qgemm._qgemm_s32_op)
def _(a, packed, n):
    k = a.shape[-1]
    k_pad = -(-k // qgemm.GROUP_K) * qgemm.GROUP_K
    a2 = torch.nn.functional.pad(a.reshape(math.prod(a.shape[:-1]), k), (0, k_pad - k)).contiguous()
    m = a2.shape[0]
    c = torch.empty((m, n), dtype=torch.int32, device=a.device)
    _native.cuda.qgemm_u8s8(a2.data_ptr(), m, k_pad, k_pad, packed.data_ptr(), n, c.data_ptr(), n,
                            0, 0, 0, 0, 0, 0, 0, _stream(a))
    return c.reshape(*a.shape[:-1], n)


qgemm.register_u8s8(register_cuda, _u8s8)


@register_cuda(qgemm._weight_only_op)
def _(x, packed, w_scale, bias):
    n, k = w_scale.shape[0], x.shape[-1]
    x2 = _float_rows(x, k)
    m = x2.shape[0]
    y = torch.empty((m, n), dtype=torch.float32, device=x.device)
    _native.cuda.qlinear_weight_only(x2.data_ptr(), m, k, k, packed.data_ptr(), w_scale.data_ptr(),
                                     0 if bias is None else bias.data_ptr(), n, y.data_ptr(), n, _stream(x))
    return y.reshape(*x.shape[:-1], n).to(x.dtype)


# ---- threshold ----------------------------------------------------------------------------

@register_cuda(threshold._threshold_op)
def _(w, value):
    dense = w if w.is_contiguous() else w.contiguous()
    kept = torch.empty((), dtype=torch.int64, device=w.device)
    _native.cuda.threshold_(dense.data_ptr(), _native.dtype_code(w.dtype), dense.numel(), value,
                            kept.data_ptr(), _stream(w))
    if dense is not w:
        w.copy_(dense)
    return kept


@register_cuda(threshold._prune_mask_op)
def _(w, value):
    dense = w.contiguous()
    keep = torch.empty(w.shape, dtype=torch.bool, device=w.device)
    kept = torch.empty((), dtype=torch.int64, device=w.device)
    _native.cuda.prune_mask(dense.data_ptr(), _native.dtype_code(w.dtype), dense.numel(), value,
                            keep.data_ptr(), kept.data_ptr(), _stream(w))
    return keep


# ---- select -------------------------------------------------------------------------------

def _select(tensors, sparsity):
    """Launches the selection on the current stream. Returns the dense
    inputs (the caching allocator keeps their memory for the stream's
    pending work) and the device result int64[4]: threshold bits
    (sign-extended int32), count_less, ties_to_prune, NaN flag."""
    dense, data, dtypes, sizes, k = select._native_arguments(tensors, sparsity)
    device = tensors[0].device
    workspace = torch.empty(_native.cuda.select_workspace_size(), dtype=torch.uint8, device=device)
    result = torch.empty(4, dtype=torch.int64, device=device)
    _native.cuda.magnitude_select(data, dtypes, sizes, k, workspace.data_ptr(), result.data_ptr(),
                                  _stream(tensors[0]))
    return dense, result


@register_cuda(select._threshold_op)
def _(tensors, sparsity):
    with torch.cuda.device(tensors[0].device):
        _, result = _select(tensors, sparsity)
        value = result[0].to(torch.int32).view(torch.float32)
        return torch.where(result[3] != 0, torch.nan, value)


@register_cuda(select._masks_op)
def _(tensors, sparsity):
    device = tensors[0].device
    with torch.cuda.device(device):
        dense, result = _select(tensors, sparsity)
        # The one synchronization: NaN must raise, and only the device knows.
        if bool(result[3]):
            raise ValueError(select._NAN_MESSAGE)
        keep = [torch.empty(t.shape, dtype=torch.bool, device=device) for t in tensors]
        tile = _native.cuda.mask_tile_elements()
        largest = max(t.numel() for t in dense)
        tiles = torch.empty(-(-largest // tile) + 1, dtype=torch.int64, device=device)
        ties_seen = torch.zeros((), dtype=torch.int64, device=device)
        for t, m in zip(dense, keep):  # in element order: ties are numbered across tensors
            _native.cuda.magnitude_mask(t.data_ptr(), _native.dtype_code(t.dtype), t.numel(), result.data_ptr(),
                                        ties_seen.data_ptr(), tiles.data_ptr(), m.data_ptr(), _stream(t))
        return keep


# ---- quantize -----------------------------------------------------------------------------

@register_cuda(quantize._choose_qparams_op)
def _(x, axis, symmetric, dtype):
    dense = x.contiguous()
    outer, channels, inner = quantize._view(x.shape, axis)
    shape = quantize._qparam_shape(x.shape, axis)
    scale = torch.empty(shape, dtype=torch.float32, device=x.device)
    zero_point = torch.empty(shape, dtype=torch.int32, device=x.device)
    # Per-channel ordered-integer min/max accumulators, then a non-finite flag.
    workspace = torch.empty(2 * channels + 1, dtype=torch.int32, device=x.device)
    _native.cuda.choose_qparams(dense.data_ptr(), _native.dtype_code(x.dtype), outer, channels, inner, symmetric,
                                quantize._QTYPE_CODES[dtype], scale.data_ptr(), zero_point.data_ptr(),
                                workspace.data_ptr(), _stream(x))
    if int(workspace[-1]) != 0:
        raise ValueError("x: expected finite values, found NaN or Inf (choose_qparams needs a finite range)")
    return scale, zero_point


@register_cuda(quantize._quantize_op)
def _(x, scale, zero_point, axis, dtype):
    quantize._check_qparam_values(scale, zero_point, dtype)
    dense, scale, zero_point = x.contiguous(), scale.contiguous(), zero_point.contiguous()
    q = torch.empty(x.shape, dtype=dtype, device=x.device)
    _native.cuda.quantize(dense.data_ptr(), _native.dtype_code(x.dtype), *quantize._view(x.shape, axis),
                          axis is not None, scale.data_ptr(), zero_point.data_ptr(), quantize._QTYPE_CODES[dtype],
                          q.data_ptr(), _stream(x))
    return q


@register_cuda(quantize._dequantize_op)
def _(q, scale, zero_point, axis, dtype):
    quantize._check_qparam_values(scale, zero_point, q.dtype)
    dense, scale, zero_point = q.contiguous(), scale.contiguous(), zero_point.contiguous()
    out = torch.empty(q.shape, dtype=dtype, device=q.device)
    _native.cuda.dequantize(dense.data_ptr(), quantize._QTYPE_CODES[q.dtype], *quantize._view(q.shape, axis),
                            scale.data_ptr(), zero_point.data_ptr(), out.data_ptr(), _native.dtype_code(dtype),
                            _stream(q))
    return out
