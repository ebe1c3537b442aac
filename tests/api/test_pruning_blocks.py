"""Wanda calibration one block at a time: a model's repeated blocks (an
``nn.ModuleList`` of one class, called in a chain) are calibrated and pruned
one after the other, each seeing the pruned blocks before it; anything else
falls back to one whole-model pass. Expected masks are computed here by hand."""

from __future__ import annotations

import pytest
import torch
from _pruning_reference import expected_row_keep
from torch import nn

import slimtorch
from slimtorch.api.pruning import is_pruned, weight_mask


def norm_of(inputs: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([x.reshape(-1, x.shape[-1]) for x in inputs]).double().pow(2).sum(0).sqrt().float()


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, hidden_states: torch.Tensor, gate: torch.Tensor | None = None) -> tuple[torch.Tensor, str]:
        inner = torch.relu(self.fc1(hidden_states))
        if gate is not None:
            inner = inner * gate
        # A tuple output, as many Hugging Face blocks return.
        return hidden_states + self.fc2(inner), "extra"


class Chain(nn.Module):
    """An input layer, three chained blocks (called positionally or by
    keyword, with a keyword-only extra input) and a head."""

    def __init__(self, by_keyword: bool = False, width: int = 8) -> None:
        super().__init__()
        self.inp = nn.Linear(6, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(3))
        self.head = nn.Linear(width, 3)
        self.by_keyword = by_keyword

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        hidden = self.inp(x)
        for block in self.blocks:
            hidden = (block(hidden_states=hidden, gate=gate) if self.by_keyword else block(hidden, gate=gate))[0]
        return self.head(hidden)


def calibration(count: int = 3, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 5, 6, generator=g), torch.rand(8, generator=g) * 2) for _ in range(count)]


def block_by_block_reference(model: Chain, data, sparsity: float) -> dict[str, torch.Tensor]:
    """Keep-masks of sequential wanda, computed independently: each block's
    layers ranked on that block's inputs after the blocks before it are
    pruned; inp and head ranked on the dense model's activations."""
    weights = {name: m.weight.detach().clone() for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    linear = torch.nn.functional.linear

    def run(block: Block, h: torch.Tensor, gate: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        return h + linear(torch.relu(linear(h, w1, block.fc1.bias)) * gate, w2, block.fc2.bias)

    masks = {}
    with torch.no_grad():
        hiddens = [linear(x, weights["inp"], model.inp.bias) for x, _ in data]
        dense = list(hiddens)
        for i, block in enumerate(model.blocks):
            fc1, fc2 = f"blocks.{i}.fc1", f"blocks.{i}.fc2"
            inner = [torch.relu(linear(h, weights[fc1], block.fc1.bias)) * gate for h, (_, gate) in zip(hiddens, data)]
            masks[fc1] = expected_row_keep(weights[fc1].abs() * norm_of(hiddens), sparsity)
            masks[fc2] = expected_row_keep(weights[fc2].abs() * norm_of(inner), sparsity)
            pruned1, pruned2 = (torch.where(masks[n], weights[n], 0.0) for n in (fc1, fc2))
            hiddens = [run(block, h, gate, pruned1, pruned2) for h, (_, gate) in zip(hiddens, data)]
            dense = [run(block, h, gate, weights[fc1], weights[fc2]) for h, (_, gate) in zip(dense, data)]
        masks["inp"] = expected_row_keep(weights["inp"].abs() * norm_of([x for x, _ in data]), sparsity)
        masks["head"] = expected_row_keep(weights["head"].abs() * norm_of(dense), sparsity)
    return masks


@pytest.mark.parametrize("by_keyword", [False, True])
def test_blocks_are_pruned_one_at_a_time_on_the_pruned_outputs_before_them(by_keyword):
    torch.manual_seed(0)
    model = Chain(by_keyword).train()
    data = calibration()
    expected = block_by_block_reference(model, data, 0.5)
    report = slimtorch.prune_(model, 0.5, method="wanda", calibration=data)
    assert report.method == "wanda" and set(report.layers) == set(expected)
    assert report.total == pytest.approx(0.5)
    for name, keep in expected.items():
        assert torch.equal(weight_mask(model.get_submodule(name)), keep), name
    assert model.training  # the mode is restored


def test_block_path_differs_from_whole_model_calibration():
    """The reference above is not the whole-model one: later blocks' masks change."""
    torch.manual_seed(0)
    model = Chain()
    data = calibration()
    whole = Chain()
    whole.load_state_dict(model.state_dict())
    targets = [(n, m) for n, m in whole.named_modules() if isinstance(m, nn.Linear)]
    from slimtorch.api import pruning

    pruning._apply_masks(targets, 0.5, "row", pruning.input_norms(whole, targets, data))
    slimtorch.prune_(model, 0.5, method="wanda", calibration=data)
    assert torch.equal(weight_mask(model.blocks[0].fc1), weight_mask(whole.blocks[0].fc1))
    assert not torch.equal(weight_mask(model.blocks[2].fc1), weight_mask(whole.blocks[2].fc1))


def test_a_generator_of_batches_is_read_once_and_gives_the_same_masks():
    torch.manual_seed(1)
    model, twin = Chain(), Chain()
    twin.load_state_dict(model.state_dict())
    data = calibration(seed=4)
    slimtorch.prune_(model, 0.5, method="wanda", calibration=data)
    slimtorch.prune_(twin, 0.5, method="wanda", calibration=(batch for batch in data))
    for (name, a), b in zip(model.named_modules(), twin.modules()):
        if is_pruned(a):
            assert torch.equal(weight_mask(a), weight_mask(b)), name


class Parallel(nn.Module):
    """Blocks of one class in a ModuleList that are NOT a chain: each sees the same input."""

    def __init__(self) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6)) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(branch(x) for branch in self.branches)


class Repeated(nn.Module):
    """One block list whose first block runs twice per forward."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(6, 6) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[1](self.layers[0](self.layers[0](x)))


@pytest.mark.parametrize("make", [Parallel, Repeated])
def test_blocks_that_are_not_a_chain_fall_back_to_whole_model_calibration(make):
    torch.manual_seed(2)
    model = make()
    g = torch.Generator().manual_seed(5)
    data = [torch.randn(7, 6, generator=g) for _ in range(2)]
    inputs: dict[str, list[torch.Tensor]] = {}
    handles = [m.register_forward_pre_hook(lambda m, a, name=name: inputs.setdefault(name, []).append(a[0]))
               for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for x in data:
            model(x)
    for h in handles:
        h.remove()
    weights = {name: model.get_submodule(name).weight.detach().clone() for name in inputs}
    slimtorch.prune_(model, 0.5, method="wanda", calibration=data)
    for name, seen in inputs.items():
        keep = expected_row_keep(weights[name].abs() * norm_of(seen), 0.5)
        assert torch.equal(weight_mask(model.get_submodule(name)), keep), name


def test_layer_scope_uses_whole_model_calibration_even_with_blocks():
    torch.manual_seed(3)
    model, whole = Chain(), Chain()
    whole.load_state_dict(model.state_dict())
    data = calibration(seed=6)
    from slimtorch.api import pruning

    targets = [(n, m) for n, m in whole.named_modules() if isinstance(m, nn.Linear)]
    pruning._apply_masks(targets, 0.5, "layer", pruning.input_norms(whole, targets, data))
    slimtorch.prune_(model, 0.5, method="wanda", calibration=data, scope="layer")
    for name, module in targets:
        assert torch.equal(weight_mask(model.get_submodule(name)), weight_mask(module)), name


def test_bert_blocks_match_pruning_the_layers_in_order_with_whole_model_passes():
    """On a Hugging Face encoder (blocks called with an attention mask, padded
    batches), block-at-a-time masks equal those of pruning layer 0, then
    layer 1, ... each from a full forward of the model pruned so far."""
    transformers = pytest.importorskip("transformers")
    from slimtorch.api import pruning

    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)
    torch.manual_seed(4)
    model = transformers.BertModel(config, add_pooling_layer=False).eval()
    reference = transformers.BertModel(config, add_pooling_layer=False).eval()
    reference.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(7)
    data = []
    for _ in range(3):
        mask = torch.ones(4, 9, dtype=torch.long)
        mask[1, 5:] = 0
        data.append({"input_ids": torch.randint(1, 50, (4, 9), generator=g), "attention_mask": mask})
    slimtorch.prune_(model, 0.5, method="wanda", calibration=data, filter_fn=lambda m, n: isinstance(m, nn.Linear))
    for i in range(3):
        targets = [(n, m) for n, m in reference.named_modules()
                   if isinstance(m, nn.Linear) and n.startswith(f"encoder.layer.{i}.")]
        pruning._apply_masks(targets, 0.5, "row", pruning.input_norms(reference, targets, data))
    for name, module in reference.named_modules():
        if isinstance(module, nn.Linear):
            assert torch.equal(weight_mask(model.get_submodule(name)), weight_mask(module)), name


def test_a_block_layer_that_never_runs_is_an_error_before_anything_is_pruned():
    torch.manual_seed(5)
    model = Chain()
    model.blocks[1].unused = nn.Linear(8, 8)
    with pytest.raises(ValueError, match="^calibration: layer 'blocks.1.unused' never ran"):
        slimtorch.prune_(model, 0.5, method="wanda", calibration=calibration())
    assert not any(is_pruned(m) for m in model.modules())


def test_a_pattern_that_does_not_fit_a_later_block_changes_nothing():
    torch.manual_seed(6)
    model = Chain()
    model.head = nn.Linear(8, 3)
    model.inp = nn.Linear(6, 8)  # 6 inputs: not a multiple of 4
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="^sparsity: a 2:4 pattern"):
        slimtorch.prune_(model, "2:4", method="wanda", calibration=calibration())
    assert not any(is_pruned(m) for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("bad, error, message", [
    ([], ValueError, "^calibration: expected at least one batch"),
    (iter(()), ValueError, "^calibration: expected at least one batch"),
    (42, TypeError, "^calibration: expected an iterable"),
    (None, ValueError, "^calibration: method='wanda' needs"),
])
def test_bad_calibration_is_refused_and_changes_nothing(bad, error, message):
    model = Chain()
    with pytest.raises(error, match=message):
        slimtorch.prune_(model, 0.5, method="wanda", calibration=bad)
    assert not any(is_pruned(m) for m in model.modules())


def test_block_calibration_runs_without_autograd():
    seen = []

    class Probe(Block):
        def forward(self, hidden_states, gate=None):
            seen.append(torch.is_grad_enabled())
            return super().forward(hidden_states, gate)

    model = Chain()
    model.blocks = nn.ModuleList(Probe(8) for _ in range(3))
    slimtorch.prune_(model, 0.5, method="wanda", calibration=calibration(count=2))
    assert seen and not any(seen) and torch.is_grad_enabled()


def test_blocks_given_a_cache_fall_back_to_whole_model_calibration():
    """A Hugging Face causal LM fills a key/value cache block by block: running
    the blocks again would attend to the recording pass's keys too."""
    transformers = pytest.importorskip("transformers")
    from slimtorch.api import pruning

    config = transformers.GPT2Config(vocab_size=50, n_embd=16, n_layer=3, n_head=2, n_positions=32)
    torch.manual_seed(8)
    dense = transformers.GPT2Model(config).eval()
    g = torch.Generator().manual_seed(9)
    ids = [torch.randint(0, 50, (2, 7), generator=g) for _ in range(2)]
    masks = {}
    for use_cache in (True, False):
        data = [{"input_ids": x, "use_cache": use_cache} for x in ids]
        whole = transformers.GPT2Model(config).eval()
        whole.load_state_dict(dense.state_dict())
        targets = pruning._targets(whole, None)
        pruning._apply_masks(targets, 0.5, "row", pruning.input_norms(whole, targets, data))
        model = transformers.GPT2Model(config).eval()
        model.load_state_dict(dense.state_dict())
        slimtorch.prune_(model, 0.5, method="wanda", calibration=data)
        masks[use_cache] = [torch.equal(weight_mask(model.get_submodule(n)), weight_mask(m)) for n, m in targets]
    assert all(masks[True])  # with a cache: the whole-model pass
    assert not all(masks[False])  # without: block at a time, later blocks differ
