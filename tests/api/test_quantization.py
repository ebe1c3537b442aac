"""Observers, calibrate, prepare_qat_ / convert_qat_."""

from __future__ import annotations

import functools

import pytest
import torch
from _api_models import bert_input, make_bert, make_mlp
from torch import nn

import slimtorch
from slimtorch import reference
from slimtorch.api.quantization import QATLinear


def batches(n: int = 4, seed: int = 0, scale: float = 1.0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 12, generator=g) * scale * (i + 1) for i in range(n)]


def test_minmax_observer_tracks_range_over_batches():
    obs = slimtorch.MinMaxObserver()
    data = batches()
    for x in data:
        assert obs(x) is x
    allx = torch.cat(data)
    assert obs.range() == (float(allx.min()), float(allx.max()))
    obs(torch.empty(0, 12))  # empty batches are ignored
    assert obs.range() == (float(allx.min()), float(allx.max()))
    obs.reset()
    with pytest.raises(RuntimeError, match="nothing observed"):
        obs.range()


def test_moving_average_observer_formula():
    obs = slimtorch.MovingAverageMinMaxObserver(averaging_constant=0.25)
    data = batches(3)
    lo, hi = float(data[0].min()), float(data[0].max())
    for x in data[1:]:
        lo += 0.25 * (float(x.min()) - lo)
        hi += 0.25 * (float(x.max()) - hi)
    for x in data:
        obs(x)
    got = obs.range()
    assert got[0] == pytest.approx(lo, rel=1e-6) and got[1] == pytest.approx(hi, rel=1e-6)


@pytest.mark.parametrize("pieces", [1, 5])
def test_percentile_observer_matches_quantile_within_bins(pieces):
    x = torch.randn(200_000, generator=torch.Generator().manual_seed(1))
    obs = slimtorch.PercentileObserver(percentile=99.0, bins=2048)
    for chunk in x.chunk(pieces):  # later chunks widen the range: counts are re-binned
        obs(chunk)
    lo, hi = obs.range()
    bin_width = float(x.max() - x.min()) / 2048
    assert abs(lo - float(torch.quantile(x, 0.01))) <= 2 * bin_width
    assert abs(hi - float(torch.quantile(x, 0.99))) <= 2 * bin_width


def _fq_error(x, lo, hi):
    obs = slimtorch.MinMaxObserver()
    obs(torch.tensor([lo, hi]))
    scale, zp = obs.calculate_qparams()
    return float((torch.fake_quantize_per_tensor_affine(x, scale, zp, 0, 255) - x).pow(2).mean())


def test_mse_observer_minimizes_quantization_error():
    g = torch.Generator().manual_seed(2)
    # heavy tails: clipping them pays off at 8 bits
    x = torch.randn(100_000, generator=g).div(torch.rand(100_000, generator=g).clamp_min(0.01))
    mse = slimtorch.MSEObserver()
    mse(x)
    lo, hi = mse.range()
    best = _fq_error(x, lo, hi)
    assert best < 0.95 * _fq_error(x, float(x.min()), float(x.max()))
    assert float(x.min()) < lo < -1 and 1 < hi < float(x.max())
    for a in (0.02, 0.05, 0.1, 0.2, 0.5):  # no simple clipping range does much better
        assert best <= 1.1 * _fq_error(x, a * float(x.min()), a * float(x.max()))
    uniform = torch.rand(100_000, generator=g) * 2 - 1  # nothing to clip
    obs = slimtorch.MSEObserver()
    obs(uniform)
    lo, hi = obs.range()
    assert lo < -0.95 and hi > 0.95


@pytest.mark.parametrize("lo, hi, symmetric, dtype, expected", [
    (-1.0, 3.0, False, torch.uint8, (4 / 255, 64)),
    (0.5, 3.0, False, torch.uint8, (3 / 255, 0)),       # range widened to include 0
    (-2.0, -1.0, False, torch.uint8, (2 / 255, 255)),
    (-1.0, 3.0, True, torch.int8, (3 / 127, 0)),
    (0.0, 0.0, False, torch.uint8, (reference.MIN_SCALE, 0)),  # never a zero scale
])
def test_observer_qparams(lo, hi, symmetric, dtype, expected):
    obs = slimtorch.MinMaxObserver(symmetric=symmetric, dtype=dtype)
    obs(torch.tensor([lo, hi]))
    scale, zero_point = obs.calculate_qparams()
    assert scale == pytest.approx(expected[0], rel=1e-6) and zero_point == expected[1]
    assert scale == float(torch.tensor(scale, dtype=torch.float32))


@pytest.mark.parametrize("make, x, error, match", [
    (slimtorch.MinMaxObserver, torch.tensor([1.0, float("nan")]), ValueError, "x"),
    (slimtorch.MinMaxObserver, torch.tensor([1.0, float("inf")]), ValueError, "x"),
    (slimtorch.PercentileObserver, torch.tensor([1, 2]), TypeError, "x"),
    (slimtorch.MinMaxObserver, [1.0], TypeError, "x"),
])
def test_observer_bad_input(make, x, error, match):
    with pytest.raises(error, match=f"^{match}"):
        make()(x)


@pytest.mark.parametrize("make, error, match", [
    (lambda: slimtorch.MinMaxObserver(dtype=torch.float32), TypeError, "dtype"),
    (lambda: slimtorch.MinMaxObserver(symmetric=1), TypeError, "symmetric"),
    (lambda: slimtorch.MovingAverageMinMaxObserver(averaging_constant=0), ValueError, "averaging_constant"),
    (lambda: slimtorch.MovingAverageMinMaxObserver(averaging_constant=2), ValueError, "averaging_constant"),
    (lambda: slimtorch.PercentileObserver(percentile=40), ValueError, "percentile"),
    (lambda: slimtorch.PercentileObserver(bins=4), ValueError, "bins"),
    (lambda: slimtorch.MSEObserver(steps=0), ValueError, "steps"),
    (lambda: slimtorch.MSEObserver(steps=2.5), TypeError, "steps"),
])
def test_observer_bad_arguments(make, error, match):
    with pytest.raises(error, match=f"^{match}"):
        make()


def test_calibrate_collects_linear_input_ranges():
    model = make_mlp().train()
    data = batches()
    ranges = slimtorch.calibrate(model, data)
    assert model.training and all(not m._forward_pre_hooks for m in model.modules())
    inputs = {"0": torch.cat(data)}
    with torch.no_grad():
        inputs["2"] = torch.relu(model[0](inputs["0"]))
        inputs["4"] = torch.relu(model[2](inputs["2"]))
    assert set(ranges) == {"0", "2", "4"}
    for name, x in inputs.items():
        r = ranges[name]
        assert (r.min, r.max) == (float(x.min()), float(x.max()))
        obs = slimtorch.MinMaxObserver()
        obs(x)
        assert (r.activation_scale, r.activation_zero_point) == obs.calculate_qparams()
    only_first = slimtorch.calibrate(model, data, filter_fn=lambda m, n: n == "0", max_batches=1,
                                     observer=functools.partial(slimtorch.PercentileObserver, percentile=99.9))
    assert set(only_first) == {"0"} and only_first["0"].max <= float(data[0].max())


def test_calibrate_batch_kinds_and_bert():
    model = make_bert()
    ids = bert_input()
    by_kwargs = slimtorch.calibrate(model, [{"input_ids": ids}])
    by_tuple = slimtorch.calibrate(model, [(ids,)])
    assert by_kwargs == by_tuple
    assert "encoder.layer.1.intermediate.dense" in by_kwargs and len(by_kwargs) == 13


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(model=None, data=[]), TypeError, "model"),
    (dict(data=torch.zeros(3)), TypeError, "data"),
    (dict(data=[], observer=3), TypeError, "observer"),
    (dict(data=[], observer=lambda: 3), TypeError, "observer"),
    (dict(data=[], filter_fn=1), TypeError, "filter_fn"),
    (dict(data=[], max_batches=0), ValueError, "max_batches"),
])
def test_calibrate_bad_arguments(kwargs, error, match):
    kwargs.setdefault("model", make_mlp())
    with pytest.raises(error, match=f"^{match}"):
        slimtorch.calibrate(**kwargs)


def _fq_weight(w):
    """The reference rules: symmetric int8 per output channel, dequantized."""
    scale, zero_point = reference.choose_qparams(w, 0, True, torch.int8)
    return reference.dequantize(reference.quantize(w, scale, zero_point, 0, torch.int8), scale, zero_point, 0,
                                torch.float32)


def test_prepare_qat_swaps_and_fake_quantizes_with_ste():
    model = make_mlp()
    params = list(model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    slimtorch.prepare_qat_(model)
    assert all(isinstance(model[i], QATLinear) for i in (0, 2, 4))
    assert list(model.parameters()) == params  # same Parameters: the optimizer keeps working
    x = torch.randn(5, 12, requires_grad=True)
    layer = model[0]
    y = layer(x)
    w_fq = _fq_weight(layer.weight.detach())
    assert torch.allclose(y, nn.functional.linear(x.detach(), w_fq, layer.bias), atol=0.05)
    # 8-bit rounding of activations actually happens
    assert not torch.allclose(y, nn.functional.linear(x.detach(), w_fq, layer.bias), atol=1e-6, rtol=0)
    y.sum().backward()
    # STE: per-row ranges cover every activation, so nothing is clipped
    assert torch.allclose(x.grad, torch.ones(5, 32) @ w_fq, atol=1e-5)
    assert torch.allclose(layer.weight.grad, torch.ones(32, 5) @ _fake_row(x.detach()), atol=1e-5)
    loss0 = None
    target = torch.randn(64, 3)
    inputs = torch.randn(64, 12)
    for _ in range(10):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(inputs), target)
        loss0 = loss0 or float(loss.detach())
        loss.backward()
        opt.step()
    assert float(loss.detach()) < loss0


def _fake_row(x):
    """The reference rows of the dynamic scheme, dequantized."""
    codes, scale, zero_point = reference.qgemm.quantize_rows(x)
    return (codes.float() - zero_point[:, None].float()) * scale[:, None]


def test_qat_fake_quantization_is_exactly_int8_linear():
    """QAT rounds weights and activations by the same rules as the kernels:
    the converted Int8Linear's weights are QAT's fake-quantized weights, bit for bit."""
    model = make_mlp()
    slimtorch.prepare_qat_(model)
    layer = model[0]
    w_fq = layer.weight.detach()
    x = torch.randn(7, 12) * 3
    with torch.no_grad():
        y = layer(x)
        assert torch.equal(_fake_row(x), slimtorch.ops.qgemm_fake_quantize_rows(x))
        expected = nn.functional.linear(_fake_row(x), _fq_weight(w_fq), layer.bias)
        assert torch.equal(y, expected)
    slimtorch.convert_qat_(model)
    converted = model[0].to_dense().weight
    assert torch.equal(converted, _fq_weight(w_fq))
    zero = torch.zeros(3, 5)  # an all-zero channel gets the minimum scale, not FLT_MIN
    assert torch.equal(reference.choose_qparams(zero, 0, True, torch.int8)[0],
                       torch.full((3,), slimtorch.ops.MIN_SCALE))


def test_prepare_qat_old_activation_spelling_is_a_deprecated_alias():
    model = make_mlp()
    with pytest.warns(DeprecationWarning, match="activation is deprecated; use scheme='int8_static'"):
        slimtorch.prepare_qat_(model, activation="static")
    assert model[0].scheme == "int8_static" and model[0].activation == "static"


def test_qat_static_observer_updates_only_in_training():
    model = make_mlp()
    slimtorch.prepare_qat_(model, scheme="int8_static", filter_fn=lambda m, n: n == "0")
    assert isinstance(model[0], QATLinear) and type(model[2]) is nn.Linear
    model.eval()
    with pytest.raises(RuntimeError, match="saw no data"):
        model(torch.randn(2, 12))
    model.train()
    model(torch.randn(4, 12))
    seen = model[0].observer.range()
    model.eval()
    model(torch.randn(4, 12) * 100)
    assert model[0].observer.range() == seen


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(model=3), TypeError, "model"),
    (dict(scheme="int8_weight_only"), ValueError, "scheme"),
    (dict(scheme="per_tensor"), ValueError, "scheme"),
    (dict(filter_fn="x"), TypeError, "filter_fn"),
    (dict(filter_fn=lambda m, n: False), ValueError, "model"),
])
def test_prepare_qat_bad_arguments(kwargs, error, match):
    kwargs.setdefault("model", make_mlp())
    with pytest.raises(error, match=f"^{match}"):
        slimtorch.prepare_qat_(**kwargs)
    with pytest.raises(TypeError, match="^model"):
        slimtorch.convert_qat_("model")
