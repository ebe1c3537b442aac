"""compress_ decision logic (config, overrides, filter, pruning, speed check,
report) with stand-in layer classes, independent of the real kernels."""

from __future__ import annotations

import statistics
import time

import pytest
import torch
from _api_models import make_mlp
from torch import nn

import slimtorch
from slimtorch import benchmark
from slimtorch.api import _backend
from slimtorch.api import compress as compress_module
from slimtorch.api.compress import _candidates


class _Stub(nn.Module):
    """Records how it was built; runs the dense computation, optionally slowed down."""

    delay_s = 0.0
    built: list = []

    def __init__(self, linear: nn.Linear, **kwargs):
        super().__init__()
        self.linear = nn.Linear(linear.in_features, linear.out_features)
        self.linear.load_state_dict({"weight": linear.weight.detach().clone(), "bias": linear.bias.detach().clone()})
        self.kwargs = kwargs
        type(self).built.append(kwargs)

    @classmethod
    def from_dense(cls, linear: nn.Linear, **kwargs):
        if kwargs.get("scheme") == "int8_static" and kwargs.get("activation_scale", 1) <= 0:
            raise ValueError("bad scale")
        return cls(linear, **kwargs)

    def forward(self, x):
        if self.delay_s:
            time.sleep(self.delay_s)
        return self.linear(x)


class FakeSparse(_Stub):
    pass


class FakeInt8(_Stub):
    pass


@pytest.fixture
def fake_layers(monkeypatch, sparse_kernels):
    """Stand-in layer classes; the break-even data (the speed check's prior)
    is a fixed table under which the sparse kernels pay at every batch, not
    this machine's shipped one, so only the fake timings decide."""
    classes = {"SparseLinear": FakeSparse, "Int8Linear": FakeInt8}
    monkeypatch.setattr(_backend, "layer_class", lambda name: classes[name])
    for cls in classes.values():
        monkeypatch.setattr(cls, "delay_s", 0.0)
        monkeypatch.setattr(cls, "built", [])
    return classes


def test_candidates_table():
    def names(sparse, quantize):
        return [fmt.name for fmt in _candidates(sparse, quantize)]

    assert names(False, None) == []
    assert names(True, None) == ["sparse"]
    assert names(False, "int8_dynamic") == ["int8_dynamic"]
    assert names(True, "int8_dynamic") == ["sparse_int8_dynamic", "sparse_int8", "int8_dynamic"]
    assert names(True, "int8_weight_only") == ["sparse_int8", "int8_weight_only"]
    assert names(True, "int8_static") == ["int8_static"]


def test_sparsity_prunes_then_swaps(fake_layers):
    model = make_mlp()
    report = slimtorch.compress_(model, slimtorch.CompressConfig(sparsity=0.75, speed_check=False))
    assert report.swapped == {"0": "sparse", "2": "sparse", "4": "sparse"}
    for i in (0, 2, 4):
        w = model[i].linear.weight
        assert int((w == 0).sum()) == round(0.75 * w.numel())
        assert isinstance(model[i], FakeSparse)
    assert all(d.sparsity == pytest.approx(0.75, abs=0.02) for d in report.layers)
    assert "3 of 3" in str(report)


def test_existing_zeros_and_min_sparsity(fake_layers):
    model = make_mlp()
    slimtorch.prune_(model, 0.6, scope="layer", filter_fn=lambda m, n: n == "2")
    report = slimtorch.compress_(model, slimtorch.CompressConfig(quantize="int8_dynamic", speed_check=False))
    assert report.swapped == {"0": "int8_dynamic", "2": "sparse_int8_dynamic", "4": "int8_dynamic"}
    assert FakeSparse.built == [{"scheme": "int8_dynamic"}]
    assert FakeInt8.built == [{"scheme": "int8_dynamic"}] * 2
    model = make_mlp()
    report = slimtorch.compress_(model, slimtorch.CompressConfig(speed_check=False))
    assert report.swapped == {} and "nothing to do" in report.dense["0"]


def test_overrides_and_filter(fake_layers):
    model = make_mlp()
    config = slimtorch.CompressConfig(
        quantize="int8_weight_only", speed_check=False,
        overrides={"4": None, "[02]": slimtorch.CompressConfig(sparsity=0.5, quantize=None)},
        filter_fn=lambda m, name: name != "2",
    )
    report = slimtorch.compress_(model, config)
    assert report.swapped == {"0": "sparse"}
    assert "override" in report.dense["4"] and "filter_fn" in report.dense["2"]
    assert type(model[2]) is nn.Linear and int((model[2].weight == 0).sum()) == 0  # filtered: not pruned either


def test_speed_check_keeps_faster_and_leaves_slower_dense(fake_layers):
    model = make_mlp()
    x = torch.randn(4, 12)
    expected = model(x)
    FakeInt8.delay_s = 0.03  # far slower than a tiny dense layer
    report = slimtorch.compress_(model, slimtorch.CompressConfig(quantize="int8_dynamic"), example_inputs=x)
    assert report.swapped == {}
    for d in report.layers:
        assert d.format is None and "slower" in d.reason and d.compressed_us > d.dense_us > 0
    assert torch.equal(model(x), expected)
    FakeInt8.delay_s = 0.0
    FakeSparse.delay_s = 0.03
    report = slimtorch.compress_(model, slimtorch.CompressConfig(sparsity=0.9, quantize="int8_dynamic"),
                                 example_inputs=(x,))
    # both sparse formats are slow: only the dense int8 fallback (stub = dense speed) can win
    for d in report.layers:
        assert d.format in (None, "int8_dynamic")
        assert "sparse_int8_dynamic" in d.reason and "sparse_int8 " in d.reason


def _patch_timing(monkeypatch, samples: dict) -> list:
    """compress_'s timer replaced: its results are ``samples`` (per-round
    seconds per call, ``dense`` among them). Returns the list of timers made."""
    from slimtorch.api import compress

    timers = []

    class FakeTimer:
        def __init__(self, candidates, *, baseline, **options):
            assert baseline == "dense" and set(candidates) == set(samples)
            self.rounds = 0
            timers.append(self)

        def round(self):
            self.rounds += 1

        def result(self):
            return _comparison(samples)

    monkeypatch.setattr(compress.benchmark, "Interleaved", FakeTimer)
    return timers


def _comparison(samples: dict) -> benchmark.Comparison:
    """A harness result from per-round seconds per call (``dense`` among them)."""
    seconds = {name: statistics.median(times) for name, times in samples.items()}
    ratios = {name: statistics.median(d / t for d, t in zip(samples["dense"], times))
              for name, times in samples.items()}
    return benchmark.Comparison(seconds, ratios, "dense", len(samples["dense"]), {}, samples)


MS = 1e-3
ROUNDS = 15


def _timed(speedups: dict, apart: float = 0.0) -> dict:
    """Per-round samples: dense takes 1 ms, each format ``speedups[f]`` times
    less in its undisturbed rounds; with ``apart`` the other half of its
    rounds (odd rounds for the first format, even for the second, ...) is
    ``1 + apart`` times slower, so the two halves disagree by that factor
    about its speed-up over dense (by its square between formats in opposite
    phase) while the least disturbed samples stay exact."""

    def factor(round_: int, phase: int) -> float:
        return 1.0 + apart if (round_ + phase) % 2 else 1.0

    return {"dense": [MS] * ROUNDS, **{f: [MS * factor(r, phase) / s for r in range(ROUNDS)]
                                       for phase, (f, s) in enumerate(speedups.items())}}


SPARSE_INT8 = dict(sparsity=0.9, quantize="int8_dynamic")  # three candidates, sparse_int8_dynamic first


def _compress_timed(monkeypatch, speedups: dict, apart: float = 0.0, **config) -> slimtorch.CompressReport:
    _patch_timing(monkeypatch, _timed(speedups, apart))
    return slimtorch.compress_(make_mlp(), slimtorch.CompressConfig(**(config or SPARSE_INT8)))


@pytest.mark.parametrize("speedups, apart, kept", [
    # within noise of dense: the first candidate stays, whichever side of 1.0 it measured
    ({"int8_dynamic": 1.02}, 0.0, "int8_dynamic"),
    ({"int8_dynamic": 0.98}, 0.0, "int8_dynamic"),
    # halves of the rounds that disagree widen the band: 8% slower is within noise of them
    ({"int8_dynamic": 0.92}, 0.05, "int8_dynamic"),
    # too noisy to tell at all: the prior stands
    ({"int8_dynamic": 0.5}, 1.0, "int8_dynamic"),
    # a rival within noise of the first candidate does not replace it
    ({"sparse_int8_dynamic": 1.20, "sparse_int8": 1.22, "int8_dynamic": 1.23}, 0.0, "sparse_int8_dynamic"),
    ({"sparse_int8_dynamic": 1.20, "sparse_int8": 1.40, "int8_dynamic": 1.10}, 0.1, "sparse_int8_dynamic"),
])
def test_speed_check_keeps_the_prior_within_noise(fake_layers, monkeypatch, speedups, apart, kept):
    config = dict(quantize="int8_dynamic") if len(speedups) == 1 else SPARSE_INT8
    report = _compress_timed(monkeypatch, speedups, apart, **config)
    assert report.swapped == {"0": kept, "2": kept, "4": kept}
    for d in report.layers:
        assert d.speedup == pytest.approx(speedups[kept]) and d.margin >= compress_module.MIN_SPEEDUP_MARGIN
        assert f"{speedups[kept]:.2f}x" in d.reason and f"noise band {d.margin:.0%}" in d.reason


@pytest.mark.parametrize("speedups, kept", [
    # the first candidate clearly slower than dense: the next one is considered
    ({"sparse_int8_dynamic": 0.5, "sparse_int8": 1.1, "int8_dynamic": 1.12}, "sparse_int8"),
    # a rival clearly faster than the first candidate replaces it
    ({"sparse_int8_dynamic": 1.1, "sparse_int8": 1.0, "int8_dynamic": 1.3}, "int8_dynamic"),
    ({"sparse_int8_dynamic": 1.0, "sparse_int8": 1.5, "int8_dynamic": 2.5}, "int8_dynamic"),
])
def test_speed_check_overrides_the_prior_when_clearly_contradicted(fake_layers, monkeypatch, speedups, kept):
    report = _compress_timed(monkeypatch, speedups)
    assert report.swapped == {"0": kept, "2": kept, "4": kept}
    floor = compress_module.MIN_SPEEDUP_MARGIN
    assert all(d.speedup == pytest.approx(speedups[kept]) and d.margin == pytest.approx(floor) for d in report.layers)
    assert all(d.compressed_us == pytest.approx(1e3 / speedups[kept]) for d in report.layers)
    if speedups["sparse_int8_dynamic"] >= 1.0:
        assert all("clearly faster than sparse_int8_dynamic" in d.reason for d in report.layers)


@pytest.mark.parametrize("speedups, apart", [
    ({"int8_dynamic": 0.9}, 0.0),   # steady rounds, 10% slower: beyond the floor
    ({"int8_dynamic": 0.6}, 0.1),   # halves 10% apart: 40% slower is still clearly slower
    ({"sparse_int8_dynamic": 0.9, "sparse_int8": 0.8, "int8_dynamic": 0.7}, 0.0),
])
def test_speed_check_never_keeps_a_clearly_slower_layer(fake_layers, monkeypatch, speedups, apart):
    config = dict(quantize="int8_dynamic") if len(speedups) == 1 else SPARSE_INT8
    model = make_mlp()
    x = torch.randn(4, 12)
    expected = model(x)
    _patch_timing(monkeypatch, _timed(speedups, apart))
    report = slimtorch.compress_(model, slimtorch.CompressConfig(**config))
    assert report.swapped == {} and all(type(model[i]) is nn.Linear for i in (0, 2, 4))
    if "sparsity" not in config:  # nothing pruned: the model is untouched
        assert torch.equal(model(x), expected)
    best = max(speedups.values())
    for d in report.layers:
        assert d.reason.startswith("compressed would be slower") and d.speedup == pytest.approx(best)
        assert d.speedup * (1 + d.margin) < 1.0


@pytest.mark.parametrize("apart, margin", [
    (0.0, 0.08), (0.01, 0.08),    # halves that agree: the floor (MIN_SPEEDUP_MARGIN)
    (0.05, 1.05 ** 2 - 1), (1.0, 3.0),  # twice their disagreement (in log terms)
])
def test_noise_band_is_twice_the_disagreement_of_the_halves(fake_layers, monkeypatch, apart, margin):
    report = _compress_timed(monkeypatch, {"int8_dynamic": 1.5}, apart, quantize="int8_dynamic")
    assert all(d.margin == pytest.approx(margin) for d in report.layers)


def test_break_even_data_rules_out_a_sparse_layer_that_would_run_dense(fake_layers, monkeypatch, break_even):
    """Above its break-even density a float SparseLinear runs its dense copy:
    it is not timed, and a layer with no other candidate stays dense."""
    density, rows = 0.5, 128
    # every table: sparse pays up to 16 rows at any density, beyond only below 10%
    break_even({f"{kind}/{size}": [[16, 1.0], [4096, 0.1]]
                for kind in ("float", "int8") for size in ("cached", "large")})
    timers = _patch_timing(monkeypatch, _timed({}))
    report = slimtorch.compress_(make_mlp(), slimtorch.CompressConfig(sparsity=1 - density, speed_check_rows=rows))
    assert timers == [] and report.swapped == {} and FakeSparse.built == []
    assert all("break-even data" in reason and "would run its dense copy" in reason
               for reason in report.dense.values())
    # int8 values at the same density: both sparse candidates drop out, the dense int8 layer is timed
    timers = _patch_timing(monkeypatch, _timed({"int8_dynamic": 1.2}))
    report = slimtorch.compress_(make_mlp(), slimtorch.CompressConfig(sparsity=1 - density, quantize="int8_dynamic",
                                                                      speed_check_rows=rows))
    assert len(timers) == 3 and set(report.swapped.values()) == {"int8_dynamic"} and FakeSparse.built == []
    assert all("sparse_int8: not timed" in d.reason and "sparse_int8_dynamic: not timed" in d.reason
               for d in report.layers)
    # sparse enough: the break-even data lets the sparse kernel run, so it is timed
    _patch_timing(monkeypatch, _timed({"sparse": 1.5}))
    report = slimtorch.compress_(make_mlp(), slimtorch.CompressConfig(sparsity=0.95, speed_check_rows=rows))
    assert set(report.swapped.values()) == {"sparse"}
    # a loss at batch 1 does not rule out the rows where the data says sparse wins
    break_even({f"{kind}/{size}": [[1, 0.1], [16, 0.6], [4096, 0.6]]
                for kind in ("float", "int8") for size in ("cached", "large")})
    timers = _patch_timing(monkeypatch, _timed({"sparse": 1.5}))
    report = slimtorch.compress_(make_mlp(), slimtorch.CompressConfig(sparsity=1 - density, speed_check_rows=rows))
    assert set(report.swapped.values()) == {"sparse"} and len(timers) == 3
    report = slimtorch.compress_(make_mlp(), slimtorch.CompressConfig(sparsity=1 - density, speed_check_rows=1))
    assert report.swapped == {} and all("sparse kernel at rows 16+" in r for r in report.dense.values())


def test_speed_check_times_a_fixed_number_of_rounds(fake_layers, monkeypatch):
    from slimtorch.api import compress

    timers = _patch_timing(monkeypatch, _timed({"int8_dynamic": 1.03}))
    slimtorch.compress_(make_mlp(), slimtorch.CompressConfig(quantize="int8_dynamic"))
    assert [t.rounds for t in timers] == [compress.SPEED_CHECK_ROUNDS] * 3


def test_static_needs_calibration(fake_layers):
    model = make_mlp()
    with pytest.raises(ValueError, match="^calibration"):
        slimtorch.compress_(model, slimtorch.CompressConfig(quantize="int8_static"))
    data = [torch.randn(8, 12) for _ in range(2)]
    report = slimtorch.compress_(model, slimtorch.CompressConfig(quantize="int8_static", speed_check=False),
                                 calibration=data)
    assert report.swapped == {"0": "int8_static", "2": "int8_static", "4": "int8_static"}
    ranges = slimtorch.calibrate(make_mlp(), data)
    assert FakeInt8.built[0] == {"scheme": "int8_static", "activation_scale": ranges["0"].activation_scale,
                                 "activation_zero_point": ranges["0"].activation_zero_point}
    model = make_mlp()
    report = slimtorch.compress_(model, slimtorch.CompressConfig(quantize="int8_static", speed_check=False),
                                 calibration={"0": ranges["0"]})
    assert report.swapped == {"0": "int8_static"} and "no calibrated" in report.dense["2"]


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(sparsity=1.5), ValueError, "sparsity"),
    (dict(sparsity="0.5"), TypeError, "sparsity"),
    (dict(quantize="int4"), ValueError, "quantize"),
    (dict(overrides=[("a", None)]), TypeError, "overrides"),
    (dict(overrides={"a": 0.5}), TypeError, "overrides"),
    (dict(overrides={1: None}), TypeError, "overrides"),
    (dict(filter_fn=3), TypeError, "filter_fn"),
    (dict(min_sparsity=-1), ValueError, "min_sparsity"),
    (dict(speed_check="yes"), TypeError, "speed_check"),
    (dict(speed_check_rows=0), ValueError, "speed_check_rows"),
])
def test_config_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=f"^{match}"):
        slimtorch.CompressConfig(**kwargs)


def test_compress_bad_arguments():
    with pytest.raises(TypeError, match="^model"):
        slimtorch.compress_(None, slimtorch.CompressConfig())
    with pytest.raises(TypeError, match="^config"):
        slimtorch.compress_(make_mlp(), {"sparsity": 0.5})


def test_cnn_head_only_linear_swapped(fake_layers):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 10))
    report = slimtorch.compress_(model, slimtorch.CompressConfig(quantize="int8_weight_only", speed_check=False))
    assert report.swapped == {"4": "int8_weight_only", "6": "int8_weight_only"}
    assert type(model[0]) is nn.Conv2d
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)
