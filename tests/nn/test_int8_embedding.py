"""Int8Embedding: per-row int8 codes equal to the int8 linear weight rule,
lookups equal to dequantize-then-embed, validation of every loaded table."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimtorch import ops
from slimtorch.nn.int8_embedding import Int8Embedding


def table(rows: int = 11, dim: int = 7, seed: int = 0) -> nn.Embedding:
    torch.manual_seed(seed)
    return nn.Embedding(rows, dim, padding_idx=2)


def test_codes_follow_the_int8_weight_rule_and_lookup_matches():
    dense = table()
    layer = Int8Embedding.from_dense(dense)
    q, scale = ops.qgemm_quantize_weight(dense.weight.detach())
    assert torch.equal(layer.weight_int8, q) and torch.equal(layer.weight_scale, scale)
    ids = torch.tensor([[0, 2, 10], [5, 5, 1]])
    expected = (q.float() * scale[:, None])[ids]
    assert torch.equal(layer(ids), expected)
    assert torch.equal(layer(ids)[0, 1], torch.zeros(7))  # the padding row stays zero
    # error per element at most half a step of its row
    assert bool(((layer(ids) - dense(ids).detach()).abs() <= scale[ids][..., None] / 2 + 1e-7).all())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_tables_return_their_dtype(dtype):
    dense = table().to(dtype)
    layer = Int8Embedding.from_dense(dense)
    out = layer(torch.tensor([1, 3]))
    assert out.dtype == dtype
    assert torch.equal(layer.to_dense().weight[torch.tensor([1, 3])], out)


@pytest.mark.parametrize("ids_dtype", [torch.int64, torch.int32, torch.uint8])
def test_index_dtypes_and_shapes(ids_dtype):
    layer = Int8Embedding.from_dense(table())
    ids = torch.arange(6, dtype=ids_dtype).view(2, 1, 3)
    assert layer(ids).shape == (2, 1, 3, 7)
    assert layer(torch.empty(0, dtype=torch.long)).shape == (0, 7)


def test_bad_ids_rejected():
    layer = Int8Embedding.from_dense(table())
    with pytest.raises(TypeError, match="^ids"):
        layer(torch.tensor([1.0]))
    with pytest.raises(TypeError, match="^ids"):
        layer([1, 2])
    with pytest.raises(IndexError):
        layer(torch.tensor([11]))
    with pytest.raises(IndexError):
        layer(torch.tensor([-1]))


def test_state_dict_roundtrip_and_hostile_tables_leave_layer_unchanged():
    layer = Int8Embedding.from_dense(table())
    fresh = Int8Embedding(11, 7, padding_idx=2)
    fresh.load_state_dict(layer.state_dict())
    ids = torch.arange(11)
    assert torch.equal(fresh(ids), layer(ids))
    good = {k: v.clone() for k, v in layer.state_dict().items()}
    bad_cases = [
        ({"weight_int8": good["weight_int8"].float()}, "weight_int8"),
        ({"weight_int8": good["weight_int8"][:5]}, "weight_int8"),
        ({"weight_int8": torch.full((11, 7), -128, dtype=torch.int8)}, "weight_int8"),
        ({"weight_scale": torch.zeros(11)}, "weight_scale"),
        ({"weight_scale": torch.full((11,), float("nan"))}, "weight_scale"),
        ({"weight_scale": torch.ones(3)}, "weight_scale"),
    ]
    for change, key in bad_cases:
        with pytest.raises(RuntimeError, match=key):
            fresh.load_state_dict({**good, **change})
        assert torch.equal(fresh(ids), layer(ids))
    with pytest.raises(RuntimeError, match="together"):
        fresh.load_state_dict({"weight_int8": torch.zeros(11, 7, dtype=torch.int8)}, strict=False)
    assert torch.equal(fresh(ids), layer(ids))


def test_constructor_and_from_dense_arguments():
    with pytest.raises(TypeError, match="^num_embeddings"):
        Int8Embedding(2.0, 3)
    with pytest.raises(ValueError, match="^embedding_dim"):
        Int8Embedding(2, -1)
    with pytest.raises(ValueError, match="^padding_idx"):
        Int8Embedding(2, 3, padding_idx=5)
    with pytest.raises(TypeError, match="^dtype"):
        Int8Embedding(2, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match="^embedding"):
        Int8Embedding.from_dense(nn.Linear(2, 3))
    with pytest.raises(ValueError, match="^embedding: max_norm"):
        Int8Embedding.from_dense(nn.Embedding(3, 2, max_norm=1.0))
    with pytest.raises(ValueError, match="^weight"):
        broken = nn.Embedding(3, 2)
        with torch.no_grad():
            broken.weight[0, 0] = float("inf")
        Int8Embedding.from_dense(broken)


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8, padding_idx=0)
        self.proj = nn.Linear(8, 5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.proj(self.embed(ids))


@pytest.mark.parametrize("compress", [False, True])
def test_saved_and_loaded_into_a_fresh_model_bit_exactly(tmp_path, compress):
    import slimtorch

    torch.manual_seed(0)
    model = TinyLM()
    model.embed = Int8Embedding.from_dense(model.embed)
    path = tmp_path / "lm.safetensors"
    slimtorch.save(model, path, compress=compress)
    torch.manual_seed(1)
    fresh = slimtorch.load_(TinyLM(), path)
    assert isinstance(fresh.embed, Int8Embedding)
    ids = torch.randint(0, 20, (3, 4))
    assert torch.equal(fresh(ids), model(ids))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in fresh.state_dict().items())


def test_file_for_another_vocabulary_size_is_rejected(tmp_path):
    import slimtorch

    model = TinyLM()
    model.embed = Int8Embedding.from_dense(model.embed)
    slimtorch.save(model, tmp_path / "lm.safetensors")
    other = TinyLM()
    other.embed = nn.Embedding(30, 8)
    with pytest.raises(ValueError, match="num_embeddings"):
        slimtorch.load_(other, tmp_path / "lm.safetensors")
    assert isinstance(other.embed, nn.Embedding)
