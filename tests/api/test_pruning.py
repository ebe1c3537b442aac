"""prune_ / AGPSchedule / strip_: exact counts, masks that survive optimizers,
the cubic schedule, and plain parameters after strip_."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import slimtorch
from slimtorch.api.pruning import is_pruned, weight_mask


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 17), nn.ReLU(), nn.Linear(17, 3))


def cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.Flatten(), nn.LazyLinear(5))


def masked_count(model: nn.Module) -> tuple[int, int]:
    masks = [weight_mask(m) for m in model.modules() if is_pruned(m)]
    return sum(int((~k).sum()) for k in masks), sum(k.numel() for k in masks)


@pytest.mark.parametrize("sparsity", [0.0, 0.01, 0.3, 0.5, 0.9, 0.999, 1.0])
def test_global_prunes_exact_count_by_magnitude(sparsity):
    model = mlp()
    before = [m.weight.detach().clone() for m in model if isinstance(m, nn.Linear)]
    report = slimtorch.prune_(model, sparsity)
    n = sum(w.numel() for w in before)
    assert report.pruned == round(sparsity * n) == masked_count(model)[0]
    assert report.numel == n and report.total == pytest.approx(report.pruned / n)
    kept = torch.cat([w[weight_mask(m)].abs() for w, m in zip(before, (m for m in model if is_pruned(m)))])
    gone = torch.cat([w[~weight_mask(m)].abs() for w, m in zip(before, (m for m in model if is_pruned(m)))])
    if kept.numel() and gone.numel():
        assert kept.min() >= gone.max()  # one global threshold
    for m in model:
        if is_pruned(m):
            assert torch.equal(m.weight == 0, ~weight_mask(m) | (m.weight == 0))
            assert (m.weight[~weight_mask(m)] == 0).all()


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.8])
def test_layer_scope_prunes_each_layer_exactly(sparsity):
    model = mlp()
    report = slimtorch.prune_(model, sparsity, scope="layer")
    for name, module in model.named_children():
        if isinstance(module, nn.Linear):
            n = module.weight.numel()
            assert int((~weight_mask(module)).sum()) == round(sparsity * n)
            assert report.layers[name] == pytest.approx(round(sparsity * n) / n)


def test_ties_still_prune_exact_count():
    model = nn.Linear(10, 10, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.5)
    slimtorch.prune_(model, 0.37)
    assert int((model.weight == 0).sum()) == 37


def test_conv_and_filter_fn():
    model = cnn()
    model(torch.randn(1, 3, 6, 6))  # materialize the lazy layer
    report = slimtorch.prune_(model, 0.5, filter_fn=lambda m, name: isinstance(m, nn.Conv2d))
    assert set(report.layers) == {"0", "2"}
    assert not is_pruned(model[4])
    assert masked_count(model)[0] == round(0.5 * (8 * 3 * 9 + 4 * 8))


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1),
    lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.5),
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
])
@pytest.mark.parametrize("optimizer_first", [True, False])
def test_masks_stay_exactly_zero_through_optimizer_steps(make_opt, optimizer_first):
    model = mlp()
    opt = make_opt(model.parameters()) if optimizer_first else None
    x, y = torch.randn(64, 12), torch.randn(64, 3)
    if optimizer_first:  # build momentum before pruning: it pushes masked originals away from 0
        for _ in range(3):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    slimtorch.prune_(model, 0.7)
    masks = {n: weight_mask(m).clone() for n, m in model.named_children() if is_pruned(m)}
    opt = opt or make_opt(model.parameters())
    start = copy.deepcopy(model.state_dict())
    for _ in range(5):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        for name, keep in masks.items():
            w = getattr(model, name).weight
            assert torch.equal(w[~keep], torch.zeros(int((~keep).sum())))
            assert not torch.signbit(w[~keep]).any()  # +0.0, not -0.0
    changed = any(not torch.equal(v, model.state_dict()[k]) for k, v in start.items())
    assert changed  # training did happen


def test_strip_leaves_plain_parameters_with_zeros():
    model = mlp()
    slimtorch.prune_(model, 0.6)
    params_before = [m.parametrizations.weight.original for m in model if is_pruned(m)]
    x = torch.randn(5, 12)
    out = model(x)
    assert slimtorch.strip_(model) is model
    assert all(type(m) in (nn.Linear, nn.ReLU) for m in model)
    assert not any("parametrizations" in k for k in model.state_dict())
    assert [m.weight for m in model if isinstance(m, nn.Linear)] == params_before  # same Parameter objects
    assert all(isinstance(m.weight, nn.Parameter) for m in model if isinstance(m, nn.Linear))
    assert torch.equal(model(x), out)
    assert (sum(int((m.weight == 0).sum()) for m in model if isinstance(m, nn.Linear))
            >= round(0.6 * (12 * 32 + 32 * 17 + 17 * 3)))
    fresh = mlp(seed=1)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh(x), out)


def test_reprune_grows_masks_and_never_lowers():
    model = mlp()
    slimtorch.prune_(model, 0.5)
    first = {n: weight_mask(m).clone() for n, m in model.named_children() if is_pruned(m)}
    slimtorch.prune_(model, 0.8)
    for name, old in first.items():
        assert not (weight_mask(getattr(model, name)) & ~old).any()
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="sparsity"):
        slimtorch.prune_(model, 0.3)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_reprune_keeps_pruned_zeros_pruned_among_natural_zeros():
    # Many natural zeros tie with pruned positions; masks must still only grow.
    layer = nn.Linear(20, 10, bias=False)
    with torch.no_grad():
        layer.weight[:, :10] = 0
    slimtorch.prune_(layer, 0.3)
    first = weight_mask(layer).clone()
    with torch.no_grad():  # drift the originals at pruned positions (as momentum would)
        layer.parametrizations.weight.original.add_(1.0)
    slimtorch.prune_(layer, 0.4)
    assert not (weight_mask(layer) & ~first).any()
    assert int((~weight_mask(layer)).sum()) == 80


def test_pruned_state_dict_checkpoint_roundtrip():
    model = mlp()
    slimtorch.prune_(model, 0.5)
    other = mlp(seed=3)
    slimtorch.prune_(other, 0.1)
    other.load_state_dict(model.state_dict())
    x = torch.randn(4, 12)
    assert torch.equal(other(x), model(x))


def test_agp_cubic_schedule_values():
    s = slimtorch.AGPSchedule(final_sparsity=0.9, start_step=10, end_step=110, every=10, initial_sparsity=0.1)
    assert s.sparsity_at(0) == 0.1 and s.sparsity_at(10) == 0.1
    assert s.sparsity_at(110) == 0.9 and s.sparsity_at(500) == 0.9
    for t in (11, 35, 60, 109):
        assert s.sparsity_at(t) == pytest.approx(0.9 + (0.1 - 0.9) * (1 - (t - 10) / 100) ** 3)
    values = [s.sparsity_at(t) for t in range(0, 120)]
    assert values == sorted(values)
    assert [t for t in range(0, 130) if s.due(t)] == list(range(10, 111, 10))
    odd = slimtorch.AGPSchedule(0.5, start_step=0, end_step=25, every=10)
    assert [t for t in range(40) if odd.due(t)] == [0, 10, 20, 25]


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_agp_training_reaches_final_sparsity(scope):
    model = mlp()
    schedule = slimtorch.AGPSchedule(final_sparsity=0.8, start_step=2, end_step=12, every=3, initial_sparsity=0.0)
    report = slimtorch.prune_(model, schedule, scope=scope)
    assert report.pruned == 0 and schedule.current_sparsity == 0.0
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    x, y = torch.randn(32, 12), torch.randn(32, 3)
    history, previous = [], None
    n = masked_count(model)[1]
    for step in range(1, 16):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        schedule.step()
        masks = [weight_mask(m).clone() for m in model if is_pruned(m)]
        if previous is not None:
            assert all(not (k & ~p).any() for k, p in zip(masks, previous))  # monotone
        previous = masks
        history.append(schedule.current_sparsity)
        if schedule.due(step):
            assert schedule.current_sparsity == schedule.sparsity_at(step)
        for m in model:
            if is_pruned(m):
                assert (m.weight[~weight_mask(m)] == 0).all()
    assert history == sorted(history) and history[-1] == 0.8
    if scope == "global":
        assert masked_count(model)[0] == round(0.8 * n)
    assert schedule.step_count == 15


def test_agp_state_dict_resume():
    model = mlp()
    s = slimtorch.AGPSchedule(0.9, start_step=0, end_step=10, every=2)
    slimtorch.prune_(model, s)
    for _ in range(5):
        s.step()
    state = s.state_dict()
    assert state["step_count"] == 5 and state["current_sparsity"] == s.sparsity_at(4)
    resumed_model = mlp(seed=2)
    resumed = slimtorch.AGPSchedule(0.9, start_step=0, end_step=10, every=2)
    slimtorch.prune_(resumed_model, resumed)
    resumed_model.load_state_dict(model.state_dict())
    resumed.load_state_dict(state)
    for _ in range(6):
        s.step()
        resumed.step()
    assert resumed.current_sparsity == s.current_sparsity == 0.9
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), resumed_model.state_dict().values()))
    with pytest.raises(ValueError, match="final_sparsity"):
        slimtorch.AGPSchedule(0.5, 0, 10, 2).load_state_dict(state)
    with pytest.raises(ValueError, match="missing"):
        resumed.load_state_dict({"step_count": 1})
    with pytest.raises(TypeError, match="state"):
        resumed.load_state_dict([1])


def test_agp_misuse():
    s = slimtorch.AGPSchedule(0.5, 0, 10)
    with pytest.raises(RuntimeError, match="not bound"):
        s.step()
    model = mlp()
    slimtorch.prune_(model, s)
    with pytest.raises(ValueError, match="another model"):
        slimtorch.prune_(mlp(), s)
    slimtorch.strip_(model)
    with pytest.raises(RuntimeError, match="strip_"):
        s.step()


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(final_sparsity=1.5, start_step=0, end_step=10), ValueError, "final_sparsity"),
    (dict(final_sparsity=0.5, start_step=0, end_step=10, initial_sparsity=0.6), ValueError, "initial_sparsity"),
    (dict(final_sparsity=0.5, start_step=-1, end_step=10), ValueError, "start_step"),
    (dict(final_sparsity=0.5, start_step=5, end_step=5), ValueError, "end_step"),
    (dict(final_sparsity=0.5, start_step=0, end_step=10, every=0), ValueError, "every"),
    (dict(final_sparsity=0.5, start_step=0.5, end_step=10), TypeError, "start_step"),
    (dict(final_sparsity="0.5", start_step=0, end_step=10), TypeError, "final_sparsity"),
])
def test_agp_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=f"^{match}"):
        slimtorch.AGPSchedule(**kwargs)


def test_nan_weight_rejected_and_model_untouched():
    model = mlp()
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="^model: the weight of '2'"):
        slimtorch.prune_(model, 0.5)
    assert not any(is_pruned(m) for m in model)


@pytest.mark.parametrize("args, kwargs, error, match", [
    (("model", 0.5), {}, TypeError, "model"),
    ((None, 0.5), {}, TypeError, "model"),
    ((..., 1.5), {}, ValueError, "sparsity"),
    ((..., -0.1), {}, ValueError, "sparsity"),
    ((..., float("nan")), {}, ValueError, "sparsity"),
    ((..., "half"), {}, ValueError, "sparsity"),
    ((..., "4:2"), {}, ValueError, "sparsity"),
    ((..., "0:4"), {}, ValueError, "sparsity"),
    ((..., [0.5]), {}, TypeError, "sparsity"),
    ((..., True), {}, TypeError, "sparsity"),
    ((..., 0.5), {"scope": "rows"}, ValueError, "scope"),
    ((..., 0.5), {"method": "snip"}, ValueError, "method"),
    ((..., 0.5), {"method": "wanda"}, ValueError, "calibration"),
    ((..., 0.5), {"calibration": [torch.randn(2, 8)]}, ValueError, "calibration"),
    ((..., 0.5), {"method": "wanda", "calibration": 3}, TypeError, "calibration"),
    ((..., 0.5), {"method": "wanda", "calibration": []}, ValueError, "calibration"),
    ((..., 0.5), {"scope": 1}, TypeError, "scope"),
    ((..., 0.5), {"filter_fn": 3}, TypeError, "filter_fn"),
    ((..., 0.5), {"filter_fn": lambda m, n: False}, ValueError, "model"),
])
def test_prune_bad_arguments(args, kwargs, error, match):
    args = tuple(mlp() if a is ... else a for a in args)
    with pytest.raises(error, match=f"^{match}"):
        slimtorch.prune_(*args, **kwargs)
    with pytest.raises(TypeError, match="^model"):
        slimtorch.strip_(object())


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9)), min_size=1, max_size=4),
       sparsity=st.floats(0, 1), scope=st.sampled_from(["global", "layer"]), seed=st.integers(0, 2**16))
def test_prune_counts_property(sizes, sparsity, scope, seed):
    torch.manual_seed(seed)
    model = nn.Sequential(*[nn.Linear(i, o) for i, o in sizes])
    report = slimtorch.prune_(model, sparsity, scope=scope)
    counts = [int((~weight_mask(m)).sum()) for m in model]
    if scope == "global":
        assert sum(counts) == round(sparsity * sum(i * o for i, o in sizes)) == report.pruned
    else:
        assert counts == [round(sparsity * (i * o)) for i, o in sizes]
    assert report.total == pytest.approx(sum(counts) / sum(i * o for i, o in sizes))


def test_agp_with_distiller_keeps_masks_exact(tmp_path):
    from torch.utils.data import DataLoader, TensorDataset

    from slimtorch.distill import Distiller, KDLoss, StepSchedule

    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(64, 12, generator=g), torch.randint(0, 3, (64,), generator=g))
    loader = DataLoader(data, batch_size=8, shuffle=False)
    teacher, student = mlp(seed=1).eval(), mlp(seed=2)
    schedule = slimtorch.AGPSchedule(final_sparsity=0.8, start_step=0, end_step=12, every=4)
    assert isinstance(schedule, StepSchedule)
    slimtorch.prune_(student, schedule)
    optimizer = torch.optim.AdamW(student.parameters(), lr=0.01, weight_decay=0.1)
    Distiller(teacher, student, KDLoss(2.0, 0.5), optimizer, pruning=schedule, progress=False).fit(loader, epochs=2)
    assert schedule.step_count == 16 and schedule.current_sparsity == 0.8
    masks = [weight_mask(m) for m in student if is_pruned(m)]
    assert sum(int((~k).sum()) for k in masks) == round(0.8 * sum(k.numel() for k in masks))
    for m in student:
        if is_pruned(m):
            assert (m.weight[~weight_mask(m)] == 0).all()
