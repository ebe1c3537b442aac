"""compress_ on Hugging Face causal LMs built from their configs: GPT-2's
Conv1D layers are compressed like linears (weight transposed once), tied
embeddings and heads stay tied and intact (left as they are, or compressed as
a whole into one shared int8 table), and save/load is bit-exact."""

from __future__ import annotations

import json

import pytest
import torch
from _crafted import read_parts, slimtorch_file
from torch import nn

import slimtorch
from slimtorch import ops
from slimtorch.nn import Int8Embedding, Int8Linear, SparseLinear

transformers = pytest.importorskip("transformers")


def _gpt2() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=300, n_positions=32)
    return transformers.GPT2LMHeadModel(config).eval()


def _llama() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=300,
                                      max_position_embeddings=32, tie_word_embeddings=True)
    return transformers.LlamaForCausalLM(config).eval()


def _ids() -> torch.Tensor:
    return torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(1))


def _logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(_ids()).logits


@pytest.mark.parametrize("make", [_gpt2, _llama], ids=["gpt2", "llama"])
def test_tied_head_and_embedding_stay_tied_and_intact(make):
    model = make()
    embedding = model.get_input_embeddings()
    before = embedding.weight.detach().clone()
    report = slimtorch.compress_(model, slimtorch.CompressConfig(sparsity=0.5, quantize="int8_dynamic",
                                                                 speed_check=False))
    assert type(model.lm_head) is nn.Linear and model.lm_head.weight is embedding.weight
    assert torch.equal(embedding.weight, before)
    assert "lm_head" not in report.swapped and "tied to" in report.dense["lm_head"]
    # Every other linear-like layer was considered and compressed.
    assert len(report.swapped) == len(report.layers) - 1
    assert all(type(model.get_submodule(name)) is SparseLinear for name in report.swapped)


def test_gpt2_conv1d_is_compressed_as_the_transposed_linear():
    model = _gpt2()
    conv = {name: m.weight.detach().clone() for name, m in model.named_modules()
            if type(m).__name__ == "Conv1D"}
    assert len(conv) == 8
    report = slimtorch.compress_(model, slimtorch.CompressConfig(sparsity=0.5, speed_check=False))
    assert set(conv) <= set(report.swapped)
    for name, weight in conv.items():  # [in, out] -> [out, in], pruned: each kept entry is the original
        dense = model.get_submodule(name).to_dense().weight.detach()
        assert dense.shape == weight.T.shape
        assert torch.equal(dense, weight.T * (dense != 0))
        assert abs(float((dense == 0).float().mean()) - 0.5) < 0.01
    # The compressed model computes what the dense model with the pruned weights computes.
    reference = _gpt2()
    with torch.no_grad():
        for name in conv:
            reference.get_submodule(name).weight.copy_(model.get_submodule(name).to_dense().weight.T)
    torch.testing.assert_close(_logits(model), _logits(reference), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("make", [_gpt2, _llama], ids=["gpt2", "llama"])
@pytest.mark.parametrize("quantize", [None, "int8_dynamic", "int8_static"])
def test_save_load_bit_exact_into_the_original_architecture(make, quantize, tmp_path):
    model = make()
    config = slimtorch.CompressConfig(sparsity=None if quantize else 0.5, quantize=quantize, speed_check=False)
    calibration = [_ids()] if quantize == "int8_static" else None
    report = slimtorch.compress_(model, config, calibration=calibration)
    kinds = {type(model.get_submodule(name)) for name in report.swapped}
    assert kinds == {Int8Linear if quantize else SparseLinear}
    path = tmp_path / "model.safetensors"
    slimtorch.save(model, path)
    torch.manual_seed(123)  # a fresh model with other weights
    fresh = make()
    slimtorch.load_(fresh, path)
    assert torch.equal(_logits(fresh), _logits(model))
    assert fresh.lm_head.weight is fresh.get_input_embeddings().weight


def _bert() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                     vocab_size=2000, max_position_embeddings=64)
    return transformers.BertModel(config, add_pooling_layer=False).eval()


def test_embeddings_stored_int8_and_saved_compactly(tmp_path):
    model = _bert()
    ids = torch.randint(0, 2000, (4, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model(ids).last_hidden_state
    dense_path = tmp_path / "dense.safetensors"
    slimtorch.save(model, dense_path)
    report = slimtorch.compress_(model, slimtorch.CompressConfig(quantize="int8_dynamic", embeddings=True,
                                                                 speed_check=False))
    names = ["embeddings.word_embeddings", "embeddings.position_embeddings", "embeddings.token_type_embeddings"]
    assert all(report.swapped[name] == "int8_embedding" for name in names)
    assert all(type(model.get_submodule(name)).__name__ == "Int8Embedding" for name in names)
    with torch.no_grad():
        got = model(ids).last_hidden_state
    assert float(torch.nn.functional.cosine_similarity(got, want, dim=-1).min()) > 0.99
    path = tmp_path / "int8.safetensors"
    slimtorch.save(model, path)
    # int8 tables and weights: about a quarter of the float32 file (norms and biases stay float32).
    assert path.stat().st_size < 0.3 * dense_path.stat().st_size
    fresh = _bert()
    slimtorch.load_(fresh, path)
    with torch.no_grad():
        assert torch.equal(fresh(ids).last_hidden_state, got)


def test_tied_embedding_is_left_alone_with_the_reason_when_its_head_stays_dense():
    model = _gpt2()
    wte = model.transformer.wte.weight.detach().clone()
    report = slimtorch.compress_(model, slimtorch.CompressConfig(quantize="int8_dynamic", embeddings=True,
                                                                 overrides={"transformer.h.1.*": None, "lm_head": None},
                                                                 speed_check=False))
    assert type(model.transformer.wte) is nn.Embedding and torch.equal(model.transformer.wte.weight, wte)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert "tied to lm_head.weight" in report.dense["transformer.wte"]
    assert "an override leaves lm_head dense" in report.dense["transformer.wte"]
    assert "an override leaves lm_head dense" in report.dense["lm_head"]
    assert report.swapped["transformer.wpe"] == "int8_embedding"
    assert report.dense["transformer.h.1.attn.c_attn"] == "override: left dense"
    assert "layers compressed" in str(report)


def test_summary_counts_a_tied_weight_once():
    model = _gpt2()
    unique = {p.untyped_storage().data_ptr(): p.numel() * p.element_size() for p in model.parameters()}
    table = slimtorch.summary(model)
    assert table.bytes == sum(unique.values())
    head = next(layer for layer in table.layers if layer.name == "lm_head")
    assert head.tied_to == "transformer.wte" and head.bytes == 0 and head.weight_numel == 0
    assert "lm_head (tied to transformer.wte)" in str(table)


def _edited(path, tmp_path, edit) -> object:
    """A copy of the file at ``path`` with its slimtorch metadata changed by ``edit``."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    meta = json.loads(header["__metadata__"]["slimtorch"])
    edit(meta)
    header["__metadata__"]["slimtorch"] = json.dumps(meta)
    encoded = json.dumps(header).encode()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(len(encoded).to_bytes(8, "little") + encoded + raw[8 + size:])
    return bad


def _set(key, value):
    def edit(meta):
        meta["layers"]["transformer.h.0.attn.c_attn"]["init"][key] = value
    return edit


def _set_class(meta):
    meta["layers"]["transformer.h.0.attn.c_attn"]["class"] = "Int8Embedding"


def _resize(meta):
    meta.setdefault("resized", {})["transformer.h.0.attn.c_attn.weight"] = [8, 8]


@pytest.mark.parametrize("edit, match", [
    (_set("in_features", 2**62), "in_features"), (_set("in_features", 2**64), "in_features"),
    (_set("out_features", -1), "out_features"), (_set("out_features", True), "out_features"),
    (_set_class, "has a Int8Embedding at"), (_resize, "Conv1D"),
])
def test_crafted_file_at_a_conv1d_position_is_refused_and_the_model_unchanged(tmp_path, edit, match):
    model = _gpt2()
    slimtorch.compress_(model, slimtorch.CompressConfig(sparsity=0.5, speed_check=False))
    path = tmp_path / "model.safetensors"
    slimtorch.save(model, path)
    target = _gpt2()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        slimtorch.load_(target, _edited(path, tmp_path, edit))
    assert type(target.transformer.h[0].attn.c_attn).__name__ == "Conv1D"
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def _int8_with_embeddings(model: nn.Module) -> slimtorch.CompressReport:
    return slimtorch.compress_(model, slimtorch.CompressConfig(quantize="int8_dynamic", embeddings=True,
                                                               speed_check=False))


def _shared(a: nn.Module, b: nn.Module) -> bool:
    return all(getattr(a, k).untyped_storage().data_ptr() == getattr(b, k).untyped_storage().data_ptr()
               for k in ("weight_int8", "weight_scale"))


@pytest.mark.parametrize("make", [_gpt2, _llama], ids=["gpt2", "llama"])
def test_tied_embedding_and_head_become_one_shared_int8_table(make):
    model = make()
    want = _logits(model)
    table = model.get_input_embeddings().weight.detach().clone()
    report = _int8_with_embeddings(model)
    embedding, head = model.get_input_embeddings(), model.lm_head
    assert type(embedding) is Int8Embedding and type(head) is Int8Linear
    assert report.swapped["lm_head"] == "int8_dynamic"
    assert "one int8 table shared with" in next(d.reason for d in report.layers if d.name == "lm_head")
    assert _shared(embedding, head)
    assert len(report.swapped) == len(report.layers)  # every linear-like layer and embedding
    q, scale = ops.qgemm_quantize_weight(table)
    assert torch.equal(head.weight_int8, q) and torch.equal(head.weight_scale, scale)
    ids = _ids()
    with torch.no_grad():
        assert torch.equal(embedding(ids), (q.float() * scale[:, None])[ids])
    got = _logits(model)
    assert float((got - want).abs().max()) < 0.05 * float(want.abs().max())
    assert float(nn.functional.cosine_similarity(got, want, dim=-1).min()) > 0.99
    # summary counts the shared table once
    unique = {t.untyped_storage().data_ptr(): t.numel() * t.element_size()
              for t in [*model.parameters(), *model.buffers()] if t.numel()}
    rows = slimtorch.summary(model)
    persistent = {t.untyped_storage().data_ptr() for t in model.state_dict().values()}
    assert rows.bytes == sum(v for k, v in unique.items() if k in persistent)
    assert next(r for r in rows.layers if r.name == "lm_head").tied_to


@pytest.mark.parametrize("make", [_gpt2, _llama], ids=["gpt2", "llama"])
def test_shared_table_saved_once_and_loaded_tied_bit_exactly(make, tmp_path):
    model = make()
    _int8_with_embeddings(model)
    path = tmp_path / "model.safetensors"
    slimtorch.save(model, path)
    meta, tensors = read_parts(path)
    assert "lm_head.weight_int8" in meta["aliases"] and "lm_head.weight_int8" not in tensors
    torch.manual_seed(123)
    fresh = make()
    slimtorch.load_(fresh, path)
    assert _shared(fresh.get_input_embeddings(), fresh.lm_head)
    assert torch.equal(_logits(fresh), _logits(model))


def _separate_head_table(meta, tensors, embedding):
    key = meta["aliases"].pop("lm_head.weight_int8")
    tensors["lm_head.weight_int8"] = tensors[key].flip(0).clone()


def _head_alone(meta, tensors, embedding):
    del meta["layers"][embedding]
    for part in ("weight_int8", "weight_scale"):
        tensors[f"lm_head.{part}"] = tensors.pop(f"{embedding}.{part}")
        del meta["aliases"][f"lm_head.{part}"]
    tensors[f"{embedding}.weight"] = torch.zeros(300, 64)


@pytest.mark.parametrize("make", [_gpt2, _llama], ids=["gpt2", "llama"])
@pytest.mark.parametrize("edit, match", [(_separate_head_table, "different int8 tables"),
                                         (_head_alone, "compresses lm_head alone")])
def test_crafted_file_untying_the_table_is_refused_and_the_model_unchanged(make, edit, match, tmp_path):
    model = make()
    _int8_with_embeddings(model)
    path = tmp_path / "model.safetensors"
    slimtorch.save(model, path)
    meta, tensors = read_parts(path)
    names = {m: n for n, m in model.named_modules()}
    edit(meta, tensors, names[model.get_input_embeddings()])
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(slimtorch_file(tensors, meta))
    target = make()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        slimtorch.load_(target, bad)
    assert type(target.lm_head) is nn.Linear and target.lm_head.weight is target.get_input_embeddings().weight
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def _bert_mlm(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    config = transformers.BertConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                                     intermediate_size=128, vocab_size=200, max_position_embeddings=32)
    model = transformers.BertForMaskedLM(config).eval()
    with torch.no_grad():
        model.cls.predictions.bias.normal_()  # the output-only bias the decoder shares
    return model


def test_masked_lm_head_and_its_tied_bias_compressed_as_a_whole(tmp_path):
    model = _bert_mlm()
    ids = torch.randint(0, 200, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model(ids).logits
    report = _int8_with_embeddings(model)
    decoder, embedding = model.cls.predictions.decoder, model.bert.embeddings.word_embeddings
    assert report.swapped["cls.predictions.decoder"] == "int8_dynamic"
    assert type(decoder) is Int8Linear and _shared(embedding, decoder)
    assert decoder.bias is model.cls.predictions.bias  # the head's bias is still its parent's parameter
    with torch.no_grad():
        got = model(ids).logits
    assert float((got - want).abs().max()) < 0.05 * float(want.abs().max())
    path = tmp_path / "mlm.safetensors"
    slimtorch.save(model, path)
    fresh = _bert_mlm(seed=4)
    slimtorch.load_(fresh, path)
    assert _shared(fresh.bert.embeddings.word_embeddings, fresh.cls.predictions.decoder)
    assert fresh.cls.predictions.decoder.bias is fresh.cls.predictions.bias
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, got)
    # A file that gives the head a bias of its own is refused.
    meta, tensors = read_parts(path)
    key = meta["aliases"].pop("cls.predictions.decoder.bias", None) or meta["aliases"].pop("cls.predictions.bias")
    tensors["cls.predictions.decoder.bias" if "cls.predictions.decoder.bias" not in tensors
            else "cls.predictions.bias"] = tensors[key] + 1
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(slimtorch_file(tensors, meta))
    target = _bert_mlm(seed=5)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError, match="different tensors"):
        slimtorch.load_(target, bad)
    assert type(target.cls.predictions.decoder) is nn.Linear
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


class _Conv1DHeadLM(nn.Module):
    """A Conv1D head (weight [in, out]) whose weight is the embedding's table transposed, in the same memory."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        from transformers.pytorch_utils import Conv1D

        torch.manual_seed(seed)
        self.embed = nn.Embedding(300, 64)
        self.head = Conv1D(300, 64)
        self.head.weight = nn.Parameter(self.embed.weight.detach().T)  # a view: one table
        self.embed.weight = nn.Parameter(self.head.weight.detach().T)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids))


def test_conv1d_head_over_the_transposed_table_shares_it_too(tmp_path):
    model = _Conv1DHeadLM(seed=0)
    assert model.embed.weight.untyped_storage().data_ptr() == model.head.weight.untyped_storage().data_ptr()
    table = model.embed.weight.detach().clone()
    report = _int8_with_embeddings(model)
    assert report.swapped == {"head": "int8_dynamic", "embed": "int8_embedding"}
    assert _shared(model.embed, model.head)
    assert torch.equal(model.head.weight_int8, ops.qgemm_quantize_weight(table)[0])
    slimtorch.save(model, tmp_path / "m.safetensors")
    fresh = _Conv1DHeadLM(seed=1)
    slimtorch.load_(fresh, tmp_path / "m.safetensors")
    assert _shared(fresh.embed, fresh.head)
    with torch.no_grad():
        assert torch.equal(fresh(_ids()), model(_ids()))
