"""threshold_ / prune_mask: kernel against reference on every ISA path."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimtorch import ops, reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# 0, 1, odd, vector widths -1/+0/+1 (8, 16, 32 lanes), a threading chunk +/- 1, large.
SIZES = [0, 1, 7, 15, 16, 17, 31, 32, 33, 65535, 65536, 65537, 1_000_003]


def _weights(n: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_matches_reference(isa, dtype, n):
    w = _weights(n, dtype)
    expected = w.clone()
    kept_expected = reference.threshold_(expected, 0.7)
    mask = ops.prune_mask(w, 0.7)
    assert ops.threshold_(w, 0.7) == kept_expected
    assert torch.equal(w, expected)
    assert torch.equal(mask, reference.prune_mask(_weights(n, dtype), 0.7))
    assert int(mask.sum()) == kept_expected


@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values(isa, dtype):
    w = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 0.0, 0.5, -0.5, 0.25], dtype=dtype)
    keep = ops.prune_mask(w, 0.5)
    assert keep.tolist() == [True, True, True, False, False, False, False, False]
    assert ops.threshold_(w, 0.5) == 3
    assert torch.isnan(w[0]) and w[1] == float("inf") and w[2] == -float("inf")
    assert torch.equal(w[3:], torch.zeros(5, dtype=dtype))
    assert not torch.signbit(w[3])  # a zeroed -0.0 becomes +0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threshold", [-1.0, 0.0, float("inf"), 1e-30, 0.1000000015, 65504.0, 1e38])
def test_threshold_values(isa, dtype, threshold):
    # Values right around the threshold after rounding to each dtype.
    w = torch.tensor([0.0, 1e-30, 0.1, 0.1000000015, 0.10009765625, 65504.0, 1e38, float("inf")]).to(dtype)
    assert torch.equal(ops.prune_mask(w, threshold), reference.prune_mask(w, threshold))


def test_inf_threshold_prunes_everything_but_nan(isa):
    w = torch.tensor([float("inf"), float("nan"), 3.0])
    assert ops.threshold_(w, float("inf")) == 1


def test_non_contiguous(isa):
    base = _weights(64 * 48, torch.float32).reshape(64, 48)
    w = base.t()[:, ::3]  # transposed and strided view
    expected = w.clone()
    kept = reference.threshold_(expected, 0.5)
    assert ops.threshold_(w, 0.5) == kept
    assert torch.equal(w, expected)
    assert torch.equal(base.t()[:, ::3], expected)  # written through the view
    assert torch.equal(ops.prune_mask(base.t(), 0.5), reference.prune_mask(base.t(), 0.5))


def test_mask_shape_and_dtype():
    w = _weights(24, torch.bfloat16).reshape(2, 3, 4)
    mask = ops.prune_mask(w, 0.0)
    assert mask.shape == (2, 3, 4) and mask.dtype == torch.bool and mask.is_contiguous()


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_thread_counts_agree(threads, n_threads):
    torch.set_num_threads(n_threads)
    w = _weights(3 * 65536 + 5, torch.float32, seed=3)
    expected = w.clone()
    assert ops.threshold_(w, 1.0) == reference.threshold_(expected, 1.0)
    assert torch.equal(w, expected)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), max_size=80),
    threshold=st.floats(width=32, allow_nan=False),
    dtype=st.sampled_from(DTYPES),
)
def test_property_matches_reference(values, threshold, dtype):
    w = torch.tensor(values, dtype=torch.float32).to(dtype)
    expected = w.clone()
    kept = reference.threshold_(expected, threshold)
    assert torch.equal(ops.prune_mask(w, threshold), reference.prune_mask(w, threshold))
    assert ops.threshold_(w, threshold) == kept
    assert torch.equal(w.isnan(), expected.isnan())
    assert torch.equal(w.nan_to_num(), expected.nan_to_num())


# ---- bad input -----------------------------------------------------------------

@pytest.mark.parametrize(
    "w, threshold, error, match",
    [
        ([1.0, 2.0], 0.5, TypeError, "w: expected a torch.Tensor"),
        (torch.ones(3, dtype=torch.int32), 0.5, TypeError, "w: expected dtype"),
        (torch.ones(3, dtype=torch.float64), 0.5, TypeError, "w: expected dtype"),
        (torch.ones(3), float("nan"), ValueError, "threshold: expected a number, got NaN"),
        (torch.ones(3), "0.5", TypeError, "threshold: expected a real number"),
        (torch.ones(3), True, TypeError, "threshold: expected a real number"),
        (torch.ones(3), torch.ones(2), ValueError, "threshold: expected a number or a one-element tensor"),
    ],
)
def test_bad_input(w, threshold, error, match):
    with pytest.raises(error, match=match):
        ops.threshold_(w, threshold)
    with pytest.raises(error, match=match):
        ops.prune_mask(w, threshold)


def test_tensor_threshold_accepted():
    w = torch.tensor([0.1, 0.9])
    assert ops.prune_mask(w, torch.tensor(0.5)).tolist() == [False, True]


# ---- torch.library contract --------------------------------------------------------

def test_opcheck():
    w = _weights(300, torch.float32).reshape(10, 30)
    torch.library.opcheck(torch.ops.slimtorch.prune_mask.default, (w, 0.5))
    torch.library.opcheck(torch.ops.slimtorch.threshold_.default, (w.clone(), 0.5))


def test_compile_fullgraph():
    def masked(w: torch.Tensor) -> torch.Tensor:
        return w * ops.prune_mask(w, 0.5)

    w = _weights(1000, torch.float32)
    compiled = torch.compile(masked, fullgraph=True, backend="eager")
    assert torch.equal(compiled(w), masked(w))
