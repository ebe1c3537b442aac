"""sparse_linear / SparseWeight: kernels against an fp64 reference on every ISA path.

Tolerance (flash-attention style): the kernel's error against the fp64
product of the same stored weights may be at most 2x the error of torch's
own float32 ``F.linear`` on those weights, plus a floor of a few float32 ulps
of the result's scale for the cases where torch happens to be exact.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimtorch import _native, ops, reference
from slimtorch.ops import SparseWeight
from slimtorch.ops.spmm import BITMAP_MIN_DENSITY

VALUE_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int8]


def _pruned(out_f: int, in_f: int, sparsity: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=g)
    w[torch.rand(out_f, in_f, generator=g) < sparsity] = 0
    return w


def _x(shape, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype)


def assert_close_to_fp64(y: torch.Tensor, x: torch.Tensor, weight: SparseWeight, bias: torch.Tensor | None):
    dense = weight.to_dense()  # exactly the stored (dequantized) weight, float32
    b64 = None if bias is None else bias.double()
    exact = torch.nn.functional.linear(x.double(), dense.double(), b64)
    b32 = None if bias is None else bias.float()
    torch_err = ((torch.nn.functional.linear(x.float(), dense, b32).double() - exact).abs().max()
                 if exact.numel() else 0.0)
    err = (y.double() - exact).abs().max() if exact.numel() else 0.0
    floor = 4 * torch.finfo(torch.float32).eps * (float(exact.abs().max()) + 1.0) if exact.numel() else 0.0
    if y.dtype != torch.float32:  # output rounded to x's half type
        floor += float(exact.abs().max()) * torch.finfo(y.dtype).eps if exact.numel() else 0.0
    assert float(err) <= 2 * float(torch_err) + floor, (float(err), float(torch_err), floor)


# (in_features, out_features, batch, sparsity): 1s, odd sizes, vector widths
# +/- 1 (8/16 lanes, panels of 16/32/64), sparsity 0 and 1.
CASES = [
    (1, 1, 1, 0.0), (1, 5, 3, 0.5), (5, 1, 2, 0.5), (7, 3, 1, 1.0),  # ones, all-zero weight
    (17, 33, 1, 0.7), (17, 33, 2, 0.9),  # odd sizes
    (64, 64, 1, 0.0), (64, 64, 15, 0.5), (64, 64, 16, 0.9), (64, 64, 17, 0.9),  # a panel of 16 rows +/- 1
    (100, 31, 33, 0.8), (257, 65, 65, 0.95), (129, 40, 130, 0.6),  # several panels and a tail
    (3000, 8, 40, 0.9),  # wide rows: every vector body + tails
]


@pytest.mark.parametrize("values_dtype", VALUE_DTYPES)
@pytest.mark.parametrize("in_f, out_f, batch, sparsity", CASES)
def test_matches_fp64_reference(isa, values_dtype, in_f, out_f, batch, sparsity):
    weight = SparseWeight.from_dense(_pruned(out_f, in_f, sparsity), values_dtype)
    x = _x((batch, in_f))
    bias = _x((out_f,), seed=2)
    assert_close_to_fp64(ops.sparse_linear(x, weight, bias), x, weight, bias)
    assert_close_to_fp64(ops.sparse_linear(x, weight), x, weight, None)


@pytest.mark.parametrize("values_dtype", VALUE_DTYPES)
def test_empty_rows_and_all_zero(isa, values_dtype):
    w = _pruned(40, 50, 0.5)
    w[::3] = 0  # empty rows, including the first and (39) the last
    w[39] = 0
    weight = SparseWeight.from_dense(w, values_dtype)
    x, bias = _x((20, 50)), _x((40,), seed=3)
    y = ops.sparse_linear(x, weight, bias)
    assert_close_to_fp64(y, x, weight, bias)
    assert torch.equal(y[:, ::3], bias[::3].expand(20, -1))
    zero = SparseWeight.from_dense(torch.zeros(40, 50), values_dtype)
    assert zero.nnz == 0
    for b in (1, 20):
        assert torch.equal(ops.sparse_linear(x[:b], zero, bias), bias.expand(b, -1))
        assert torch.equal(ops.sparse_linear(x[:b], zero), torch.zeros(b, 40))


@pytest.mark.parametrize("values_dtype", VALUE_DTYPES)
@pytest.mark.parametrize("in_f", [1, 15, 16, 17, 63, 64, 65, 100, 1000])
def test_bitmap_path(isa, values_dtype, in_f):
    # Dense enough for the column bitmap; tails of 4-block steps and of blocks.
    w = _pruned(21, in_f, 0.5, seed=in_f)
    w[3] = 0
    w[5, :] = 1.0
    weight = SparseWeight.from_dense(w, values_dtype)
    assert weight.bitmap is not None and weight.bitmap.shape == (21, (in_f + 15) // 16)
    bits = weight.bitmap.int() & 0xFFFF
    expanded = ((bits[:, :, None] >> torch.arange(16)) & 1).reshape(21, -1)[:, :in_f]
    assert torch.equal(expanded.bool(), w != 0)
    x, bias = _x((1, in_f)), _x((21,), seed=2)
    y = ops.sparse_linear(x, weight, bias)
    assert_close_to_fp64(y, x, weight, bias)
    weight.bitmap = None  # the gather path gives the same result within tolerance
    torch.testing.assert_close(ops.sparse_linear(x, weight, bias), y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("values_dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int8])
def test_bitmap_only_when_it_pays_and_columns_ascend(values_dtype):
    def bitmap(w: torch.Tensor) -> torch.Tensor | None:
        return SparseWeight.from_dense(w, values_dtype=values_dtype).bitmap

    assert bitmap(_pruned(30, 40, 0.9)) is None  # too sparse
    # The threshold is on the stored count: the dtype's BITMAP_MIN_DENSITY of the 10 x 40 entries gets one.
    at, count = torch.zeros(10, 40), round(BITMAP_MIN_DENSITY[values_dtype] * 400)
    at.view(-1)[:count] = 1.0
    assert bitmap(at) is not None
    at.view(-1)[count - 1] = 0.0
    assert bitmap(at) is None
    # 25% density: a bitmap for the values that expand from memory (float32,
    # and bfloat16 where the CPU has AVX512_VBMI2).
    vbmi2 = _native.cpu is not None and _native.cpu.has_avx512_vbmi2()
    from_memory = values_dtype == torch.float32 or (values_dtype == torch.bfloat16 and vbmi2)
    assert BITMAP_MIN_DENSITY[values_dtype] == (0.2 if from_memory else 0.3)
    assert (bitmap(_pruned(40, 40, 0.75)) is not None) == from_memory
    weight = SparseWeight.from_dense(_pruned(3, 40, 0.2))
    assert weight.bitmap is not None
    swapped = weight.col_idx.clone()
    swapped[[0, 1]] = swapped[[1, 0]]  # not ascending within row 0
    assert SparseWeight(weight.row_ptr, swapped, weight.values, None, 40).bitmap is None


@pytest.mark.parametrize("in_f, out_f", [(0, 3), (3, 0), (0, 0)])
def test_zero_features(isa, in_f, out_f):
    weight = SparseWeight.from_dense(torch.zeros(out_f, in_f))
    bias = _x((out_f,))
    for batch in (1, 4):
        x = _x((batch, in_f)).requires_grad_()
        y = ops.sparse_linear(x, weight, bias)
        assert torch.equal(y, bias.expand(batch, out_f))
        y.sum().backward()
        assert x.grad.shape == (batch, in_f)


@pytest.mark.parametrize("in_f", [40000, 70000])
def test_wide_columns(isa, in_f):
    # 40000: 16-bit indices >= 32768 stored as negative int16; 70000: int32 indices.
    w = _pruned(3, in_f, 0.99)
    w[:, -1] = 1.5  # the last column is used
    weight = SparseWeight.from_dense(w)
    assert weight.col_idx.dtype == (torch.int16 if in_f <= 65536 else torch.int32)
    x = _x((5, in_f))
    for b in (1, 5):
        assert_close_to_fp64(ops.sparse_linear(x[:b], weight), x[:b], weight, None)


def test_leading_dims_and_layouts(isa):
    weight = SparseWeight.from_dense(_pruned(24, 40, 0.7))
    bias = _x((24,), seed=5)
    x = _x((2, 3, 40))
    y = ops.sparse_linear(x, weight, bias)
    assert y.shape == (2, 3, 24)
    assert_close_to_fp64(y.reshape(6, 24), x.reshape(6, 40), weight, bias)
    # 1-d input, zero-size batch, transposed / strided / broadcast views.
    assert ops.sparse_linear(x[0, 0], weight, bias).shape == (24,)
    assert_close_to_fp64(ops.sparse_linear(x[0, 0], weight, bias), x[0, 0][None], weight, bias)
    assert ops.sparse_linear(torch.empty(0, 5, 40), weight, bias).shape == (0, 5, 24)
    views = [_x((40, 7)).t(), _x((7, 80))[:, ::2], _x((1, 40)).expand(5, 40), _x((9, 50))[::2, 3:43]]
    for view in views:
        assert_close_to_fp64(ops.sparse_linear(view, weight, bias), view.contiguous(), weight, bias)


@pytest.mark.parametrize("x_dtype", [torch.float16, torch.bfloat16])
def test_half_activations(isa, x_dtype):
    weight = SparseWeight.from_dense(_pruned(30, 50, 0.8), torch.bfloat16)
    x, bias = _x((4, 50), dtype=x_dtype), _x((30,), seed=4, dtype=x_dtype)
    y = ops.sparse_linear(x, weight, bias)
    assert y.dtype == x_dtype
    assert_close_to_fp64(y, x, weight, bias)
    # The kernel reads and writes x's dtype: the float32 result of the widened x, rounded once.
    assert torch.equal(y, ops.sparse_linear(x.float(), weight, bias.float()).to(x_dtype))


@pytest.mark.parametrize("values_dtype", VALUE_DTYPES)
@pytest.mark.parametrize("batch", [1, 2, 3, 17, 40, 130])  # gathers (1-3 rows), panels (a partial last one)
def test_bfloat16_in_bfloat16_out(isa, values_dtype, batch):
    weight = SparseWeight.from_dense(_pruned(30, 50, 0.8), values_dtype)
    x, bias = _x((batch, 50), dtype=torch.bfloat16), _x((30,), seed=4, dtype=torch.bfloat16)
    products = [ops.sparse_linear] + ([ops.sparse_linear_dynamic] if values_dtype == torch.int8 else [])
    for product in products:
        y = product(x, weight, bias)
        assert y.dtype == torch.bfloat16 and y.shape == (batch, 30)
        # bf16 widens to float32 exactly: the float32 result of the widened input, rounded once;
        # the same through torch.library dispatch (a gradient to compute) and with leading dims.
        assert torch.equal(y, product(x.float(), weight, bias.float()).bfloat16())
        assert torch.equal(product(x.clone().requires_grad_(), weight, bias).detach(), y)
        assert torch.equal(product(x.reshape(batch, 1, 50), weight, bias), y.reshape(batch, 1, 30))
    assert_close_to_fp64(ops.sparse_linear(x, weight, bias), x, weight, bias)
    expected = reference.sparse_linear(x, weight.row_ptr, weight.col_idx, weight.values, weight.row_scales, bias, 50)
    assert expected.dtype == torch.bfloat16
    torch.testing.assert_close(ops.sparse_linear(x, weight, bias), expected, rtol=2.0**-7, atol=1e-2)


@pytest.mark.parametrize("values_dtype", [torch.float32, torch.int8])
def test_bfloat16_gradient(values_dtype):
    weight = SparseWeight.from_dense(_pruned(20, 30, 0.7), values_dtype)
    x = _x((2, 3, 30), dtype=torch.bfloat16).requires_grad_()
    bias = _x((20,), seed=2, dtype=torch.bfloat16).requires_grad_()
    grad_out = _x((2, 3, 20), seed=9, dtype=torch.bfloat16)
    for product in [ops.sparse_linear] + ([ops.sparse_linear_dynamic] if values_dtype == torch.int8 else []):
        x.grad = bias.grad = None
        product(x, weight, bias).backward(grad_out)
        assert x.grad.dtype == torch.bfloat16 and bias.grad.dtype == torch.bfloat16
        torch.testing.assert_close(x.grad.float(), grad_out.float() @ weight.to_dense(), rtol=2.0**-7, atol=1e-2)
        torch.testing.assert_close(bias.grad.float(), grad_out.float().sum((0, 1)), rtol=2.0**-7, atol=1e-2)


@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("batch", [1, 48])
def test_thread_counts_agree(threads, n_threads, batch):
    # Every row is computed by one thread in a fixed order: results are bitwise
    # independent of the thread count.
    weight = SparseWeight.from_dense(_pruned(700, 300, 0.6, seed=7))
    x = _x((batch, 300))
    torch.set_num_threads(1)
    expected = ops.sparse_linear(x, weight)
    torch.set_num_threads(n_threads)
    assert torch.equal(ops.sparse_linear(x, weight), expected)


@pytest.mark.parametrize("values_dtype", VALUE_DTYPES)
def test_gradient_wrt_input_and_bias(values_dtype):
    weight = SparseWeight.from_dense(_pruned(20, 30, 0.7), values_dtype)
    dense = weight.to_dense()
    x = _x((2, 3, 30)).requires_grad_()
    bias = _x((20,), seed=2).requires_grad_()
    grad_out = _x((2, 3, 20), seed=9)
    ops.sparse_linear(x, weight, bias).backward(grad_out)
    x_ref = x.detach().double().requires_grad_()
    bias_ref = bias.detach().double().requires_grad_()
    torch.nn.functional.linear(x_ref, dense.double(), bias_ref).backward(grad_out.double())
    torch.testing.assert_close(x.grad.double(), x_ref.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bias.grad.double(), bias_ref.grad, rtol=1e-5, atol=1e-5)


def test_gradient_of_sum_is_column_sums():
    weight = SparseWeight.from_dense(_pruned(6, 9, 0.5))
    x = _x((3, 9)).requires_grad_()
    y = ops.sparse_linear(x, weight)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(g, weight.to_dense().sum(0).expand(3, -1), atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    in_f=st.integers(1, 70), out_f=st.integers(1, 70), batch=st.integers(0, 40),
    sparsity=st.floats(0.0, 1.0), values_dtype=st.sampled_from(VALUE_DTYPES), seed=st.integers(0, 1000),
)
def test_property_matches_reference(in_f, out_f, batch, sparsity, values_dtype, seed):
    weight = SparseWeight.from_dense(_pruned(out_f, in_f, sparsity, seed), values_dtype)
    x = _x((batch, in_f), seed=seed + 1)
    assert_close_to_fp64(ops.sparse_linear(x, weight), x, weight, None)


# ---- packing -----------------------------------------------------------------------

def test_pack_layout():
    w = torch.tensor([[0.0, 2.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0]])
    p = SparseWeight.from_dense(w)
    assert p.row_ptr.tolist() == [0, 2, 2, 3]
    assert p.col_idx.dtype == torch.int16 and p.col_idx.tolist() == [1, 3, 0]
    assert p.values.tolist() == [2.0, -1.0, 3.0]
    assert p.row_scales is None and p.nnz == 3 and p.density == 0.25
    assert torch.equal(p.to_dense(), w)
    q = SparseWeight.from_dense(w, torch.int8)
    assert q.values.tolist() == [127, -64, 127]  # -1 * 127/2 = -63.5 -> -64 (half to even)
    torch.testing.assert_close(q.row_scales, torch.tensor([2 / 127, 2.0**-23, 3 / 127]))


def test_int8_error_bounded_by_half_a_step():
    w = _pruned(50, 60, 0.8)
    q = SparseWeight.from_dense(w, torch.int8)
    step = (w.abs().amax(1) / 127)[:, None]
    assert bool(((q.to_dense() - w).abs() <= step / 2 * (1 + 1e-5) + 1e-6).all())
    # The stored pattern is the float one (tiny values may quantize to 0).
    assert q.nnz == int((w != 0).sum())
    assert not bool(((q.to_dense() != 0) & (w == 0)).any())


# ---- bad input -----------------------------------------------------------------

def _weight():
    return SparseWeight.from_dense(_pruned(4, 6, 0.5))


@pytest.mark.parametrize(
    "x, bias, error, match",
    [
        ([1.0] * 6, None, TypeError, "x: expected a torch.Tensor"),
        (torch.ones(2, 6, dtype=torch.int32), None, TypeError, "x: expected dtype"),
        (torch.ones(2, 6, dtype=torch.float64), None, TypeError, "x: expected dtype"),
        (torch.ones(2, 5), None, ValueError, r"x: expected shape \[..., 6\]"),
        (torch.ones(()), None, ValueError, r"x: expected shape \[..., 6\]"),
        (torch.ones(2, 6, device="meta"), None, ValueError, "x: expected device cpu"),
        (torch.ones(2, 6), torch.ones(5), ValueError, r"bias: expected shape \(4,\)"),
        (torch.ones(2, 6), torch.ones(4, dtype=torch.float16), TypeError, "bias: expected dtype torch.float32"),
        # The eager bfloat16 path checks the bias dtype as the dispatched op does.
        (torch.ones(2, 6, dtype=torch.bfloat16), torch.ones(4), TypeError, "bias: expected dtype torch.bfloat16"),
        (torch.ones(2, 6), [0.0] * 4, TypeError, "bias: expected a torch.Tensor"),
    ],
)
def test_bad_input(x, bias, error, match):
    with pytest.raises(error, match=match):
        ops.sparse_linear(x, _weight(), bias)


def test_bad_weight_object():
    with pytest.raises(TypeError, match="weight: expected a slimtorch.ops.SparseWeight"):
        ops.sparse_linear(torch.ones(2, 6), torch.ones(4, 6))


def _parts(**changes):
    p = SparseWeight.from_dense(_pruned(4, 6, 0.5, seed=3), torch.int8)
    parts = dict(row_ptr=p.row_ptr, col_idx=p.col_idx, values=p.values, row_scales=p.row_scales, in_features=6)
    parts.update(changes)
    return parts


@pytest.mark.parametrize(
    "changes, error, match",
    [
        (dict(row_ptr=torch.tensor([0, 1, 2, 3, 4], dtype=torch.int32)), TypeError, "row_ptr: expected dtype int64"),
        (dict(row_ptr=torch.tensor([1, 1, 2, 3, 4])), ValueError, "row_ptr: expected non-decreasing offsets"),
        (dict(row_ptr=torch.tensor([0, 3, 2, 3, 4])), ValueError, "row_ptr: expected non-decreasing offsets"),
        (dict(row_ptr=torch.tensor([], dtype=torch.int64)), ValueError, "row_ptr: expected at least one element"),
        (dict(col_idx=torch.tensor([0, 1], dtype=torch.int16)), ValueError, "col_idx: expected .* elements"),
        (dict(col_idx=torch.tensor([0], dtype=torch.int64)), TypeError, "col_idx: expected dtype int16, int32"),
        (dict(in_features=2), ValueError, r"col_idx: expected columns in \[0, 2\)"),
        (dict(in_features=-1), ValueError, "in_features: expected an int >= 0"),
        (dict(in_features=70000, col_idx=None), None, None),
        (dict(values=torch.zeros(3, dtype=torch.float64)), TypeError, "values: expected dtype"),
        (dict(values=torch.zeros(3, 1)), ValueError, "values: expected a 1-d tensor"),
        (dict(row_scales=None), ValueError, "row_scales: int8 values need"),
        (dict(row_scales=torch.ones(3)), ValueError, r"row_scales: expected shape \(4,\)"),
        (dict(row_scales=torch.full((4,), float("nan"))), ValueError, "row_scales: expected finite"),
        (dict(row_scales=torch.zeros(4)), ValueError, "row_scales: expected finite values > 0"),
        (dict(row_scales=-torch.ones(4)), ValueError, "row_scales: expected finite values > 0"),
        (dict(values=torch.zeros(8)), ValueError, "row_scales: expected None for torch.float32 values"),
    ],
)
def test_bad_packed_weight(changes, error, match):
    parts = _parts(**changes)
    if changes.get("col_idx", 0) is None:  # int16 indices for a >65536-wide matrix
        parts["col_idx"] = _parts()["col_idx"]
        error, match = ValueError, "col_idx: int16 indices hold at most 65536 columns"
    if "values" in changes and changes["values"].dtype == torch.float32 and changes["values"].dim() == 1:
        parts["col_idx"] = torch.zeros(8, dtype=torch.int16)
        parts["row_ptr"] = torch.tensor([0, 2, 4, 6, 8])
    with pytest.raises(error, match=match):
        SparseWeight(**parts)


# Offsets whose int64 differences wrap around: a check by subtraction sees
# them as non-decreasing.
WRAPPING_OFFSETS = [
    [0, 2**63 - 1, -2, 1],
    [0, -(2**63), 2**63 - 1, 1],
    [0, 2**62, 2**63 - 1, -(2**63), 1],
]


@pytest.mark.parametrize("offsets", WRAPPING_OFFSETS + [[0, 5, 1, 1], [0, 0, 0, 2], [0, -1, 1, 1]])
@pytest.mark.parametrize("native", [True, False], ids=["native", "torch"])
def test_offsets_checked_without_overflow(monkeypatch, offsets, native):
    if native and _native.cpu is None:
        pytest.skip("no native CPU module")
    if not native:  # the check the other devices (and a build without the native module) run
        monkeypatch.setattr(ops.spmm, "eager_cpu", lambda *tensors: False)
    with pytest.raises(ValueError, match="row_ptr: expected non-decreasing offsets from 0 to nnz=1"):
        SparseWeight(torch.tensor(offsets), torch.tensor([0], dtype=torch.int16), torch.ones(1), None, 16)


@pytest.mark.skipif(_native.cpu is None, reason="no native CPU module")
def test_binding_offset_checks():
    for offsets in WRAPPING_OFFSETS:
        row_ptr = torch.tensor(offsets)
        assert _native.cpu.spmm_check_offsets(row_ptr.data_ptr(), row_ptr.numel() - 1, 1) >= 0
    good = torch.tensor([0, 0, 1, 1])
    assert _native.cpu.spmm_check_offsets(good.data_ptr(), 3, 1) == -1
    assert _native.cpu.spmm_check_offsets(good.data_ptr(), 3, 2) == 3
    with pytest.raises(ValueError, match="row_ptr"):
        _native.cpu.spmm_check_offsets(good.data_ptr(), -1, 1)
    # The forward entry point checks the ends of the offsets on every call.
    weight = SparseWeight.from_dense(_pruned(3, 16, 0.5, seed=1))
    bad = torch.tensor([0, 2**63 - 1, -2, weight.nnz + 1])
    args = list(weight._native_args)
    args[2] = bad.data_ptr()
    x, y = torch.ones(1, 16), torch.empty(1, 3)
    with pytest.raises(ValueError, match="row_ptr: expected offsets from 0 to nnz"):
        _native.cpu.spmm_forward(*args, x.data_ptr(), 0, 1, 16, 0, y.data_ptr(), 0, 1)


def test_weight_is_read_only_but_the_bitmap_may_be_dropped():
    weight = SparseWeight.from_dense(_pruned(4, 32, 0.3, seed=2))
    assert weight.bitmap is not None
    x = _x((1, 32))
    y = ops.sparse_linear(x, weight)
    with pytest.raises(AttributeError, match="SparseWeight.row_ptr is read-only"):
        weight.row_ptr = torch.tensor([0, 100, 100, 100, 100])
    weight.bitmap = None
    torch.testing.assert_close(ops.sparse_linear(x, weight), y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 5, 31, 32, 70])
def test_sparse_linear_dynamic_matches_reference(isa, batch):
    from slimtorch import reference

    weight = SparseWeight.from_dense(_pruned(24, 96, 0.7, seed=batch), torch.int8)
    x, bias = _x((batch, 96), seed=3), _x((24,), seed=4)
    y = ops.sparse_linear_dynamic(x, weight, bias)
    expected = reference.sparse_linear_dynamic(x, weight.row_ptr, weight.col_idx, weight.values,
                                               weight.row_scales, bias, 96)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-4)
    # The same result through torch.library dispatch (a gradient to compute).
    xg = x.clone().requires_grad_()
    torch.testing.assert_close(ops.sparse_linear_dynamic(xg, weight, bias), y, rtol=1e-5, atol=1e-4)
    with pytest.raises(TypeError, match="weight: the dynamic sparse product needs int8 values"):
        ops.sparse_linear_dynamic(xg, SparseWeight.from_dense(_pruned(24, 96, 0.7, seed=1)), bias)


def test_bad_from_dense():
    with pytest.raises(ValueError, match="weight: expected a 2-d"):
        SparseWeight.from_dense(torch.ones(3))
    with pytest.raises(TypeError, match="values_dtype: expected one of"):
        SparseWeight.from_dense(torch.ones(2, 2), torch.float64)
    with pytest.raises(ValueError, match="weight: int8 values need a finite weight"):
        SparseWeight.from_dense(torch.tensor([[1.0, float("inf")]]), torch.int8)


# ---- torch.library contract --------------------------------------------------------

@pytest.mark.parametrize("values_dtype", [torch.float32, torch.int8])
def test_opcheck(values_dtype):
    weight = SparseWeight.from_dense(_pruned(12, 10, 0.6), values_dtype)
    args = (weight.row_ptr, weight.col_idx, weight.values, weight.row_scales)
    x = _x((3, 10)).requires_grad_()
    torch.library.opcheck(torch.ops.slimtorch.sparse_linear.default, (x, *args, _x((12,)), 10))
    torch.library.opcheck(torch.ops.slimtorch.sparse_linear_grad_input.default, (_x((3, 12)), *args, 10))
    dense_enough = SparseWeight.from_dense(_pruned(12, 10, 0.3), values_dtype)
    assert dense_enough.bitmap is not None
    torch.library.opcheck(
        torch.ops.slimtorch.sparse_linear.default,
        (_x((1, 10)), dense_enough.row_ptr, dense_enough.col_idx, dense_enough.values,
         dense_enough.row_scales, None, 10, dense_enough.bitmap),
    )
    if values_dtype == torch.int8:
        for batch in (3, 40):  # below and above the batch where the integer kernel starts
            xd = _x((batch, 10)).requires_grad_()
            torch.library.opcheck(torch.ops.slimtorch.sparse_linear_dynamic.default, (xd, *args, _x((12,)), 10))
        torch.library.opcheck(  # with the bitmap, as eager batch-1 calls run it
            torch.ops.slimtorch.sparse_linear_dynamic.default,
            (_x((1, 10)).requires_grad_(), dense_enough.row_ptr, dense_enough.col_idx, dense_enough.values,
             dense_enough.row_scales, None, 10, dense_enough.bitmap),
        )
    # bfloat16 activations: the fake and the kernels agree on the output dtype.
    xb = _x((3, 10), dtype=torch.bfloat16).requires_grad_()
    bias = _x((12,), dtype=torch.bfloat16)
    torch.library.opcheck(torch.ops.slimtorch.sparse_linear.default, (xb, *args, bias, 10))
    torch.library.opcheck(torch.ops.slimtorch.sparse_linear_grad_input.default,
                          (_x((3, 12), dtype=torch.bfloat16), *args, 10))
    if values_dtype == torch.int8:
        for batch in (3, 40):
            xd = _x((batch, 10), dtype=torch.bfloat16).requires_grad_()
            torch.library.opcheck(torch.ops.slimtorch.sparse_linear_dynamic.default, (xd, *args, bias, 10))


def test_compile_fullgraph():
    weight = SparseWeight.from_dense(_pruned(16, 24, 0.8))
    bias = _x((16,))

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(ops.sparse_linear(x, weight, bias)) * 2

    x = _x((5, 24))
    compiled = torch.compile(f, fullgraph=True, backend="eager")
    assert torch.equal(compiled(x), f(x))


def test_reference_agrees_with_kernel():
    weight = SparseWeight.from_dense(_pruned(9, 13, 0.5), torch.float16)
    x = _x((4, 13))
    expected = reference.sparse_linear(x, weight.row_ptr, weight.col_idx, weight.values, None, None, 13)
    torch.testing.assert_close(ops.sparse_linear(x, weight), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("values_dtype", VALUE_DTYPES)
@pytest.mark.parametrize("batch", [1, 7, 16, 33])
def test_every_device_matches_fp64_reference(device, values_dtype, batch):
    weight = SparseWeight.from_dense(_pruned(300, 1000, 0.9), values_dtype)
    on_gpu = SparseWeight(*(t.to(device) if t is not None else None for t in
                            (weight.row_ptr, weight.col_idx, weight.values, weight.row_scales)), 1000)
    x, bias = _x((batch, 1000)), _x((300,), seed=2)
    y = ops.sparse_linear(x.to(device), on_gpu, bias.to(device))
    assert y.device == device
    assert_close_to_fp64(y.cpu(), x, weight, bias)
    if values_dtype == torch.int8:  # the dynamic product on this device against the reference
        from slimtorch import reference as ref

        got = ops.sparse_linear_dynamic(x.to(device), on_gpu, bias.to(device)).cpu()
        want = ref.sparse_linear_dynamic(x, weight.row_ptr, weight.col_idx, weight.values, weight.row_scales,
                                         bias, 1000)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    xg = x.to(device).requires_grad_()
    ops.sparse_linear(xg, on_gpu).sum().backward()
    torch.testing.assert_close(xg.grad.cpu(), weight.to_dense().sum(0).expand(batch, -1), rtol=1e-4, atol=1e-4)
