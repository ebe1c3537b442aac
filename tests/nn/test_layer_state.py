"""Every tensor a layer receives is validated as a whole before anything is
replaced: state dicts (strict or not, assign=True), attribute assignment,
dtype conversions. A rejected one leaves the layer unchanged, with forward
and state_dict() agreeing; a forward running in another thread meanwhile
always sees one complete, valid state."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from torch import nn

from slimtorch.nn import Int8Linear, SparseLinear

WRAPPING_OFFSETS = torch.tensor([0, 2**63 - 1, -2, 1])


def _sparse(in_f=16, out_f=3, bias=True, values_dtype=None, seed=0, sparsity=0.5):
    torch.manual_seed(seed)
    return SparseLinear.from_dense(nn.Linear(in_f, out_f, bias=bias), sparsity=sparsity, values_dtype=values_dtype)


def _int8(scheme="int8_dynamic", in_f=16, out_f=3, seed=0):
    torch.manual_seed(seed)
    kwargs = dict(activation_scale=0.05, activation_zero_point=128) if scheme == "int8_static" else {}
    return Int8Linear.from_dense(nn.Linear(in_f, out_f), scheme=scheme, **kwargs)


def _snapshot(layer):
    x = torch.randn(4, layer.in_features, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        return {k: v.clone() for k, v in layer.state_dict().items()}, layer(x), x


def _assert_unchanged(layer, snapshot):
    state, y, x = snapshot
    now = layer.state_dict()
    assert set(now) == set(state)
    for key, value in state.items():
        assert now[key].dtype == value.dtype and torch.equal(now[key], value), key
    with torch.no_grad():
        assert torch.equal(layer(x), y)
        # forward and state_dict agree: a fresh layer loaded from state_dict computes the same
        fresh = type(layer)(**_init(layer))
        fresh.load_state_dict(now)
        assert torch.equal(fresh(x), y)


def _init(layer):
    from slimtorch.nn import LAYER_CLASSES

    return LAYER_CLASSES[type(layer).__name__].init_args(layer)


# ---- SparseLinear ------------------------------------------------------------------------------

def test_issue_example_wrapping_offsets_rejected_everywhere():
    layer = SparseLinear(16, 3, bias=False)
    before = _snapshot(layer)
    state = {"row_ptr": WRAPPING_OFFSETS, "col_idx": torch.tensor([0], dtype=torch.int16),
             "values": torch.tensor([1.0])}
    with pytest.raises(RuntimeError, match="row_ptr: expected non-decreasing offsets from 0 to nnz=1"):
        layer.load_state_dict(state)
    with pytest.raises(RuntimeError, match="row_ptr: expected non-decreasing offsets"):
        layer.load_state_dict(state, assign=True)
    with pytest.raises(RuntimeError, match="row_ptr: expected non-decreasing offsets"):
        layer.load_state_dict(state, strict=False)
    _assert_unchanged(layer, before)


@pytest.mark.parametrize("key, value, match", [
    ("col_idx", torch.tensor([15, 16, 0, 1, 2, 3, 4, 5], dtype=torch.int16), r"col_idx: expected columns in \[0, 16\)"),
    ("col_idx", torch.zeros(3, dtype=torch.int16), "col_idx: expected 24 elements"),
    ("col_idx", torch.zeros(24, dtype=torch.int64), "col_idx: expected dtype int16, int32"),
    ("row_ptr", torch.tensor([0, 5, 30, 24]), "row_ptr: expected non-decreasing offsets from 0 to nnz=24"),
    ("row_ptr", WRAPPING_OFFSETS, "row_ptr: expected non-decreasing offsets"),
    ("row_ptr", torch.tensor([0, 8, 16, 24], dtype=torch.int32), "row_ptr: expected dtype int64"),
    ("values", torch.ones(23), "col_idx: expected 23 elements"),
    ("values", torch.ones(24, dtype=torch.float64), "values: expected dtype"),
])
def test_partial_state_dict_is_validated_with_the_rest(key, value, match):
    layer = _sparse()
    assert layer.nnz == 24
    before = _snapshot(layer)
    if key == "col_idx" and value.numel() == 8:
        value = torch.cat([value, layer.col_idx[8:]])
    with pytest.raises(RuntimeError, match=match):
        layer.load_state_dict({key: value}, strict=False)
    _assert_unchanged(layer, before)
    with pytest.raises((TypeError, ValueError), match=match):
        setattr(layer, key, value)
    _assert_unchanged(layer, before)


def test_partial_state_dict_that_fits_is_applied():
    layer, other = _sparse(seed=0), _sparse(seed=1)
    layer.load_state_dict({k: v for k, v in other.state_dict().items() if k != "bias"}, strict=False)
    x = torch.randn(2, 16)
    with torch.no_grad():
        expected = nn.functional.linear(x, other.to_dense().weight, layer.bias)
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("assign", [False, True])
def test_bias_of_the_wrong_shape_rejected_before_anything_changes(assign):
    layer, other = _sparse(seed=0), _sparse(seed=1)
    before = _snapshot(layer)
    state = other.state_dict()
    state["bias"] = torch.ones(1)
    with pytest.raises(RuntimeError, match=r"bias: expected shape \(3,\), got \(1,\)"):
        layer.load_state_dict(state, assign=assign)
    _assert_unchanged(layer, before)
    with pytest.raises(ValueError, match=r"bias: expected shape \(3,\), got \(1,\)"):
        layer.bias = nn.Parameter(torch.ones(1))
    _assert_unchanged(layer, before)


@pytest.mark.parametrize("values_dtype", [torch.float32, torch.int8])
def test_assign_stride_zero_tensors_are_read_safely(values_dtype):
    layer = _sparse(values_dtype=values_dtype, bias=True)
    state = layer.state_dict()
    state["values"] = state["values"][:1].expand(layer.nnz)  # stride 0: one element of storage
    if values_dtype == torch.int8:
        state["row_scales"] = state["row_scales"][:1].expand(3)
    state["bias"] = state["bias"][:1].expand(3)
    layer.load_state_dict(state, assign=True)
    x = torch.randn(2, 16)
    weight = layer.to_dense().weight
    with torch.no_grad():
        expected = nn.functional.linear(x, weight, state["bias"].contiguous())
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(layer(x[:1]), expected[:1], rtol=1e-5, atol=1e-5)
    scale = state["row_scales"][0] if values_dtype == torch.int8 else 1.0
    assert bool((weight[weight != 0] == state["values"][0].float() * scale).all())


def test_int8_row_scales_must_be_finite_and_positive():
    layer = _sparse(values_dtype=torch.int8)
    before = _snapshot(layer)
    for bad in (torch.zeros(3), torch.tensor([1.0, -1.0, 1.0]), torch.tensor([1.0, float("inf"), 1.0])):
        with pytest.raises(RuntimeError, match="row_scales: expected finite values > 0"):
            layer.load_state_dict({"row_scales": bad}, strict=False)
        with pytest.raises(ValueError, match="row_scales: expected finite values > 0"):
            layer.row_scales = bad
    _assert_unchanged(layer, before)


# ---- Int8Linear -------------------------------------------------------------------------------

SCHEMES = ["int8_dynamic", "int8_weight_only", "int8_static"]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("key, value, error, match", [
    ("weight_scale", torch.tensor([1.0, float("nan"), 1.0]), RuntimeError, "scale: expected finite values > 0"),
    ("weight_scale", torch.tensor([1.0, 0.0, 1.0]), RuntimeError, "scale: expected finite values > 0"),
    ("weight_scale", torch.ones(4), RuntimeError, r"weight_scale: expected shape \(3,\), got \(4,\)"),
    ("weight_int8", torch.full((3, 16), -128, dtype=torch.int8), RuntimeError,
     r"q: expected symmetric int8 values in \[-127, 127\]"),
    ("weight_int8", torch.ones(3, 16), RuntimeError, "weight_int8: expected dtype int8"),
    ("bias", torch.ones(1), RuntimeError, r"bias: expected shape \(3,\), got \(1,\)"),
    ("bias", torch.tensor([0.0, float("inf"), 0.0]), RuntimeError, "bias: expected finite values"),
])
def test_int8_rejected_load_leaves_forward_and_state_dict_agreeing(scheme, key, value, error, match):
    layer = _int8(scheme)
    before = _snapshot(layer)
    for strict in (True, False):
        state = layer.state_dict() if strict else {}
        state[key] = value
        with pytest.raises(error, match=match):
            layer.load_state_dict(state, strict=strict)
        _assert_unchanged(layer, before)
    with pytest.raises(error, match=match):
        layer.load_state_dict({key: value}, strict=False, assign=True)
    _assert_unchanged(layer, before)
    with pytest.raises((TypeError, ValueError), match=match):
        setattr(layer, key, value)
    _assert_unchanged(layer, before)


def test_int8_static_activation_parameters_validated():
    layer = _int8("int8_static")
    before = _snapshot(layer)
    for key, value, match in [("activation_scale", torch.tensor(0.0), "activation_scale: expected a positive"),
                              ("activation_scale", torch.tensor(float("nan")), "activation_scale: expected a number"),
                              ("activation_zero_point", torch.tensor(256, dtype=torch.int32),
                               r"activation_zero_point: expected an int in \[0, 255\]"),
                              ("input_scale", torch.tensor(-1.0), "activation_scale: expected a positive")]:
        with pytest.raises(RuntimeError, match=match):
            layer.load_state_dict({key: value}, strict=False)
        _assert_unchanged(layer, before)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_int8_assign_and_setattr_take_effect(scheme):
    layer, other = _int8(scheme, seed=0), _int8(scheme, seed=1)
    x = torch.randn(5, 16)
    with torch.no_grad():
        expected = other(x)
        state = other.state_dict()
        state["weight_scale"] = state["weight_scale"][:1].expand(3)  # stride 0
        layer.load_state_dict(state, assign=True)
        reference = Int8Linear(**_init(other))
        reference.load_state_dict({**other.state_dict(), "weight_scale": state["weight_scale"].contiguous()})
        assert torch.equal(layer(x), reference(x))
        layer.load_state_dict(other.state_dict())
        assert torch.equal(layer(x), expected)
        layer.weight_int8 = torch.zeros(3, 16, dtype=torch.int8)  # attribute assignment repacks
        assert torch.equal(layer(x), layer.bias.expand(5, 3))


# ---- concurrent use --------------------------------------------------------------------------

def _race(layer, x, states, conversions, seconds=1.0):
    """One thread runs forwards while this one reloads ``states`` and applies
    ``conversions``; returns the outputs seen."""
    outputs, errors, stop = [], [], threading.Event()

    def forward():
        try:
            with torch.no_grad():
                while not stop.is_set():
                    outputs.append(layer(x))
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    worker = threading.Thread(target=forward)
    worker.start()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for state in states:
                layer.load_state_dict(state)
                for convert in conversions:
                    convert(layer)
    finally:
        stop.set()
        worker.join()
    assert not errors, errors
    return outputs


def _assert_each_is_one_of(outputs, expected):
    assert outputs
    for y in outputs:
        assert any(torch.equal(y, e) for e in expected), "a forward saw a mixed or freed state"


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("values_dtype", [torch.float32, torch.int8])
def test_sparse_forward_while_another_thread_reloads_and_converts(threads, batch, values_dtype):
    torch.set_num_threads(2)
    # Large enough that the kernel releases the GIL while it runs.
    layers = [_sparse(512, 512, bias=False, values_dtype=values_dtype, seed=s, sparsity=0.5) for s in (0, 1)]
    for layer in layers:
        layer.dispatch = "sparse"
    x = torch.randn(batch, 512)
    states = [layer.state_dict() for layer in layers]
    conversions = [lambda m: m.float(), lambda m: m.to("cpu"), lambda m: m.half(), lambda m: m.float()]
    expected = []
    with torch.no_grad():
        for layer in layers:
            expected.append(layer(x))
            expected.append(layer.half()(x))
            expected.append(layer.float()(x))
    layer = layers[0]
    _assert_each_is_one_of(_race(layer, x, states, conversions), expected)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_int8_forward_while_another_thread_reloads_and_converts(threads, scheme):
    torch.set_num_threads(2)
    layers = [_int8(scheme, 2048, 2048, seed=s) for s in (0, 1)]
    x = torch.randn(1, 2048)
    states = [layer.state_dict() for layer in layers]
    with torch.no_grad():
        expected = [layer(x) for layer in layers]
    conversions = [lambda m: m.half(), lambda m: m.float(), lambda m: m.to("cpu")]
    _assert_each_is_one_of(_race(layers[0], x, states, conversions), expected)


@pytest.mark.parametrize("assign", [False, True])
def test_loaded_tensors_are_not_aliased(assign):
    """The layer owns what its kernels read: changing (or resizing) the
    tensors it was given afterwards changes nothing."""
    layer, other = _sparse(seed=0), _sparse(seed=1)
    state = {k: v.clone() for k, v in other.state_dict().items()}
    layer.load_state_dict(state, assign=assign)
    before = _snapshot(layer)
    state["col_idx"].fill_(10_000)
    state["row_ptr"].resize_(1)
    state["values"].mul_(100)
    _assert_unchanged(layer, before)
    int8 = _int8("int8_dynamic")
    state = {k: v.clone() for k, v in _int8("int8_dynamic", seed=1).state_dict().items()}
    int8.load_state_dict(state, assign=assign)
    before = _snapshot(int8)
    state["weight_scale"].mul_(100)
    state["bias"].resize_(1)
    _assert_unchanged(int8, before)
