"""Sparse linear: ``Y[..., out] = X[..., in] @ W.T + b`` with ``W`` packed as
compressed sparse rows (see ``csrc/include/slimtorch/spmm.h`` for the layout).

:class:`SparseWeight` holds the packed tensors (``row_ptr`` int64,
``col_idx`` int16 holding unsigned 16-bit columns when ``in_features <= 65536``
else int32, ``values`` float32/float16/bfloat16 or int8 with per-output-row
float32 ``row_scales``) and validates them once, when it is built;
:func:`sparse_linear` runs the product and :func:`sparse_linear_dynamic` the
int8 product with activations quantized per row on the fly. Activations may
be float32, float16 or bfloat16; the kernels compute in float32 and return
``x.dtype``.

This module holds the op schemas and fake implementations; the kernels are
registered by :mod:`slimtorch.ops.backends`.
"""

from __future__ import annotations

import functools
import json
import math
from importlib import resources

import torch

from slimtorch import _native
from slimtorch._checks import FLOAT_DTYPES, check_float_tensor, check_int, check_tensor
from slimtorch.ops._dispatch import eager_cpu, eager_cpu_linear
from slimtorch.ops.qgemm import PackedInt8Weight, qgemm_fake_quantize_rows, qgemm_pack_weight
from slimtorch.ops.quantize import choose_qparams, quantize

__all__ = ["VALUE_DTYPES", "SparseWeight", "SparseBatches", "sparse_linear", "sparse_linear_dynamic",
           "sparse_batches", "sparse_int8_fallback"]

VALUE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.int8)
# Value-type codes shared with csrc/include/slimtorch/spmm.h (enum SparseValues).
VALUE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.int8: 3}
# Widest in_features whose column indices fit 16 unsigned bits.
MAX_NARROW_COLS = 1 << 16
# Below this many input rows the int8_dynamic kernel (64-row tiles) does not
# pay: the codes are dequantized and the float kernel runs (same values up to
# float rounding).
DYNAMIC_MIN_BATCH = 32


def value_code(dtype: torch.dtype) -> int:
    return VALUE_CODES[dtype]


# ---- op schemas and fake implementations (kernels assume validated arguments) ----

@torch.library.custom_op("slimtorch::sparse_linear", mutates_args=())
def _sparse_linear_op(x: torch.Tensor, row_ptr: torch.Tensor, col_idx: torch.Tensor, values: torch.Tensor,
                      row_scales: torch.Tensor | None, bias: torch.Tensor | None, in_features: int,
                      bitmap: torch.Tensor | None = None) -> torch.Tensor:
    raise NotImplementedError  # replaced by the registered reference fallback


@torch.library.custom_op("slimtorch::sparse_linear_dynamic", mutates_args=())
def _sparse_linear_dynamic_op(x: torch.Tensor, row_ptr: torch.Tensor, col_idx: torch.Tensor, values: torch.Tensor,
                              row_scales: torch.Tensor, bias: torch.Tensor | None, in_features: int,
                              bitmap: torch.Tensor | None = None) -> torch.Tensor:
    raise NotImplementedError  # replaced by the registered reference fallback


def _linear_fake(x: torch.Tensor, row_ptr: torch.Tensor, *_) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], row_ptr.shape[0] - 1))


for _op in (_sparse_linear_op, _sparse_linear_dynamic_op):
    _op.register_fake(_linear_fake)


@torch.library.custom_op("slimtorch::sparse_linear_grad_input", mutates_args=())
def _grad_input_op(grad_y: torch.Tensor, row_ptr: torch.Tensor, col_idx: torch.Tensor, values: torch.Tensor,
                   row_scales: torch.Tensor | None, in_features: int) -> torch.Tensor:
    raise NotImplementedError  # replaced by the registered reference fallback


@_grad_input_op.register_fake
def _(grad_y, row_ptr, col_idx, values, row_scales, in_features):
    return grad_y.new_empty((*grad_y.shape[:-1], in_features))


def _setup_context(ctx, inputs, output):
    _x, row_ptr, col_idx, values, row_scales, bias, in_features = inputs[:7]
    ctx.save_for_backward(row_ptr, col_idx, values, row_scales)
    ctx.in_features = in_features
    ctx.bias_dtype = None if bias is None else bias.dtype
    ctx.n_inputs = len(inputs)


def _backward(ctx, grad):
    # The weight is frozen: gradients flow to x and to the bias only (straight
    # through the activation rounding of the dynamic op).
    row_ptr, col_idx, values, row_scales = ctx.saved_tensors
    grad_x = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_x = _grad_input_op(grad, row_ptr, col_idx, values, row_scales, ctx.in_features)
    if ctx.needs_input_grad[5]:
        grad_bias = grad.reshape(math.prod(grad.shape[:-1]), grad.shape[-1]).sum(0).to(ctx.bias_dtype)
    return (grad_x, None, None, None, None, grad_bias) + (None,) * (ctx.n_inputs - 6)


_sparse_linear_op.register_autograd(_backward, setup_context=_setup_context)
_sparse_linear_dynamic_op.register_autograd(_backward, setup_context=_setup_context)


# ---- the packed weight ----------------------------------------------------------

class SparseWeight:
    """A weight matrix ``[out_features, in_features]`` packed as compressed
    sparse rows, ready for the kernels. Construction validates every field
    (O(nnz), once; offsets compared, never subtracted, so no value can
    overflow), so the kernels never see an index out of range. The object
    keeps every tensor a kernel reads; treat it as read-only.

    Args:
        row_ptr: int64 ``[out_features + 1]``; ``row_ptr[0] == 0``,
            non-decreasing, ``row_ptr[-1] == nnz``.
        col_idx: ``[nnz]`` column of each value: int16 (read as unsigned
            16-bit, so columns up to 65535) when ``in_features <= 65536``,
            or int32. Ascending within a row is recommended (not required).
        values: ``[nnz]`` float32, float16, bfloat16, or int8.
        row_scales: float32 ``[out_features]`` (finite, > 0) for int8 values, else None.
        in_features: number of columns.

    Attribute ``bitmap`` (derived, read-only): the column bitmap of the
    AVX-512 batch-1 kernel (see ``csrc/include/slimtorch/spmm.h``), built
    here when the density is at least ``BITMAP_MIN_DENSITY`` (of the values'
    dtype) and the columns
    ascend within each row, else None. It is never saved.
    """

    __slots__ = (
        "_bias_shape",
        "_native_args",
        "bitmap",
        "col_idx",
        "in_features",
        "out_features",
        "row_ptr",
        "row_scales",
        "values",
    )

    def __init__(self, row_ptr: torch.Tensor, col_idx: torch.Tensor, values: torch.Tensor,
                 row_scales: torch.Tensor | None, in_features: int) -> None:
        in_features = check_int("in_features", in_features, minimum=0)
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
            raise ValueError(f"col_idx: int16 indices hold at most {MAX_NARROW_COLS} columns; "
                             f"use int32 for in_features={in_features}")
        row_ptr = row_ptr.detach().contiguous()
        _check_offsets(row_ptr, nnz)
        cols = (col_idx.detach().int() & 0xFFFF if col_idx.dtype == torch.int16 else col_idx.detach()).long()
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
                raise ValueError(f"row_scales: expected shape ({out_features},) on {row_ptr.device}, "
                                 f"got {tuple(row_scales.shape)} on {row_scales.device}")
            if not bool((torch.isfinite(row_scales) & (row_scales > 0)).all()):
                raise ValueError("row_scales: expected finite values > 0")
            row_scales = row_scales.detach().contiguous()
        elif row_scales is not None:
            raise ValueError(f"row_scales: expected None for {values.dtype} values (only int8 values are scaled)")
        self.row_ptr = row_ptr
        self.col_idx = col_idx.detach().contiguous()
        self.values = values.detach().contiguous()
        self.row_scales = row_scales
        self.in_features = in_features
        self.out_features = out_features
        self.bitmap = _column_bitmap(self.row_ptr, cols, out_features, in_features, self.values.dtype)
        self._bias_shape = (out_features,)
        self._native_args = self._eager_args()

    def _eager_args(self) -> tuple | None:
        """The kernel arguments of the eager CPU path, kept next to the
        tensors they point into (this object keeps those tensors alive)."""
        if not eager_cpu(self.row_ptr, self.col_idx, self.values, self.row_scales, self.bitmap):
            return None
        return (
            self.out_features, self.in_features, self.row_ptr.data_ptr(), self.col_idx.data_ptr(),
            self.col_idx.dtype == torch.int32, self.values.data_ptr(), VALUE_CODES[self.values.dtype],
            0 if self.row_scales is None else self.row_scales.data_ptr(), self.values.numel(),
            0 if self.bitmap is None else self.bitmap.data_ptr(),
        )

    def __reduce__(self):
        # Rebuilt (and validated) from its tensors: the eager arguments are
        # addresses and must never travel with a copy.
        return SparseWeight, (self.row_ptr, self.col_idx, self.values, self.row_scales, self.in_features)

    def __setattr__(self, name: str, value: object) -> None:
        # Read-only once built: the fields were validated together and the
        # eager arguments point into them. Dropping the bitmap is allowed
        # (the gather kernels then run).
        try:
            object.__getattribute__(self, "_native_args")
        except AttributeError:
            object.__setattr__(self, name, value)
            return
        if name == "bitmap" and value is None:
            object.__setattr__(self, "bitmap", None)
            object.__setattr__(self, "_native_args", self._eager_args())
            return
        raise AttributeError(f"SparseWeight.{name} is read-only; build a new SparseWeight")

    @classmethod
    def from_dense(cls, weight: torch.Tensor, values_dtype: torch.dtype | None = None) -> SparseWeight:
        """Packs the nonzeros of a dense ``[out, in]`` float weight.

        ``values_dtype``: None keeps ``weight.dtype``; float32/float16/bfloat16
        converts; int8 quantizes each row symmetrically (``q = round(w / s)``
        with ``s = max|w_row| / 127``), keeping the sparsity pattern of ``weight``.
        """
        check_float_tensor("weight", weight)
        if weight.dim() != 2:
            raise ValueError("weight: expected a 2-d [out_features, in_features] tensor, "
                             f"got shape {tuple(weight.shape)}")
        values_dtype = weight.dtype if values_dtype is None else values_dtype
        if values_dtype not in VALUE_DTYPES:
            raise TypeError(f"values_dtype: expected one of float32, float16, bfloat16, int8, got {values_dtype}")
        weight = weight.detach()
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
        if values_dtype == torch.int8:
            values, row_scales = _quantize_rows_int8(weight, keep)
        else:
            values, row_scales = weight[rows, cols].to(values_dtype), None
        return cls(row_ptr, col_idx, values, row_scales, in_features)

    @property
    def nnz(self) -> int:
        return self.values.numel()

    @property
    def density(self) -> float:
        total = self.in_features * self.out_features
        return self.nnz / total if total else 0.0

    def _coordinates(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Row and column (int64) of every stored value."""
        counts = self.row_ptr[1:] - self.row_ptr[:-1]
        rows = torch.repeat_interleave(torch.arange(self.out_features, device=self.row_ptr.device), counts)
        cols = self.col_idx.long() & 0xFFFF if self.col_idx.dtype == torch.int16 else self.col_idx.long()
        return rows, cols

    def to_dense(self) -> torch.Tensor:
        """The float32 ``[out_features, in_features]`` matrix (int8 values
        multiplied by their row's scale)."""
        rows, cols = self._coordinates()
        values = self.values.float()
        if self.row_scales is not None:
            values = values * self.row_scales[rows]
        dense = torch.zeros(self.out_features, self.in_features, dtype=torch.float32, device=self.values.device)
        dense[rows, cols] = values
        return dense

    def to_packed_int8(self) -> PackedInt8Weight:
        """The same int8 weights and row scales as a dense packed weight for
        the qgemm ops (int8 values only): the int8 tile kernels then compute
        this layer's product with zeros in place of the pruned weights."""
        if self.row_scales is None:
            raise ValueError(f"values: expected int8 values, got {self.values.dtype}")
        rows, cols = self._coordinates()
        q = torch.zeros(self.out_features, self.in_features, dtype=torch.int8, device=self.values.device)
        q[rows, cols] = self.values
        return qgemm_pack_weight(q, self.row_scales)


def _check_offsets(row_ptr: torch.Tensor, nnz: int) -> None:
    """``row_ptr`` starts at 0, ends at nnz and never decreases (so every
    offset lies in [0, nnz]). Neighbours are compared, never subtracted:
    differences of int64 offsets can wrap around."""
    if eager_cpu(row_ptr):
        bad = _native.cpu.spmm_check_offsets(row_ptr.data_ptr(), row_ptr.numel() - 1, nnz)
    elif int(row_ptr[0]) != 0 or int(row_ptr[-1]) != nnz:
        bad = 0
    else:
        bad = 0 if bool((row_ptr[1:] < row_ptr[:-1]).any()) else -1
    if bad >= 0:
        raise ValueError(f"row_ptr: expected non-decreasing offsets from 0 to nnz={nnz}")


# The bitmap kernel walks every 16-column block of a row, the gather kernel
# only the stored values, so the bitmap pays only for dense enough rows. Per
# value dtype: float32 values expand straight from memory, and so do
# bfloat16 ones with AVX512_VBMI2; the others are loaded, widened, then
# expanded (batch 1, Zen 4, 768x768 to 4096x4096: float32 at 20% density
# 1.2-1.3x the gather kernel, at 15% 0.8-1.0x; bfloat16 with VBMI2 at 20%
# 1.1-1.2x; the others at 30% 1.13-1.24x, at 25% 0.97-1.07x). Only the
# AVX-512 batch-1 path uses it. examples/edge/chain.cpp follows this rule.
BITMAP_MIN_DENSITY = {
    torch.float32: 0.2,
    torch.float16: 0.3,
    torch.bfloat16: 0.2 if _native.cpu is not None and _native.cpu.has_avx512_vbmi2() else 0.3,
    torch.int8: 0.3,
}


def _column_bitmap(row_ptr: torch.Tensor, cols: torch.Tensor, rows: int, in_features: int,
                   values_dtype: torch.dtype) -> torch.Tensor | None:
    """int16 ``[rows, ceil(in_features / 16)]``: bit j of block b set iff the
    row stores column 16b + j (see spmm.h); None where it would not pay or
    where a row's columns are not strictly ascending (values must be in
    column order for the bitmap kernel)."""
    nnz = cols.numel()
    if rows == 0 or in_features == 0 or nnz < BITMAP_MIN_DENSITY[values_dtype] * rows * in_features:
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
    ``max|w_row| / 127`` with the quantize family's minimum scale, zero point
    0, round half to even). Returns the int8 values where ``keep`` (row-major,
    the order of ``keep.nonzero()``) and the float32 row scales."""
    if weight.numel() and not bool(torch.isfinite(weight).all()):
        raise ValueError("weight: int8 values need a finite weight (found NaN or Inf)")
    scales, zero_points = choose_qparams(weight, axis=0, symmetric=True)
    if weight.numel() == 0:
        return torch.empty(0, dtype=torch.int8, device=weight.device), scales.float().contiguous()
    q = quantize(weight, scales, zero_points, axis=0)
    return q[keep], scales.float().contiguous()


# ---- dense fallback: the break-even densities -----------------------------------------

@functools.cache
def _break_even_data() -> dict:
    text = resources.files("slimtorch.data").joinpath("break_even.json").read_text()
    return json.loads(text)


def _break_even_tables(device: torch.device) -> dict:
    """The tables of the ISA path that runs on ``device`` (see slimtorch.data)."""
    data = _break_even_data()
    paths, aliases = data["paths"], data.get("aliases", {})
    if device.type != "cpu":
        path = data["default"]
    else:
        path = "scalar" if _native.cpu is None else _native.cpu.active_isa()
    if path not in paths:
        path = aliases.get(path, data["default"])
    return paths.get(path, paths[data["default"]])


_CPU = torch.device("cpu")
# ISA paths whose dense fallback for int8 values is the int8 tile kernel of
# the qgemm ops (the same int8 weights, zeros included) rather than F.linear
# on the dequantized weight; their break-even tables are measured against it.
_INT8_TILE_FALLBACK_PATHS = ("amx",)


def sparse_int8_fallback(device: torch.device = _CPU) -> str:
    """What a ``SparseLinear`` with int8 values on ``device`` runs above its
    break-even batch: ``"qgemm"`` (the dense int8 kernels, where the active
    ISA path has int8 tiles) or ``"linear"`` (``F.linear`` on the dequantized
    weight; an ``int8_dynamic`` layer then always stays sparse)."""
    on_tiles = device.type == "cpu" and _native.cpu is not None and \
        _native.cpu.active_isa() in _INT8_TILE_FALLBACK_PATHS
    return "qgemm" if on_tiles else "linear"


class SparseBatches:
    """The batch sizes (rows of ``x``, counting every leading dimension) at
    which a ``SparseLinear`` runs its sparse kernel rather than its dense
    fallback: ``rows in batches``. Built from inclusive ``(first, last)``
    ranges, ascending and apart (``last`` may be ``math.inf``);
    :data:`SparseBatches.EVERY` and :data:`SparseBatches.NONE` are the two
    ends. ``str()`` gives e.g. ``"0-16, 129+"``."""

    __slots__ = ("_ranges",)
    EVERY: SparseBatches
    NONE: SparseBatches

    def __init__(self, ranges: tuple[tuple[int, float], ...] = ()) -> None:
        checked: list[tuple[int, float]] = []
        for i, pair in enumerate(ranges):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(f"ranges[{i}]: expected a (first, last) pair, got {pair!r}")
            if checked and checked[-1][1] == math.inf:
                raise ValueError(f"ranges[{i}]: expected nothing after a range that ends at math.inf")
            # Ascending and apart: adjacent ranges would be one range.
            first = check_int(f"ranges[{i}][0]", pair[0], minimum=int(checked[-1][1]) + 2 if checked else 0)
            last = pair[1] if isinstance(pair[1], float) and pair[1] == math.inf else check_int(
                f"ranges[{i}][1]", pair[1], minimum=first)
            checked.append((first, last))
        self._ranges = tuple(checked)

    @property
    def ranges(self) -> tuple[tuple[int, float], ...]:
        """The inclusive ``(first, last)`` ranges (read-only: the shared
        :data:`EVERY` and :data:`NONE` must stay what they say)."""
        return self._ranges

    def __contains__(self, rows: int) -> bool:
        # A plain loop over a handful of ranges: torch.compile traces it
        # (it cannot trace bisect, a C function), and forward asks it.
        for first, last in self._ranges:
            if rows < first:
                return False
            if rows <= last:
                return True
        return False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SparseBatches) and self.ranges == other.ranges

    def __hash__(self) -> int:
        return hash(self.ranges)

    def __str__(self) -> str:
        if not self.ranges:
            return "none"
        return ", ".join(f"{first}+" if last == math.inf else str(first) if first == last else f"{first}-{last}"
                         for first, last in self.ranges)

    def __repr__(self) -> str:
        return f"SparseBatches({self.ranges})"


SparseBatches.EVERY = SparseBatches(((0, math.inf),))
SparseBatches.NONE = SparseBatches()


def sparse_batches(density: float, values_dtype: torch.dtype, weight_elements: int,
                   device: torch.device = _CPU, *, dynamic: bool = False) -> SparseBatches:
    """The batches (rows of x) at which the sparse kernel is measured faster
    than the layer's dense fallback with the same weights on this ISA path,
    from the shipped break-even data file ``slimtorch/data/break_even.json``.

    A table gives a density limit per measured batch. A measured batch runs
    sparse where the layer's density meets its limit; the batches between
    two measured ones where it meets both; those below the first and above
    the last where it meets that one. So a layer that loses at batch 1 but
    wins from 16 rows on still runs sparse there. ``dynamic``: the
    ``int8_dynamic`` kernels (every batch where no table was measured).
    bfloat16 values (whose dense fallback is a bf16 GEMM, on bf16 inputs)
    take the path's ``bf16`` table where it has one, else the float one.
    A density counts as a table's limit up to half a weight above it (the
    rounding of the pruned count)."""
    entry = _break_even_tables(device)
    size = "cached" if 4 * weight_elements <= entry["cached_weight_bytes"] else "large"
    kind = "int8_dynamic" if dynamic else "int8" if values_dtype == torch.int8 else "float"
    if kind == "float" and values_dtype == torch.bfloat16 and f"bf16/{size}" in entry["tables"]:
        kind = "bf16"
    table = entry["tables"].get(f"{kind}/{size}")
    if table is None:
        return SparseBatches.EVERY
    # The table's densities are those of layers pruned to them: a layer
    # pruned to density d holds d * weight_elements nonzeros rounded to a
    # whole number, up to half a weight more (768x3072 at 90% sparsity: 0.1000002).
    slack = 0.5 / max(weight_elements, 1) + 1e-12
    ranges: list[list[float]] = []

    def run_sparse(first: int, last: float) -> None:
        if first > last:
            return
        if ranges and ranges[-1][1] + 1 >= first:
            ranges[-1][1] = last
        else:
            ranges.append([first, last])

    previous, previous_wins = -1, True  # the batches below the first measured one follow it alone
    for batch, limit in table:
        wins = density <= limit + slack
        if wins:  # this batch, and those since the previous one if that won too
            run_sparse(previous + 1 if previous_wins else batch, batch)
        previous, previous_wins = batch, wins
    if previous_wins:
        run_sparse(previous + 1, math.inf)
    return SparseBatches(tuple((first, last) for first, last in ranges))


# ---- public API ----------------------------------------------------------------

def _check_linear_args(x: object, weight: object, bias: object) -> None:
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


def _eager(kernel, weight: SparseWeight, args: tuple, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The kernel on x's memory; ``weight`` (a local reference) keeps the
    tensors ``args`` points into alive until the kernel returns. Both kernels
    (float and dynamic int8) read and write a bfloat16 x in place (widened
    exactly, each output rounded once from its float32 value)."""
    if bias is not None and bias.dtype is not torch.float32:
        bias = bias.float()
    out_features, in_features = args[0], args[1]
    batch = x.numel() // in_features if in_features else math.prod(x.shape[:-1])
    # Two ints, x's dtype: cheaper than unpacking x.shape or torch.empty(..., dtype=).
    y = x.new_empty(batch, out_features)
    code = _native.BF16_CODE if x.dtype is torch.bfloat16 else 0
    kernel(*args, x.data_ptr(), code, batch, in_features, 0 if bias is None else bias.data_ptr(), y.data_ptr(), code,
           torch.get_num_threads())
    return y if x.dim() == 2 else y.view(*x.shape[:-1], out_features)


def _eager_args(x: torch.Tensor, weight: object, bias: torch.Tensor | None) -> tuple | None:
    """The weight's kernel arguments when the eager CPU path applies, else None."""
    if type(weight) is not SparseWeight:
        return None
    args = weight._native_args
    if args is None or not eager_cpu_linear(x, bias) or x.dim() < 1 or x.shape[-1] != args[1] \
            or (bias is not None and (bias.shape != weight._bias_shape or bias.dtype is not x.dtype)):
        return None
    return args


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
    args = _eager_args(x, weight, bias)
    if args is not None:
        return _eager(_native.cpu.spmm_forward, weight, args, x, bias)
    _check_linear_args(x, weight, bias)
    return _sparse_linear_op(x, weight.row_ptr, weight.col_idx, weight.values, weight.row_scales, bias,
                             weight.in_features, weight.bitmap)


def sparse_linear_dynamic(x: torch.Tensor, weight: SparseWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`sparse_linear` for int8 values with each row of ``x`` quantized
    on the fly to asymmetric uint8 (its own scale and zero point, as
    :func:`qgemm_quantize_rows`) and multiplied in exact integer arithmetic
    (AVX-512 VNNI kernel; elsewhere, and below ``DYNAMIC_MIN_BATCH`` rows, the
    quantized rows are dequantized and the float kernel runs). A row holding
    NaN or Inf gives a NaN output row. The gradient with respect to ``x``
    passes straight through the rounding."""
    args = _eager_args(x, weight, bias)
    if args is not None:
        if _dynamic_kernel_runs(weight, x.numel() // max(weight.in_features, 1)):
            return _eager(_native.cpu.spmm_forward_dynamic, weight, args, x, bias)
        # The dequantized rows stay float32, as the integer kernel's products
        # are exact: a half x dtype would round them.
        rows = qgemm_fake_quantize_rows(x.float())
        y = _eager(_native.cpu.spmm_forward, weight, args, rows, None if bias is None else bias.float())
        return y if x.dtype is torch.float32 else y.to(x.dtype)
    _check_linear_args(x, weight, bias)
    if weight.values.dtype != torch.int8:
        raise TypeError(f"weight: the dynamic sparse product needs int8 values, got {weight.values.dtype}")
    return _sparse_linear_dynamic_op(x, weight.row_ptr, weight.col_idx, weight.values, weight.row_scales, bias,
                                     weight.in_features, weight.bitmap)


def _dynamic_kernel_runs(weight: SparseWeight, batch: int) -> bool:
    """The integer kernel runs on this CPU and ISA setting (asked per call:
    the active ISA path can change) for this many rows."""
    return (batch >= DYNAMIC_MIN_BATCH and weight.in_features > 0 and weight.values.dtype == torch.int8
            and _native.cpu.spmm_dynamic_supported(weight.out_features, weight.in_features,
                                                   weight.col_idx.dtype == torch.int32, VALUE_CODES[torch.int8]))
