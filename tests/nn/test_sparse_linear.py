"""SparseLinear against nn.Linear with the same pruned weights."""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest
import torch
from torch import nn

from slimtorch import _native, ops
from slimtorch.nn import SparseLinear


def _linear(in_f: int, out_f: int, bias: bool = True, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(in_f, out_f, bias=bias)


def _x(*shape, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("bias", [True, False])
def test_prunes_exact_count_and_matches_dense(sparsity, bias):
    linear = _linear(37, 23, bias)
    layer = SparseLinear.from_dense(linear, sparsity=sparsity)
    assert layer.nnz == 37 * 23 - round(sparsity * 37 * 23)
    dense = layer.to_dense().requires_grad_(False)
    # The kept weights are the largest-magnitude ones, bit for bit.
    kept = dense.weight != 0
    assert torch.equal(dense.weight[kept], linear.weight.detach()[kept])
    if 0 < layer.nnz < 37 * 23:
        assert float(dense.weight[kept].abs().min()) >= float(linear.weight.detach()[~kept].abs().max())
    with torch.no_grad():
        for shape in [(37,), (1, 37), (5, 37), (2, 3, 37), (0, 37)]:
            x = _x(*shape)
            _close(layer(x), dense(x))
    assert layer(_x(4, 37)).shape == (4, 23)


def test_sparsity_none_keeps_existing_zeros():
    linear = _linear(20, 10)
    with torch.no_grad():
        linear.weight[linear.weight.abs() < 0.1] = 0
    layer = SparseLinear.from_dense(linear)
    assert layer.nnz == int((linear.weight != 0).sum())
    assert torch.equal(layer.to_dense().weight, linear.weight)
    assert torch.equal(layer.to_dense().bias, linear.bias)


@pytest.mark.parametrize("values_dtype", [torch.float16, torch.bfloat16, torch.int8])
def test_values_dtypes(values_dtype):
    linear = _linear(64, 48)
    layer = SparseLinear.from_dense(linear, sparsity=0.8, values_dtype=values_dtype)
    assert layer.values.dtype == values_dtype
    assert (layer.row_scales is not None) == (values_dtype == torch.int8)
    reference = layer.to_dense().float()  # the dequantized weights
    x = _x(7, 64)
    with torch.no_grad():
        _close(layer(x), reference(x))
        _close(layer(x[0]), reference(x[0]))


@pytest.mark.parametrize("values_dtype", [torch.float32, torch.int8])
def test_state_dict_round_trip_is_exact(values_dtype):
    layer = SparseLinear.from_dense(_linear(30, 12), sparsity=0.7, values_dtype=values_dtype)
    state = layer.state_dict()
    expected_keys = {"row_ptr", "col_idx", "values", "bias"} | ({"row_scales"} if values_dtype == torch.int8 else set())
    assert set(state) == expected_keys
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    fresh = SparseLinear(30, 12, values_dtype=values_dtype)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    for key, value in layer.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)
    x = _x(6, 30)
    with torch.no_grad():
        assert torch.equal(fresh(x), layer(x))
        assert torch.equal(fresh(x[0]), layer(x[0]))


def test_load_state_dict_rejects_bad_packed_data():
    layer = SparseLinear.from_dense(_linear(30, 12), sparsity=0.7)
    state = layer.state_dict()
    state["col_idx"] = state["col_idx"].clone()
    state["col_idx"][0] = 31  # out of range
    with pytest.raises(RuntimeError, match=r"col_idx: expected columns in \[0, 30\)"):
        SparseLinear(30, 12).load_state_dict(state)
    with pytest.raises(RuntimeError, match="weight: expected a 13x30 packed weight, got 12x30"):
        SparseLinear(30, 13).load_state_dict(layer.state_dict(), strict=False)


def test_gradients_flow_to_input_and_bias_only():
    linear = _linear(16, 8)
    layer = SparseLinear.from_dense(linear, sparsity=0.5)
    dense = layer.to_dense()
    x = _x(3, 16).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    layer(x).pow(2).sum().backward()
    dense(x_ref).pow(2).sum().backward()
    _close(x.grad, x_ref.grad)
    _close(layer.bias.grad, dense.bias.grad)
    assert [name for name, _ in layer.named_parameters()] == ["bias"]
    # No gradient to x but a trainable bias: the fast path still feeds autograd.
    layer.bias.grad = None
    layer(_x(3, 16)).sum().backward()
    _close(layer.bias.grad, torch.full((8,), 3.0))


def test_fine_tuning_step_inside_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 4))
    model[0] = SparseLinear.from_dense(model[0], sparsity=0.6)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, target = _x(16, 10), _x(16, 4, seed=2)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = (model(x) - target).pow(2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_compile_fullgraph():
    model = nn.Sequential(SparseLinear.from_dense(_linear(24, 16), sparsity=0.8), nn.ReLU())
    x = _x(5, 24)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        _close(compiled(x), model(x))
    x.requires_grad_()
    compiled(x).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


@pytest.mark.parametrize("values_dtype, scheme", [(torch.float32, None), (torch.bfloat16, None),
                                                   (torch.int8, None), (torch.int8, "int8_dynamic")])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.95])
def test_compiled_gives_eagers_bits(values_dtype, scheme, sparsity):
    # Sparsity 0 has a dense fallback at every batch, so forward asks
    # `rows in layer.sparse_batches` (as int8 layers on AMX do): torch.compile
    # must trace it without a graph break. At 0.5 the weight carries a column
    # bitmap (batch 1 runs the bitmap kernel): the compiled op must get it too.
    torch._dynamo.reset()  # each layer compiles SparseLinear.forward anew: stay under the recompile limit
    layer = SparseLinear.from_dense(_linear(96, 40), sparsity=sparsity, values_dtype=values_dtype, scheme=scheme)
    compiled = torch.compile(layer, fullgraph=True, backend="eager")
    with torch.no_grad():
        for rows in (1, 7, 40):
            for dtype in (torch.float32, torch.bfloat16):
                x = _x(rows, 96).to(dtype)
                assert torch.equal(compiled(x), layer(x)), (rows, dtype)


def test_sparse_batches_membership_compiles():
    at = ops.SparseBatches(((2, 5), (9, math.inf)))
    compiled = torch.compile(lambda x: x + 1 if x.shape[0] in at else x - 1, fullgraph=True, backend="eager")
    for rows in (1, 2, 5, 6, 9, 30):
        assert torch.equal(compiled(torch.zeros(rows)), torch.full((rows,), 1.0 if rows in at else -1.0))


def test_dense_fallback_above_break_even():
    linear = _linear(40, 30)
    layer = SparseLinear.from_dense(linear, sparsity=0.0)  # density 1: dense always wins
    assert layer.sparse_batches == ops.SparseBatches.NONE and 0 not in layer.sparse_batches
    assert set(layer.state_dict()) == {"row_ptr", "col_idx", "values", "bias"}
    x = _x(4, 40)
    with torch.no_grad():
        assert torch.equal(layer(x), linear(x))
    sparse = SparseLinear.from_dense(linear, sparsity=0.95)
    assert sparse.sparse_batches == ops.SparseBatches.EVERY and sparse._state[2] is None


def test_dispatch_knob_forces_sparse_or_dense():
    linear = _linear(40, 30)
    layer = SparseLinear.from_dense(linear, sparsity=0.0)
    x = _x(4, 40)
    with torch.no_grad():
        dense = layer(x)
        layer.dispatch = "sparse"
        sparse = layer(x)
        weight = layer.packed()
        assert torch.equal(sparse, ops.sparse_linear(x, weight, layer.bias))
        torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-5)
        layer.dispatch = "dense"
        assert torch.equal(layer(x), dense)
    with pytest.raises(ValueError, match="dispatch: expected one of 'auto', 'sparse', 'dense'"):
        layer.dispatch = "fast"
    assert layer.dispatch == "dense"


def test_break_even_table_rule(break_even):
    tables = {
        "float/cached": [[1, 0.6], [16, 0.4], [128, 0.2]],
        "int8/cached": [[1, 0.7], [16, 0.7], [128, 0.7]],
        "float/large": [[1, 0.9], [16, 0.9], [128, 0.9]],
        "int8/large": [[1, 0.9], [16, 0.9], [128, 0.9]],
    }
    break_even(tables)

    def rule(*args) -> str:
        return str(ops.sparse_batches(*args))

    small, large = 100 * 100, 4096 * 4096
    assert rule(0.1, torch.float32, small) == "0+"
    assert rule(0.3, torch.float32, small) == "0-16"
    assert rule(0.5, torch.float16, small) == "0-1"
    assert rule(0.61, torch.float32, small) == "none"
    assert rule(0.65, torch.int8, small) == "0+"
    assert rule(0.8, torch.float32, large) == "0+"
    # A layer pruned to a table's density holds up to half a weight more: it counts as that density.
    assert rule((0.2 * small + 0.5) / small, torch.float32, small) == "0+"
    assert rule((0.2 * small + 1) / small, torch.float32, small) == "0-16"
    torch.manual_seed(0)
    pruned = SparseLinear.from_dense(nn.Linear(768, 3072), sparsity=0.9)
    assert pruned.density > 0.1 and rule(pruned.density, torch.float32, 768 * 3072) == "0+"


def test_break_even_rule_runs_sparse_wherever_both_neighbours_win(break_even):
    """A loss at one measured batch does not take the batches after it: each
    measured batch counts on its own, the batches between two measured ones
    need both, and those past the last follow it."""
    break_even({"float/cached": [[1, 0.1], [16, 0.3], [128, 0.2], [1024, 0.3]]})
    at = ops.sparse_batches(0.25, torch.float32, 100)
    assert str(at) == "16, 1024+"
    assert [rows for rows in range(2000) if rows in at] == [16] + list(range(1024, 2000))
    assert 10**12 in at
    assert str(ops.sparse_batches(0.15, torch.float32, 100)) == "16+"
    assert str(ops.sparse_batches(0.05, torch.float32, 100)) == "0+"
    assert str(ops.sparse_batches(0.35, torch.float32, 100)) == "none"
    break_even({"float/cached": [[1, 0.2], [16, 0.1], [128, 0.3]]})
    assert str(ops.sparse_batches(0.25, torch.float32, 100)) == "128+"
    assert str(ops.sparse_batches(0.15, torch.float32, 100)) == "0-1, 128+"


def test_sparse_batches_membership_and_bad_ranges():
    at = ops.SparseBatches(((0, 3), (10, 10), (20, math.inf)))
    assert [rows for rows in range(25) if rows in at] == [0, 1, 2, 3, 10] + list(range(20, 25))
    assert str(at) == "0-3, 10, 20+" and at == ops.SparseBatches(((0, 3), (10, 10), (20, math.inf)))
    assert 0 in ops.SparseBatches.EVERY and 0 not in ops.SparseBatches.NONE
    with pytest.raises(AttributeError):
        ops.SparseBatches.EVERY.ranges = ()  # shared by every layer that runs sparse throughout
    for bad, match in [(((-1, 3),), r"ranges\[0\]\[0\]: expected an int >= 0"),
                       (((3, 2),), r"ranges\[0\]\[1\]: expected an int >= 3"),
                       (((0, 3), (4, 5)), r"ranges\[1\]\[0\]: expected an int >= 5"),
                       (((5, 6), (0, 1)), r"ranges\[1\]\[0\]"),
                       (((0, math.inf), (5, 6)), r"ranges\[1\]: expected nothing after")]:
        with pytest.raises(ValueError, match=match):
            ops.SparseBatches(bad)
    for bad, match in [((3,), r"ranges\[0\]: expected a \(first, last\) pair"), (((0, 1, 2),), "pair"),
                       (((0.5, 3),), r"ranges\[0\]\[0\]: expected an int"),
                       (((0, "9"),), r"ranges\[0\]\[1\]: expected an int"), (((True, 3),), "an int")]:
        with pytest.raises(TypeError, match=match):
            ops.SparseBatches(bad)


@pytest.mark.skipif(_native.cpu is None, reason="needs the native CPU module")
def test_break_even_lookup_follows_the_isa_path(monkeypatch, break_even):
    """Active ISA path, else its alias, else the default (also for non-CPU devices)."""
    def table(limit):
        return {f"{kind}/{size}": [[1, limit]] for kind in ("float", "int8") for size in ("cached", "large")}

    break_even(isa_paths={"avx512": table(0.7), "avx2": table(0.3)}, aliases={"amx": "avx512", "scalar": "avx2"})
    rule = ops.sparse_batches
    every, none = ops.SparseBatches.EVERY, ops.SparseBatches.NONE
    for isa, limit in [("avx512", 0.7), ("avx2", 0.3), ("amx", 0.7), ("scalar", 0.3), ("neon", 0.7)]:
        monkeypatch.setattr(_native.cpu, "active_isa", lambda isa=isa: isa)
        assert rule(limit, torch.float32, 100) == every and rule(limit + 0.01, torch.float32, 100) == none
    monkeypatch.setattr(_native.cpu, "active_isa", lambda: "avx2")
    assert rule(0.7, torch.float32, 100, torch.device("cuda")) == every


def test_int8_dynamic_table_is_used_only_where_measured(break_even):
    tables = {f"{kind}/{size}": [[1, 0.5], [16, 0.3]] for kind in ("float", "int8") for size in ("cached", "large")}
    break_even(tables)

    def rule(*args, **kwargs) -> str:
        return str(ops.sparse_batches(*args, **kwargs))

    assert rule(0.9, torch.int8, 100, dynamic=True) == "0+"
    tables["int8_dynamic/cached"] = [[1, 0.5], [16, 0.2], [2048, 0.1]]
    assert rule(0.3, torch.int8, 100, dynamic=True) == "0-1"
    assert rule(0.05, torch.int8, 100, dynamic=True) == "0+"
    assert rule(0.4, torch.int8, 100) == "0-1"  # weight-only keeps its own table


def test_bf16_values_take_the_bf16_table_where_measured(break_even):
    tables = {f"{kind}/{size}": [[1, 0.5], [16, 0.3]] for kind in ("float", "int8") for size in ("cached", "large")}
    break_even(tables)

    def rule(*args) -> str:
        return str(ops.sparse_batches(*args))

    assert rule(0.25, torch.bfloat16, 100) == "0+"  # no bf16 table: the float one
    tables["bf16/cached"] = [[1, 0.4], [16, 0.1], [1024, 0.05]]
    assert rule(0.25, torch.bfloat16, 100) == "0-1"
    assert rule(0.1, torch.bfloat16, 100) == "0-16"
    assert rule(0.05, torch.bfloat16, 100) == "0+"
    assert rule(0.25, torch.bfloat16, 4096 * 4096) == "0+"  # no bf16/large: the float one
    assert rule(0.25, torch.float32, 100) == "0+"  # float32 keeps its own
    # A layer with bf16 values reads it when its weight is installed: its dense
    # fallback (a bf16 GEMM) runs above 16 rows at 10% density.
    torch.manual_seed(0)
    layer = SparseLinear.from_dense(nn.Linear(10, 10), sparsity=0.9, values_dtype=torch.bfloat16)
    assert layer.density == pytest.approx(0.1)
    assert str(layer.sparse_batches) == "0-16"  # the batches its sparse kernel runs
    x = torch.randn(17, 10).bfloat16()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), nn.functional.linear(x, layer.to_dense().weight.bfloat16(),
                                                                  layer.bias.bfloat16()))


def test_to_packed_int8_holds_the_same_weights():
    layer = SparseLinear.from_dense(_linear(70, 33), sparsity=0.6, values_dtype=torch.int8)
    weight = layer.packed()
    packed = weight.to_packed_int8()
    dense_q = torch.zeros(33, 70, dtype=torch.int8)
    rows, cols = weight._coordinates()
    dense_q[rows, cols] = weight.values
    assert torch.equal(ops.qgemm.unpack_weight(packed.packed, 33, 70), dense_q)
    assert torch.equal(packed.scale, weight.row_scales)
    with pytest.raises(ValueError, match="values: expected int8 values"):
        SparseLinear.from_dense(_linear(10, 5), sparsity=0.5).packed().to_packed_int8()


@pytest.mark.skipif(_native.cpu is None, reason="needs the native CPU module")
@pytest.mark.parametrize("scheme", ["int8_dynamic", "int8_weight_only"])
def test_int8_dense_fallback_runs_the_int8_kernels(monkeypatch, scheme):
    """Where the ISA path has int8 tiles, the dense fallback of int8 values is
    the same int8 weights on the qgemm kernels (here forced on whatever path
    this CPU runs)."""
    monkeypatch.setattr(ops.spmm, "_INT8_TILE_FALLBACK_PATHS", (_native.cpu.active_isa(),))
    op = ops.qlinear_dynamic if scheme == "int8_dynamic" else ops.qlinear_weight_only
    layer = SparseLinear.from_dense(_linear(96, 50), sparsity=0.5, scheme=scheme)
    x = _x(40, 96)
    with torch.no_grad():
        layer.dispatch = "sparse"
        sparse = layer(x)
        layer.dispatch = "dense"
        assert type(layer._state[2]) is ops.PackedInt8Weight and layer.sparse_batches == ops.SparseBatches.NONE
        dense = layer(x)
        assert torch.equal(dense, op(x, layer.packed().to_packed_int8(), layer.bias))
        # Same int8 weights: only the summation (and, for weight-only on AMX, bf16 activations) differs.
        torch.testing.assert_close(dense, sparse, rtol=1e-2, atol=1e-2)
        # The int8 kernels take float32; other activations stay on the sparse kernels.
        assert torch.equal(layer(x.half()), ops.sparse_linear_dynamic(x.half(), layer.packed(), layer.bias.half())
                           if scheme == "int8_dynamic" else ops.sparse_linear(x.half(), layer.packed(),
                                                                             layer.bias.half()))
    assert "int8" not in set(layer.state_dict()) and set(layer.state_dict()) == {
        "row_ptr", "col_idx", "values", "row_scales", "bias"}


def test_int8_dynamic_without_tiles_never_falls_back(monkeypatch):
    monkeypatch.setattr(ops.spmm, "_INT8_TILE_FALLBACK_PATHS", ())
    layer = SparseLinear.from_dense(_linear(96, 50), sparsity=0.0, scheme="int8_dynamic")
    assert ops.sparse_int8_fallback() == "linear"
    assert layer.sparse_batches == ops.SparseBatches.EVERY and layer._state[2] is None


def _shipped_break_even() -> dict:
    from importlib import resources

    return json.loads(resources.files("slimtorch.data").joinpath("break_even.json").read_text())


def test_shipped_break_even_file_has_the_documented_schema():
    data = _shipped_break_even()
    assert data["schema"] == 1 and data["default"] in data["paths"]
    assert all(target in data["paths"] for target in data["aliases"].values())
    for entry in data["paths"].values():
        assert isinstance(entry["measured_on"], str) and entry["cached_weight_bytes"] > 0
        assert {"float/cached", "float/large", "int8/cached", "int8/large"} <= set(entry["tables"]) <= {
            "float/cached", "float/large", "int8/cached", "int8/large", "int8_dynamic/cached", "int8_dynamic/large",
            "bf16/cached", "bf16/large"}
        for rows in entry["tables"].values():
            batches = [batch for batch, _ in rows]
            assert batches == sorted(batches) and all(0 <= density <= 1 for _, density in rows)


@contextlib.contextmanager
def _active_isa(path: str):
    """``path`` as the active ISA path inside the block; skips the test where
    this CPU (or SLIMTORCH_ISA) does not offer it."""
    if _native.cpu is None or path not in _native.cpu.supported_isas():
        pytest.skip(f"needs a CPU with the {path} path")
    previous = _native.cpu.active_isa()
    _native.cpu.set_active_isa(path)
    try:
        yield
    finally:
        _native.cpu.set_active_isa(previous)


@pytest.mark.parametrize("path", ["amx", "avx512"])
def test_shipped_break_even_of_the_active_isa_path(path):
    """AMX reads its own measured entry, not the AVX-512 one."""
    shipped = _shipped_break_even()
    assert path in shipped["paths"] and path not in shipped["aliases"]
    with _active_isa(path):
        assert ops.spmm._break_even_tables(torch.device("cpu")) == shipped["paths"][path]


def test_amx_runs_int8_layers_on_the_tiles_where_avx512_keeps_them_sparse():
    """At 30% density the sparse int8 kernels beat the dense float fallback at
    every batch (AVX-512 entry) but lose to the int8 tile kernels at every
    batch (AMX entry)."""
    with _active_isa("amx"):
        on_amx = SparseLinear.from_dense(_linear(96, 50), sparsity=0.7, values_dtype=torch.int8)
        assert on_amx.sparse_batches == ops.SparseBatches.NONE and type(on_amx._state[2]) is ops.PackedInt8Weight
    with _active_isa("avx512"):
        on_avx512 = SparseLinear.from_dense(_linear(96, 50), sparsity=0.7, values_dtype=torch.int8)
        assert on_avx512.sparse_batches == ops.SparseBatches.EVERY and on_avx512._state[2] is None


def _dense_int8_of(layer: SparseLinear) -> ops.PackedInt8Weight:
    """The layer's int8 weights (zeros where pruned) packed for the qgemm ops,
    built from its state_dict."""
    q = torch.zeros(layer.out_features, layer.in_features, dtype=torch.int8)
    rows = torch.repeat_interleave(torch.arange(layer.out_features), layer.row_ptr.diff())
    q[rows, layer.col_idx.long() & 0xFFFF] = layer.values
    return ops.qgemm_pack_weight(q, layer.row_scales)


@pytest.mark.parametrize("scheme", ["int8_dynamic", "int8_weight_only"])
def test_int8_layer_above_the_amx_break_even_equals_the_dense_tile_kernel(scheme):
    """With the shipped AMX entry a SparseLinear with int8 values runs the
    dense int8 tile kernel on its own int8 weights at the batches its sparse
    kernel loses (same kernel, same inputs: the same bits) and its sparse
    kernel at the others."""
    op = ops.qlinear_dynamic if scheme == "int8_dynamic" else ops.qlinear_weight_only
    sparse_op = ops.sparse_linear_dynamic if scheme == "int8_dynamic" else ops.sparse_linear
    with _active_isa("amx"), torch.no_grad():
        layer = SparseLinear.from_dense(_linear(96, 50), sparsity=0.95, scheme=scheme)
        assert 64 not in layer.sparse_batches and type(layer._state[2]) is ops.PackedInt8Weight
        dense = _dense_int8_of(layer)
        for batch in (1, 2, 16, 17, 64):
            x = _x(batch, 96)
            y = layer(x)
            if batch in layer.sparse_batches:
                assert torch.equal(y, sparse_op(x, layer.packed(), layer.bias))
                continue
            assert torch.equal(y, op(x, dense, layer.bias))
            if scheme == "int8_dynamic":  # exact integer products on the tiles
                torch.testing.assert_close(y, _dynamic_reference(layer, x), rtol=1e-5, atol=1e-5)
            else:
                torch.testing.assert_close(y, layer.to_dense()(x), rtol=1e-2, atol=1e-2)


@pytest.mark.skipif(_native.cpu is None, reason="needs the native CPU module")
@pytest.mark.parametrize("scheme", ["int8_dynamic", "int8_weight_only"])
def test_gradient_through_the_int8_tile_fallback(monkeypatch, scheme):
    """The int8 tile fallback trains like the sparse kernel: gradients reach x
    and the bias (forced here on whatever path this CPU runs)."""
    monkeypatch.setattr(ops.spmm, "_INT8_TILE_FALLBACK_PATHS", (_native.cpu.active_isa(),))
    layer = SparseLinear.from_dense(_linear(50, 20), sparsity=0.6, scheme=scheme)
    layer.dispatch = "dense"
    assert type(layer._state[2]) is ops.PackedInt8Weight
    x = _x(40, 50).requires_grad_()
    layer(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(40, 20) @ layer.to_dense().weight, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.bias.grad, torch.full((20,), 40.0))


def test_fast_path_equals_op_path():
    layer = SparseLinear.from_dense(_linear(50, 20), sparsity=0.9)
    x = _x(3, 50)
    with torch.no_grad():
        fast = layer(x)
    slow = layer(x.clone().requires_grad_())
    assert torch.equal(fast, slow.detach())
    assert torch.equal(layer(x[:, None, :].transpose(0, 1).contiguous())[0], fast)


def test_module_conversions_keep_scales_float32():
    layer = SparseLinear.from_dense(_linear(20, 10), sparsity=0.5, values_dtype=torch.int8)
    half = layer.half()
    assert half.row_scales.dtype == torch.float32 and half.values.dtype == torch.int8
    y = half(_x(2, 20).half())
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.float(), half.to_dense().float()(_x(2, 20)), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("scheme, values_dtype", [(None, torch.float32), (None, torch.bfloat16),
                                                  ("int8_weight_only", None), ("int8_dynamic", None)])
@pytest.mark.parametrize("dispatch", ["sparse", "dense"])
@pytest.mark.parametrize("batch", [1, 40])
def test_bfloat16_in_bfloat16_out(isa, scheme, values_dtype, dispatch, batch):
    layer = SparseLinear.from_dense(_linear(50, 30), sparsity=0.8, values_dtype=values_dtype, scheme=scheme)
    layer.dispatch = dispatch
    x = _x(2, batch, 50).bfloat16()
    with torch.no_grad():
        expected = layer(x.float())  # x widens exactly; what differs is bf16 rounding of bias and output
        y = layer(x)
        assert y.dtype == torch.bfloat16 and y.shape == (2, batch, 30)
        torch.testing.assert_close(y.float(), expected, rtol=2.0**-6, atol=2e-2)
        # As compress_ casts a model: float values and bias follow, int8 values and row scales do not.
        layer.to(torch.bfloat16)
        assert layer.bias.dtype == torch.bfloat16
        assert layer.values.dtype == (torch.int8 if scheme else torch.bfloat16)
        assert scheme is None or layer.row_scales.dtype == torch.float32
        dense = layer._state[2]  # the dense copy, made once
        on_tiles = scheme is not None and ops.sparse_int8_fallback() == "qgemm"
        if dispatch == "sparse" or (scheme == "int8_dynamic" and not on_tiles):
            assert dense is None
        elif on_tiles:
            assert type(dense) is ops.PackedInt8Weight  # the same int8 weights, on the int8 kernels
        else:
            assert dense.dtype == torch.bfloat16
        y = layer(x)
        assert y.dtype == torch.bfloat16
        torch.testing.assert_close(y.float(), expected, rtol=2.0**-6, atol=2e-2)


@pytest.mark.parametrize("scheme", [None, "int8_dynamic"])
def test_bfloat16_gradient_to_input_and_bias(scheme):
    layer = SparseLinear.from_dense(_linear(50, 30), sparsity=0.8, scheme=scheme).to(torch.bfloat16)
    layer.dispatch = "sparse"
    x = _x(3, 40, 50).bfloat16().requires_grad_()
    y = layer(x)
    grad = _x(3, 40, 30, seed=5).bfloat16()
    y.backward(grad)
    assert x.grad.dtype == torch.bfloat16 and layer.bias.grad.dtype == torch.bfloat16
    torch.testing.assert_close(x.grad.float(), grad.float() @ layer.packed().to_dense(), rtol=2.0**-7, atol=2e-2)
    torch.testing.assert_close(layer.bias.grad.float(), grad.float().sum((0, 1)), rtol=2.0**-7, atol=5e-2)


def test_reassigned_buffers_are_picked_up():
    layer = SparseLinear.from_dense(_linear(8, 4), sparsity=0.5)
    layer.bias = nn.Parameter(torch.full((4,), 100.0))
    with torch.no_grad():
        assert bool((layer(_x(2, 8)) > 50).all())


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: SparseLinear.from_dense(nn.Conv1d(2, 2, 1)), TypeError, "linear: expected a torch.nn.Linear"),
        (lambda: SparseLinear.from_dense(_linear(4, 4), sparsity=1.5), ValueError,
         r"sparsity: expected a number in \[0, 1\]"),
        (lambda: SparseLinear.from_dense(_linear(4, 4), sparsity="x"), TypeError, "sparsity: expected a real number"),
        (lambda: SparseLinear.from_dense(_linear(4, 4), values_dtype=torch.float64), TypeError,
         "values_dtype: expected"),
        (lambda: SparseLinear(-1, 4), ValueError, "in_features: expected an int >= 0"),
        (lambda: SparseLinear(4, 4)(torch.ones(2, 5)), ValueError, r"x: expected shape \[..., 4\]"),
        (lambda: SparseLinear(4, 4)(torch.ones(2, 4, dtype=torch.int64)), TypeError, "x: expected dtype"),
        (lambda: SparseLinear(4, 4)(torch.ones(2, 4, dtype=torch.float64)), TypeError, "x: expected dtype"),
        (lambda: SparseLinear(4, 4)(torch.ones(2, 4, device="meta")), ValueError, "x: expected device cpu"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---- int8_dynamic activations ---------------------------------------------------------------

def _dynamic_reference(layer: SparseLinear, x: torch.Tensor) -> torch.Tensor:
    """Exact integer products of the quantized rows, then the float epilogue."""
    from slimtorch.reference.qgemm import quantize_rows

    codes, scale, zero_point = quantize_rows(x)
    weight = torch.zeros(layer.out_features, layer.in_features, dtype=torch.int64)
    rows = torch.repeat_interleave(torch.arange(layer.out_features), layer.row_ptr.diff())
    weight[rows, layer.col_idx.long() & 0xFFFF] = layer.values.long()
    flat = codes.reshape(-1, layer.in_features).long()
    acc = flat @ weight.T - zero_point.reshape(-1, 1).long() * weight.sum(1)
    y = acc.double() * (scale.reshape(-1, 1).double() * layer.row_scales.double())
    if layer.bias is not None:
        y = y + layer.bias.double()
    return y.float().reshape(*x.shape[:-1], layer.out_features)


@pytest.mark.parametrize("shape", [(64, 100, 65), (300, 64, 130), (33, 770, 32), (5, 7, 31), (768, 200, 200)])
def test_int8_dynamic_matches_integer_reference(isa, shape):
    out_f, in_f, batch = shape
    layer = SparseLinear.from_dense(_linear(in_f, out_f), sparsity=0.85, scheme="int8_dynamic")
    assert layer.values.dtype == torch.int8 and "scheme='int8_dynamic'" in repr(layer)
    x = _x(batch, in_f) * 3
    with torch.no_grad():
        y = layer(x)
    torch.testing.assert_close(y, _dynamic_reference(layer, x), rtol=1e-5, atol=1e-5)


def test_int8_dynamic_small_batch_leading_dims_and_non_finite_rows():
    layer = SparseLinear.from_dense(_linear(96, 40), sparsity=0.7, scheme="int8_dynamic")
    for shape in [(2, 96), (3, 5, 96), (2, 40, 96)]:  # below and above DYNAMIC_MIN_BATCH
        x = _x(*shape)
        x.reshape(-1, 96)[1, 7] = float("nan")
        with torch.no_grad():
            y = layer(x)
        assert y.shape == (*shape[:-1], 40)
        flat = y.reshape(-1, 40)
        assert torch.isnan(flat[1]).all() and torch.isfinite(flat[0]).all()
        keep = torch.ones(flat.shape[0], dtype=torch.bool)
        keep[1] = False
        expected = _dynamic_reference(layer, x.reshape(-1, 96)[keep])
        torch.testing.assert_close(flat[keep], expected, rtol=1e-5, atol=1e-5)


def test_int8_dynamic_gradient_passes_through_the_rounding():
    layer = SparseLinear.from_dense(_linear(50, 20), sparsity=0.6, scheme="int8_dynamic")
    x = _x(40, 50).requires_grad_()
    y = layer(x)
    y.sum().backward()
    dense = layer.to_dense()
    torch.testing.assert_close(x.grad, torch.ones(40, 20) @ dense.weight, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.bias.grad, torch.full((20,), 40.0))
    with torch.no_grad():
        torch.testing.assert_close(y.detach(), layer(x.detach()), rtol=1e-5, atol=1e-5)


def test_int8_dynamic_compile_and_state_dict_round_trip():
    layer = SparseLinear.from_dense(_linear(64, 48), sparsity=0.8, scheme="int8_dynamic")
    x = _x(70, 64)
    compiled = torch.compile(layer, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), layer(x), rtol=1e-5, atol=1e-5)
    fresh = SparseLinear(64, 48, values_dtype=torch.int8, scheme="int8_dynamic")
    fresh.load_state_dict(layer.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(x), layer(x))


def test_int8_dynamic_bad_arguments():
    with pytest.raises(ValueError, match="^scheme: 'int8_dynamic' stores int8 values"):
        SparseLinear.from_dense(_linear(8, 4), values_dtype=torch.float16, scheme="int8_dynamic")
    with pytest.raises(ValueError, match="^scheme: expected one of None, 'int8_weight_only', 'int8_dynamic'"):
        SparseLinear(8, 4, scheme="int8_static")
    with pytest.raises(ValueError, match="^activations: expected one of 'float', 'int8_dynamic'"):
        SparseLinear(8, 4, activations="int4")
    assert SparseLinear(8, 4, scheme="int8_dynamic").values.dtype == torch.int8  # int8 schemes imply int8 values


def test_schemes_and_deprecated_activations():
    linear = _linear(24, 8)
    assert SparseLinear.from_dense(linear, sparsity=0.5).scheme is None
    int8 = SparseLinear.from_dense(linear, sparsity=0.5, values_dtype=torch.int8)
    assert int8.scheme == "int8_weight_only"
    assert torch.equal(SparseLinear.from_dense(linear, sparsity=0.5, scheme="int8_weight_only").values, int8.values)
    dynamic = SparseLinear.from_dense(linear, sparsity=0.5, scheme="int8_dynamic")
    with pytest.warns(DeprecationWarning, match="activations is deprecated; use scheme='int8_dynamic'"):
        old = SparseLinear.from_dense(linear, sparsity=0.5, activations="int8_dynamic")
    assert old.scheme == "int8_dynamic" and old.activations == "int8_dynamic"
    x = _x(3, 24)
    with torch.no_grad():
        assert torch.equal(old(x), dynamic(x))
    with pytest.raises(TypeError, match="activations: deprecated alias of scheme"):
        SparseLinear(24, 8, scheme="int8_weight_only", activations="int8_dynamic")


@pytest.mark.parametrize("shape", [(0, 5, 3), (5, 0, 3), (5, 4, 0), (7, 3, 40)])
def test_int8_dynamic_empty_sizes_every_path(shape):
    in_f, out_f, batch = shape
    layer = SparseLinear.from_dense(_linear(in_f, out_f), sparsity=0.5, scheme="int8_dynamic")
    x = _x(batch, in_f)
    with torch.no_grad():
        y = layer(x)
    assert y.shape == (batch, out_f)
    if in_f == 0:  # nothing to multiply: the bias
        assert torch.equal(y, layer.bias.detach().expand(batch, out_f))
    assert layer(x.requires_grad_()).shape == (batch, out_f)  # the fake-quantize path
    assert layer(x.detach().half()).dtype == torch.float16
