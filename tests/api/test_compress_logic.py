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
def fake_layers(monkeypatch):
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


def test_speed_check_keeps_the_largest_speedup_above_one(fake_layers, monkeypatch):
    """The decision follows the harness's ratios (faked here): the candidate
    with the highest ratio is kept when it is above 1, else the layer stays dense."""

    def fake_compare(ratios):
        return {"dense": [MS] * 7, **{name: [MS / r] * 7 for name, r in ratios.items()}}

    config = slimtorch.CompressConfig(sparsity=0.9, quantize="int8_dynamic")
    _patch_timing(monkeypatch, fake_compare({"sparse_int8_dynamic": 1.5, "sparse_int8": 2.5, "int8_dynamic": 0.5}))
    report = slimtorch.compress_(make_mlp(), config)
    assert report.swapped == {"0": "sparse_int8", "2": "sparse_int8", "4": "sparse_int8"}
    assert all(d.speedup == 2.5 and d.compressed_us == pytest.approx(400) for d in report.layers)
    _patch_timing(monkeypatch, fake_compare({"sparse_int8_dynamic": 0.9, "sparse_int8": 1.0, "int8_dynamic": 0.99}))
    model = make_mlp()
    report = slimtorch.compress_(model, config)
    assert report.swapped == {} and all(type(model[i]) is nn.Linear for i in (0, 2, 4))
    assert all("within noise of dense (margin 0.03" in reason and "sparse_int8 1000 us (1.00x)" in reason
               for reason in report.dense.values())
    _patch_timing(monkeypatch, fake_compare({"sparse_int8_dynamic": 0.9, "sparse_int8": 0.8, "int8_dynamic": 0.7}))
    report = slimtorch.compress_(make_mlp(), config)
    assert report.swapped == {} and all("slower" in reason for reason in report.dense.values())


def _patch_timing(monkeypatch, samples: dict, after_more_rounds: dict | None = None) -> list:
    """compress_'s timer replaced: its results are ``samples`` (per-round
    seconds per call), ``after_more_rounds`` once it was asked for more than
    one pass of rounds. Returns the list of timers made."""
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
            more = after_more_rounds is not None and self.rounds > compress.SPEED_CHECK_ROUNDS
            return _comparison(after_more_rounds if more else samples)

    monkeypatch.setattr(compress.benchmark, "Interleaved", FakeTimer)
    return timers


def _comparison(samples: dict) -> benchmark.Comparison:
    """A harness result from per-round seconds per call (``dense`` among them)."""
    seconds = {name: statistics.median(times) for name, times in samples.items()}
    ratios = {name: statistics.median(d / t for d, t in zip(samples["dense"], times))
              for name, times in samples.items()}
    return benchmark.Comparison(seconds, ratios, "dense", len(samples["dense"]), {}, samples)


MS = 1e-3


@pytest.mark.parametrize("samples, kept", [
    # 10% faster in every round: kept
    ({"dense": [MS] * 7, "int8_dynamic": [MS / 1.1] * 7}, "int8_dynamic"),
    # 2% faster: inside the 3% margin, a tie, dense kept
    ({"dense": [MS] * 7, "int8_dynamic": [MS / 1.02] * 7}, None),
    # a busy machine: most samples of both disturbed (up to 5x), the undisturbed ones decide
    ({"dense": [5 * MS, MS, 3 * MS, 4 * MS, MS, 2 * MS, 5 * MS],
      "int8_dynamic": [MS / 1.2, 4 * MS, 2 * MS, MS / 1.2, 5 * MS, 3 * MS, 2 * MS]}, "int8_dynamic"),
    ({"dense": [MS, 5 * MS, 2 * MS], "int8_dynamic": [5 * MS, MS / 0.8, 3 * MS]}, None),  # slower
])
def test_speed_check_uses_the_least_disturbed_samples(fake_layers, monkeypatch, samples, kept):

    _patch_timing(monkeypatch, samples)
    report = slimtorch.compress_(make_mlp(), slimtorch.CompressConfig(quantize="int8_dynamic"))
    assert all(d.format == kept for d in report.layers)
    for decision in report.layers:
        assert "margin 0.03, least disturbed of" in decision.reason
        if kept is None:
            assert ("slower" if samples["int8_dynamic"][1] > MS else "within noise") in decision.reason


@pytest.mark.parametrize("first, second, kept, passes", [
    (1.05, 1.01, None, 2),            # close (within three margins): timed again, then a tie
    (1.05, 1.06, "int8_dynamic", 2),  # close, confirmed by the second pass
    (1.50, 1.00, "int8_dynamic", 1),  # clear: decided after one pass
])
def test_a_close_call_gets_more_rounds(fake_layers, monkeypatch, first, second, kept, passes):
    from slimtorch.api import compress

    timers = _patch_timing(monkeypatch, {"dense": [MS] * 7, "int8_dynamic": [MS / first] * 7},
                           after_more_rounds={"dense": [MS] * 7, "int8_dynamic": [MS / second] * 7})
    report = slimtorch.compress_(make_mlp(), slimtorch.CompressConfig(quantize="int8_dynamic"))
    assert all(d.format == kept for d in report.layers)
    assert [t.rounds for t in timers] == [passes * compress.SPEED_CHECK_ROUNDS] * 3


@pytest.mark.parametrize("sparse_int8, int8_dynamic, kept", [
    (1.20, 1.22, "sparse_int8"),   # within 3% of the fastest: the format listed first wins
    (1.10, 1.30, "int8_dynamic"),  # clearly faster: it wins
])
def test_speed_check_ties_go_to_the_preferred_format(fake_layers, monkeypatch, sparse_int8, int8_dynamic, kept):

    samples = {"dense": [MS] * 5, "sparse_int8_dynamic": [MS / 0.5] * 5, "sparse_int8": [MS / sparse_int8] * 5,
               "int8_dynamic": [MS / int8_dynamic] * 5}
    _patch_timing(monkeypatch, samples)
    report = slimtorch.compress_(make_mlp(), slimtorch.CompressConfig(sparsity=0.9, quantize="int8_dynamic"))
    assert set(report.swapped.values()) == {kept}


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
