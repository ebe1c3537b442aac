"""int8 GEMM / linear ops: kernels against the reference on every ISA path.

Exactness: row quantization and the int32 accumulators are compared with
``torch.equal``; the float outputs of the dynamic/static modes are compared
with the reference epilogue to float rounding (a few ulps of the terms), and
weight-only with a float32 summation bound against float64.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimtorch import _native, ops
from slimtorch.ops import qgemm as qops
from slimtorch.reference import MIN_SCALE
from slimtorch.reference import qgemm as ref

EPS = torch.finfo(torch.float32).eps

# (M, K, N): 1s, odd sizes, the 4-wide k group +/- 1, the 16-wide block and
# 64-wide column tile +/- 1, the 6-row (VNNI) / 4-row (float) / 2-row (AVX2)
# row tiles +/- 1, and a few larger ones that cross threads.
SHAPES = [
    (1, 1, 1), (1, 3, 1), (1, 4, 5), (1, 5, 16), (2, 7, 15), (3, 8, 17),
    (5, 63, 63), (6, 64, 64), (7, 65, 65), (4, 33, 127), (13, 129, 128),
    (12, 16, 129), (1, 768, 300), (33, 257, 70), (130, 96, 200), (8, 1000, 1),
    (13, 2051, 70),  # K blocking (1024 bytes) with a tail block and several row tiles
]


def _case(m, k, n, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g) * scale
    w = torch.randn(n, k, generator=g)
    b = torch.randn(n, generator=g)
    q, w_scale = ops.qgemm_quantize_weight(w)
    return x, w, b, q, w_scale, ops.qgemm_pack_weight(q, w_scale)


def _epilogue_terms(x, q, w_scale, bias, static=None):
    """Reference product term p (before bias) per output, in float64."""
    if static is None:
        a, a_scale, zp = ref.quantize_rows(x)
    else:
        a, a_scale, zp = ref.quantize_rows_static(x, *static)
    acc = ref.qgemm_s32(a.reshape(-1, x.shape[-1]), q).double()
    comp = acc - zp.reshape(-1, 1).double() * q.sum(1).double()
    return comp * (a_scale.reshape(-1, 1).double() * w_scale.double())


def _assert_epilogue_close(y, expected, p, bias):
    # Two float roundings (scale product, product with comp) plus the
    # int32 -> float conversion and the bias add: a few ulps of |p| + |bias|.
    size = p.abs().reshape(y.shape) + (bias.abs() if bias is not None else 0)
    tol = 8 * EPS * size + 1e-30
    diff = (y.double() - expected.double()).abs()
    assert bool((diff <= tol).all()), f"max excess {(diff - tol).max().item()}"


# ---- weights ----------------------------------------------------------------------

def test_weight_quantization_and_packing():
    w = torch.tensor([[0.5, -1.0, 0.25, 0.0, 1.0], [0.0] * 5, [3.0, -3.0, 1.5, 0.01, -0.02]])
    q, scale = ops.qgemm_quantize_weight(w)
    assert q.dtype == torch.int8 and scale.dtype == torch.float32
    assert q[0].tolist() == [64, -127, 32, 0, 127]  # 63.5 rounds half to even: 64
    assert q[1].tolist() == [0] * 5 and scale[1] == MIN_SCALE
    assert q[2, :3].tolist() == [127, -127, 64]
    packed, _, colsum, k = ops.qgemm_pack_weight(q, scale)
    assert packed.shape == (1, 2, 16, 4) and colsum.tolist() == q.sum(1).tolist() and k == 5
    assert packed[0, 1, 0].tolist() == [127, 0, 0, 0]  # k = 4 then padding
    assert packed[0, 0, 3:].abs().sum() == 0  # channels past N are zero
    assert torch.equal(ref.unpack_weight(packed, 3, 5), q)


# ---- row quantization --------------------------------------------------------------

def test_row_and_weight_quantization_follow_the_quantize_family():
    from slimtorch.reference.quantize import choose_qparams
    from slimtorch.reference.quantize import quantize as quantize_affine

    x, w, *_ = _case(9, 50, 7)
    a, scale, zp = ops.qgemm_quantize_rows(x)
    for r in range(9):
        s, z = choose_qparams(x[r], None, False, torch.uint8)
        assert scale[r] == s and zp[r] == z
        assert torch.equal(a[r], quantize_affine(x[r : r + 1], s.reshape(1), z.reshape(1), 0, torch.uint8)[0])
    q, w_scale = ops.qgemm_quantize_weight(w)
    s, z = choose_qparams(w, 0, True, torch.int8)
    assert torch.equal(w_scale, s) and (z == 0).all() and torch.equal(q, quantize_affine(w, s, z, 0, torch.int8))
    # The static rows of the reference are the per-tensor quantize kernel's codes.
    a_static, _, _ = ref.quantize_rows_static(x, 0.05, 128)
    kernel = ops.quantize(x, torch.tensor(0.05), torch.tensor(128, dtype=torch.int32), dtype=torch.uint8)
    assert torch.equal(a_static, kernel)


@pytest.mark.parametrize("m, k, n", SHAPES)
def test_quantize_rows_exact(isa, m, k, n):
    x, *_ = _case(m, k, n)
    a, scale, zp = ops.qgemm_quantize_rows(x)
    a_ref, scale_ref, zp_ref = ref.quantize_rows(x)
    assert torch.equal(a, a_ref) and torch.equal(scale, scale_ref) and torch.equal(zp, zp_ref)


def test_quantize_rows_special_rows(isa):
    inf, nan = float("inf"), float("nan")
    x = torch.tensor([
        [0.0, 0.0, 0.0, 0.0, 0.0],           # all zero: tiny scale, zp 0, a 0
        [1.0, 2.0, 3.0, 4.0, 255.0],          # all positive: zp 0
        [-1.0, -2.0, -3.0, -4.0, -255.0],     # all negative: zp 255
        [1e-3, -1e-3, 1e4, 0.0, 2e-3],        # an outlier
        [1.0, inf, 2.0, 0.0, 0.0],
        [1.0, -inf, 2.0, 0.0, 0.0],
        [nan, 1.0, 2.0, 0.0, 0.0],
        [3e38, -3e38, 1.0, 0.0, 0.0],         # hi - lo overflows float32 (computed in double)
        [1e-40, -1e-41, 0.0, 0.0, 0.0],       # subnormal
    ])
    a, scale, zp = ops.qgemm_quantize_rows(x)
    a_ref, scale_ref, zp_ref = ref.quantize_rows(x)
    assert torch.equal(a, a_ref) and torch.equal(zp, zp_ref)
    assert torch.equal(scale.isnan(), scale_ref.isnan()) and torch.equal(scale.nan_to_num(), scale_ref.nan_to_num())
    assert scale[0] == MIN_SCALE and a[0].sum() == 0
    assert zp[1] == 0 and a[1, 4] == 255 and zp[2] == 255 and a[2, 4] == 0
    assert scale[4:7].isnan().all() and (a[4:7] == 0).all() and (zp[4:7] == 0).all()
    assert torch.isfinite(scale[7]) and a[7, 0] == 255 and a[7, 1] == 0


# ---- exact int32 accumulators --------------------------------------------------------

@pytest.mark.parametrize("m, k, n", SHAPES)
def test_s32_exact(isa, m, k, n):
    g = torch.Generator().manual_seed(m * 1000 + k)
    a = torch.randint(0, 256, (m, k), generator=g, dtype=torch.uint8)
    q = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)
    weight = ops.qgemm_pack_weight(q, torch.ones(n))
    assert torch.equal(ops.qgemm_s32(a, weight), ref.qgemm_s32(a, q))


@pytest.mark.parametrize("m", [2, 17])
@pytest.mark.parametrize("k", [4096, qops.MAX_K])
def test_s32_extremes_do_not_saturate(isa, m, k):
    # 255 * 127 per product: the AVX2 path must not saturate int16 pair sums,
    # and the largest K must not overflow int32 (17 rows: the AMX tile path).
    a = torch.full((m, k), 255, dtype=torch.uint8)
    q = torch.full((17, k), 127, dtype=torch.int8)
    q[1::2] = -127
    acc = ops.qgemm_s32(a, ops.qgemm_pack_weight(q, torch.ones(17)))
    assert acc[0, 0] == 255 * 127 * k and acc[m - 1, 1] == -255 * 127 * k
    assert torch.equal(acc, ref.qgemm_s32(a, q))


def test_s32_leading_dims_and_strides(isa):
    g = torch.Generator().manual_seed(1)
    a = torch.randint(0, 256, (2, 3, 9, 22), generator=g, dtype=torch.uint8)[..., 1:20]
    q = torch.randint(-127, 128, (21, 19), generator=g, dtype=torch.int8)
    out = ops.qgemm_s32(a, ops.qgemm_pack_weight(q, torch.ones(21)))
    assert out.shape == (2, 3, 9, 21)
    assert torch.equal(out, ref.qgemm_s32(a.reshape(-1, 19), q).reshape(2, 3, 9, 21))


# ---- dynamic and static linear ----------------------------------------------------------

@pytest.mark.parametrize("m, k, n", SHAPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_dynamic_matches_reference_epilogue(isa, m, k, n, with_bias):
    x, _, b, q, w_scale, weight = _case(m, k, n)
    bias = b if with_bias else None
    y = ops.qlinear_dynamic(x, weight, bias)
    expected = ref.qlinear_dynamic(x, q, w_scale, bias)
    _assert_epilogue_close(y, expected, _epilogue_terms(x, q, w_scale, bias), bias)


@pytest.mark.parametrize("m, k, n", SHAPES[::2])
@pytest.mark.parametrize("x_scale, x_zero_point", [(0.02, 128), (0.5, 0), (1e-3, 255), (7.0, 3)])
def test_static_matches_reference_epilogue(isa, m, k, n, x_scale, x_zero_point):
    x, _, b, q, w_scale, weight = _case(m, k, n)
    y = ops.qlinear_static(x, weight, x_scale, x_zero_point, b)
    expected = ref.qlinear_static(x, q, w_scale, b, x_scale, x_zero_point)
    _assert_epilogue_close(y, expected, _epilogue_terms(x, q, w_scale, b, (x_scale, x_zero_point)), b)


def test_dynamic_close_to_float_linear():
    x, w, b, _q, _w_scale, weight = _case(64, 512, 256, scale=1.0)
    y = ops.qlinear_dynamic(x, weight, b)
    exact = torch.nn.functional.linear(x, w, b)
    # int8 weights and per-row uint8 activations: ~1% relative error.
    assert (y - exact).norm() / exact.norm() < 0.02


# ---- weight-only ------------------------------------------------------------------------

@pytest.mark.parametrize("m, k, n", SHAPES)
def test_weight_only_matches_reference(isa, m, k, n):
    x, _, b, q, w_scale, weight = _case(m, k, n)
    y = ops.qlinear_weight_only(x, weight, b)
    exact = (x.double() @ q.double().T) * w_scale.double() + b.double()
    # float32 summation of k terms: |error| <= ~k * eps * sum |x q| * scale;
    # paths with native bf16 round x to bf16 (relative error at most 2^-8)
    # from weight_only_bf16_min_rows() rows on.
    unit = (k + 4) * EPS + (2.0**-8 if 0 < _bf16_rows() <= m else 0.0)
    bound = unit * (x.abs().double() @ q.abs().double().T) * w_scale.double() + 4 * EPS * b.abs().double()
    assert bool(((y.double() - exact).abs() <= bound + 1e-30).all())


def _bf16_rows() -> int:
    """Rows from which weight-only rounds x to bf16 on the active path (0: never)."""
    return _native.cpu.weight_only_bf16_min_rows()


@pytest.fixture
def bf16_isa(isa):
    """An ISA path on which weight-only rounds x to bf16 (AMX tiles, AVX512-BF16)."""
    if _bf16_rows() == 0:
        pytest.skip(f"weight-only keeps x in float32 on {isa}")
    return isa


@pytest.mark.parametrize("m, k, n", [(16, 64, 16), (17, 65, 33), (33, 127, 15), (128, 768, 300), (40, 4100, 17)])
def test_weight_only_bf16_error_within_twice_torch_bf16(bf16_isa, m, k, n):
    # x is rounded to bf16 and the products summed in float32, as torch's own
    # bf16 Linear does (which also rounds the weight and the output): the
    # error against float64 stays within 2x of torch's.
    g = torch.Generator().manual_seed(m + k + n)
    x, w, b = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g), torch.randn(n, generator=g)
    q, w_scale = ops.qgemm_quantize_weight(w)
    w_dequant = q.float() * w_scale.reshape(-1, 1)
    y = ops.qlinear_weight_only(x, ops.qgemm_pack_weight(q, w_scale), b)
    exact = x.double() @ w_dequant.double().T + b.double()
    torch_bf16 = torch.nn.functional.linear(x.bfloat16(), w_dequant.bfloat16(), b.bfloat16())
    ours, theirs = (y.double() - exact).norm(), (torch_bf16.double() - exact).norm()
    assert ours <= 2 * theirs, (ours.item(), theirs.item())
    # The bf16 path ran: its result is the float32 sum for bf16(x), not x.
    exact_bf16_x = x.bfloat16().double() @ w_dequant.double().T + b.double()
    assert (y.double() - exact_bf16_x).norm() < (y.double() - exact).norm() / 100


def test_weight_only_bf16_rows_below_the_count_stay_float32(bf16_isa):
    rows = _bf16_rows()
    x, _, b, q, w_scale, weight = _case(rows, 64, 20)
    exact = (x.double() @ q.double().T) * w_scale.double() + b.double()
    below, at = ops.qlinear_weight_only(x[:rows - 1], weight, b), ops.qlinear_weight_only(x, weight, b)
    assert (below.double() - exact[:rows - 1]).abs().max() < 1e-4
    assert (at.double() - exact).abs().max() > 1e-3  # bf16(x) moves the results by ~2^-9 relative


def test_weight_only_bf16_non_finite_rows(bf16_isa):
    g = torch.Generator().manual_seed(4)
    x, w = torch.randn(20, 70, generator=g), torch.randn(33, 70, generator=g)
    x[3, 5] = float("nan")
    x[7, 9] = float("inf")
    q, w_scale = ops.qgemm_quantize_weight(w)
    y = ops.qlinear_weight_only(x, ops.qgemm_pack_weight(q, w_scale))
    assert y[3].isnan().all()
    col = q[:, 9].float()
    assert torch.equal(y[7].isnan(), col == 0)  # Inf times a zero weight is NaN
    assert torch.equal(torch.sign(y[7][col != 0]), torch.sign(col[col != 0]))
    assert torch.isfinite(y[[r for r in range(20) if r not in (3, 7)]]).all()


def test_weight_only_ieee_non_finite(isa):
    x, _, b, q, _w_scale, weight = _case(3, 20, 18)
    x[0, 3] = float("nan")
    x[1, 5] = float("inf")
    y = ops.qlinear_weight_only(x, weight, b)
    assert y[0].isnan().all()
    # Inf times a nonzero weight is +/-Inf; times a zero weight NaN.
    col = q[:, 5].float()
    assert torch.equal(y[1].isnan(), col == 0)
    assert torch.equal(torch.sign(y[1][col != 0]), torch.sign(col[col != 0]))
    assert torch.isfinite(y[2]).all()


# ---- shared edge cases ---------------------------------------------------------------------

MODES = ["dynamic", "static", "weight_only"]


def _run(mode, x, weight, bias):
    if mode == "dynamic":
        return ops.qlinear_dynamic(x, weight, bias)
    if mode == "static":
        return ops.qlinear_static(x, weight, 0.05, 128, bias)
    return ops.qlinear_weight_only(x, weight, bias)


def _assert_same_rows(mode, got, expected):
    if mode == "weight_only":
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(got, expected)


@pytest.mark.parametrize("mode", MODES)
def test_non_finite_rows_and_zero_rows(isa, mode):
    x, _, b, _q, _w_scale, weight = _case(6, 37, 40)
    x[1] = 0.0
    x[2, 7] = float("nan")
    x[3, 0] = float("inf")
    x[4, 36] = -float("inf")
    x[5, 3] = 1e6  # outlier
    y = _run(mode, x, weight, b)
    if mode != "weight_only":
        assert y[2:5].isnan().all()
    # Each row is computed independently: the same as running it alone
    # (bit for bit in the integer modes; weight-only sums a single row in a
    # different order, see ops.qgemm).
    for r in (0, 1, 5):
        _assert_same_rows(mode, y[r], _run(mode, x[r:r + 1], weight, b)[0])
    assert torch.equal(y[1], b)  # a zero row is exactly the zero point: only the bias remains
    assert torch.isfinite(y[[0, 1, 5]]).all()


@pytest.mark.parametrize("mode", MODES)
def test_all_zero_weight_gives_bias(isa, mode):
    q = torch.zeros(33, 21, dtype=torch.int8)
    w_scale = torch.full((33,), torch.finfo(torch.float32).tiny)
    b = torch.randn(33)
    y = _run(mode, torch.randn(5, 21), ops.qgemm_pack_weight(q, w_scale), b)
    assert torch.equal(y, b.expand(5, 33))


@pytest.mark.parametrize("mode", MODES)
def test_leading_dims_noncontiguous_and_dtypes(isa, mode):
    x, _, b, _q, _w_scale, weight = _case(24, 30, 19)
    base = _run(mode, x, weight, b)
    x4 = x.reshape(2, 3, 4, 30)
    assert torch.equal(_run(mode, x4, weight, b), base.reshape(2, 3, 4, 19))
    wide = torch.zeros(24, 60)
    wide[:, ::2] = x  # strided last dimension
    assert torch.equal(_run(mode, wide[:, ::2], weight, b), base)
    assert torch.equal(_run(mode, x.T.contiguous().T, weight, b), base)
    # 1-d input: the same as one row (a batch of 24 may take another kernel:
    # the AMX weight-only path rounds x to bf16 from 16 rows on).
    assert torch.equal(_run(mode, x[0], weight, b), _run(mode, x[:1], weight, b)[0])
    assert _run(mode, torch.zeros(0, 30), weight, b).shape == (0, 19)
    for dtype in (torch.float16, torch.bfloat16):
        xh = x.to(dtype)
        y = _run(mode, xh, weight, b)
        assert y.dtype == dtype
        assert torch.equal(y, _run(mode, xh.float(), weight, b).to(dtype))


@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("mode", MODES)
def test_thread_counts_agree(threads, mode, n_threads):
    x, _, b, _q, _w_scale, weight = _case(40, 300, 500, seed=5)
    torch.set_num_threads(1)
    expected = _run(mode, x, weight, b)
    torch.set_num_threads(n_threads)
    assert torch.equal(_run(mode, x, weight, b), expected)


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 9), k=st.integers(1, 70), n=st.integers(1, 40),
    scale=st.sampled_from([1e-20, 1e-3, 1.0, 1e3, 1e20]), seed=st.integers(0, 2**16),
)
def test_property_dynamic_exact_integers(m, k, n, scale, seed):
    x, _, b, q, w_scale, weight = _case(m, k, n, seed=seed, scale=scale)
    a, a_scale, zp = ops.qgemm_quantize_rows(x)
    a_ref, a_scale_ref, zp_ref = ref.quantize_rows(x)
    assert torch.equal(a, a_ref) and torch.equal(a_scale, a_scale_ref) and torch.equal(zp, zp_ref)
    assert torch.equal(ops.qgemm_s32(a, weight), ref.qgemm_s32(a, q))
    y = ops.qlinear_dynamic(x, weight, b)
    _assert_epilogue_close(y, ref.qlinear_dynamic(x, q, w_scale, b), _epilogue_terms(x, q, w_scale, b), b)


# ---- gradient ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_gradient_wrt_input(mode):
    x, _, b, q, w_scale, weight = _case(5, 23, 17)
    x = x.reshape(5, 1, 23).requires_grad_()
    y = _run(mode, x, weight, b)
    grad_y = torch.randn_like(y)
    y.backward(grad_y)
    weight = q.float() * w_scale[:, None]
    torch.testing.assert_close(x.grad, grad_y @ weight)


@pytest.mark.parametrize("bias_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mode", MODES)
def test_gradient_wrt_bias(mode, bias_dtype):
    """A bias that requires grad (SparseLinear's, when its int8 values fall
    back to these ops) gets the output gradient summed over the rows; the
    weight stays frozen."""
    x, _, b, _, _, weight = _case(5, 23, 17)
    x = x.reshape(5, 1, 23).requires_grad_()
    bias = b.to(bias_dtype).requires_grad_()
    y = _run(mode, x, weight, bias)
    grad_y = torch.randn_like(y)
    y.backward(grad_y)
    assert bias.grad is not None and bias.grad.dtype == bias_dtype
    torch.testing.assert_close(bias.grad, grad_y.sum((0, 1)).to(bias_dtype))
    assert x.grad is not None
    bias.grad = None
    _run(mode, x.detach(), weight, bias).sum().backward()  # the bias alone
    torch.testing.assert_close(bias.grad, torch.full((17,), 5.0, dtype=bias_dtype))


# ---- bad input ------------------------------------------------------------------------------

def _good():
    x, _, b, _q, _w_scale, weight = _case(2, 10, 20)
    return dict(x=x, weight=weight, bias=b)


def _weight(**parts):
    _, _, _, _q, _w_scale, weight = _case(2, 10, 20)
    return weight._replace(**parts)


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(x=[1.0]), TypeError, "x: expected a torch.Tensor"),
        (dict(x=torch.ones(2, 10, dtype=torch.int32)), TypeError, "x: expected dtype"),
        (dict(x=torch.ones(2, 10, dtype=torch.float64)), TypeError, "x: expected dtype"),
        (dict(x=torch.tensor(1.0)), ValueError, "x: expected at least 1 dimension"),
        (dict(x=torch.ones(2, 9)), ValueError, r"x: expected shape \[..., 10\]"),
        (dict(x=torch.ones(2, 11)), ValueError, r"x: expected shape \[..., 10\]"),
        (dict(weight=(1, 2, 3, 4)), TypeError, "weight: expected a PackedInt8Weight"),
        (dict(weight=_weight(packed=torch.zeros(2, 3, 16, 4))), TypeError, "weight.packed: expected dtype int8"),
        (dict(weight=_weight(packed=torch.zeros(1, 3, 16, 4, dtype=torch.int8))), ValueError,
         r"weight.packed: expected shape \(2, 3, 16, 4\)"),
        (dict(weight=_weight(packed=torch.zeros(2, 3, 64, dtype=torch.int8))), ValueError,
         "weight.packed: expected shape"),
        (dict(weight=_weight(packed=torch.zeros(3, 2, 16, 4, dtype=torch.int8).transpose(0, 1))), ValueError,
         "weight: expected contiguous"),
        (dict(weight=_weight(scale=torch.ones(20, dtype=torch.float64))), TypeError,
         "weight.scale: expected dtype float32"),
        (dict(weight=_weight(scale=torch.ones(2, 10))), ValueError, "weight: expected scale and colsum of shape"),
        (dict(weight=_weight(colsum=torch.zeros(20, dtype=torch.int64))), TypeError,
         "weight.colsum: expected dtype int32"),
        (dict(weight=_weight(colsum=torch.zeros(19, dtype=torch.int32))), ValueError,
         "weight: expected scale and colsum of shape"),
        (dict(weight=_weight(in_features=11)), ValueError, r"x: expected shape \[..., 11\]"),
        (dict(weight=_weight(in_features=-1)), ValueError, "weight.in_features: expected an int >= 0"),
        (dict(bias=torch.ones(21)), ValueError, r"bias: expected shape \(20,\)"),
        (dict(bias=torch.ones(20, dtype=torch.int32)), TypeError, "bias: expected dtype"),
        (dict(bias=torch.ones(20, device="meta")), ValueError, "bias: expected a tensor on cpu"),
        (dict(x=torch.ones(2, 10, device="meta")), ValueError, "weight.packed: expected a tensor on meta"),
    ],
)
def test_bad_input(change, error, match):
    args = _good()
    args.update(change)
    with pytest.raises(error, match=match):
        ops.qlinear_dynamic(**args)
    with pytest.raises(error, match=match):
        ops.qlinear_static(activation_scale=0.1, activation_zero_point=3, **args)
    with pytest.raises(error, match=match):
        ops.qlinear_weight_only(**args)


@pytest.mark.parametrize(
    "scale, zero_point, error, match",
    [
        (0.0, 0, ValueError, "activation_scale: expected a positive"),
        (-1.0, 0, ValueError, "activation_scale: expected a positive"),
        (float("nan"), 0, ValueError, "activation_scale: expected a number, got NaN"),
        (float("inf"), 0, ValueError, "activation_scale: expected a finite number"),
        (1e-45, 0, ValueError, "activation_scale: expected a positive"),
        (1e39, 0, ValueError, "activation_scale: expected a positive"),
        ("1", 0, TypeError, "activation_scale: expected a real number"),
        (0.1, 256, ValueError, r"activation_zero_point: expected an int in \[0, 255\]"),
        (0.1, -1, ValueError, r"activation_zero_point: expected an int in \[0, 255\]"),
        (0.1, 1.5, TypeError, "activation_zero_point: expected an int"),
        (0.1, True, TypeError, "activation_zero_point: expected an int"),
    ],
)
def test_bad_static_params(scale, zero_point, error, match):
    with pytest.raises(error, match=match):
        ops.qlinear_static(activation_scale=scale, activation_zero_point=zero_point, **_good())


def test_static_params_old_names_are_deprecated_aliases():
    args = _good()
    expected = ops.qlinear_static(activation_scale=0.1, activation_zero_point=3, **args)
    with pytest.warns(DeprecationWarning) as caught:
        assert torch.equal(ops.qlinear_static(x_scale=0.1, x_zero_point=3, **args), expected)
    assert [str(w.message) for w in caught] == ["x_scale is deprecated; use activation_scale=0.1",
                                                 "x_zero_point is deprecated; use activation_zero_point=3"]
    with pytest.raises(TypeError, match="x_scale: deprecated alias of activation_scale"):
        ops.qlinear_static(activation_scale=0.1, x_scale=0.1, activation_zero_point=3, **args)


def test_bad_weights_and_sizes():
    with pytest.raises(ValueError, match="weight: contains NaN or Inf"):
        ops.qgemm_quantize_weight(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match="weight: expected a 2-d tensor"):
        ops.qgemm_quantize_weight(torch.ones(3))
    with pytest.raises(ValueError, match=r"q: expected symmetric int8 values in \[-127, 127\]"):
        ops.qgemm_pack_weight(torch.tensor([[-128, 0]], dtype=torch.int8), torch.ones(1))
    with pytest.raises(TypeError, match="q: expected dtype int8"):
        ops.qgemm_pack_weight(torch.ones(2, 2), torch.ones(2))
    with pytest.raises(ValueError, match=r"scale: expected shape \(2,\)"):
        ops.qgemm_pack_weight(torch.ones(2, 2, dtype=torch.int8), torch.ones(3))
    big = ops.qgemm_pack_weight(torch.zeros(1, qops.MAX_K + 1, dtype=torch.int8), torch.ones(1))
    with pytest.raises(ValueError, match="x: at most 66311 features"):
        ops.qlinear_dynamic(torch.zeros(1, qops.MAX_K + 1), big)
    # weight-only has no int32 limit
    assert ops.qlinear_weight_only(torch.ones(1, qops.MAX_K + 1), big).item() == 0
    small = ops.qgemm_pack_weight(torch.zeros(1, 3, dtype=torch.int8), torch.ones(1))
    with pytest.raises(TypeError, match="a: expected dtype uint8"):
        ops.qgemm_s32(torch.zeros(2, 3, dtype=torch.int8), small)
    with pytest.raises(ValueError, match=r"a: expected shape \[..., 3\]"):
        ops.qgemm_s32(torch.zeros(2, 4, dtype=torch.uint8), small)


# ---- bfloat16 activations (compress_'s compute_dtype) -----------------------------------------

BF16_SHAPES = [(1, 5, 16), (7, 65, 65), (16, 64, 17), (33, 257, 70), (130, 96, 200)]


def _reference(mode, x, q, w_scale, bias):
    if mode == "dynamic":
        return ref.qlinear_dynamic(x, q, w_scale, bias)
    if mode == "static":
        return ref.qlinear_static(x, q, w_scale, bias, 0.05, 128)
    return ref.qlinear_weight_only(x, q, w_scale, bias)


@pytest.mark.parametrize("m, k, n", BF16_SHAPES)
@pytest.mark.parametrize("mode", MODES)
def test_bfloat16_in_bfloat16_out(isa, mode, m, k, n):
    x, _, b, q, w_scale, weight = _case(m, k, n)
    xb = x.bfloat16()
    y = _run(mode, xb, weight, b)
    assert y.dtype == torch.bfloat16 and y.shape == (m, n)
    # bf16 widens to float32 exactly: the float32 result of the widened input, rounded once.
    assert torch.equal(y, _run(mode, xb.float(), weight, b).bfloat16())
    # The same through torch.library dispatch (strided x) and with leading dimensions.
    wide = torch.zeros(m, 2 * k, dtype=torch.bfloat16)
    wide[:, ::2] = xb
    assert torch.equal(_run(mode, wide[:, ::2], weight, b), y)
    assert torch.equal(_run(mode, xb.reshape(m, 1, k), weight, b), y.reshape(m, 1, n))
    # A bfloat16 bias is widened too.
    assert torch.equal(_run(mode, xb, weight, b.bfloat16()), _run(mode, xb, weight, b.bfloat16().float()))
    # The reference returns x's dtype as well, and agrees to float32 rounding plus one bf16 rounding.
    expected = _reference(mode, xb, q, w_scale, b)
    assert expected.dtype == torch.bfloat16
    size = (xb.float().abs() @ q.abs().float().T) * w_scale + b.abs()
    diff = (y.double() - expected.double()).abs()
    assert bool((diff <= 2.0**-7 * expected.double().abs() + (k + 8) * EPS * size.double() + 1e-30).all())


@pytest.mark.parametrize("mode", MODES)
def test_bfloat16_gradient(mode):
    x, _, b, q, w_scale, weight = _case(5, 23, 17)
    x = x.bfloat16().reshape(5, 1, 23).requires_grad_()
    y = _run(mode, x, weight, b)
    assert y.dtype == torch.bfloat16
    grad_y = torch.randn_like(y)
    y.backward(grad_y)
    assert x.grad.dtype == torch.bfloat16
    expected = grad_y.float() @ (q.float() * w_scale[:, None])
    torch.testing.assert_close(x.grad.float(), expected, rtol=2.0**-7, atol=1e-2)


# Tile edges of the weight-only kernels: k across the 4-k group and the 32-k bf16
# tile step, n across the 16-column block, m across the row tiles and the AMX
# switch at 16 rows, and an empty batch.
WEIGHT_ONLY_HALF_SHAPES = [(0, 32, 16), (1, 31, 15), (15, 33, 17), (16, 32, 16), (17, 64, 33),
                           (33, 100, 17), (40, 768, 70)]


@pytest.mark.parametrize("m, k, n", WEIGHT_ONLY_HALF_SHAPES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_weight_only_half_in_half_out_is_float32_rounded_once(isa, dtype, m, k, n):
    # The kernel reads and writes x's dtype itself; the result must be the
    # float32 op on the exactly widened x, each output rounded once.
    x, _, b, _q, _w_scale, weight = _case(m, k, n, seed=m + k)
    xh = x.to(dtype)
    expected = ops.qlinear_weight_only(xh.float(), weight, b).to(dtype)
    for bias in (b, None):
        want = expected if bias is not None else ops.qlinear_weight_only(xh.float(), weight).to(dtype)
        y = ops.qlinear_weight_only(xh, weight, bias)  # bfloat16: the eager path; float16: dispatch
        assert y.dtype == dtype
        assert torch.equal(y.view(torch.int16), want.view(torch.int16))
    # Through torch.library dispatch with a gradient to compute: the same
    # forward, and grad_x = grad_y @ dequantized weight rounded once to x's dtype.
    xg = xh.clone().requires_grad_()
    y = ops.qlinear_weight_only(xg, weight, b)
    assert torch.equal(y.detach().view(torch.int16), expected.view(torch.int16))
    grad_y = torch.randn(m, n).to(dtype)
    y.backward(grad_y)
    dequantized = qops.unpack_weight(weight.packed, n, k).float() * weight.scale[:, None]
    assert torch.equal(xg.grad, (grad_y.float() @ dequantized).to(dtype))


# ---- torch.library contract ------------------------------------------------------------------

def test_opcheck():
    x, _, b, _q, w_scale, weight = _case(3, 21, 18)
    a = torch.randint(0, 256, (3, 21), dtype=torch.uint8)
    torch.library.opcheck(torch.ops.slimtorch.qgemm_quantize_rows.default, (x,))
    packed, w_scale, colsum, _ = weight
    torch.library.opcheck(torch.ops.slimtorch.qgemm_s32.default, (a, packed, 18))
    xg = x.clone().requires_grad_()
    for args in [(x, packed, w_scale, colsum, b), (xg, packed, w_scale, colsum, None)]:
        torch.library.opcheck(torch.ops.slimtorch.qlinear_dynamic.default, args)
        torch.library.opcheck(torch.ops.slimtorch.qlinear_static.default, args + (0.05, 128))
        torch.library.opcheck(torch.ops.slimtorch.qlinear_weight_only.default, args[:3] + args[4:])
    # bfloat16 activations: the fake and the kernels agree on the output dtype.
    xb = x.bfloat16()
    for args in [(xb, packed, w_scale, colsum, b), (xb.clone().requires_grad_(), packed, w_scale, colsum, None)]:
        torch.library.opcheck(torch.ops.slimtorch.qlinear_dynamic.default, args)
        torch.library.opcheck(torch.ops.slimtorch.qlinear_static.default, args + (0.05, 128))
        torch.library.opcheck(torch.ops.slimtorch.qlinear_weight_only.default, args[:3] + args[4:])


@pytest.mark.parametrize("mode", MODES)
def test_compile_fullgraph(mode):
    x, _, b, _q, _w_scale, weight = _case(4, 40, 24)

    def f(x):
        return torch.relu(_run(mode, x, weight, b)) * 2

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x), f(x))
    xb = x.bfloat16()
    assert compiled(xb).dtype == torch.bfloat16
    assert torch.equal(compiled(xb), f(xb))


# ---- every device (cpu, and cuda where a GPU and the CUDA kernels exist) --------------------

@pytest.mark.parametrize("m, k, n", SHAPES)
def test_every_device_matches_reference(device, m, k, n):
    x, _, b, q, w_scale, weight = _case(m, k, n)
    device_weight = ops.PackedInt8Weight(*(t.to(device) for t in weight[:3]), weight.in_features)
    xc, bc = x.to(device), b.to(device)
    # Integer stages bit-exact with the reference.
    for got, expected in zip(ops.qgemm_quantize_rows(xc), ref.quantize_rows(x)):
        assert torch.equal(got.cpu().nan_to_num(), expected.nan_to_num())
    a = torch.randint(0, 256, (m, k), dtype=torch.uint8)
    assert torch.equal(ops.qgemm_s32(a.to(device), device_weight).cpu(), ref.qgemm_s32(a, q))
    y = ops.qlinear_dynamic(xc, device_weight, bc).cpu()
    _assert_epilogue_close(y, ref.qlinear_dynamic(x, q, w_scale, b), _epilogue_terms(x, q, w_scale, b), b)
    y = ops.qlinear_static(xc, device_weight, 0.05, 128, bc).cpu()
    _assert_epilogue_close(y, ref.qlinear_static(x, q, w_scale, b, 0.05, 128),
                           _epilogue_terms(x, q, w_scale, b, (0.05, 128)), b)
    y = ops.qlinear_weight_only(xc, device_weight, bc).cpu()
    exact = (x.double() @ q.double().T) * w_scale.double() + b.double()
    # The CPU paths with native bf16 round x to bf16 (relative error at most
    # 2^-8) from weight_only_bf16_min_rows() rows on.
    bf16_x = device.type == "cpu" and _native.cpu is not None and 0 < _bf16_rows() <= m
    unit = (k + 4) * EPS + (2.0**-8 if bf16_x else 0.0)
    bound = unit * (x.abs().double() @ q.abs().double().T) * w_scale.double() + 4 * EPS * b.abs().double()
    assert bool(((y.double() - exact).abs() <= bound + 1e-30).all())
