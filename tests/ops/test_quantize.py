"""choose_qparams / quantize / dequantize: kernels against the reference on every
ISA path, and against torch's own quantization bit for bit."""

from __future__ import annotations

import platform

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimtorch import ops, reference
from slimtorch.reference import MIN_SCALE

pytestmark = pytest.mark.filterwarnings("ignore:.*quantized tensor creation functions:UserWarning")

FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
QDTYPES = [torch.int8, torch.uint8]
QRANGE = {torch.int8: (-128, 127), torch.uint8: (0, 255)}
TORCH_QTYPE = {torch.int8: torch.qint8, torch.uint8: torch.quint8}
# 0, 1, odd, vector widths -1/+0/+1 (8 and 16 lanes, 16-element AVX2 steps), a threading chunk +/- 1, large.
SIZES = [0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 65535, 65536, 65537, 1_000_003]
# Shapes for per-channel tests: short rows (inner < 16) and long rows, across chunk boundaries.
SHAPES = [(5,), (1,), (3, 17), (17, 3), (2, 3, 19), (4, 1, 5), (2, 3, 4, 17), (3, 2, 1, 33)]
# Large enough to span threading chunks (65536 elements) with long and short rows.
LARGE_SHAPES = [(3, 70001), (70001, 3), (5, 2, 13107)]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _data(shape, dtype=torch.float32, seed=0, spread=3.0) -> torch.Tensor:
    return (torch.randn(shape, generator=_generator(seed)) * spread).to(dtype)


def _qparams(channels: int | None, qdtype: torch.dtype, seed: int = 1):
    """Scales that are not powers of two, zero points across the whole range."""
    g = _generator(seed)
    qmin, qmax = QRANGE[qdtype]
    shape = () if channels is None else (channels,)
    scale = torch.rand(shape, generator=g) * 0.05 + 0.003
    zero_point = torch.randint(qmin, qmax + 1, shape, generator=g, dtype=torch.int32)
    return scale, zero_point


# torch's x86-64 build quantizes by the documented rule (round half to even of
# x * (1 / scale), then + zero point); its aarch64 build rounds differently at
# some boundaries, so there the reference alone is the oracle.
TORCH_FOLLOWS_RULE = platform.machine().lower() in ("x86_64", "amd64")


def _oracle(x, scale, zero_point, axis, qdtype) -> torch.Tensor:
    """The reference result, checked against torch's where torch follows the rule."""
    want = reference.quantize(x, scale, zero_point, axis, qdtype)
    if TORCH_FOLLOWS_RULE:
        assert torch.equal(want, _torch_quantize(x.float(), scale, zero_point, axis, qdtype))
    return want


def _torch_quantize(x, scale, zero_point, axis, qdtype) -> torch.Tensor:
    if axis is None:
        return torch.quantize_per_tensor(x, float(scale), int(zero_point), TORCH_QTYPE[qdtype]).int_repr()
    return torch.quantize_per_channel(x, scale.double(), zero_point.long(), axis, TORCH_QTYPE[qdtype]).int_repr()


def _tie_data(scale: torch.Tensor, zero_point: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Values at and next to .5 rounding boundaries of x * (1/scale) (+ zp), plus huge values."""
    g = _generator(seed)
    k = torch.randint(-400, 400, (n,), generator=g).float() + 0.5
    at_half = k * scale.float().mean()
    by_inverse = k / (1.0 / scale.float().mean())
    shifted = (k - zero_point.float().mean()) * scale.float().mean()
    near = torch.nextafter(at_half, torch.where(torch.rand(n, generator=g) < 0.5, -torch.inf, torch.inf))
    huge = torch.tensor([1e30, -1e30, 3.4e38, -3.4e38, 2.2e9, -2.2e9, 1e-30, -1e-38, 0.0, -0.0, 65504.0])
    return torch.cat([at_half, by_inverse, shifted, near, huge])


# ---- quantize: kernel vs reference -------------------------------------------------

@pytest.mark.parametrize("qdtype", QDTYPES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_per_tensor_matches_reference(isa, n, dtype, qdtype):
    x = _data(n, dtype, seed=n)
    scale, zero_point = _qparams(None, qdtype, seed=n)
    q = ops.quantize(x, scale, zero_point, dtype=qdtype)
    assert q.dtype == qdtype and q.shape == x.shape
    assert torch.equal(q, reference.quantize(x, scale, zero_point, None, qdtype))
    out = ops.dequantize(q, scale, zero_point, dtype=dtype)
    assert out.dtype == dtype
    assert torch.equal(out, reference.dequantize(q, scale, zero_point, None, dtype))


@pytest.mark.parametrize("qdtype", QDTYPES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_per_channel_every_axis(isa, shape, dtype, qdtype):
    x = _data(shape, dtype, seed=len(shape))
    for axis in range(-len(shape), len(shape)):
        scale, zero_point = _qparams(shape[axis], qdtype, seed=axis + 10)
        q = ops.quantize(x, scale, zero_point, axis=axis, dtype=qdtype)
        expected = reference.quantize(x, scale, zero_point, axis % len(shape), qdtype)
        assert torch.equal(q, expected), f"axis={axis}"
        out = ops.dequantize(q, scale, zero_point, axis=axis, dtype=dtype)
        assert torch.equal(out, reference.dequantize(q, scale, zero_point, axis % len(shape), dtype))
        for symmetric in (True, False):
            got = ops.choose_qparams(x, axis=axis, symmetric=symmetric, dtype=qdtype)
            want = reference.choose_qparams(x, axis % len(shape), symmetric, qdtype)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), f"axis={axis} {symmetric=}"


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", LARGE_SHAPES, ids=str)
def test_per_channel_large(isa, shape, dtype):
    qdtype = QDTYPES[len(shape) % 2]
    x = _data(shape, dtype, seed=11)
    for axis in range(len(shape)):
        scale, zero_point = ops.choose_qparams(x, axis=axis, symmetric=False, dtype=qdtype)
        want = reference.choose_qparams(x, axis, False, qdtype)
        assert torch.equal(scale, want[0]) and torch.equal(zero_point, want[1])
        q = ops.quantize(x, scale, zero_point, axis=axis, dtype=qdtype)
        assert torch.equal(q, reference.quantize(x, scale, zero_point, axis, qdtype)), f"axis={axis}"
        out = ops.dequantize(q, scale, zero_point, axis=axis, dtype=dtype)
        assert torch.equal(out, reference.dequantize(q, scale, zero_point, axis, dtype))


@pytest.mark.parametrize("qdtype", QDTYPES)
def test_dequantize_streaming_stores(isa, threads, qdtype):
    # Float32 outputs of 16 MiB and more take the non-temporal store path;
    # 3 threads make chunks start off 64-byte boundaries.
    torch.set_num_threads(3)
    n = (4 << 20) + 5
    levels = torch.randint(*QRANGE[qdtype], (n,), generator=_generator(8)).to(qdtype)
    scale, zero_point = _qparams(None, qdtype, seed=8)
    want = reference.dequantize(levels, scale, zero_point, None, torch.float32)
    assert torch.equal(ops.dequantize(levels, scale, zero_point), want)
    assert torch.equal(ops.dequantize(levels[1:], scale, zero_point), want[1:])


@pytest.mark.parametrize("qdtype", QDTYPES)
def test_quantize_streaming_stores(threads, qdtype):
    # Outputs of 16 MiB and more take the non-temporal store path (AVX-512);
    # 3 threads make chunks start off 16-byte boundaries.
    torch.set_num_threads(3)
    n = (16 << 20) + 7
    x = _data(n, seed=13, spread=2.0)
    scale, zero_point = _qparams(None, qdtype, seed=13)
    assert torch.equal(ops.quantize(x, scale, zero_point, dtype=qdtype),
                       _oracle(x, scale, zero_point, None, qdtype))
    rows = x[: n - 7].reshape(4, -1)
    scales, zero_points = _qparams(4, qdtype, seed=14)
    assert torch.equal(ops.quantize(rows, scales, zero_points, axis=0, dtype=qdtype),
                       _oracle(rows, scales, zero_points, 0, qdtype))


def test_zero_size_dims(isa):
    for shape, axis in [((0,), 0), ((3, 0), 0), ((0, 4), 1), ((2, 0, 3), 2)]:
        x = torch.empty(shape)
        scale, zero_point = ops.choose_qparams(x, axis=axis, symmetric=False)
        assert scale.shape == (shape[axis],)
        assert torch.all(scale == MIN_SCALE)
        q = ops.quantize(x, scale, zero_point, axis=axis)
        assert q.shape == shape
        assert ops.dequantize(q, scale, zero_point, axis=axis).shape == shape
    scale, zero_point = ops.choose_qparams(torch.empty(0, 5))
    assert scale.shape == () and float(scale) == MIN_SCALE and int(zero_point) == 0


def test_zero_dim_tensor(isa):
    x = torch.tensor(1.2345)
    scale, zero_point = ops.choose_qparams(x)
    q = ops.quantize(x, scale, zero_point)
    assert q.shape == () and int(q) == 127


# ---- bit-exact against torch -----------------------------------------------------------

@pytest.mark.parametrize("qdtype", QDTYPES)
@pytest.mark.parametrize("seed", range(4))
def test_per_tensor_bit_exact_vs_torch(isa, qdtype, seed):
    scale, zero_point = _qparams(None, qdtype, seed=seed)
    for s in [scale, torch.tensor(0.1), torch.tensor(1.0 / 3.0), torch.tensor(0.5), torch.tensor(1e-6)]:
        random = _data(10_001, seed=seed, spread=200 * float(s))
        x = torch.cat([random, _tie_data(s, zero_point, 20_003, seed)])
        assert torch.equal(ops.quantize(x, s, zero_point, dtype=qdtype),
                           _oracle(x, s, zero_point, None, qdtype))


@pytest.mark.parametrize("qdtype", QDTYPES)
@pytest.mark.parametrize("shape", [(7, 3001), (3001, 7), (3, 5, 1001), (2, 3, 4, 251)], ids=str)
def test_per_channel_bit_exact_vs_torch(isa, qdtype, shape):
    for axis in range(len(shape)):
        scale, zero_point = _qparams(shape[axis], qdtype, seed=axis)
        n = torch.Size(shape).numel()
        ties = _tie_data(scale, zero_point, n, seed=axis)[:n]
        # Half the elements at rounding boundaries of their own channel's scale.
        own = (torch.randint(-300, 300, shape, generator=_generator(axis)).float() + 0.5)
        channel_shape = [1] * len(shape)
        channel_shape[axis] = shape[axis]
        own = own * scale.reshape(channel_shape)
        x = torch.where(torch.rand(shape, generator=_generator(7)) < 0.5, own, ties.reshape(shape))
        got = ops.quantize(x, scale, zero_point, axis=axis, dtype=qdtype)
        assert torch.equal(got, _oracle(x, scale, zero_point, axis, qdtype)), f"axis={axis}"


@pytest.mark.parametrize("qdtype", QDTYPES)
def test_dequantize_bit_exact_vs_torch(isa, qdtype):
    qmin, qmax = QRANGE[qdtype]
    levels = torch.arange(qmin, qmax + 1).repeat(9).to(qdtype)
    for s in [0.1, 1 / 3, 3.7e-3, 1e-38 * 123, 1.7e36]:
        scale = torch.tensor(s)
        for zp in [qmin, 0 if qmin < 0 else 128, qmax, 3]:
            zero_point = torch.tensor(zp, dtype=torch.int32)
            want = torch._make_per_tensor_quantized_tensor(levels, float(scale), zp).dequantize()
            assert torch.equal(ops.dequantize(levels, scale, zero_point).view(torch.int32), want.view(torch.int32))
    levels = levels.reshape(9, -1)
    scale, zero_point = _qparams(9, qdtype)
    want = torch._make_per_channel_quantized_tensor(levels, scale.double(), zero_point.long(), 0).dequantize()
    assert torch.equal(ops.dequantize(levels, scale, zero_point, axis=0), want)


@pytest.mark.skipif(not TORCH_FOLLOWS_RULE, reason="torch's build on this machine does not follow the rule")
def test_reference_matches_torch():
    # The oracle itself, including its emulated fused multiply-add, against torch.
    for qdtype in QDTYPES:
        scale, zero_point = _qparams(None, qdtype, seed=5)
        x = torch.cat([_data(50_000, seed=5), _tie_data(scale, zero_point, 50_000, seed=5)])
        assert torch.equal(reference.quantize(x, scale, zero_point, None, qdtype),
                           _torch_quantize(x, scale, zero_point, None, qdtype))


# ---- half-precision outputs and inputs ----------------------------------------------

@pytest.mark.parametrize("out_dtype", [torch.float16, torch.bfloat16])
def test_dequantize_half_rounding(isa, out_dtype):
    # Every level against many scales, including ones whose products are half
    # subnormals, overflow to Inf, or sit on rounding ties.
    levels = torch.arange(-128, 128).to(torch.int8).repeat(64)
    scales = torch.cat([torch.rand(40, generator=_generator(3)) * 10, torch.tensor(
        [2**-24, 2**-20, 3 * 2**-25, 1e-6, 1e-40 * 1e5, 300.0, 600.0, 1e35, 2.0**120, 1.0 + 2**-11, 1.0 + 3 * 2**-11,
         1.0 + 2**-8, 1.0 + 3 * 2**-8, 1 / 3, 0.1, 1e-30, 65504.0 / 127, 65520.0 / 127, 0.7, 0.9, 1.1, 5.0, 9.0,
         1e-3])])
    assert scales.numel() == 64
    x = levels.reshape(-1, 64)
    scale = scales
    zero_point = torch.randint(-128, 128, (64,), generator=_generator(4), dtype=torch.int32)
    got = ops.dequantize(x, scale, zero_point, axis=1, dtype=out_dtype)
    assert torch.equal(got.view(torch.int16),
                       reference.dequantize(x, scale, zero_point, 1, out_dtype).view(torch.int16))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_input_is_exact_float32(isa, dtype):
    x = _data(4099, dtype, seed=9)
    scale, zero_point = _qparams(None, torch.int8, seed=9)
    want = _oracle(x.float(), scale, zero_point, None, torch.int8)
    assert torch.equal(ops.quantize(x, scale, zero_point), want)


# ---- choose_qparams ----------------------------------------------------------------------

@pytest.mark.parametrize("qdtype", QDTYPES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("n", [1, 17, 65537, 1_000_003])
def test_choose_qparams_per_tensor(isa, n, dtype, qdtype):
    x = _data(n, dtype, seed=n) + 0.5
    for symmetric in (True, False):
        scale, zero_point = ops.choose_qparams(x, symmetric=symmetric, dtype=qdtype)
        want = reference.choose_qparams(x, None, symmetric, qdtype)
        assert scale.shape == () and zero_point.shape == ()
        assert scale.dtype == torch.float32 and zero_point.dtype == torch.int32
        assert torch.equal(scale, want[0]) and torch.equal(zero_point, want[1])


def test_choose_qparams_conventions(isa):
    x = torch.tensor([-1.0, 0.25, 2.54])
    scale, zero_point = ops.choose_qparams(x, symmetric=True, dtype=torch.int8)
    assert float(scale) == pytest.approx(2.54 / 127) and int(zero_point) == 0
    scale, zero_point = ops.choose_qparams(x, symmetric=True, dtype=torch.uint8)
    assert float(scale) == pytest.approx(2.54 / 127) and int(zero_point) == 128
    scale, zero_point = ops.choose_qparams(x, symmetric=False, dtype=torch.uint8)
    assert float(scale) == pytest.approx(3.54 / 255) and int(zero_point) == round(1.0 / (3.54 / 255))
    # The asymmetric range always includes 0 (exactly representable).
    scale, zero_point = ops.choose_qparams(torch.tensor([2.0, 3.0]), symmetric=False, dtype=torch.int8)
    assert int(zero_point) == -128 and float(scale) == pytest.approx(3.0 / 255)
    q = ops.quantize(torch.tensor([0.0, 3.0]), scale, zero_point)
    assert q.tolist() == [-128, 127]
    scale, zero_point = ops.choose_qparams(torch.tensor([-2.0, -3.0]), symmetric=False, dtype=torch.uint8)
    assert int(zero_point) == 255


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("qdtype", QDTYPES)
def test_all_zero_gets_tiny_positive_scale(isa, symmetric, qdtype):
    x = torch.zeros(5, 40)
    x[1] = torch.linspace(-1, 1, 40)
    scale, zero_point = ops.choose_qparams(x, axis=0, symmetric=symmetric, dtype=qdtype)
    eps = torch.finfo(torch.float32).eps
    assert scale[0] == eps and scale[2:].eq(eps).all() and scale[1] > eps
    q = ops.quantize(x, scale, zero_point, axis=0, dtype=qdtype)
    assert torch.equal(ops.dequantize(q, scale, zero_point, axis=0)[0], torch.zeros(40))
    scale, zero_point = ops.choose_qparams(torch.zeros(1000), symmetric=symmetric, dtype=qdtype)
    assert float(scale) == eps and torch.isfinite(1 / scale)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_choose_qparams_rejects_non_finite(isa, dtype, bad):
    for n, position in [(1, 0), (40, 33), (100_000, 99_999)]:
        x = torch.zeros(n, dtype=dtype)
        x[position] = bad
        with pytest.raises(ValueError, match="^x: expected finite values"):
            ops.choose_qparams(x)
        with pytest.raises(ValueError, match="^x: expected finite values"):
            ops.choose_qparams(x.reshape(1, -1), axis=0, symmetric=False)
    with pytest.raises(ValueError, match="^x: expected finite values"):
        reference.choose_qparams(x, None, True, torch.int8)


# ---- non-finite quantize, round trip, threads, strides -----------------------------------

@pytest.mark.parametrize("qdtype", QDTYPES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_non_finite_quantize(isa, dtype, qdtype):
    qmin, qmax = QRANGE[qdtype]
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), 1.0, -float("nan")])
    x = special.repeat(41).to(dtype)  # vector bodies and tails
    zp = 3 if qdtype == torch.int8 else 200
    for axis in (None, 0):
        n = x.shape[0]
        scale = torch.tensor(0.5) if axis is None else torch.full((n,), 0.5)
        zero_point = torch.tensor(zp, dtype=torch.int32) if axis is None else torch.full((n,), zp, dtype=torch.int32)
        q = ops.quantize(x, scale, zero_point, axis=axis, dtype=qdtype).int().reshape(41, 5)
        expected = torch.tensor([zp, qmax, qmin, min(zp + 2, qmax), zp], dtype=torch.int32)
        assert torch.equal(q, expected.expand(41, 5)), f"axis={axis}"
        assert torch.equal(q.reshape(-1).to(qdtype), reference.quantize(x, scale, zero_point, axis, qdtype))


@settings(max_examples=80, deadline=None)
@given(
    values=st.lists(st.floats(min_value=-1e6, max_value=1e6, width=32), min_size=1, max_size=70),
    symmetric=st.booleans(),
    qdtype=st.sampled_from(QDTYPES),
)
def test_property_round_trip_error(values, symmetric, qdtype):
    x = torch.tensor(values, dtype=torch.float32)
    scale, zero_point = ops.choose_qparams(x, symmetric=symmetric, dtype=qdtype)
    q = ops.quantize(x, scale, zero_point, dtype=qdtype)
    error = (ops.dequantize(q, scale, zero_point).double() - x.double()).abs().max()
    # scale / 2 from rounding, plus float32 rounding of x * (1/scale) and of the result.
    assert error <= float(scale) * (0.5 + 2**-15) + float(x.abs().max()) * 2**-23


@settings(max_examples=80, deadline=None)
@given(
    values=st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), max_size=70),
    scale=st.floats(min_value=2.0**-100, max_value=2.0**100, width=32),
    zp_fraction=st.floats(min_value=0, max_value=1),
    qdtype=st.sampled_from(QDTYPES),
    dtype=st.sampled_from(FLOAT_DTYPES),
)
def test_property_matches_reference_and_torch(values, scale, zp_fraction, qdtype, dtype):
    qmin, qmax = QRANGE[qdtype]
    x = torch.tensor(values, dtype=torch.float32).to(dtype)
    scale = torch.tensor(scale)
    zero_point = torch.tensor(round(qmin + zp_fraction * (qmax - qmin)), dtype=torch.int32)
    q = ops.quantize(x, scale, zero_point, dtype=qdtype)
    assert torch.equal(q, reference.quantize(x, scale, zero_point, None, qdtype))
    finite = torch.isfinite(x)
    if TORCH_FOLLOWS_RULE and finite.all() and x.numel():
        assert torch.equal(q, _torch_quantize(x.float(), scale, zero_point, None, qdtype))
    if x.numel():
        scales, zero_points = scale.expand(x.shape[0]).clone(), zero_point.expand(x.shape[0]).clone()
        qc = ops.quantize(x, scales, zero_points, axis=0, dtype=qdtype)
        assert torch.equal(qc, reference.quantize(x, scales, zero_points, 0, qdtype))
        if TORCH_FOLLOWS_RULE and finite.all():
            assert torch.equal(qc, _torch_quantize(x.float(), scales, zero_points, 0, qdtype))


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_thread_counts_agree(threads, n_threads):
    torch.set_num_threads(n_threads)
    x = _data((7, 3 * 65536 + 5), seed=3)
    for axis in (None, 0, 1):
        scale, zero_point = ops.choose_qparams(x, axis=axis, symmetric=False, dtype=torch.uint8)
        want = reference.choose_qparams(x, axis, False, torch.uint8)
        assert torch.equal(scale, want[0]) and torch.equal(zero_point, want[1])
        q = ops.quantize(x, scale, zero_point, axis=axis, dtype=torch.uint8)
        assert torch.equal(q, reference.quantize(x, scale, zero_point, axis, torch.uint8))


def test_non_contiguous(isa):
    base = _data((64, 48), seed=4)
    x = base.t()[:, ::3]
    scale, zero_point = ops.choose_qparams(x, axis=1, symmetric=False)
    q = ops.quantize(x, scale, zero_point, axis=1)
    assert q.is_contiguous()
    assert torch.equal(q, reference.quantize(x.contiguous(), scale, zero_point, 1, torch.int8))
    dq = ops.dequantize(q.t(), scale, zero_point, axis=0)
    assert torch.equal(dq, reference.dequantize(q.t().contiguous(), scale, zero_point, 0, torch.float32))
    one_element = (torch.tensor([0.25]), torch.tensor([7], dtype=torch.int32))
    assert torch.equal(ops.quantize(x, *one_element), reference.quantize(x, *one_element, None, torch.int8))


# ---- bad input --------------------------------------------------------------------------------

X = torch.ones(4, 3)
S, Z = torch.tensor(0.1), torch.tensor(0, dtype=torch.int32)
S3, Z3 = torch.full((3,), 0.1), torch.zeros(3, dtype=torch.int32)


# ---- out= ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("axis", [None, 1])
@pytest.mark.parametrize("compiled", [False, True])
def test_out_receives_the_result(axis, compiled):
    x = _data((33, 70), seed=21)
    scale, zero_point = ops.choose_qparams(x, axis=axis, symmetric=False, dtype=torch.uint8)
    q_out, f_out = torch.full(x.shape, 7, dtype=torch.uint8), torch.full(x.shape, -1.0, dtype=torch.bfloat16)

    def both(x, q_out, f_out):
        q = ops.quantize(x, scale, zero_point, axis=axis, dtype=torch.uint8, out=q_out)
        return q, ops.dequantize(q, scale, zero_point, axis=axis, dtype=torch.bfloat16, out=f_out)

    fn = torch.compile(both, fullgraph=True, backend="eager") if compiled else both
    q, f = fn(x, q_out, f_out)
    assert q is q_out and f is f_out
    expected = reference.quantize(x, scale, zero_point, axis, torch.uint8)
    assert torch.equal(q_out, expected)
    assert torch.equal(f_out, reference.dequantize(expected, scale, zero_point, axis, torch.bfloat16))


def test_traced_calls_go_through_the_op():
    # Under a dispatch mode (make_fx) the eager shortcut must not run: the
    # graph records the torch.library op.
    from torch.fx.experimental.proxy_tensor import make_fx

    graph = make_fx(lambda x: ops.dequantize(ops.quantize(x, S, Z), S, Z))(X)
    targets = {str(node.target) for node in graph.graph.nodes}
    assert {"slimtorch.quantize.default", "slimtorch.dequantize.default"} <= targets


_Q = X.to(torch.int8)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: ops.quantize(X, S, Z, out=[0]), TypeError,
         "^out: expected a torch.Tensor or None"),
        (lambda: ops.quantize(X, S, Z, out=torch.empty(4, 3, dtype=torch.uint8)), TypeError,
         "^out: expected dtype int8"),
        (lambda: ops.quantize(X, S, Z, out=torch.empty(3, 4, dtype=torch.int8)), ValueError,
         r"^out: expected shape \(4, 3\)"),
        (lambda: ops.quantize(X, S, Z, out=torch.empty(3, 4, dtype=torch.int8).t()), ValueError,
         "^out: expected a contiguous"),
        (lambda: ops.quantize(X, S, Z, out=torch.empty(4, 3, dtype=torch.int8, device="meta")), ValueError,
         "^out: expected a tensor on cpu"),
        (lambda: ops.dequantize(_Q, S, Z, out=torch.empty(4, 3, dtype=torch.float16)), TypeError,
         "^out: expected dtype float32"),
        (lambda: ops.dequantize(_Q, S, Z, out=torch.empty(12)), ValueError, r"^out: expected shape \(4, 3\)"),
        (lambda: ops.dequantize(_Q, S, Z, out=torch.empty(4, 3, requires_grad=True)), ValueError,
         "^out: expected a tensor that does not require grad"),
        (lambda: ops.quantize(X, S, Z, out=X.view(torch.int8)[:, :3]), ValueError, "^out: expected a contiguous"),
    ],
)
def test_bad_out(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_out_overlapping_the_input_gets_the_result():
    # The result is computed first, then copied over the input's bytes.
    x = _data((64,), seed=5)
    scale, zero_point = torch.tensor(0.03), torch.tensor(-4, dtype=torch.int32)
    expected = reference.quantize(x, scale, zero_point, None, torch.int8)
    out = x.view(torch.int8)[:64]
    assert ops.quantize(x, scale, zero_point, out=out) is out
    assert torch.equal(out, expected)
    buffer = torch.zeros(32, dtype=torch.int8)
    buffer[:8] = torch.arange(-4, 4, dtype=torch.int8)
    q = buffer[:8]
    want = reference.dequantize(q.clone(), S, Z, None, torch.float16)
    out = buffer.view(torch.float16)[2:10]  # bytes 4..20: overlaps q's bytes 4..8
    assert torch.equal(ops.dequantize(q, S, Z, dtype=torch.float16, out=out), want)



@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: ops.quantize([1.0], S, Z), TypeError, "^x: expected a torch.Tensor"),
        (lambda: ops.quantize(X.double(), S, Z), TypeError, "^x: expected dtype"),
        (lambda: ops.quantize(X.int(), S, Z), TypeError, "^x: expected dtype"),
        (lambda: ops.quantize(X, 0.1, Z), TypeError, "^scale: expected a torch.Tensor"),
        (lambda: ops.quantize(X, S.double(), Z), TypeError, "^scale: expected dtype float32"),
        (lambda: ops.quantize(X, S, Z.long()), TypeError, "^zero_point: expected dtype int32"),
        (lambda: ops.quantize(X, S, 0), TypeError, "^zero_point: expected a torch.Tensor"),
        (lambda: ops.quantize(X, S3, Z), ValueError, "^scale: expected a 0-dim or 1-element"),
        (lambda: ops.quantize(X, S.reshape(1, 1), Z), ValueError, "^scale: expected a 0-dim or 1-element"),
        (lambda: ops.quantize(X, S, Z3), ValueError, "^zero_point: expected a 0-dim or 1-element"),
        (lambda: ops.quantize(X, S3, Z3, axis=0), ValueError, r"^scale: expected shape \(4,\)"),
        (lambda: ops.quantize(X, S, Z, axis=1), ValueError, r"^scale: expected shape \(3,\)"),
        (lambda: ops.quantize(X, S3, Z, axis=1), ValueError, r"^zero_point: expected shape \(3,\)"),
        (lambda: ops.quantize(X, S, Z, axis=2), ValueError, "^axis: expected an axis in"),
        (lambda: ops.quantize(X, S, Z, axis=-3), ValueError, "^axis: expected an axis in"),
        (lambda: ops.quantize(X, S, Z, axis=1.0), TypeError, "^axis: expected None or an int"),
        (lambda: ops.quantize(X, S, Z, dtype=torch.int32), TypeError, "^dtype: expected torch.int8 or torch.uint8"),
        (lambda: ops.quantize(X, S, Z, dtype=torch.qint8), TypeError, "^dtype: expected torch.int8 or torch.uint8"),
        (lambda: ops.quantize(X, torch.tensor(0.0), Z), ValueError, "^scale: expected finite values > 0"),
        (lambda: ops.quantize(X, torch.tensor(-0.1), Z), ValueError, "^scale: expected finite values > 0"),
        (lambda: ops.quantize(X, torch.tensor(float("nan")), Z), ValueError, "^scale: expected finite values > 0"),
        (lambda: ops.quantize(X, torch.tensor(float("inf")), Z), ValueError, "^scale: expected finite values > 0"),
        (lambda: ops.quantize(X, torch.tensor(1e-45), Z), ValueError, "^scale: expected finite values > 0"),
        (lambda: ops.quantize(X, torch.tensor([0.1, 0.0, 0.1]), Z3, axis=1), ValueError, "^scale: .* at index 1"),
        (lambda: ops.quantize(X, S, torch.tensor(128, dtype=torch.int32)), ValueError,
         r"^zero_point: expected values in \[-128, 127\] for int8, got 128"),
        (lambda: ops.quantize(X, S, torch.tensor(-1, dtype=torch.int32), dtype=torch.uint8), ValueError,
         r"^zero_point: expected values in \[0, 255\] for uint8"),
        (lambda: ops.quantize(X, S3, torch.tensor([0, 0, 300], dtype=torch.int32), axis=-1), ValueError,
         "^zero_point: .* at index 2"),
        (lambda: ops.dequantize(X, S, Z), TypeError, "^q: expected dtype int8, uint8"),
        (lambda: ops.dequantize(X.to(torch.int16), S, Z), TypeError, "^q: expected dtype int8, uint8"),
        (lambda: ops.dequantize(X.to(torch.int8), S, Z, dtype=torch.float64), TypeError,
         "^dtype: expected torch.float32"),
        (lambda: ops.dequantize(X.to(torch.int8), S, Z, dtype=torch.int8), TypeError, "^dtype: expected torch.float32"),
        (lambda: ops.dequantize(X.to(torch.uint8), S, torch.tensor(-3, dtype=torch.int32)), ValueError,
         r"^zero_point: expected values in \[0, 255\] for uint8"),
        (lambda: ops.dequantize(X.to(torch.int8), S, torch.tensor(200, dtype=torch.int32)), ValueError,
         r"^zero_point: expected values in \[-128, 127\]"),
        (lambda: ops.dequantize(X.to(torch.int8), S3, Z3, axis=0), ValueError, r"^scale: expected shape \(4,\)"),
        (lambda: ops.dequantize(X.to(torch.int8), torch.tensor(0.0), Z), ValueError, "^scale: expected finite values"),
        (lambda: ops.choose_qparams(X.double()), TypeError, "^x: expected dtype"),
        (lambda: ops.choose_qparams(X, axis=5), ValueError, "^axis: expected an axis in"),
        (lambda: ops.choose_qparams(torch.tensor(1.0), axis=0), ValueError, "^axis: expected an axis in"),
        (lambda: ops.choose_qparams(X, symmetric=1), TypeError, "^symmetric: expected a bool"),
        (lambda: ops.choose_qparams(X, dtype=torch.float32), TypeError, "^dtype: expected torch.int8 or torch.uint8"),
        (lambda: ops.choose_qparams(X, dtype="int8"), TypeError, "^dtype: expected torch.int8 or torch.uint8"),
        (lambda: ops.quantize(X, S.to("meta"), Z), ValueError, "^scale: expected a tensor on x's device"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_value_checks_without_native_kernels():
    # The checks the CUDA path and the reference fallback run (torch ops).
    from slimtorch.ops.quantize import _check_qparam_values

    _check_qparam_values(S3, Z3, torch.int8)
    with pytest.raises(ValueError, match="^scale: .* at index 2"):
        _check_qparam_values(torch.tensor([0.1, 0.1, float("nan")]), Z3, torch.int8)
    with pytest.raises(ValueError, match=r"^zero_point: expected values in \[0, 255\] for uint8, got -1$"):
        _check_qparam_values(S, torch.tensor(-1, dtype=torch.int32), torch.uint8)


# ---- torch.library contract ------------------------------------------------------------------

def test_opcheck():
    x = _data((6, 37), seed=2)
    scale, zero_point = ops.choose_qparams(x, axis=1, symmetric=False, dtype=torch.uint8)
    torch.library.opcheck(torch.ops.slimtorch.choose_qparams.default, (x, 1, False, torch.uint8))
    torch.library.opcheck(torch.ops.slimtorch.choose_qparams.default, (x.half(), None, True, torch.int8))
    torch.library.opcheck(torch.ops.slimtorch.quantize.default, (x, scale, zero_point, 1, torch.uint8))
    torch.library.opcheck(torch.ops.slimtorch.quantize.default, (x.bfloat16(), S, Z, None, torch.int8))
    q = ops.quantize(x, scale, zero_point, axis=1, dtype=torch.uint8)
    torch.library.opcheck(torch.ops.slimtorch.dequantize.default, (q, scale, zero_point, 1, torch.float16))
    torch.library.opcheck(torch.ops.slimtorch.dequantize.default, (q.to(torch.int8), S, Z, None, torch.float32))


def test_compile_fullgraph():
    def fake_quant(x: torch.Tensor) -> torch.Tensor:
        scale, zero_point = ops.choose_qparams(x, axis=0, symmetric=False, dtype=torch.uint8)
        q = ops.quantize(x, scale, zero_point, axis=0, dtype=torch.uint8)
        return ops.dequantize(q, scale, zero_point, axis=0, dtype=torch.bfloat16)

    x = _data((16, 100), seed=6)
    compiled = torch.compile(fake_quant, fullgraph=True, backend="eager")
    assert torch.equal(compiled(x), fake_quant(x))


def test_reference_fallback_without_native_module(monkeypatch):
    from slimtorch import _native

    x = _data((5, 40), seed=12)
    scale, zero_point = ops.choose_qparams(x, axis=0, symmetric=False, dtype=torch.uint8)
    q = ops.quantize(x, scale, zero_point, axis=0, dtype=torch.uint8)
    out = ops.dequantize(q, scale, zero_point, axis=0, dtype=torch.bfloat16)
    monkeypatch.setattr(_native, "cpu", None)
    monkeypatch.setattr(_native, "_warned", set())
    with pytest.warns(RuntimeWarning, match="using the slower pure-torch reference"):
        got = ops.choose_qparams(x, axis=0, symmetric=False, dtype=torch.uint8)
    assert torch.equal(got[0], scale) and torch.equal(got[1], zero_point)
    with pytest.warns(RuntimeWarning, match="slimtorch.ops.quantize"):
        assert torch.equal(ops.quantize(x, scale, zero_point, axis=0, dtype=torch.uint8), q)
    with pytest.warns(RuntimeWarning, match="slimtorch.ops.dequantize"):
        assert torch.equal(ops.dequantize(q, scale, zero_point, axis=0, dtype=torch.bfloat16), out)
    # Value checks still run on the fallback path.
    with pytest.raises(ValueError, match="^scale: expected finite values"):
        ops.quantize(x, torch.zeros(5), zero_point, axis=0, dtype=torch.uint8)
    with pytest.raises(ValueError, match="^x: expected finite values"):
        ops.choose_qparams(torch.tensor([1.0, float("nan")]))


# ---- accelerators: bit-exact with the CPU kernels (runs only where a GPU is present) --------

@pytest.mark.parametrize("qdtype", QDTYPES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", [(0,), (1,), (33,), (3, 17), (2, 3, 19), (5, 70001), (70001, 3)], ids=str)
def test_accelerator_matches_cpu(accelerator, shape, dtype, qdtype):
    x = _data(shape, dtype, seed=21)
    for axis in [None, *range(len(shape))]:
        for symmetric in (True, False):
            want = ops.choose_qparams(x, axis=axis, symmetric=symmetric, dtype=qdtype)
            got = ops.choose_qparams(x.to(accelerator), axis=axis, symmetric=symmetric, dtype=qdtype)
            assert torch.equal(got[0].cpu(), want[0]) and torch.equal(got[1].cpu(), want[1])
        scale, zero_point = _qparams(None if axis is None else shape[axis], qdtype, seed=22)
        special = x.clone().reshape(-1)
        if special.numel() > 4:
            special[:3] = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=dtype)
        special = special.reshape(shape)
        q = ops.quantize(special, scale, zero_point, axis=axis, dtype=qdtype)
        q_device = ops.quantize(special.to(accelerator), scale.to(accelerator), zero_point.to(accelerator),
                                axis=axis, dtype=qdtype)
        assert torch.equal(q_device.cpu(), q)
        for out_dtype in FLOAT_DTYPES:
            want = ops.dequantize(q, scale, zero_point, axis=axis, dtype=out_dtype)
            got = ops.dequantize(q.to(accelerator), scale.to(accelerator), zero_point.to(accelerator),
                                 axis=axis, dtype=out_dtype)
            assert torch.equal(got.cpu(), want)


def test_accelerator_errors(accelerator):
    x = torch.zeros(1000, device=accelerator)
    x[999] = float("nan")
    with pytest.raises(ValueError, match="^x: expected finite values"):
        ops.choose_qparams(x)
    with pytest.raises(ValueError, match="^scale: expected finite values"):
        ops.quantize(x, torch.tensor(0.0, device=accelerator), torch.tensor(0, dtype=torch.int32, device=accelerator))
    with pytest.raises(ValueError, match="^scale: expected a tensor on x's device"):
        ops.quantize(x, torch.tensor(0.1), torch.tensor(0, dtype=torch.int32, device=accelerator))
    # Bit-exact with the rule (and torch's CPU quantization) on data at rounding ties.
    scale, zero_point = _qparams(None, torch.uint8, seed=23)
    ties = _tie_data(scale, zero_point, 100_000, seed=23)
    got = ops.quantize(ties.to(accelerator), scale.to(accelerator), zero_point.to(accelerator), dtype=torch.uint8).cpu()
    assert torch.equal(got, _oracle(ties, scale, zero_point, None, torch.uint8))
