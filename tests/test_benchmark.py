"""slimtorch.benchmark, the timing harness: interleaving, statistics and the
machine record (no assertion on how fast anything is)."""

from __future__ import annotations

import math
import time

import pytest
import torch

from slimtorch import benchmark


def test_rounds_interleave_and_rotate():
    order = []
    timer = benchmark.Interleaved({name: (lambda name=name: order.append(name)) for name in "abc"}, baseline="a",
                                  sample_seconds=0.0, warmup=2)
    timer.round()
    # per candidate 2 warm-ups + 3 sizing calls, then one sample of each
    assert order == [*"aaaaa", *"bbbbb", *"ccccc", "a", "b", "c"]
    order.clear()
    timer.round()
    timer.round()
    assert order == ["b", "c", "a", "c", "a", "b"]  # a different candidate goes first every round
    result = timer.result()
    assert result.rounds == 3 and result.calls == {"a": 1, "b": 1, "c": 1} and result.ratios["a"] == 1.0


def test_settle_calls_precede_each_sample_untimed():
    """settle=1: every sample of a candidate follows one untimed call of the same candidate."""
    order, slow_first = [], {"b": True}

    def make(name):
        def fn():
            order.append(name)
            if slow_first.get(name):  # the call right after a switch is slow; the settle call takes it
                slow_first[name] = False
                time.sleep(0.05)
        return fn

    timer = benchmark.Interleaved({name: make(name) for name in "ab"}, baseline="a", sample_seconds=0.0,
                                  warmup=0, settle=1)
    timer.round()  # sizing calls, then the first round
    slow_first["b"] = True
    order.clear()
    timer.round()
    assert order == ["b", "b", "a", "a"]  # the second round starts with b
    assert timer.samples["b"][1] < 0.04  # the slow call was the untimed one


@pytest.mark.parametrize("settle", [-1, 1.5, True, "1"])
def test_settle_rejects_bad_values(settle):
    with pytest.raises(ValueError, match="settle"):
        benchmark.Interleaved({"a": lambda: None}, settle=settle)


def test_samples_are_sized_by_the_fastest_sizing_call():
    """One slow call while sizing (the scheduler delayed it) does not shrink the samples."""
    delays = iter([0.05, 0.0, 0.0])

    def fn():
        time.sleep(next(delays, 0.0))

    timer = benchmark.Interleaved({"x": fn}, sample_seconds=0.02, max_calls=1000, warmup=0)
    timer.round()
    assert timer.calls["x"] > 20


def test_calls_per_sample_are_capped():
    result = benchmark.compare({"x": lambda: None}, rounds=2, sample_seconds=10.0, max_calls=7)
    assert result.calls == {"x": 7} and result.rounds == 2 and result.ratios == {}


def test_ratio_is_the_median_of_per_round_ratios():
    samples = {"base": [1.0, 10.0, 2.0], "new": [0.5, 10.0, 4.0]}  # per-round ratios 2, 1, 0.5
    comparison = benchmark.Comparison({}, {}, "base", 3, {}, samples)
    assert comparison.ratio("base", "new") == 1.0
    assert comparison.ratio("new", "base") == 1.0


def test_fastest_ratio_and_its_noise_compare_the_halves_of_the_rounds():
    samples = {"base": [2.0, 1.0, 3.0, 1.5], "new": [1.0, 0.8, 0.5, 0.6]}  # even rounds 0, 2; odd rounds 1, 3
    comparison = benchmark.Comparison({}, {}, "base", 4, {}, samples)
    assert comparison.fastest_ratio("base", "new") == 1.0 / 0.5
    even, odd = 2.0 / 0.5, 1.0 / 0.6
    assert comparison.fastest_ratio_noise("base", "new") == pytest.approx((even / odd) ** 2 - 1)
    assert comparison.fastest_ratio_noise("base", "new", k=1) == pytest.approx(even / odd - 1)
    assert comparison.fastest_ratio_noise("new", "base") == pytest.approx(comparison.fastest_ratio_noise("base", "new"))
    steady = benchmark.Comparison({}, {}, "base", 4, {}, {"base": [1.0, 2.0, 1.0, 5.0], "new": [0.5, 1.0, 0.6, 2.0]})
    assert steady.fastest_ratio_noise("base", "new") == 0.0  # both halves: 2x
    single = benchmark.Comparison({}, {}, "base", 1, {}, {"base": [1.0], "new": [0.5]})
    assert single.fastest_ratio_noise("base", "new") == math.inf


def test_bad_arguments():
    with pytest.raises(ValueError, match="^candidates"):
        benchmark.Interleaved({})
    with pytest.raises(ValueError, match="^baseline"):
        benchmark.compare({"a": lambda: None}, baseline="b")
    with pytest.raises(ValueError, match="^rounds"):
        benchmark.compare({"a": lambda: None}, rounds=0)
    with pytest.raises(RuntimeError, match="no round"):
        benchmark.Interleaved({"a": lambda: None}).result()


@pytest.mark.parametrize("model, family_model, slug", [
    ("Intel(R) Xeon(R) Platinum 8480+", (6, 143), "intel-xeon-platinum-8480"),
    ("AMD EPYC 9R14 96-Core Processor", None, "amd-epyc-9r14-96-core-processor"),
    ("Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", (6, 158), "intel-core-i7-8700"),
    # Names without a model number, as virtual machines show them.
    ("AMD EPYC", (25, 17), "amd-epyc-family25-model17"),
    ("Intel(R) Xeon(R) Processor", (6, 167), "intel-xeon-processor-family6-model167"),
    ("Intel(R) Xeon(R) Processor", None, "intel-xeon-processor"),
    ("", None, "unknown-cpu"),
])
def test_cpu_slug(model, family_model, slug):
    assert benchmark.cpu_slug(model, family_model) == slug


def test_cpu_slug_of_this_cpu():
    assert benchmark.cpu_slug() == benchmark.cpu_slug(benchmark.cpu_model(), benchmark.cpu_family_model())


def test_machine_record():
    info = benchmark.machine()
    assert info["cpu"] == benchmark.cpu_model() and info["threads"] == torch.get_num_threads()
    assert info["isa"] == benchmark.isa_path() and isinstance(info["amx"], bool)


def test_force_sparse_kernel_turns_off_the_dense_fallback(monkeypatch):
    from slimtorch.nn import SparseLinear

    torch.manual_seed(0)
    layer = SparseLinear.from_dense(torch.nn.Linear(64, 64), sparsity=0.1)  # too dense: large batches run dense
    x = torch.randn(256, 64)
    want = layer.to_dense()(x)
    dense_calls = []
    linear = torch.nn.functional.linear
    monkeypatch.setattr(torch.nn.functional, "linear", lambda *args: dense_calls.append(1) or linear(*args))
    with torch.no_grad():
        layer(x)
        assert dense_calls, "expected the dense fallback before forcing"
        dense_calls.clear()
        assert benchmark.force_sparse_kernel(layer) is layer
        torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-5)
    assert not dense_calls


def test_break_even_limit_stops_at_the_first_losing_density():
    from benchmarks.bench_break_even import MARGIN, tables

    win, lose = MARGIN, MARGIN * 0.9
    # One kind/size/batch cell over two shapes: 0.1 and 0.2 win on both,
    # 0.3 loses on one (the limit stops there although 0.7 wins on both).
    ratios = {}
    for shape in ((768, 3072), (3072, 768)):
        for density, ratio in ((0.1, win), (0.2, win), (0.3, lose if shape[0] == 768 else win), (0.7, win)):
            ratios[("bf16", "cached", 1, *shape, density)] = ratio
    ratios[("bf16", "cached", 16, 768, 3072, 0.1)] = lose  # the lowest density loses: 0.0
    ratios[("bf16", "cached", 128, 768, 3072, 0.1)] = win
    ratios[("bf16", "cached", 128, 768, 3072, 0.2)] = win
    assert tables(ratios) == {"bf16/cached": [[1, 0.2], [16, 0.0], [128, 0.2]]}
