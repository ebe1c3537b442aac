"""Tied weights (an embedding that is also the output head's weight) on
plain torch models: compress_ turns a whole tied group into int8 layers that
share one table, or leaves all of it as it is and says why; summary counts
the table once; save writes it once and load_ ties it again; files that would
untie it are refused and leave the model unchanged; prune_ and strip_ keep
ties as they are."""

from __future__ import annotations

import pytest
import torch
from _crafted import read_parts, slimtorch_file
from torch import nn

import slimtorch
from slimtorch import ops
from slimtorch.nn import Int8Embedding, Int8Linear

VOCAB, HIDDEN = 40, 16


class TiedLM(nn.Module):
    """An embedding whose table is also the output head's weight (the head has its own bias)."""

    def __init__(self, seed: int = 0, head_bias: bool = True) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(VOCAB, HIDDEN, padding_idx=0)
        self.hidden = nn.Linear(HIDDEN, HIDDEN)
        self.head = nn.Linear(HIDDEN, VOCAB, bias=head_bias)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.hidden(self.embed(ids))))


def _ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (3, 7), generator=torch.Generator().manual_seed(1))


def _int8(**kwargs) -> slimtorch.CompressConfig:
    return slimtorch.CompressConfig(quantize=kwargs.pop("quantize", "int8_dynamic"), embeddings=True,
                                    speed_check=False, **kwargs)


def _shared(a: nn.Module, b: nn.Module) -> bool:
    return all(getattr(a, k).untyped_storage().data_ptr() == getattr(b, k).untyped_storage().data_ptr()
               for k in ("weight_int8", "weight_scale"))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    after = model.state_dict()
    return after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("quantize", ["int8_dynamic", "int8_weight_only", "int8_static"])
def test_tied_group_becomes_one_shared_int8_table(quantize):
    model = TiedLM()
    dense = TiedLM()
    table, bias = model.embed.weight.detach().clone(), model.head.bias.detach().clone()
    calibration = [_ids()] if quantize == "int8_static" else None
    report = slimtorch.compress_(model, _int8(quantize=quantize, sparsity=0.5), calibration=calibration)
    assert type(model.embed) is Int8Embedding and type(model.head) is Int8Linear
    assert report.swapped["embed"] == "int8_embedding" and report.swapped["head"] == quantize
    assert "shared with embed" in str(report) and "sparsity is not applied to a tied group" in str(report)
    # One table and one scale vector, held by both layers.
    assert _shared(model.embed, model.head) and model.embed.shares_table_with(model.head)
    q, scale = ops.qgemm_quantize_weight(table)  # not pruned: the whole table, per row
    assert torch.equal(model.embed.weight_int8, q) and torch.equal(model.embed.weight_scale, scale)
    assert torch.equal(model.head.bias, bias) and model.embed.padding_idx == 0
    ids = _ids()
    dequantized = q.float() * scale[:, None]
    with torch.no_grad():
        assert torch.equal(model.embed(ids), dequantized[ids])
        # The head computes the dense head's map with the dequantized table (int8
        # activations for the integer schemes); the model stays close to fp32.
        x = torch.relu(model.hidden(model.embed(ids)))
        want = nn.functional.linear(x, dequantized, bias)
        torch.testing.assert_close(model.head(x), want, rtol=0.05, atol=0.05 * float(want.abs().max()))
        dense.hidden.load_state_dict(model.hidden.to_dense().state_dict())  # the pruned hidden layer
        got, ref = model(ids), dense(ids)
    assert float((got - ref).abs().max()) < 0.05 * float(ref.abs().max())


def test_group_of_embeddings_without_a_head_shares_one_table():
    class TwoEmbeddings(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.encoder_embed = nn.Embedding(VOCAB, HIDDEN)
            self.decoder_embed = nn.Embedding(VOCAB, HIDDEN)
            self.decoder_embed.weight = self.encoder_embed.weight

    model = TwoEmbeddings()
    table = model.encoder_embed.weight.detach().clone()
    report = slimtorch.compress_(model, _int8(quantize=None))
    assert report.swapped == {"encoder_embed": "int8_embedding", "decoder_embed": "int8_embedding"}
    assert _shared(model.encoder_embed, model.decoder_embed)
    assert torch.equal(model.decoder_embed.weight_int8, ops.qgemm_quantize_weight(table)[0])


def test_summary_counts_the_shared_table_once():
    model = TiedLM()
    slimtorch.compress_(model, _int8())
    unique = {(t.untyped_storage().data_ptr()): t.numel() * t.element_size()
              for t in [*model.parameters(), *model.buffers()]}
    table = slimtorch.summary(model)
    assert table.bytes == sum(unique.values())
    head = next(row for row in table.layers if row.name == "head")
    assert head.tied_to == "embed" and head.bytes == VOCAB * 4 and head.weight_numel == 0  # its bias only
    embed = next(row for row in table.layers if row.name == "embed")
    assert embed.bytes == VOCAB * HIDDEN + VOCAB * 4 and embed.dense_bytes == VOCAB * HIDDEN * 4
    assert "head (tied to embed)" in str(table)


@pytest.mark.parametrize("compress", [False, True])
def test_saved_once_and_loaded_tied_into_the_original_model(tmp_path, compress):
    model = TiedLM()
    slimtorch.compress_(model, _int8())
    path = tmp_path / "tied.safetensors"
    slimtorch.save(model, path, compress=compress)
    if not compress:
        meta, tensors = read_parts(path)
        assert meta["aliases"] == {"head.weight_int8": "embed.weight_int8", "head.weight_scale": "embed.weight_scale"}
        assert "head.weight_int8" not in tensors and "head.weight_scale" not in tensors
    fresh = TiedLM(seed=5)
    slimtorch.load_(fresh, path)
    assert type(fresh.embed) is Int8Embedding and type(fresh.head) is Int8Linear
    assert _shared(fresh.embed, fresh.head)
    ids = _ids()
    with torch.no_grad():
        assert torch.equal(fresh(ids), model(ids))
    slimtorch.load_(model, path)  # into the compressed model itself
    assert _shared(model.embed, model.head)


def _saved(tmp_path, compressed: bool = True):
    model = TiedLM()
    if compressed:
        slimtorch.compress_(model, _int8())
    path = tmp_path / "good.safetensors"
    slimtorch.save(model, path)
    return read_parts(path)


def _write(tmp_path, tensors, meta):
    path = tmp_path / "crafted.safetensors"
    path.write_bytes(slimtorch_file(tensors, meta))
    return path


def _unalias(part: str, change):
    def edit(meta, tensors):
        del meta["aliases"][f"head.{part}"]
        tensors[f"head.{part}"] = change(tensors[f"embed.{part}"].clone())
    return edit


def _head_alone(meta, tensors):
    # The head compressed, the embedding a dense table of its own.
    del meta["layers"]["embed"]
    del meta["aliases"]["head.weight_int8"], meta["aliases"]["head.weight_scale"]
    tensors["head.weight_int8"] = tensors.pop("embed.weight_int8")
    tensors["head.weight_scale"] = tensors.pop("embed.weight_scale")
    tensors["embed.weight"] = torch.randn(VOCAB, HIDDEN)


def _embedding_alone(meta, tensors):
    del meta["layers"]["head"]
    for key in ("head.weight_int8", "head.weight_scale", "head.bias"):
        meta["aliases"].pop(key, None)
        tensors.pop(key, None)
    tensors["head.weight"] = torch.randn(VOCAB, HIDDEN)
    tensors["head.bias"] = torch.zeros(VOCAB)


def _other_vocabulary(meta, tensors):
    meta["layers"]["embed"]["init"]["num_embeddings"] = VOCAB - 1


def _two_int8_heads(meta, tensors):
    meta["layers"]["embed"] = dict(meta["layers"]["head"])


@pytest.mark.parametrize("edit, match", [
    (_unalias("weight_int8", lambda q: q.flip(0)), "different int8 tables"),
    (_unalias("weight_int8", lambda q: q), "different int8 tables"),
    (_unalias("weight_scale", lambda s: s * 2), "different int8 tables"),
    (_head_alone, "compresses head alone"),
    (_embedding_alone, "compresses embed alone"),
    (_other_vocabulary, "num_embeddings"),
    (_two_int8_heads, "Int8Linear at 'embed'|cannot share"),
])
def test_file_that_would_untie_the_group_is_refused_and_the_model_unchanged(tmp_path, edit, match):
    meta, tensors = _saved(tmp_path)
    edit(meta, tensors)
    target = TiedLM(seed=3)
    before = _state(target)
    with pytest.raises(ValueError, match=match):
        slimtorch.load_(target, _write(tmp_path, tensors, meta))
    assert type(target.embed) is nn.Embedding and type(target.head) is nn.Linear
    assert target.head.weight is target.embed.weight and _unchanged(target, before)


def _dense_apart(meta, tensors):
    del meta["aliases"]["head.weight"]
    tensors["head.weight"] = tensors["embed.weight"] * 0


def _dense_pruned_head(meta, tensors):
    del meta["aliases"]["head.weight"]
    tensors["head.parametrizations.weight.original"] = tensors.pop("embed.weight")
    tensors["embed.weight"] = tensors["head.parametrizations.weight.original"].clone()
    tensors["head.parametrizations.weight.0.mask"] = torch.ones(VOCAB * HIDDEN // 8, dtype=torch.uint8)
    meta["packed_bool"]["head.parametrizations.weight.0.mask"] = [VOCAB, HIDDEN]
    meta["pruned"]["head"] = {"sparsity": 0.0}


@pytest.mark.parametrize("edit, match", [(_dense_apart, "different tensors"), (_dense_pruned_head, "prunes head")])
def test_file_that_would_untie_a_dense_group_is_refused(tmp_path, edit, match):
    meta, tensors = _saved(tmp_path, compressed=False)
    assert meta["aliases"] == {"head.weight": "embed.weight"}
    edit(meta, tensors)
    target = TiedLM(seed=3)
    before = _state(target)
    with pytest.raises(ValueError, match=match):
        slimtorch.load_(target, _write(tmp_path, tensors, meta))
    assert target.head.weight is target.embed.weight and _unchanged(target, before)


class Projection(nn.Module):
    """A module holding the table as a plain parameter of its own (not a layer weight)."""

    def __init__(self, table: nn.Parameter) -> None:
        super().__init__()
        self.table = table


def _with_projection(model):
    model.proj = Projection(model.embed.weight)


def _with_transposed_input(model):
    model.into = nn.Linear(VOCAB, HIDDEN, bias=False)
    model.into.weight = nn.Parameter(model.embed.weight.detach().T)  # same memory: x @ table, as a [16, 40] weight
    model.embed.weight = nn.Parameter(model.into.weight.detach().T)
    model.head.weight = model.embed.weight


def _with_second_head(model):
    model.head2 = nn.Linear(HIDDEN, VOCAB, bias=False)
    model.head2.weight = model.embed.weight


def _max_norm(model):
    model.embed.max_norm = 1.0


@pytest.mark.parametrize("change, config, why", [
    (None, slimtorch.CompressConfig(quantize="int8_dynamic", speed_check=False), "embeddings=False leaves embed"),
    (None, _int8(quantize=None), "quantize=None leaves the head head dense"),
    (None, _int8(overrides={"head": None}), "an override leaves head dense"),
    (None, _int8(overrides={"embed": None}), "an override leaves embed dense"),
    (None, _int8(filter_fn=lambda m, name: name != "embed"), "filter_fn leaves embed dense"),
    (_with_projection, _int8(), "proj.table is not the weight of an nn.Embedding or a linear layer"),
    (_with_transposed_input, _int8(), "into computes with the table as a 16x40 weight"),
    (_with_second_head, _int8(), "2 heads"),
    (_max_norm, _int8(), "max_norm"),
])
def test_group_that_cannot_be_compressed_whole_is_left_as_it_is_with_the_reason(change, config, why):
    model = TiedLM()
    if change is not None:
        change(model)
    table, bias = model.embed.weight.detach().clone(), model.head.bias.detach().clone()
    report = slimtorch.compress_(model, config)
    assert type(model.embed) is nn.Embedding and type(model.head) is nn.Linear
    assert model.head.weight is model.embed.weight
    assert torch.equal(model.embed.weight, table) and torch.equal(model.head.bias, bias)
    for name in ["head"] + (["embed"] if config.embeddings else []):
        assert "tied to" in report.dense[name] and why in report.dense[name], report.dense[name]


class TiedBiasLM(TiedLM):
    """As TiedLM, with the head's bias also a parameter of the model itself (BERT's masked-LM head)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self.output_bias = nn.Parameter(torch.randn(VOCAB))
        self.head.bias = self.output_bias


def test_head_bias_tied_outside_the_group_stays_tied_through_compress_save_and_load(tmp_path):
    model = TiedBiasLM()
    report = slimtorch.compress_(model, _int8())
    assert report.swapped["head"] == "int8_dynamic" and _shared(model.embed, model.head)
    assert model.head.bias is model.output_bias
    slimtorch.save(model, tmp_path / "m.safetensors")
    fresh = TiedBiasLM(seed=2)
    slimtorch.load_(fresh, tmp_path / "m.safetensors")
    assert fresh.head.bias is fresh.output_bias and _shared(fresh.embed, fresh.head)
    with torch.no_grad():
        assert torch.equal(fresh(_ids()), model(_ids()))


def test_group_whose_head_cannot_share_its_tied_bias_is_left_as_it_is():
    model = TiedBiasLM()
    model.output_bias.data = model.output_bias.data.half()  # not a float32 bias an int8 layer can use
    report = slimtorch.compress_(model, _int8())
    assert type(model.head) is nn.Linear and type(model.embed) is nn.Embedding
    assert model.head.bias is model.output_bias and model.head.weight is model.embed.weight
    assert "its bias cannot be output_bias" in report.dense["head"] and "stays dense" in report.dense["embed"]


def test_linear_whose_bias_alone_is_tied_is_left_as_it_is():
    model = TiedLM()
    model.shared_bias = model.hidden.bias
    report = slimtorch.compress_(model, _int8(overrides={"embed": None}))
    assert type(model.hidden) is nn.Linear and model.hidden.bias is model.shared_bias
    assert "the bias of hidden is tied to shared_bias" in report.dense["hidden"]


def test_share_bias_checks_the_tensor():
    layer = Int8Linear.from_dense(nn.Linear(HIDDEN, VOCAB))
    with pytest.raises(TypeError, match="^bias"):
        layer.share_bias("bias")
    with pytest.raises(ValueError, match="^bias"):
        layer.share_bias(torch.zeros(VOCAB + 1))
    with pytest.raises(TypeError, match="^bias: expected dtype float32"):
        layer.share_bias(torch.zeros(VOCAB, dtype=torch.float64))
    with pytest.raises(ValueError, match="^bias: expected a contiguous"):
        layer.share_bias(torch.zeros(2 * VOCAB)[::2])
    with pytest.raises(ValueError, match="^bias"):
        Int8Linear.from_dense(nn.Linear(HIDDEN, VOCAB, bias=False)).share_bias(torch.zeros(VOCAB))
    bias = torch.randn(VOCAB)
    assert layer.share_bias(bias) is layer and layer.bias is bias
    x = torch.randn(2, HIDDEN)
    with torch.no_grad():
        before = layer(x)
        bias += 1  # the shared tensor is the bias the layer computes with
        torch.testing.assert_close(layer(x), before + 1)


def test_prune_and_strip_keep_the_tie():
    model = TiedLM()
    table = model.embed.weight.detach().clone()
    report = slimtorch.prune_(model, 0.5, filter_fn=lambda m, name: True)  # embeddings too: a tied group is skipped
    assert set(report.layers) == {"hidden"} and {"embed", "head"} <= set(report.skipped)
    slimtorch.strip_(model)
    assert model.head.weight is model.embed.weight and torch.equal(model.embed.weight, table)
    slimtorch.compress_(model, _int8(overrides={"hidden": None}))
    assert set(slimtorch.prune_(model, 0.5).layers) == {"hidden"}  # the int8 layers hold no float weight

    slimtorch.strip_(model)
    assert _shared(model.embed, model.head)


def test_strip_refuses_a_mask_put_on_one_member_of_a_tied_group_by_hand():
    from torch.nn.utils import parametrize

    from slimtorch.api.pruning import WeightMask, is_pruned

    model = TiedLM()
    table = model.embed.weight.detach().clone()
    parametrize.register_parametrization(model.head, "weight", WeightMask(torch.rand(VOCAB, HIDDEN) > 0.5))
    with pytest.raises(ValueError, match="^model: the masked weight of 'head' is tied to embed.weight"):
        slimtorch.strip_(model)
    assert is_pruned(model.head) and torch.equal(model.embed.weight, table)
    assert model.head.parametrizations.weight.original is model.embed.weight


def test_conversions_keep_the_table_shared_and_the_scales_float32():
    model = TiedLM()
    slimtorch.compress_(model, _int8(quantize="int8_weight_only"))
    ids = _ids()
    with torch.no_grad():
        want = model(ids)
    model.to(torch.bfloat16).float().to("cpu")
    assert model.embed.weight_scale.dtype == torch.float32 and _shared(model.embed, model.head)
    with torch.no_grad():
        assert torch.equal(model(ids), want)
    # A conversion that copies every tensor (as a device move does) still leaves one shared table.
    table = model.embed.weight_int8.data_ptr()
    model._apply(lambda t: t.clone())
    assert model.embed.weight_int8.data_ptr() != table and _shared(model.embed, model.head)
    with torch.no_grad():
        assert torch.equal(model(ids), want)


def test_share_table_checks_the_owner():
    layer = Int8Embedding(VOCAB, HIDDEN)
    with pytest.raises(TypeError, match="^owner"):
        layer.share_table("table")
    with pytest.raises(TypeError, match="^owner.weight_int8"):
        layer.share_table(nn.Linear(HIDDEN, VOCAB))
    with pytest.raises(ValueError, match=r"^owner.weight_int8: expected shape \(40, 16\)"):
        layer.share_table(Int8Linear(VOCAB, HIDDEN))
    head = Int8Linear.from_dense(nn.Linear(HIDDEN, VOCAB))
    assert layer.share_table(head) is layer and layer.shares_table_with(head)
    # Loading a state_dict gives the layer new tensors: the head's are never written through it.
    table = head.weight_int8.clone()
    layer.load_state_dict({"weight_int8": torch.zeros(VOCAB, HIDDEN, dtype=torch.int8),
                           "weight_scale": torch.ones(VOCAB)})
    assert torch.equal(head.weight_int8, table) and not layer.shares_table_with(head)
