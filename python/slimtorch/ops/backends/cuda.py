"""CUDA kernels of ``slimtorch._C_cuda``, registered for device type ``cuda``
where that module is built. Kernels launch on torch's current stream."""

from __future__ import annotations

import math

import torch

from slimtorch import _native
from slimtorch.ops import qgemm, spmm
from slimtorch.ops._registry import register_cuda


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
def _(x, row_ptr, col_idx, values, row_scales, bias, in_features):
    # No integer sparse kernel on CUDA: the quantized rows, dequantized, through the float kernel.
    return spmm._sparse_linear_op(qgemm.qgemm_fake_quantize_rows(x), row_ptr, col_idx, values, row_scales,
                                  bias, in_features)


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


@register_cuda(qgemm._dynamic_op)
def _(x, packed, w_scale, colsum, bias):
    return _u8s8(x, packed, w_scale, colsum, bias, False, 1.0, 0)


@register_cuda(qgemm._static_op)
def _(x, packed, w_scale, colsum, bias, activation_scale, activation_zero_point):
    return _u8s8(x, packed, w_scale, colsum, bias, True, activation_scale, activation_zero_point)


@register_cuda(qgemm._weight_only_op)
def _(x, packed, w_scale, bias):
    n, k = w_scale.shape[0], x.shape[-1]
    x2 = _float_rows(x, k)
    m = x2.shape[0]
    y = torch.empty((m, n), dtype=torch.float32, device=x.device)
    _native.cuda.qlinear_weight_only(x2.data_ptr(), m, k, k, packed.data_ptr(), w_scale.data_ptr(),
                                     0 if bias is None else bias.data_ptr(), n, y.data_ptr(), n, _stream(x))
    return y.reshape(*x.shape[:-1], n).to(x.dtype)
