"""Int8Linear: from_dense, the eager fast path against the op path, state_dict
round trip, leading dims, gradients, torch.compile and bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimtorch import ops
from slimtorch.nn import Int8Linear
from slimtorch.reference import qgemm as ref

MODES = ["int8_dynamic", "int8_weight_only", "int8_static"]
STATIC = dict(activation_scale=0.03, activation_zero_point=120)


def _layer(mode, k=37, n=29, bias=True, seed=0):
    torch.manual_seed(seed)
    linear = nn.Linear(k, n, bias=bias)
    kwargs = STATIC if mode == "int8_static" else {}
    return linear, Int8Linear.from_dense(linear, scheme=mode, **kwargs)


def _reference(layer, x):
    q, scale = layer.weight_int8, layer.weight_scale
    if layer.scheme == "int8_dynamic":
        return ref.qlinear_dynamic(x, q, scale, layer.bias)
    if layer.scheme == "int8_static":
        return ref.qlinear_static(x, q, scale, layer.bias, STATIC["activation_scale"], STATIC["activation_zero_point"])
    return ref.qlinear_weight_only(x, q, scale, layer.bias)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bias", [True, False])
def test_from_dense_close_to_linear(mode, bias):
    linear, layer = _layer(mode, 256, 96, bias)
    x = torch.randn(20, 256) * 0.5
    with torch.no_grad():
        exact = linear(x)
        y = layer(x)
    assert y.shape == exact.shape and y.dtype == torch.float32
    assert (y - exact).norm() / exact.norm() < 0.03
    q, scale = ops.qgemm_quantize_weight(linear.weight)
    assert torch.equal(layer.weight_int8, q) and torch.equal(layer.weight_scale, scale)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(1,), (2, 37), (3, 5, 37), (2, 1, 4, 37), (0, 37)])
def test_fast_path_equals_op_path(isa, mode, shape):
    _, layer = _layer(mode)
    x = torch.randn(*shape[:-1], 37) if shape != (1,) else torch.randn(37)
    with torch.no_grad():
        fast = layer(x)
    slow = layer(x.clone().requires_grad_())  # autograd: through torch.library
    assert fast.shape == (*x.shape[:-1], 29)
    assert torch.equal(fast, slow.detach())
    if x.numel():
        torch.testing.assert_close(fast, _reference(layer, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_non_contiguous_and_half_inputs(mode):
    _, layer = _layer(mode)
    x = torch.randn(6, 74)[:, ::2]
    with torch.no_grad():
        assert torch.equal(layer(x), layer(x.contiguous()))
        xt = torch.randn(37, 6).T
        assert torch.equal(layer(xt), layer(xt.contiguous()))
        for dtype in (torch.float16, torch.bfloat16):
            y = layer(x.to(dtype))
            assert y.dtype == dtype
            assert torch.equal(y, layer(x.to(dtype).float()).to(dtype))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(1, 37), (16, 37), (2, 40, 37)])
def test_bfloat16_in_bfloat16_out(isa, mode, shape):
    _, layer = _layer(mode)
    x = torch.randn(*shape).bfloat16()
    with torch.no_grad():
        y = layer(x)
        assert y.dtype == torch.bfloat16 and y.shape == (*shape[:-1], 29)
        # bf16 widens to float32 exactly: the float32 result, rounded once to bf16.
        assert torch.equal(y, layer(x.float()).bfloat16())
        expected = _reference(layer, x)
        assert expected.dtype == torch.bfloat16
        torch.testing.assert_close(y.float(), expected.float(), rtol=2.0**-7, atol=1e-2)
        # As compress_ casts a model: the scales and bias keep float32, the result is unchanged.
        layer.to(torch.bfloat16)
        assert layer.weight_scale.dtype == torch.float32 and layer.bias.dtype == torch.float32
        assert torch.equal(layer(x), y)


@pytest.mark.parametrize("mode", MODES)
def test_bfloat16_gradient(mode):
    _, layer = _layer(mode)
    x = torch.randn(2, 3, 37).bfloat16().requires_grad_()
    y = layer(x)
    assert y.dtype == torch.bfloat16
    grad = torch.randn_like(y)
    y.backward(grad)
    assert x.grad.dtype == torch.bfloat16
    expected = grad.float() @ (layer.weight_int8.float() * layer.weight_scale[:, None])
    torch.testing.assert_close(x.grad.float(), expected, rtol=2.0**-7, atol=1e-2)


@pytest.mark.parametrize("mode", MODES)
def test_edge_sizes(mode):
    for k, n in [(1, 1), (1, 17), (17, 1), (64, 64), (65, 63)]:
        _linear, layer = _layer(mode, k, n)
        x = torch.randn(3, k)
        with torch.no_grad():
            torch.testing.assert_close(layer(x), _reference(layer, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_state_dict_round_trip(mode, tmp_path):
    _, layer = _layer(mode)
    state = layer.state_dict()
    expected_keys = {"weight_int8", "weight_scale", "bias"}
    if mode == "int8_static":
        expected_keys |= {"activation_scale", "activation_zero_point"}
    assert set(state) == expected_keys
    assert state["weight_int8"].dtype == torch.int8 and state["weight_scale"].dtype == torch.float32
    kwargs = STATIC if mode == "int8_static" else {}
    fresh = Int8Linear(37, 29, scheme=mode, **({"activation_scale": 1.0, "activation_zero_point": 0}
                                               if mode == "int8_static" else {}))
    path = tmp_path / "layer.pt"
    torch.save(state, path)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    for key, value in layer.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)
    assert torch.equal(fresh._state[0].packed, layer._state[0].packed)
    assert torch.equal(fresh._state[0].colsum, layer._state[0].colsum)
    x = torch.randn(4, 37)
    with torch.no_grad():
        assert torch.equal(fresh(x), layer(x))
    if kwargs:  # the static parameters come back from the state_dict too
        assert fresh._state[1] == layer._state[1] and fresh._state[1].zero_point == 120


def test_to_dense_and_dtype_moves():
    linear, layer = _layer("int8_dynamic")
    dense = layer.to_dense()
    torch.testing.assert_close(dense.weight, layer.weight_int8.float() * layer.weight_scale[:, None])
    assert (dense.weight - linear.weight).abs().max() <= layer.weight_scale.max() / 2 + 1e-7
    layer.half()  # scales and bias keep float32; the int8 weight is untouched
    assert layer.weight_scale.dtype == torch.float32 and layer.bias.dtype == torch.float32
    assert layer.weight_int8.dtype == torch.int8
    x = torch.randn(2, 37, dtype=torch.float16)
    with torch.no_grad():
        assert layer(x).dtype == torch.float16


@pytest.mark.parametrize("mode", MODES)
def test_gradient_wrt_input(mode):
    _, layer = _layer(mode)
    x = torch.randn(2, 3, 37, requires_grad=True)
    y = layer(x)
    grad = torch.randn_like(y)
    y.backward(grad)
    torch.testing.assert_close(x.grad, grad @ (layer.weight_int8.float() * layer.weight_scale[:, None]))
    assert not any(p.requires_grad for p in layer.parameters())


@pytest.mark.parametrize("mode", MODES)
def test_non_finite_inputs(mode):
    _, layer = _layer(mode)
    x = torch.randn(4, 37)
    x[1, 2] = float("nan")
    x[2, 3] = float("inf")
    with torch.no_grad():
        y = layer(x)
    assert torch.isfinite(y[[0, 3]]).all()
    if mode != "int8_weight_only":
        assert y[1:3].isnan().all()
    else:
        assert y[1].isnan().all()


@pytest.mark.parametrize("mode", MODES)
def test_compile_fullgraph(mode):
    _, layer = _layer(mode)
    model = nn.Sequential(layer, nn.ReLU())
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(3, 2, 37)
    with torch.no_grad():
        assert torch.equal(compiled(x), model(x))


def test_bad_input():
    linear, layer = _layer("int8_dynamic")
    with pytest.raises(TypeError, match="linear: expected a torch.nn.Linear"):
        Int8Linear.from_dense(nn.Conv1d(3, 3, 1))
    with pytest.raises(ValueError, match="scheme: expected one of"):
        Int8Linear.from_dense(linear, scheme="int4")
    with pytest.raises(ValueError, match="activation_scale: scheme 'int8_static' needs"):
        Int8Linear.from_dense(linear, scheme="int8_static")
    with pytest.raises(ValueError, match="activation_scale: only scheme 'int8_static'"):
        Int8Linear.from_dense(linear, scheme="int8_dynamic", activation_scale=0.1, activation_zero_point=0)
    with pytest.raises(ValueError, match=r"activation_zero_point: expected an int in \[0, 255\]"):
        Int8Linear.from_dense(linear, scheme="int8_static", activation_scale=0.1, activation_zero_point=300)
    with pytest.raises(ValueError, match="activation_scale: expected a positive"):
        Int8Linear.from_dense(linear, scheme="int8_static", activation_scale=-0.1, activation_zero_point=3)
    with pytest.raises(TypeError, match="in_features: expected an int"):
        Int8Linear(3.0, 4)
    with pytest.raises(ValueError, match="in_features: at most 66311"):
        Int8Linear(70000, 4)
    Int8Linear(70000, 1, scheme="int8_weight_only")  # no int32 limit
    bad = nn.Linear(3, 2)
    with torch.no_grad():
        bad.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="weight: contains NaN or Inf"):
        Int8Linear.from_dense(bad)
    with pytest.raises(TypeError, match="^x: expected a torch.Tensor"):
        layer([1.0] * 37)
    with pytest.raises(ValueError, match=r"^x: expected shape \[..., 37\]"):
        layer(torch.randn(2, 36))
    with pytest.raises(ValueError, match=r"^x: expected at least 1 dimension"):
        layer(torch.tensor(1.0))
    with pytest.raises(TypeError, match="^x: expected dtype"):
        layer(torch.ones(2, 37, dtype=torch.int64))
    state = layer.state_dict()
    state["weight_int8"] = torch.zeros(29, 36, dtype=torch.int8)
    with pytest.raises(RuntimeError, match=r"weight_int8: expected shape \(29, 37\), got \(29, 36\)"):
        layer.load_state_dict(state)


def test_old_spellings_are_deprecated_aliases():
    linear, layer = _layer("int8_static")
    with pytest.warns(DeprecationWarning) as caught:
        old = Int8Linear.from_dense(linear, mode="static", x_scale=0.03, x_zero_point=120)
    assert sorted(str(w.message).split()[0] for w in caught) == ["mode", "x_scale", "x_zero_point"]
    assert old.scheme == "int8_static" and old.mode == "static"
    x = torch.randn(3, 37)
    with torch.no_grad():
        assert torch.equal(old(x), layer(x))
    with pytest.raises(TypeError, match="mode: deprecated alias of scheme"):
        Int8Linear(4, 4, scheme="int8_weight_only", mode="dynamic")
    # A state_dict with the keys of earlier versions loads bit-exactly.
    state = layer.state_dict()
    state["input_scale"], state["input_zero_point"] = state.pop("activation_scale"), state.pop("activation_zero_point")
    fresh = Int8Linear(37, 29, scheme="int8_static", activation_scale=1.0, activation_zero_point=0)
    fresh.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(fresh(x), layer(x))
    assert set(fresh.state_dict()) == {"weight_int8", "weight_scale", "bias",
                                       "activation_scale", "activation_zero_point"}


@pytest.mark.parametrize("mode", MODES)
def test_empty_sizes_copy_and_pickle(mode):
    import copy
    import pickle

    kwargs = STATIC if mode == "int8_static" else {}
    for k, n in [(0, 3), (3, 0)]:
        layer = Int8Linear(k, n, scheme=mode, **kwargs)
        with torch.no_grad():
            layer.bias.fill_(0.5) if n else None
            assert torch.equal(layer(torch.randn(2, k)), torch.full((2, n), 0.5))
    _, layer = _layer(mode)
    x = torch.randn(3, 37)
    with torch.no_grad():
        for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
            assert torch.equal(clone(x), layer(x))
