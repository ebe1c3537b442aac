"""magnitude_threshold / magnitude_masks: kernel against reference on every ISA
path, exact counts, tie order, torch.nn.utils.prune equality, bad input."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils import prune

from slimtorch import ops, reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# 0, 1, odd, vector widths -1/+0/+1 (8 and 16 lanes), a threading chunk +/- 1.
SIZES = [0, 1, 7, 15, 16, 17, 31, 32, 33, 65535, 65536, 65537]
SPARSITIES = [0.0, 0.5, 1.0, 0.37]
INF = float("inf")


def _weights(n: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g).to(dtype)


def _pruned(masks: list[torch.Tensor]) -> int:
    return sum(int((~m).sum()) for m in masks)


# Reference results by test case: the same inputs run once per ISA path, and
# the reference's sorts dominate the suite's run time.
_EXPECTED: dict[tuple, tuple[float, list[torch.Tensor]]] = {}


def _assert_matches_reference(tensors: list[torch.Tensor], sparsity: float, case: tuple | None = None) -> None:
    n = sum(t.numel() for t in tensors)
    if case is None or case not in _EXPECTED:
        expected_threshold = reference.magnitude_threshold(tensors, sparsity)
        expected_masks = reference.magnitude_masks(tensors, sparsity)
        if case is not None:
            _EXPECTED[case] = expected_threshold, expected_masks
    else:
        expected_threshold, expected_masks = _EXPECTED[case]
    threshold = ops.magnitude_threshold(tensors, sparsity)
    assert threshold == expected_threshold
    masks = ops.magnitude_masks(tensors, sparsity)
    expected = expected_masks
    assert len(masks) == len(tensors)
    for mask, want, t in zip(masks, expected, tensors):
        assert mask.shape == t.shape and mask.dtype == torch.bool and mask.is_contiguous()
        assert torch.equal(mask, want)
    assert _pruned(masks) == round(sparsity * n)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_one_tensor_matches_reference(isa, dtype, n, sparsity):
    _assert_matches_reference([_weights(n, dtype)], sparsity, ("one", dtype, n, sparsity))


@functools.cache
def _large(dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    # ~2.1M elements in tensors of different sizes and shapes.
    return (
        _weights(1_000_003, dtype, 1),
        _weights(512 * 1024, dtype, 2).reshape(512, 1024),
        _weights(600_001, dtype, 3),
        _weights(5, dtype, 4),
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_multi_tensor(isa, dtype):
    _assert_matches_reference(list(_large(dtype)), 0.5, ("large", dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_with_ties(isa, dtype):
    # Inputs of >= 2^20 elements take a sampled fast path; heavy ties at the
    # threshold take its "equal to the window's low end" branch.
    g = torch.Generator().manual_seed(15)
    tensors = [torch.randint(-6, 7, (700_001,), generator=g).to(dtype), torch.zeros(400_000, dtype=dtype)]
    _assert_matches_reference(tensors, 0.45, ("large_ties", dtype))


def test_large_multi_tensor_sparsities():
    tensors = list(_large(torch.float32))
    for sparsity in [1e-6, 0.9]:
        _assert_matches_reference(tensors, sparsity)


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_multi_tensor_mixed_dtypes_and_strides(isa, sparsity):
    base = _weights(64 * 48, torch.float32, 5).reshape(64, 48)
    tensors = [
        _weights(17, torch.float16, 6),
        base.t()[:, ::3],  # non-contiguous view
        torch.empty(0, 3),
        _weights(70_007, torch.bfloat16, 7).reshape(7, 10_001),
        _weights(1, torch.float32, 8),
    ]
    _assert_matches_reference(tensors, sparsity, ("mixed", sparsity))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "values",
    [
        lambda n, g: torch.randint(-4, 5, (n,), generator=g).float(),  # integer-valued: many ties
        lambda n, g: torch.full((n,), 0.75),  # all equal
        lambda n, g: torch.zeros(n),
        lambda n, g: torch.where(torch.rand(n, generator=g) < 0.5, -0.0, 0.0),  # +0 and -0 tie
        lambda n, g: torch.where(torch.rand(n, generator=g) < 0.5, 0.0, INF),
    ],
    ids=["integers", "all_equal", "all_zero", "signed_zeros", "zero_and_inf"],
)
@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.999, 1.0])
def test_ties_pruned_in_element_order(isa, dtype, values, sparsity):
    g = torch.Generator().manual_seed(11)
    sizes = [33, 3000, 5]
    tensors = [values(n, g).to(dtype) for n in sizes]
    tensors = [t * torch.where(torch.rand(t.shape, generator=g) < 0.5, -1, 1).to(dtype) for t in tensors]
    _assert_matches_reference(tensors, sparsity, ("ties", dtype, values, sparsity))


@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values(isa, dtype):
    w = torch.tensor([INF, -INF, -0.0, 0.0, 2.0, -1.0, 3.0, -INF], dtype=dtype)
    assert ops.magnitude_threshold(w, 2 / 8) == 0.0  # -0.0 and 0.0 have magnitude 0
    assert ops.magnitude_threshold(w, 5 / 8) == 3.0
    assert ops.magnitude_threshold(w, 6 / 8) == INF  # +/-Inf are the largest magnitudes
    assert ops.magnitude_threshold(w, 1.0) == INF
    (mask,) = ops.magnitude_masks(w, 6 / 8)
    assert mask.tolist() == [False, True, False, False, False, False, False, True]


def test_threshold_of_nothing_is_minus_inf_and_prunes_nothing(isa):
    w = torch.tensor([0.0, -0.0, 1.0])
    assert ops.magnitude_threshold(w, 0.1) == -INF  # round(0.3) == 0
    assert ops.magnitude_threshold(torch.empty(0), 0.5) == -INF
    assert ops.prune_mask(w, ops.magnitude_threshold(w, 0.1)).all()
    assert ops.magnitude_masks(torch.empty(2, 0), 1.0)[0].shape == (2, 0)


def test_count_uses_python_round():
    # round() rounds half to even, like torch.nn.utils.prune: 0.5 * 5 -> 2, 0.5 * 7 -> 4.
    assert _pruned(ops.magnitude_masks(_weights(5, torch.float32), 0.5)) == 2
    assert _pruned(ops.magnitude_masks(_weights(7, torch.float32), 0.5)) == 4


def test_threshold_is_the_largest_pruned_magnitude(isa):
    tensors = [_weights(1000, torch.float32, 9), _weights(301, torch.float32, 10)]
    threshold = ops.magnitude_threshold(tensors, 0.4)
    masks = ops.magnitude_masks(tensors, 0.4)
    pruned = torch.cat([t[~m].abs() for t, m in zip(tensors, masks)])
    kept = torch.cat([t[m].abs() for t, m in zip(tensors, masks)])
    assert float(pruned.max()) == threshold and float(kept.min()) > threshold
    # Tie-free data: thresholding at it prunes exactly the same weights.
    assert all(torch.equal(ops.prune_mask(t, threshold), m) for t, m in zip(tensors, masks))


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_thread_counts_agree(threads, n_threads):
    torch.set_num_threads(n_threads)
    g = torch.Generator().manual_seed(12)
    tensors = [torch.randint(-50, 50, (n,), generator=g).float() for n in (3 * 65536 + 5, 70_000, 9)]
    _assert_matches_reference(tensors, 0.3)


# ---- torch.nn.utils.prune equality (tie-free data) ------------------------------------

def _distinct_weights(*shapes: tuple[int, ...], seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = sum(torch.Size(s).numel() for s in shapes)
    values = torch.randperm(n, generator=g).float().add(1) * torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    return [v.reshape(s) / n for v, s in zip(values.split([torch.Size(s).numel() for s in shapes]), shapes)]


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.7, 1.0])
def test_equals_torch_l1_unstructured(sparsity):
    (weight,) = _distinct_weights((37, 29), seed=13)
    module = torch.nn.Linear(29, 37, bias=False)
    with torch.no_grad():
        module.weight.copy_(weight)
    prune.l1_unstructured(module, "weight", amount=sparsity)
    (mask,) = ops.magnitude_masks(module.weight_orig, sparsity)
    assert torch.equal(mask, module.weight_mask.bool())


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 1.0])
def test_equals_torch_global_unstructured(sparsity):
    shapes = [(20, 10), (7,), (5, 3, 4), (64, 33)]
    modules = []
    for w in _distinct_weights(*shapes, seed=14):
        m = torch.nn.Module()
        m.weight = torch.nn.Parameter(w.clone())
        modules.append(m)
    prune.global_unstructured([(m, "weight") for m in modules], prune.L1Unstructured, amount=sparsity)
    masks = ops.magnitude_masks([m.weight_orig for m in modules], sparsity)
    for m, mask in zip(modules, masks):
        assert torch.equal(mask, m.weight_mask.bool())


# ---- property test ---------------------------------------------------------------------

@settings(max_examples=80, deadline=None)
@given(
    values=st.lists(st.floats(width=32, allow_nan=False, allow_infinity=True), max_size=90),
    cuts=st.lists(st.integers(0, 90), max_size=3),
    sparsity=st.floats(0.0, 1.0),
    dtypes=st.lists(st.sampled_from(DTYPES), min_size=4, max_size=4),
)
def test_property_matches_reference(values, cuts, sparsity, dtypes):
    flat = torch.tensor(values, dtype=torch.float32)
    bounds = [0, *sorted(min(c, len(values)) for c in cuts), len(values)]
    tensors = [flat[a:b].to(dtype) for a, b, dtype in zip(bounds, bounds[1:], dtypes)]
    _assert_matches_reference(tensors, sparsity)


# ---- bad input -------------------------------------------------------------------------

@pytest.mark.parametrize(
    "tensors, sparsity, error, match",
    [
        ([], 0.5, ValueError, "tensors: expected at least one tensor"),
        ((), 0.5, ValueError, "tensors: expected at least one tensor"),
        ([1.0, 2.0], 0.5, TypeError, r"tensors\[0\]: expected a torch.Tensor"),
        ("abc", 0.5, TypeError, "tensors: expected a tensor or a list/tuple of tensors"),
        (None, 0.5, TypeError, "tensors: expected a tensor or a list/tuple of tensors"),
        ([torch.ones(2), torch.ones(2, dtype=torch.int32)], 0.5, TypeError, r"tensors\[1\]: expected dtype"),
        (torch.ones(3, dtype=torch.float64), 0.5, TypeError, r"tensors\[0\]: expected dtype"),
        (torch.ones(3), float("nan"), ValueError, "sparsity: expected a number, got NaN"),
        (torch.ones(3), -0.1, ValueError, r"sparsity: expected a number in \[0, 1\]"),
        (torch.ones(3), 1.5, ValueError, r"sparsity: expected a number in \[0, 1\]"),
        (torch.ones(3), INF, ValueError, r"sparsity: expected a number in \[0, 1\]"),
        (torch.ones(3), True, TypeError, "sparsity: expected a real number"),
        (torch.ones(3), "0.5", TypeError, "sparsity: expected a real number"),
        (torch.ones(3), None, TypeError, "sparsity: expected a real number"),
        ([torch.ones(2), torch.ones(2, device="meta")], 0.5, ValueError, "tensors: all tensors must be on one device"),
        (torch.tensor([1.0, float("nan")]), 0.5, ValueError, "tensors: expected no NaN"),
        (torch.tensor([1.0, float("nan")]), 0.0, ValueError, "tensors: expected no NaN"),
        ([torch.ones(70_000), torch.tensor([-float("nan")])], 1.0, ValueError, "tensors: expected no NaN"),
    ],
)
def test_bad_input(tensors, sparsity, error, match):
    with pytest.raises(error, match=match):
        ops.magnitude_threshold(tensors, sparsity)
    with pytest.raises(error, match=match):
        ops.magnitude_masks(tensors, sparsity)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_rejected_on_every_path(isa, dtype):
    w = _weights(1000, dtype)
    w[500] = float("nan")
    with pytest.raises(ValueError, match="tensors: expected no NaN"):
        ops.magnitude_threshold(w, 0.5)
    with pytest.raises(ValueError, match="tensors: expected no NaN"):
        ops.magnitude_masks([torch.ones(3), w], 0.5)


def test_meta_tensors():
    with pytest.raises(ValueError, match="tensors: expected tensors with values"):
        ops.magnitude_threshold(torch.empty(3, device="meta"), 0.5)
    (mask,) = ops.magnitude_masks(torch.empty(3, 4, device="meta"), 0.5)
    assert mask.shape == (3, 4) and mask.dtype == torch.bool


def test_accepts_parameters_tuples_and_tensor_sparsity():
    layer = torch.nn.Linear(8, 4)
    tensors = (layer.weight, layer.bias)
    assert ops.magnitude_threshold(tensors, torch.tensor(0.5)) == reference.magnitude_threshold(tensors, 0.5)
    masks = ops.magnitude_masks(tensors, 0.5)
    assert not any(m.requires_grad for m in masks) and _pruned(masks) == 18


# ---- torch.library contract ----------------------------------------------------------------

def test_opcheck():
    tensors = [_weights(300, torch.float32).reshape(10, 30), _weights(7, torch.bfloat16, 1)]
    torch.library.opcheck(torch.ops.slimtorch.magnitude_threshold.default, (tensors, 0.5))
    torch.library.opcheck(torch.ops.slimtorch.magnitude_masks.default, (tensors, 0.5))


def test_compile_fullgraph():
    def prune_globally(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        keep_a, keep_b = ops.magnitude_masks([a, b], 0.5)
        threshold = torch.ops.slimtorch.magnitude_threshold([a, b], 0.5)
        return a * keep_a, b * keep_b, threshold

    a, b = _weights(1000, torch.float32).reshape(40, 25), _weights(77, torch.float32, 1)
    compiled = torch.compile(prune_globally, fullgraph=True, backend="eager")
    for got, want in zip(compiled(a, b), prune_globally(a, b)):
        assert torch.equal(got, want)


# ---- every device (cpu, and cuda where a GPU and the CUDA kernels exist) ------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sparsity", [0.0, 1e-6, 0.5, 1.0])
def test_every_device_matches_reference(device, dtype, sparsity):
    g = torch.Generator().manual_seed(21)
    tensors = [
        torch.randn(1_000_003, generator=g).to(dtype),
        torch.randint(-3, 4, (5000, 3), generator=g).to(dtype).t(),  # ties, non-contiguous
        torch.tensor([INF, -INF, -0.0, 0.0], dtype=dtype),
        torch.empty(0, dtype=dtype),
        torch.randn(70_001, generator=g).to(dtype),
    ]
    expected_threshold = reference.magnitude_threshold(tensors, sparsity)
    expected_masks = reference.magnitude_masks(tensors, sparsity)
    on_device = [t.to(device) for t in tensors]
    assert ops.magnitude_threshold(on_device, sparsity) == expected_threshold
    masks = ops.magnitude_masks(on_device, sparsity)
    for mask, want in zip(masks, expected_masks):
        assert mask.device == device and torch.equal(mask.cpu(), want)


def test_every_device_all_ties_and_nan(device):
    w = torch.zeros(3 * 4096 + 5, device=device)
    for sparsity in [0.1, 0.5, 0.9]:
        (mask,) = ops.magnitude_masks(w, sparsity)
        assert torch.equal(mask.cpu(), reference.magnitude_masks([w.cpu()], sparsity)[0])
    w[7] = float("nan")
    with pytest.raises(ValueError, match="tensors: expected no NaN"):
        ops.magnitude_threshold(w, 0.5)
    with pytest.raises(ValueError, match="tensors: expected no NaN"):
        ops.magnitude_masks(w, 0.5)


def test_every_device_opcheck(device):
    tensors = [_weights(300, torch.float32).reshape(10, 30).to(device), _weights(7, torch.bfloat16, 1).to(device)]
    torch.library.opcheck(torch.ops.slimtorch.magnitude_threshold.default, (tensors, 0.5))
    torch.library.opcheck(torch.ops.slimtorch.magnitude_masks.default, (tensors, 0.5))
