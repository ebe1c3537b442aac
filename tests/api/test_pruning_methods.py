"""prune_ beyond global magnitude: activation-aware ranking (wanda), per-row
scope, N:M patterns, Hugging Face Conv1D layers and tied weights. Expected
masks are computed here element by element, independently of the library."""

from __future__ import annotations

import pytest
import torch
from _pruning_reference import expected_row_keep
from torch import nn

import slimtorch
from slimtorch.api.pruning import is_pruned, weight_mask


def expected_pattern_keep(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    keep = torch.zeros(scores.shape, dtype=torch.bool)
    for r in range(scores.shape[0]):
        for start in range(0, scores.shape[1], m):
            cols = sorted(range(start, start + m), key=lambda c: (-float(scores[r, c]), c))
            for c in cols[:n]:
                keep[r, c] = True
    return keep


def batches(count: int, features: int, seed: int = 0, channel_gain: torch.Tensor | None = None) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        x = torch.randn(5, features, generator=g)
        out.append(x * channel_gain if channel_gain is not None else x)
    return out


def test_wanda_row_mask_matches_hand_computed_scores():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))
    data = batches(3, 8)
    # The second layer's input is what the first layer produced: record it independently.
    with torch.no_grad():
        hidden = [model[1](model[0](x)) for x in data]
        w0, w1 = model[0].weight.clone(), model[2].weight.clone()
    report = slimtorch.prune_(model, 0.5, method="wanda", calibration=data)
    assert report.method == "wanda" and report.scope == "row"
    for weight, inputs, layer in ((w0, data, model[0]), (w1, hidden, model[2])):
        norm = torch.cat(inputs).double().pow(2).sum(0).sqrt().float()
        keep = expected_row_keep(weight.abs() * norm, 0.5)
        assert torch.equal(weight_mask(layer), keep)
        assert torch.equal(layer.weight, torch.where(keep, weight, 0.0))


def test_wanda_keeps_small_weights_on_loud_inputs_where_magnitude_drops_them():
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, 1.0, 0.9, 0.8]]))
    loud = torch.tensor([100.0, 1.0, 1.0, 1.0])  # input 0 carries far larger activations
    by_magnitude = nn.Sequential(nn.Linear(4, 1, bias=False))
    by_magnitude[0].load_state_dict(layer.state_dict())
    slimtorch.prune_(by_magnitude, 0.25, scope="row")
    slimtorch.prune_(nn.Sequential(layer), 0.25, method="wanda", calibration=batches(2, 4, channel_gain=loud))
    assert weight_mask(by_magnitude[0]).tolist() == [[False, True, True, True]]
    assert weight_mask(layer).tolist() == [[True, True, True, False]]


@pytest.mark.parametrize("pattern, n, m", [("2:4", 2, 4), ("4:8", 4, 8), ("1:2", 1, 2)])
def test_n_m_pattern_by_magnitude(pattern, n, m):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 3))
    weights = [model[0].weight.detach().clone(), model[1].weight.detach().clone()]
    report = slimtorch.prune_(model, pattern)
    assert report.sparsity == pytest.approx(1 - n / m)
    for layer, weight in zip(model, weights):
        keep = expected_pattern_keep(weight.abs(), n, m)
        assert torch.equal(weight_mask(layer), keep)
        groups = (layer.weight != 0).reshape(weight.shape[0], -1, m).sum(-1)
        assert int(groups.max()) <= n


def test_wanda_with_2_4_pattern():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(8, 4))
    weight = model[0].weight.detach().clone()
    data = batches(2, 8, seed=3, channel_gain=torch.arange(1.0, 9.0))
    slimtorch.prune_(model, "2:4", method="wanda", calibration=data)
    norm = torch.cat(data).double().pow(2).sum(0).sqrt().float()
    assert torch.equal(weight_mask(model[0]), expected_pattern_keep(weight.abs() * norm, 2, 4))


def test_pattern_needs_divisible_inputs_and_leaves_model_unchanged():
    model = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 3), nn.Linear(3, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="^sparsity: a 2:4 pattern"):
        slimtorch.prune_(model, "2:4")
    assert not any(is_pruned(m) for m in model)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_wanda_conv_ranks_by_channel_norm():
    torch.manual_seed(3)
    conv = nn.Conv2d(3, 4, 2)
    model = nn.Sequential(conv)
    weight = conv.weight.detach().clone()
    data = [torch.randn(2, 3, 5, 5) * torch.tensor([1.0, 10.0, 0.1]).view(1, 3, 1, 1) for _ in range(2)]
    slimtorch.prune_(model, 0.5, method="wanda", calibration=data)
    norm = torch.cat(data).double().pow(2).sum(dim=(0, 2, 3)).sqrt().float()
    scores = (weight.abs() * norm.view(1, 3, 1, 1)).reshape(4, -1)
    assert torch.equal(weight_mask(conv).reshape(4, -1), expected_row_keep(scores, 0.5))


def test_wanda_layer_never_called_is_an_error_and_nothing_changes():
    model = nn.ModuleDict({"used": nn.Linear(4, 4), "unused": nn.Linear(4, 4)})
    model.forward = lambda x: model["used"](x)  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="^calibration: layer 'unused' never ran"):
        slimtorch.prune_(model, 0.5, method="wanda", calibration=batches(1, 4))
    assert not any(is_pruned(m) for m in model.values())


def test_masks_only_grow_when_switching_to_wanda():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(8, 4))
    slimtorch.prune_(model, 0.5)
    first = weight_mask(model[0]).clone()
    slimtorch.prune_(model, 0.5, method="wanda", calibration=batches(2, 8, seed=9))
    assert not bool((weight_mask(model[0]) & ~first).any())


class TiedLM(nn.Module):
    """An embedding and an output head sharing one weight, plus an untied layer."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.hidden = nn.Linear(6, 6)
        self.head = nn.Linear(6, 10, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.hidden(self.embed(ids))))


@pytest.mark.parametrize("method", ["magnitude", "wanda"])
def test_tied_head_is_skipped_with_a_reason_and_stays_tied(method):
    torch.manual_seed(5)
    model = TiedLM()
    embedding = model.embed.weight.detach().clone()
    kwargs = {"calibration": [torch.randint(0, 10, (3, 7))]} if method == "wanda" else {}
    report = slimtorch.prune_(model, 0.5, method=method, **kwargs)
    assert set(report.layers) == {"hidden"}
    assert "embed.weight" in report.skipped["head"] and "tied" in report.skipped["head"]
    assert not is_pruned(model.head)
    assert model.head.weight is model.embed.weight
    assert torch.equal(model.embed.weight, embedding)


def test_only_tied_layers_is_an_error_that_says_why():
    model = TiedLM()
    with pytest.raises(ValueError, match="^model: no layer to prune.*head: weight tied to embed.weight"):
        slimtorch.prune_(model, 0.5, filter_fn=lambda m, name: name == "head")


def test_hf_conv1d_is_pruned_per_output_column():
    pytest.importorskip("transformers")
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(6)
    layer = Conv1D(6, 8)  # nf=6 outputs, nx=8 inputs: weight [8, 6]
    model = nn.Sequential(layer)
    weight = layer.weight.detach().clone()
    data = batches(2, 8, seed=7)
    report = slimtorch.prune_(model, 0.5, method="wanda", calibration=data)
    assert set(report.layers) == {"0"}
    norm = torch.cat(data).double().pow(2).sum(0).sqrt().float()
    keep_rows = expected_row_keep((weight.abs() * norm[:, None]).T, 0.5)  # [out, in]
    assert torch.equal(weight_mask(layer), keep_rows.T)
    assert torch.equal((layer.weight == 0).sum(0), torch.full((6,), 4))


def test_wanda_calibration_builds_no_autograd_graph():
    """Calibration keeps running sums only: the forward passes run without
    autograd, so no batch's activations are saved for a backward."""
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(torch.is_grad_enabled())
            return x

    model = nn.Sequential(nn.Linear(8, 8), Probe(), nn.Linear(8, 4))
    batches = [torch.randn(5, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    slimtorch.prune_(model, 0.5, method="wanda", calibration=batches)
    assert seen == [False] * 3 and torch.is_grad_enabled()
