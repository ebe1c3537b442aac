"""Sparse linear: ``Y[..., out] = X[..., in] @ W.T + b`` with ``W`` packed as
compressed sparse rows (see ``csrc/include/slimtorch/spmm.h`` for the layout).

:class:`SparseWeight` holds the packed tensors (``row_ptr`` int64,
``col_idx`` int16 holding unsigned 16-bit columns when ``in_features <= 65536``
else int32, ``values`` float32/float16/bfloat16 or int8 with per-output-row
float32 ``row_scales``) and validates them once, when it is built;
:func:`sparse_linear` runs the product. Activations may be float32, float16 or
bfloat16; the kernels compute in float32 and return ``x.dtype``.
"""

from __future__ import annotations

import math

import torch

from slimtorch import _native, reference
from slimtorch._checks import FLOAT_DTYPES, check_float_tensor, check_tensor
from slimtorch.ops.quantize import choose_qparams, quantize

__all__ = ["SparseWeight", "sparse_linear"]

VALUE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.int8)
# Value-type codes shared with csrc/include/slimtorch/spmm.h (enum SparseValues).
_VALUE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.int8: 3}
# Widest in_features whose column indices fit 16 unsigned bits.
MAX_NARROW_COLS = 1 << 16


def value_code(dtype: torch.dtype) -> int:
    return _VALUE_CODES[dtype]


# ---- torch.library ops (kernels assume validated arguments) ----------------

@torch.library.custom_op("slimtorch::sparse_linear", mutates_args=())
def _sparse_linear_op(
    x: torch.Tensor,
    row_ptr: torch.Tensor,
    col_idx: torch.Tensor,
    values: torch.Tensor,
    row_scales: torch.Tensor | None,
    bias: torch.Tensor | None,
    in_features: int,
    bitmap: torch.Tensor | None = None,
) -> torch.Tensor:
    _native.warn_fallback("sparse_linear", x.device)
    return reference.sparse_linear(x, row_ptr, col_idx, values, row_scales, bias, in_features)


@_sparse_linear_op.register_fake
def _(x, row_ptr, col_idx, values, row_scales, bias, in_features, bitmap=None):
    return x.new_empty((*x.shape[:-1], row_ptr.shape[0] - 1))


def _as_float_matrix(t: torch.Tensor, width: int) -> torch.Tensor:
    """``t`` as a float32 ``[rows, width]`` matrix with unit column stride and
    a row stride the kernels accept (a copy only where needed)."""
    m = t.reshape(math.prod(t.shape[:-1]), width)  # not -1: width may be 0
    if m.dtype != torch.float32:
        m = m.float()
    if m.stride(-1) != 1 or (m.shape[0] > 1 and m.stride(0) < width):
        m = m.contiguous()
    return m


@_sparse_linear_op.register_kernel("cpu")
def _(x, row_ptr, col_idx, values, row_scales, bias, in_features, bitmap=None):
    if _native.cpu is None:
        _native.warn_fallback("sparse_linear", x.device)
        return reference.sparse_linear(x, row_ptr, col_idx, values, row_scales, bias, in_features)
    out_features = row_ptr.shape[0] - 1
    x2 = _as_float_matrix(x, in_features)
    batch = x2.shape[0]
    y = torch.empty((batch, out_features), dtype=torch.float32)
    b = None if bias is None else bias.float().contiguous()
    _native.cpu.spmm_forward(
        out_features, in_features, row_ptr.data_ptr(), col_idx.data_ptr(),
        col_idx.dtype == torch.int32, values.data_ptr(), _VALUE_CODES[values.dtype],
        0 if row_scales is None else row_scales.data_ptr(), values.shape[0],
        0 if bitmap is None else bitmap.data_ptr(),
        x2.data_ptr(), batch, x2.stride(0) if batch > 1 else in_features,
        0 if b is None else b.data_ptr(), y.data_ptr(), _native.num_threads(),
    )
    return y.reshape(*x.shape[:-1], out_features).to(x.dtype)


@torch.library.custom_op("slimtorch::sparse_linear_grad_input", mutates_args=())
def _grad_input_op(
    grad_y: torch.Tensor,
    row_ptr: torch.Tensor,
    col_idx: torch.Tensor,
    values: torch.Tensor,
    row_scales: torch.Tensor | None,
    in_features: int,
) -> torch.Tensor:
    return reference.sparse_linear_grad_input(grad_y, row_ptr, col_idx, values, row_scales, in_features)


@_grad_input_op.register_fake
def _(grad_y, row_ptr, col_idx, values, row_scales, in_features):
    return grad_y.new_empty((*grad_y.shape[:-1], in_features))


@_grad_input_op.register_kernel("cpu")
def _(grad_y, row_ptr, col_idx, values, row_scales, in_features):
    if _native.cpu is None:
        return reference.sparse_linear_grad_input(grad_y, row_ptr, col_idx, values, row_scales, in_features)
    out_features = row_ptr.shape[0] - 1
    g = grad_y.reshape(math.prod(grad_y.shape[:-1]), out_features).float().contiguous()
    grad_x = torch.empty((g.shape[0], in_features), dtype=torch.float32)
    _native.cpu.spmm_backward_input(
        out_features, in_features, row_ptr.data_ptr(), col_idx.data_ptr(),
        col_idx.dtype == torch.int32, values.data_ptr(), _VALUE_CODES[values.dtype],
        0 if row_scales is None else row_scales.data_ptr(),
        g.data_ptr(), g.shape[0], grad_x.data_ptr(), _native.num_threads(),
    )
    return grad_x.reshape(*grad_y.shape[:-1], in_features).to(grad_y.dtype)


def _setup_context(ctx, inputs, output):
    x, row_ptr, col_idx, values, row_scales, bias, in_features, _ = inputs
    ctx.save_for_backward(row_ptr, col_idx, values, row_scales)
    ctx.in_features = in_features
    ctx.bias_dtype = None if bias is None else bias.dtype


def _backward(ctx, grad):
    # The weight is frozen: gradients flow to x and to the bias only.
    row_ptr, col_idx, values, row_scales = ctx.saved_tensors
    grad_x = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_x = _grad_input_op(grad, row_ptr, col_idx, values, row_scales, ctx.in_features)
    if ctx.needs_input_grad[5]:
        grad_bias = grad.reshape(math.prod(grad.shape[:-1]), grad.shape[-1]).sum(0).to(ctx.bias_dtype)
    return grad_x, None, None, None, None, grad_bias, None, None


_sparse_linear_op.register_autograd(_backward, setup_context=_setup_context)


if _native.cuda is not None:

    @_sparse_linear_op.register_kernel("cuda")
    def _(x, row_ptr, col_idx, values, row_scales, bias, in_features, bitmap=None):
        out_features = row_ptr.shape[0] - 1
        x2 = _as_float_matrix(x, in_features)
        batch = x2.shape[0]
        y = torch.empty((batch, out_features), dtype=torch.float32, device=x.device)
        b = None if bias is None else bias.float().contiguous()
        _native.cuda.spmm_forward(
            out_features, in_features, row_ptr.data_ptr(), col_idx.data_ptr(),
            col_idx.dtype == torch.int32, values.data_ptr(), _VALUE_CODES[values.dtype],
            0 if row_scales is None else row_scales.data_ptr(),
            x2.data_ptr(), batch, x2.stride(0) if batch > 1 else in_features,
            0 if b is None else b.data_ptr(), y.data_ptr(),
            torch.cuda.current_stream(x.device).cuda_stream,
        )
        return y.reshape(*x.shape[:-1], out_features).to(x.dtype)


# ---- the packed weight ----------------------------------------------------------

class SparseWeight:
    """A weight matrix ``[out_features, in_features]`` packed as compressed
    sparse rows. Construction validates every field (O(nnz), once), so the
    kernels never see an index out of range; treat the tensors as read-only
    afterwards.

    Args:
        row_ptr: int64 ``[out_features + 1]``; ``row_ptr[0] == 0``,
            non-decreasing, ``row_ptr[-1] == nnz``.
        col_idx: ``[nnz]`` column of each value: int16 (read as unsigned
            16-bit, so columns up to 65535) when ``in_features <= 65536``,
            or int32. Ascending within a row is recommended (not required).
        values: ``[nnz]`` float32, float16, bfloat16, or int8.
        row_scales: float32 ``[out_features]`` (finite) for int8 values, else None.
        in_features: number of columns.

    Attribute ``bitmap`` (derived, read-only): the column bitmap of the
    AVX-512 batch-1 kernel (see ``csrc/include/slimtorch/spmm.h``), built
    here when the density is at least ``BITMAP_MIN_DENSITY`` and the columns
    ascend within each row, else None. It is never saved.
    """

    __slots__ = ("row_ptr", "col_idx", "values", "row_scales", "in_features", "out_features", "bitmap")

    def __init__(
        self,
        row_ptr: torch.Tensor,
        col_idx: torch.Tensor,
        values: torch.Tensor,
        row_scales: torch.Tensor | None,
        in_features: int,
    ) -> None:
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 0:
            raise ValueError(f"in_features: expected a non-negative int, got {in_features!r}")
        check_tensor("row_ptr", row_ptr, (torch.int64,))
        check_tensor("col_idx", col_idx, (torch.int16, torch.int32))
        check_tensor("values", values, VALUE_DTYPES)
        for name, t in (("row_ptr", row_ptr), ("col_idx", col_idx), ("values", values)):
            if t.dim() != 1:
                raise ValueError(f"{name}: expected a 1-d tensor, got shape {tuple(t.shape)}")
            if t.device != row_ptr.device:
                raise ValueError(f"{name}: expected device {row_ptr.device} (that of row_ptr), got {t.device}")
        if row_ptr.numel() < 1:
            raise ValueError("row_ptr: expected at least one element (out_features + 1)")
        nnz = values.numel()
        if col_idx.numel() != nnz:
            raise ValueError(f"col_idx: expected {nnz} elements (one per value), got {col_idx.numel()}")
        if col_idx.dtype == torch.int16 and in_features > MAX_NARROW_COLS:
            raise ValueError(f"col_idx: int16 indices hold at most {MAX_NARROW_COLS} columns; use int32 for in_features={in_features}")
        steps = row_ptr[1:] - row_ptr[:-1]
        if int(row_ptr[0]) != 0 or int(row_ptr[-1]) != nnz or (steps.numel() and bool((steps < 0).any())):
            raise ValueError(f"row_ptr: expected non-decreasing offsets from 0 to nnz={nnz}")
        cols = (col_idx.int() & 0xFFFF if col_idx.dtype == torch.int16 else col_idx).long()
        if nnz:
            low, high = int(cols.min()), int(cols.max())
            if low < 0 or high >= in_features:
                raise ValueError(f"col_idx: expected columns in [0, {in_features}), got [{low}, {high}]")
        out_features = row_ptr.numel() - 1
        if values.dtype == torch.int8:
            if row_scales is None:
                raise ValueError("row_scales: int8 values need float32 row_scales of shape [out_features]")
            check_tensor("row_scales", row_scales, (torch.float32,))
            if row_scales.shape != (out_features,) or row_scales.device != row_ptr.device:
                raise ValueError(f"row_scales: expected shape ({out_features},) on {row_ptr.device}, got {tuple(row_scales.shape)} on {row_scales.device}")
            if not bool(torch.isfinite(row_scales).all()):
                raise ValueError("row_scales: expected finite values")
            row_scales = row_scales.contiguous()
        elif row_scales is not None:
            raise ValueError(f"row_scales: expected None for {values.dtype} values (only int8 values are scaled)")
        self.row_ptr = row_ptr.contiguous()
        self.col_idx = col_idx.contiguous()
        self.values = values.contiguous()
        self.row_scales = row_scales
        self.in_features = in_features
        self.out_features = out_features
        self.bitmap = _column_bitmap(self.row_ptr, cols, out_features, in_features)

    @classmethod
    def from_dense(cls, weight: torch.Tensor, values_dtype: torch.dtype | None = None) -> SparseWeight:
        """Packs the nonzeros of a dense ``[out, in]`` float weight.

        ``values_dtype``: None keeps ``weight.dtype``; float32/float16/bfloat16
        converts; int8 quantizes each row symmetrically (``q = round(w / s)``
        with ``s = max|w_row| / 127``), keeping the sparsity pattern of ``weight``.
        """
        check_float_tensor("weight", weight)
        if weight.dim() != 2:
            raise ValueError(f"weight: expected a 2-d [out_features, in_features] tensor, got shape {tuple(weight.shape)}")
        values_dtype = weight.dtype if values_dtype is None else values_dtype
        if values_dtype not in VALUE_DTYPES:
            raise TypeError(f"values_dtype: expected one of float32, float16, bfloat16, int8, got {values_dtype}")
        out_features, in_features = weight.shape
        # The pattern is that of the given weight (NaN counts as nonzero); a
        # value that rounds to zero in a narrower values_dtype is still stored.
        keep = weight != 0
        rows, cols = keep.nonzero(as_tuple=True)  # row-major: columns ascend within a row
        counts = keep.sum(1)
        row_ptr = torch.zeros(out_features + 1, dtype=torch.int64, device=weight.device)
        torch.cumsum(counts, 0, out=row_ptr[1:])
        index_dtype = torch.int16 if in_features <= MAX_NARROW_COLS else torch.int32
        # Columns >= 32768 wrap to negative int16; the kernels read the bits unsigned.
        col_idx = torch.where(cols >= 32768, cols - 65536, cols) if index_dtype == torch.int16 else cols
        col_idx = col_idx.to(index_dtype)
        picked = weight[rows, cols]
        if values_dtype == torch.int8:
            values, row_scales = _quantize_rows_int8(weight, keep)
        else:
            values, row_scales = picked.to(values_dtype), None
        return cls(row_ptr, col_idx, values, row_scales, in_features)

    @property
    def nnz(self) -> int:
        return self.values.numel()

    @property
    def density(self) -> float:
        total = self.in_features * self.out_features
        return self.nnz / total if total else 0.0

    def to_dense(self) -> torch.Tensor:
        """The float32 ``[out_features, in_features]`` matrix (int8 dequantized)."""
        return reference.sparse_to_dense(self.row_ptr, self.col_idx, self.values, self.row_scales, self.in_features)


# The bitmap kernel walks every 16-column block of a row, the gather kernel
# only the stored values. Measured at batch 1 (2 threads, AVX-512, Zen 4), bitmap
# over gather: density 0.4 x1.15-2.2 (fp32) x1.5 (int8); 0.3: x0.95 on
# 4096x4096, x1.7 on 768x3072 / 3072x768 (fp32), x1.1 (int8); 0.2: x0.8-1.4;
# 0.1: x0.4-0.9. Only the AVX-512 batch-1 path uses it.
BITMAP_MIN_DENSITY = 0.3


def _column_bitmap(row_ptr: torch.Tensor, cols: torch.Tensor, rows: int, in_features: int) -> torch.Tensor | None:
    """int16 ``[rows, ceil(in_features / 16)]``: bit j of block b set iff the
    row stores column 16b + j (see spmm.h); None where it would not pay or
    where a row's columns are not strictly ascending (values must be in
    column order for the bitmap kernel)."""
    nnz = cols.numel()
    if rows == 0 or in_features == 0 or nnz < BITMAP_MIN_DENSITY * rows * in_features:
        return None
    counts = row_ptr[1:] - row_ptr[:-1]
    row_of = torch.repeat_interleave(torch.arange(rows, device=cols.device), counts)
    if nnz > 1 and bool(((cols[1:] <= cols[:-1]) & (row_of[1:] == row_of[:-1])).any()):
        return None
    blocks = (in_features + 15) // 16
    flat = torch.zeros(rows * blocks, dtype=torch.int32, device=cols.device)
    # Each (row, column) appears once, so adding the bits is or-ing them.
    flat.index_add_(0, row_of * blocks + cols // 16, (1 << (cols % 16)).int())
    return torch.where(flat >= 32768, flat - 65536, flat).to(torch.int16).reshape(rows, blocks)


def _quantize_rows_int8(weight: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-row int8 of the kept values, by the project's
    quantize ops (``choose_qparams``/``quantize`` along axis 0: scale =
    ``max|w_row| / 127``, zero point 0, round half to even; an all-zero row
    gets scale 2**-23). Returns the int8 values where ``keep`` (row-major,
    the order of ``keep.nonzero()``) and the float32 row scales."""
    if weight.numel() and not bool(torch.isfinite(weight).all()):
        raise ValueError("weight: int8 values need a finite weight (found NaN or Inf)")
    if weight.numel() == 0:
        scales = torch.full((weight.shape[0],), torch.finfo(torch.float32).eps, device=weight.device)
        return torch.empty(0, dtype=torch.int8, device=weight.device), scales
    scales, zero_points = choose_qparams(weight, axis=0, symmetric=True)
    q = quantize(weight, scales, zero_points, axis=0)
    return q[keep], scales.float().contiguous()


# ---- public API ----------------------------------------------------------------

def sparse_linear(x: torch.Tensor, weight: SparseWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ W.T + bias`` for a packed sparse ``W``, over any leading dims.

    Args:
        x: float32/float16/bfloat16 ``[..., in_features]``, any strides, on
            the device of ``weight``.
        weight: a :class:`SparseWeight`.
        bias: None or a ``[out_features]`` tensor of ``x``'s dtype and device.

    Returns:
        ``[..., out_features]`` in ``x.dtype`` (computed in float32).
        Differentiable with respect to ``x`` and ``bias`` (the weight is frozen).
    """
    check_float_tensor("x", x)
    if not isinstance(weight, SparseWeight):
        raise TypeError(f"weight: expected a slimtorch.ops.SparseWeight, got {type(weight).__name__}")
    if x.dim() < 1 or x.shape[-1] != weight.in_features:
        raise ValueError(f"x: expected shape [..., {weight.in_features}], got {tuple(x.shape)}")
    if x.device != weight.values.device:
        raise ValueError(f"x: expected device {weight.values.device} (that of weight), got {x.device}")
    if bias is not None:
        check_tensor("bias", bias, FLOAT_DTYPES)
        if bias.dtype != x.dtype:
            raise TypeError(f"bias: expected dtype {x.dtype} (that of x), got {bias.dtype}")
        if bias.shape != (weight.out_features,):
            raise ValueError(f"bias: expected shape ({weight.out_features},), got {tuple(bias.shape)}")
        if bias.device != x.device:
            raise ValueError(f"bias: expected device {x.device} (that of x), got {bias.device}")
    return _sparse_linear_op(x, weight.row_ptr, weight.col_idx, weight.values, weight.row_scales, bias,
                             weight.in_features, weight.bitmap)
