"""prune_channels: grouping, exactness against zeroed channels, shapes, bad input."""

from __future__ import annotations

import copy
import importlib.util
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from structured_models import AttentionEncoder, ResNetLike, bert, mlp, n_params
from torch import nn

import slimtorch
from slimtorch.structured import PrunedMultiheadAttention, channel_groups, prune_channels

needs_transformers = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="transformers is not installed"
)


def keep_first(rows: list[torch.Tensor]) -> torch.Tensor:
    """An importance that prefers low channel indices: keeps the first ones."""
    return -torch.arange(rows[0].shape[0], dtype=torch.float64)


def _seeded(fn, *args, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return fn(*args, **kwargs)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- MLP


def test_exported_from_package():
    assert slimtorch.prune_channels is prune_channels


def test_mlp_ratio_zero_is_identical_copy():
    model = _seeded(mlp)
    x = torch.randn(5, 16)
    pruned = prune_channels(model, x, 0.0)
    assert pruned is not model
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(pruned.parameters(), model.parameters()))
    assert torch.equal(pruned(x), model(x))


def test_mlp_groups():
    model = _seeded(mlp)
    groups = channel_groups(model, torch.randn(2, 16))
    assert groups == [
        [("0.weight", 0), ("0.bias", 0), ("2.weight", 1)],
        [("2.weight", 0), ("2.bias", 0), ("4.weight", 1)],
    ]


def test_mlp_half_parameter_count_and_shapes():
    model = _seeded(mlp)  # 16 -> 64 -> 32 -> 8
    x = torch.randn(5, 16)
    before = _state(model)
    pruned = prune_channels(model, x, 0.5)
    assert n_params(model) == 16 * 64 + 64 + 64 * 32 + 32 + 32 * 8 + 8 == 3432
    assert n_params(pruned) == 16 * 32 + 32 + 32 * 16 + 16 + 16 * 8 + 8 == 1208
    assert ([(m.in_features, m.out_features) for m in pruned if isinstance(m, nn.Linear)]
            == [(16, 32), (32, 16), (16, 8)])
    assert pruned(x).shape == (5, 8)
    # the input model is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model[0].out_features == 64


def _l2_keep(scores: torch.Tensor, keep: int) -> torch.Tensor:
    return torch.sort(torch.argsort(-scores, stable=True)[:keep]).values


@pytest.mark.parametrize("importance", ["l2", "l1"])
def test_mlp_equals_original_with_removed_channels_zeroed(importance):
    model = _seeded(mlp)
    x = torch.randn(7, 16)
    pruned = prune_channels(model, x, 0.5, importance=importance)
    w0, b0, w2, b2, w4 = (
        t.detach().double() for t in (model[0].weight, model[0].bias, model[2].weight, model[2].bias, model[4].weight)
    )
    if importance == "l2":
        s1 = (w0.pow(2).sum(1) + b0.pow(2) + w2.pow(2).sum(0)).sqrt()
        s2 = (w2.pow(2).sum(1) + b2.pow(2) + w4.pow(2).sum(0)).sqrt()
    else:
        s1 = w0.abs().sum(1) + b0.abs() + w2.abs().sum(0)
        s2 = w2.abs().sum(1) + b2.abs() + w4.abs().sum(0)
    k1, k2 = _l2_keep(s1, 32), _l2_keep(s2, 16)
    # the kept slices are copied exactly
    assert torch.equal(pruned[0].weight, model[0].weight[k1])
    assert torch.equal(pruned[2].weight, model[2].weight[k2][:, k1])
    assert torch.equal(pruned[4].weight, model[4].weight[:, k2])
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for layer, kept in ((zeroed[0], k1), (zeroed[2], k2)):
            removed = torch.ones(layer.out_features, dtype=torch.bool)
            removed[kept] = False
            layer.weight[removed] = 0
            layer.bias[removed] = 0
    torch.testing.assert_close(pruned(x), zeroed(x), rtol=1e-5, atol=1e-6)


def test_callable_importance_and_ties():
    model = _seeded(mlp)
    x = torch.randn(3, 16)
    pruned = prune_channels(model, x, 0.5, importance=keep_first)
    assert torch.equal(pruned[0].weight, model[0].weight[:32])
    # all scores tied: the lower channel indices are kept
    tied = prune_channels(model, x, 0.5, importance=lambda rows: torch.zeros(rows[0].shape[0]))
    assert torch.equal(tied[0].weight, model[0].weight[:32])
    seen = []

    def spy(rows):
        seen.append([tuple(r.shape) for r in rows])
        return torch.ones(rows[0].shape[0])

    prune_channels(model, x, 0.5, importance=spy)
    # one [channels, entries] matrix per parameter slot: W0 rows, b0, W2 columns
    assert seen[0] == [(64, 16), (64, 1), (64, 32)]


@pytest.mark.parametrize(("width", "ratio", "kept"),
                         [(10, 0.3, 7), (10, 0.25, 8), (4, 0.99, 1), (2, 0.5, 1), (3, 0.1, 3)])
def test_rounding(width, ratio, kept):
    model = _seeded(mlp, 4, (width,), 2)
    pruned = prune_channels(model, torch.randn(2, 4), ratio)
    assert pruned[0].out_features == kept == width - min(width - 1, round(ratio * width))


def test_ignore_by_name_and_module():
    model = _seeded(mlp)
    x = torch.randn(2, 16)
    by_name = prune_channels(model, x, 0.5, ignore=["0"])
    assert (by_name[0].out_features, by_name[2].out_features) == (64, 16)
    by_module = prune_channels(model, x, 0.5, ignore=model[2])
    assert (by_module[0].out_features, by_module[2].out_features) == (32, 32)
    whole = prune_channels(model, x, 0.5, ignore="")
    assert n_params(whole) == n_params(model)


class _Flip(nn.Module):
    """An MLP whose hidden channels pass through an op the analysis does not
    know (flip along the channel dim): that group must stay whole."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 12), nn.Linear(12, 10), nn.Linear(10, 4)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.flip(self.a(x), [-1]))))


class _LiteralView(nn.Module):
    """The hidden width is written into a view as a literal: left whole."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 12), nn.Linear(12, 4)

    def forward(self, x):
        return self.b(self.a(x).view(x.shape[0], 12))


class _SliceMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 12), nn.Linear(6, 4)

    def forward(self, x):
        return self.b(self.a(x)[:, :6])


@pytest.mark.parametrize("cls", [_Flip, _LiteralView, _SliceMLP])
def test_unknown_or_fixed_channel_ops_leave_group_whole(cls):
    model = _seeded(cls)
    x = torch.randn(3, 6)
    pruned = prune_channels(model, x, 0.5)
    assert pruned.a.out_features == 12
    if cls is _Flip:
        assert pruned.b.out_features == 5  # the other group is still pruned
        assert pruned(x).shape == (3, 4)
    else:  # nothing else to prune
        assert torch.equal(pruned(x), model(x))


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(4, 8), nn.Linear(5, 8), nn.Linear(8, 2)

    def forward(self, x, y):
        return self.out(torch.relu(self.a(x) + self.b(y)))


def test_tuple_inputs_and_residual_group():
    model = _seeded(_TwoInputs)
    args = (torch.randn(3, 4), torch.randn(3, 5))
    assert channel_groups(model, args) == [[("a.weight", 0), ("a.bias", 0), ("b.weight", 0), ("b.bias", 0),
                                            ("out.weight", 1)]]
    pruned = prune_channels(model, args, 0.5)
    assert (pruned.a.out_features, pruned.b.out_features, pruned.out.in_features) == (4, 4, 4)
    assert pruned(*args).shape == (3, 2)
    assert prune_channels(model, list(args), 0.5)(*args).shape == (3, 2)


def test_train_mode_model_trains_after_pruning():
    model = _seeded(ResNetLike).train()
    x = torch.randn(4, 3, 8, 8)
    before = _state(model)
    pruned = prune_channels(model, x, 0.5)
    assert pruned.training and pruned.layer1.bn1.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # no BN stat update
    pruned(x).sum().backward()
    assert all(p.grad is not None for p in pruned.parameters())


@settings(max_examples=12, deadline=None)
@given(
    hidden=st.lists(st.integers(1, 12), min_size=1, max_size=3),
    ratio=st.floats(0.0, 0.95),
    seed=st.integers(0, 2**16),
)
def test_mlp_property(hidden, ratio, seed):
    """Any MLP: each hidden layer keeps n - min(n - 1, round(ratio * n)) units,
    and the result equals the original with the other units zeroed."""
    model = _seeded(mlp, 5, tuple(hidden), 3, seed=seed)
    x = torch.randn(4, 5)
    pruned = prune_channels(model, x, ratio, importance=keep_first)
    kept = [n - min(n - 1, round(ratio * n)) for n in hidden]
    linears = [m for m in pruned if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == kept + [3]
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for layer, k in zip([m for m in zeroed if isinstance(m, nn.Linear)], kept):
            layer.weight[k:] = 0
            layer.bias[k:] = 0
    torch.testing.assert_close(pruned(x), zeroed(x), rtol=1e-5, atol=1e-6)


class _TiedLM(nn.Module):
    """Embedding whose weight is reused as the output projection, and a dict output."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 12)
        self.up, self.down = nn.Linear(12, 16), nn.Linear(16, 12)

    def forward(self, ids):
        h = self.down(torch.relu(self.up(self.emb(ids))))
        return {"logits": h @ self.emb.weight.t(), "mask": ids > 0}


def test_tied_embedding_width_is_pruned_consistently():
    model = _seeded(_TiedLM)
    ids = torch.randint(0, 20, (2, 7))
    pruned = prune_channels(model, ids, 0.5)
    # the embedding width only meets Linears and the tied projection: pruned;
    # the vocabulary is addressed by index: kept
    assert pruned.emb.weight.shape == (20, 6) and pruned.emb.embedding_dim == 6
    assert (pruned.up.in_features, pruned.up.out_features, pruned.down.out_features) == (6, 8, 6)
    out = pruned(ids)
    assert out["logits"].shape == (2, 7, 20) and out["mask"].shape == (2, 7)


class _RunningAverage(nn.Module):
    """A buffer updated in place from the hidden channels in training mode."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)
        self.register_buffer("avg", torch.zeros(8))

    def forward(self, x):
        h = torch.relu(self.a(x))
        if self.training:
            self.avg.mul_(0.9).add_(0.1 * h.detach().mean(0))
        return self.b(h)


def test_buffer_updated_in_place_is_pruned_with_its_channels():
    model = _seeded(_RunningAverage).train()
    x = torch.randn(3, 4)
    pruned = prune_channels(model, x, 0.5, importance=keep_first)
    assert pruned.a.out_features == 4 and pruned.avg.shape == (4,)
    assert torch.equal(model.avg, torch.zeros(8))  # neither tracing nor the check ran it on the original
    pruned(x)
    assert torch.equal(pruned.avg, 0.1 * torch.relu(pruned.a(x)).mean(0).detach())


# ---------------------------------------------------------------- CNN


def test_cnn_ratio_zero_identical():
    model = _seeded(ResNetLike).eval()
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(prune_channels(model, x, 0.0)(x), model(x))


def test_cnn_groups_follow_residuals_concat_and_flatten():
    model = _seeded(ResNetLike).eval()
    groups = {g[0]: set(g) for g in channel_groups(model, torch.randn(2, 3, 8, 8))}
    # stem channels = layer1's residual stream: stem, layer1.conv2/bn2, layer1's and layer2's inputs
    stem = groups[("stem.0.weight", 0)]
    assert {("layer1.conv1.weight", 1), ("layer1.conv2.weight", 0), ("layer1.bn2.weight", 0),
            ("layer2.conv1.weight", 1), ("layer2.downsample.0.weight", 1), ("stem.1.running_var", 0)} <= stem
    # layer2: the residual add ties conv2 to the downsample conv
    assert {("layer2.downsample.0.weight", 0), ("layer2.downsample.1.bias", 0), ("branch_a.weight", 1),
            ("branch_b.0.weight", 1)} <= groups[("layer2.conv2.weight", 0)]
    # concat then flatten: each branch is its own group, reaching fc's columns
    assert ("fc.weight", 1) in groups[("branch_a.weight", 0)]
    assert ("fc.weight", 1) in groups[("branch_b.0.weight", 0)]
    assert len(groups) == 6  # + layer1.conv1 and layer2.conv1 (inside the blocks)
    assert not any(("fc.weight", 0) in g for g in groups.values())


def test_cnn_half():
    model = _seeded(ResNetLike).eval()
    x = torch.randn(2, 3, 8, 8)
    pruned = prune_channels(model, x, 0.5)
    assert pruned(x).shape == (2, 10)
    assert pruned.stem[0].out_channels == pruned.stem[1].num_features == pruned.layer1.conv1.in_channels == 8
    assert pruned.layer2.downsample[0].out_channels == pruned.layer2.conv2.out_channels == 16
    assert pruned.branch_a.out_channels == pruned.branch_b[0].out_channels == 8
    assert pruned.fc.in_features == 16 * 4 and pruned.fc.out_features == 10
    assert pruned.layer1.bn1.running_mean.shape == (8,)
    # every conv loses half its input and half its output channels (bar the stem's
    # RGB input and the fc outputs): about a quarter of the weights remain
    assert n_params(pruned) < 0.3 * n_params(model)


def test_cnn_kept_channels_are_exact_slices():
    model = _seeded(ResNetLike).eval()
    x = torch.randn(2, 3, 8, 8)
    pruned = prune_channels(model, x, 0.5, importance=keep_first)
    assert torch.equal(pruned.stem[0].weight, model.stem[0].weight[:8])
    assert torch.equal(pruned.layer1.conv2.weight, model.layer1.conv2.weight[:8, :8])
    # fc columns: branch_a's first 8 of 16 channels (x 4 pixels), then branch_b's
    cols = torch.cat([torch.arange(0, 32), torch.arange(64, 96)])
    assert torch.equal(pruned.fc.weight, model.fc.weight[:, cols])


def test_cnn_equals_original_with_removed_channels_zeroed():
    """Residual adds, BatchNorm, concat and flatten: zero each removed channel
    at every place it is produced (conv rows and bias, BN shift and running
    mean, so BN maps it to 0) and the original computes what the pruned copy does."""
    model = _seeded(ResNetLike).eval()
    with torch.no_grad():  # non-trivial BN statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 8, 8)
    pruned = prune_channels(model, x, 0.5, importance=keep_first)
    zeroed = copy.deepcopy(model)
    tensors = {**dict(zeroed.named_parameters()), **dict(zeroed.named_buffers())}
    with torch.no_grad():
        for group in channel_groups(model, x):
            produced = [(name, d) for name, d in group if d == 0 and not name.endswith("running_var")]
            n = tensors[produced[0][0]].shape[0]
            for name, _ in produced:
                tensors[name][n - min(n - 1, round(0.5 * n)):] = 0
    torch.testing.assert_close(pruned(x), zeroed(x), rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # raised inside torch's run_decompositions
def test_analysis_of_core_aten_graph():
    """After run_decompositions (conv2d -> aten.convolution) the groups are the
    same; a transposed convolution is not understood and stays whole."""
    from slimtorch.structured.graph import analyze

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.ConvTranspose2d(4, 4, 2)).eval()
    ep = torch.export.export(model, (torch.randn(1, 3, 8, 8),), strict=False).run_decompositions()
    assert any(n.target == torch.ops.aten.convolution.default for n in ep.graph.nodes)
    groups = [[(s.name, s.dim) for s in slots] for _, slots in analyze(ep, model).groups()]
    assert groups == [[("0.weight", 0), ("0.bias", 0), ("2.weight", 1)]]


class _Depthwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Conv2d(4, 16, 1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.grouped = nn.Conv2d(16, 8, 3, padding=1, groups=2)
        self.out = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        return self.out(torch.relu(self.grouped(torch.relu(self.dw(torch.relu(self.expand(x)))))))


def test_depthwise_pruned_grouped_left_whole():
    model = _seeded(_Depthwise)
    x = torch.randn(1, 4, 6, 6)
    pruned = prune_channels(model, x, 0.5)
    # expand -> depthwise is one group; the grouped conv's input is tied to it, so
    # that whole group stays; the grouped conv's output channels stay too
    assert (pruned.dw.groups, pruned.grouped.out_channels) == (16, 8)
    assert pruned(x).shape == model(x).shape


class _DepthwiseOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Conv2d(4, 16, 1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.out = nn.Conv2d(16, 3, 1)

    def forward(self, x):
        return self.out(torch.relu(self.dw(torch.relu(self.expand(x)))))


def test_depthwise_group():
    model = _seeded(_DepthwiseOnly)
    x = torch.randn(1, 4, 6, 6)
    pruned = prune_channels(model, x, 0.5, importance=keep_first)
    assert (pruned.dw.groups, pruned.dw.in_channels, pruned.dw.out_channels, pruned.out.in_channels) == (8, 8, 8, 8)
    assert torch.equal(pruned.dw.weight, model.dw.weight[:8])
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        zeroed.out.weight[:, 8:] = 0
    torch.testing.assert_close(pruned(x), zeroed(x))


# ---------------------------------------------------------------- attention


def test_multihead_attention_heads():
    model = _seeded(AttentionEncoder).eval()
    x = torch.randn(2, 5, 8)
    assert torch.equal(prune_channels(model, x, 0.0)(x), model(x))
    pruned = prune_channels(model, x, 0.5, importance=keep_first)
    attn = pruned.attn
    assert isinstance(attn, PrunedMultiheadAttention) and isinstance(attn, nn.MultiheadAttention)
    assert (attn.num_heads, attn.head_dim, attn.embed_dim, attn.inner_dim) == (2, 8, 32, 16)
    assert attn.in_proj_weight.shape == (48, 32) and attn.out_proj.in_features == 16
    assert pruned.ffn[0].out_features == 32 and pruned.embed.out_features == 32
    # heads 2 and 3 contribute nothing once their out_proj columns are zero
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        zeroed.attn.out_proj.weight[:, 16:] = 0
        zeroed.ffn[0].weight[32:] = 0
        zeroed.ffn[0].bias[32:] = 0
    torch.testing.assert_close(pruned(x), zeroed(x), rtol=1e-5, atol=1e-5)
    mask = torch.tensor([[False] * 5, [False, False, False, True, True]])
    torch.testing.assert_close(pruned(x, mask), zeroed(x, mask), rtol=1e-5, atol=1e-5)
    # need_weights and a boolean causal mask go through the pruned forward too
    h = torch.randn(2, 5, 32)
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)
    out, w = attn(h, h, h, attn_mask=causal)
    ref, ref_w = zeroed.attn(h, h, h, attn_mask=causal)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert w.shape == ref_w.shape == (2, 5, 5)


def test_multihead_attention_state_dict_round_trip():
    model = _seeded(AttentionEncoder).eval()
    x = torch.randn(2, 5, 8)
    pruned = prune_channels(model, x, 0.5)
    other = prune_channels(_seeded(AttentionEncoder, seed=1).eval(), x, 0.5)
    other.load_state_dict(pruned.state_dict())
    assert torch.equal(other(x), pruned(x))


class _TorchEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 32)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2)
        self.head = nn.Linear(32, 3)

    def forward(self, x, mask=None):
        return self.head(self.enc(self.inp(x), src_key_padding_mask=mask))


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_torch_transformer_encoder():
    """nn.TransformerEncoder: heads and FFN pruned; its fused fast paths
    (which assume embed_dim == heads * head_dim) are turned off."""
    model = _seeded(_TorchEncoder).eval()
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[False] * 5, [False, False, False, True, True]])
    pruned = prune_channels(model, x, 0.5, importance=keep_first)
    for layer in pruned.enc.layers:
        assert isinstance(layer.self_attn, PrunedMultiheadAttention) and layer.self_attn.num_heads == 2
        assert layer.linear1.out_features == 32 and layer.linear2.in_features == 32
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for layer in zeroed.enc.layers:
            layer.self_attn.out_proj.weight[:, 16:] = 0
            layer.linear1.weight[32:] = 0
            layer.linear1.bias[32:] = 0
    torch.testing.assert_close(pruned(x, mask), zeroed(x, mask), rtol=1e-5, atol=1e-5)  # slow paths
    with torch.no_grad():  # the original takes the nested-tensor fast path here
        fast, ours = zeroed(x, mask), pruned(x, mask)
    torch.testing.assert_close(ours[~mask], fast[~mask], rtol=1e-4, atol=1e-5)
    again = prune_channels(pruned, x, 0.5)  # an already pruned model prunes further
    assert again.enc.layers[0].self_attn.num_heads == 1 and again(x, mask).shape == (2, 5, 3)


def _bert_inputs(batch: int = 2, seq: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, -3:] = 0
    return {"input_ids": torch.randint(0, 100, (batch, seq), generator=g), "attention_mask": mask}


@needs_transformers
def test_bert_ratio_zero_identical():
    model = _seeded(bert)
    inputs = _bert_inputs()
    pruned = prune_channels(model, inputs, 0.0)
    assert torch.equal(pruned(**inputs).last_hidden_state, model(**inputs).last_hidden_state)


@needs_transformers
@pytest.mark.parametrize(("attn", "form"), [("sdpa", "dict"), ("eager", "tuple")])
def test_bert_groups_and_half(attn, form):
    model = _seeded(bert, attn=attn)
    inputs = _bert_inputs()
    example = inputs if form == "dict" else (inputs["input_ids"], inputs["attention_mask"])
    groups = channel_groups(model, example)
    heads0 = [("encoder.layer.0.attention.self.query.weight", 0), ("encoder.layer.0.attention.self.query.bias", 0),
              ("encoder.layer.0.attention.self.key.weight", 0), ("encoder.layer.0.attention.self.key.bias", 0),
              ("encoder.layer.0.attention.self.value.weight", 0), ("encoder.layer.0.attention.self.value.bias", 0),
              ("encoder.layer.0.attention.output.dense.weight", 1)]
    ffn0 = [("encoder.layer.0.intermediate.dense.weight", 0), ("encoder.layer.0.intermediate.dense.bias", 0),
            ("encoder.layer.0.output.dense.weight", 1)]
    assert groups[:2] == [heads0, ffn0] and len(groups) == 4  # hidden size never pruned
    pruned = prune_channels(model, example, 0.5)
    for layer in pruned.encoder.layer:
        att = layer.attention.self
        assert (att.num_attention_heads, att.attention_head_size, att.all_head_size) == (2, 16, 32)
        assert att.query.out_features == att.key.out_features == att.value.out_features == 32
        assert layer.attention.output.dense.in_features == 32
        assert layer.intermediate.dense.out_features == 64 == layer.output.dense.in_features
    assert pruned.config.hidden_size == 64
    out = pruned(**inputs)
    assert out.last_hidden_state.shape == (2, 8, 64) and out.pooler_output.shape == (2, 64)
    # per layer: q/k/v lose 32 rows (+bias), the attention output and FFN output
    # lose 32/64 columns, the intermediate loses 64 rows (+bias)
    per_layer = 3 * (32 * 64 + 32) + 64 * 32 + (64 * 64 + 64) + 64 * 64
    assert n_params(model) - n_params(pruned) == 2 * per_layer


@needs_transformers
def test_bert_equals_original_with_heads_and_ffn_zeroed():
    model = _seeded(bert)
    inputs = _bert_inputs()
    pruned = prune_channels(model, inputs, 0.5, importance=keep_first)
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for layer in zeroed.encoder.layer:
            layer.attention.output.dense.weight[:, 32:] = 0  # heads 2, 3
            layer.intermediate.dense.weight[64:] = 0
            layer.intermediate.dense.bias[64:] = 0  # gelu(0) == 0
    torch.testing.assert_close(pruned(**inputs).last_hidden_state, zeroed(**inputs).last_hidden_state,
                               rtol=1e-5, atol=1e-5)
    # other sequence lengths and batch sizes work (the head count is not baked in)
    other = _bert_inputs(3, 5)
    assert pruned(**other).last_hidden_state.shape == (3, 5, 64)


class _SqueezeExcite(nn.Module):
    """conv -> SE gate (global mean, 1x1 convs, sigmoid, broadcast multiply),
    explicit spatial padding, then a 1x1 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3)
        self.reduce, self.expand = nn.Conv2d(16, 8, 1), nn.Conv2d(8, 16, 1)
        self.out = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        gate = torch.sigmoid(self.expand(torch.relu(self.reduce(y.mean((2, 3), keepdim=True)))))
        return self.out(nn.functional.pad(y * gate, (1, 1, 1, 1)))


def test_squeeze_excite_and_padding():
    model = _seeded(_SqueezeExcite)
    x = torch.randn(2, 3, 8, 8)
    groups = {g[0]: g for g in channel_groups(model, x)}
    # the gate multiplies y channel-wise: expand's output joins conv's group
    assert ("expand.weight", 0) in groups[("conv.weight", 0)] and ("out.weight", 1) in groups[("conv.weight", 0)]
    assert ("expand.weight", 1) in groups[("reduce.weight", 0)]
    pruned = prune_channels(model, x, 0.5, importance=keep_first)
    assert (pruned.conv.out_channels, pruned.reduce.out_channels, pruned.expand.out_channels) == (8, 4, 8)
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        # removed channels are zero at their source (relu(0) == 0)
        for conv, keep in ((zeroed.conv, 8), (zeroed.reduce, 4)):
            conv.weight[keep:] = 0
            conv.bias[keep:] = 0
    torch.testing.assert_close(pruned(x), zeroed(x))


class _HandAttention(nn.Module):
    """Self-attention written out by hand: heads come from view(b, t, -1, d)."""

    def __init__(self, dim: int = 24, heads: int = 4, head_dim: int = 6) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.qkv = nn.ModuleList(nn.Linear(dim, heads * head_dim) for _ in range(3))
        self.proj = nn.Linear(heads * head_dim, dim)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = (lin(x).view(b, t, -1, self.head_dim).transpose(1, 2) for lin in self.qkv)
        o = nn.functional.scaled_dot_product_attention(q, k, v, scale=self.head_dim**-0.5)
        return x + self.proj(o.transpose(1, 2).reshape(b, t, -1))


def test_hand_written_attention_heads():
    model = _seeded(_HandAttention)
    x = torch.randn(2, 5, 24)
    seen = []

    def first_heads(rows):
        seen.append([tuple(r.shape) for r in rows])
        return keep_first(rows)

    pruned = prune_channels(model, x, 0.5, importance=first_heads)
    # one group: 4 heads; per head 6 rows of each of q/k/v (+ bias), 6 proj columns
    assert seen == [[(4, 6 * 24), (4, 6), (4, 6 * 24), (4, 6), (4, 6 * 24), (4, 6), (4, 24 * 6)]]
    assert [lin.out_features for lin in pruned.qkv] == [12, 12, 12] and pruned.proj.in_features == 12
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        zeroed.proj.weight[:, 12:] = 0
    torch.testing.assert_close(pruned(x), zeroed(x))


# ---------------------------------------------------------------- bad input


class _DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)

    def forward(self, x):
        return self.a(x) if x.sum() > 0 else -self.a(x)


@pytest.mark.parametrize(
    ("kwargs", "error", "start"),
    [
        ({"ratio": 1.0}, ValueError, "ratio"),
        ({"ratio": -0.1}, ValueError, "ratio"),
        ({"ratio": math.nan}, ValueError, "ratio"),
        ({"ratio": math.inf}, ValueError, "ratio"),
        ({"ratio": "0.5"}, TypeError, "ratio"),
        ({"ratio": True}, TypeError, "ratio"),
        ({"example_inputs": 3}, TypeError, "example_inputs"),
        ({"example_inputs": {1: torch.randn(2, 16)}}, TypeError, "example_inputs"),
        ({"example_inputs": torch.randn(2, 5)}, ValueError, "model"),
        ({"importance": "l3"}, ValueError, "importance"),
        ({"importance": 2}, TypeError, "importance"),
        ({"importance": lambda rows: torch.ones(3)}, ValueError, "importance"),
        ({"importance": lambda rows: torch.full((rows[0].shape[0],), math.nan)}, ValueError, "importance"),
        ({"ignore": "nope"}, ValueError, "ignore"),
        ({"ignore": nn.Linear(2, 2)}, ValueError, "ignore"),
        ({"ignore": [3]}, TypeError, "ignore"),
        ({"ignore": 3}, TypeError, "ignore"),
    ],
)
def test_bad_input(kwargs, error, start):
    call = {"model": _seeded(mlp), "example_inputs": torch.randn(2, 16), "ratio": 0.5, **kwargs}
    with pytest.raises(error) as info:
        prune_channels(call.pop("model"), call.pop("example_inputs"), call.pop("ratio"), **call)
    assert str(info.value).startswith(start)


def test_bad_model():
    with pytest.raises(TypeError, match="^model"):
        prune_channels(lambda x: x, torch.randn(2), 0.5)
    with pytest.raises(ValueError, match="^model: could not be traced"):
        prune_channels(_DataDependent(), torch.randn(2, 4), 0.5)
