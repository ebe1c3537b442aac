"""resize_ / pruned_shapes: a channel-pruned state_dict loads into a freshly
built original model, with bit-identical outputs; bad shapes change nothing."""

from __future__ import annotations

import pytest
import torch
from structured_models import ResNetLike, bert, mlp
from torch import nn

import slimtorch
from slimtorch.structured import pruned_shapes, resize_


def _inputs(seq: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(2, seq, dtype=torch.long)
    mask[1, -3:] = 0
    return {"input_ids": torch.randint(0, 100, (2, seq), generator=g), "attention_mask": mask}


def _roundtrip(build, example_inputs, call):
    torch.manual_seed(0)
    original = build()
    pruned = slimtorch.prune_channels(original, example_inputs, 0.5)
    shapes = pruned_shapes(pruned, original)
    assert shapes, "prune_channels removed nothing: the test would not test anything"
    torch.manual_seed(1)
    fresh = build()
    resize_(fresh, shapes)
    fresh.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        assert torch.equal(call(fresh), call(pruned))
    return fresh, pruned


def test_bert_encoder_heads_and_ffn():
    pytest.importorskip("transformers")
    fresh, pruned = _roundtrip(lambda: bert(), _inputs(), lambda m: m(**_inputs()).last_hidden_state)
    attention = fresh.encoder.layer[0].attention.self
    assert attention.num_attention_heads == pruned.encoder.layer[0].attention.self.num_attention_heads < 4
    assert fresh.encoder.layer[0].intermediate.dense.out_features < 128


def test_cnn_channels():
    x = torch.randn(2, 3, 16, 16)
    fresh, _ = _roundtrip(lambda: ResNetLike().eval(), x, lambda m: m(x))
    convs = [m for m in fresh.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.weight.shape[0] == c.out_channels and c.weight.shape[1] == c.in_channels for c in convs)


def test_mlp():
    x = torch.randn(4, 16)
    _roundtrip(lambda: mlp().eval(), x, lambda m: m(x))


@pytest.mark.parametrize("shapes, match", [
    ({"0.weight": (40, 16)}, "not a shrunken"),          # grows
    ({"0.weight": (8,)}, "not a shrunken"),              # rank
    ({"0.weight": (8, -1)}, "not a shrunken"),
    ({"nope.weight": (8, 16)}, "not a parameter"),
    ({"0.weight": "8x16"}, "expected a shape"),
    ({"0.weight": (8, True)}, "expected a shape"),
])
def test_bad_shapes_rejected_and_model_unchanged(shapes, match):
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    good_first = {"2.weight": (4, 16), **shapes}  # a valid entry listed first must not be applied either
    with pytest.raises(ValueError, match="^shapes: "):
        resize_(model, good_first)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert model[2].in_features == 32


def test_unsupported_module_type_rejected():
    model = nn.Sequential(nn.LayerNorm(8))
    with pytest.raises(ValueError, match="LayerNorm"):
        resize_(model, {"0.weight": (4,)})
    with pytest.raises(TypeError, match="^model"):
        resize_(object(), {})
    with pytest.raises(TypeError, match="^shapes"):
        resize_(model, [("0.weight", (4,))])


def _bert_pruned():
    torch.manual_seed(0)
    original = bert()
    return original, slimtorch.prune_channels(original, _inputs(), 0.5)


@pytest.mark.parametrize("compress", [False, True])
def test_bert_pruned_file_loads_into_fresh_original(tmp_path, compress):
    pytest.importorskip("transformers")
    _, pruned = _bert_pruned()
    path = tmp_path / "pruned.safetensors"
    slimtorch.save(pruned, path, compress=compress)
    torch.manual_seed(3)
    fresh = bert()
    slimtorch.load_(fresh, path)
    with torch.no_grad():
        assert torch.equal(fresh(**_inputs()).last_hidden_state, pruned(**_inputs()).last_hidden_state)
    # the loaded model remembers its shapes: saving it again gives a file that loads the same way
    slimtorch.save(fresh, tmp_path / "again.safetensors")
    torch.manual_seed(4)
    again = slimtorch.load_(bert(), tmp_path / "again.safetensors")
    with torch.no_grad():
        assert torch.equal(again(**_inputs()).last_hidden_state, pruned(**_inputs()).last_hidden_state)


def test_pruned_then_compressed_file_loads_into_fresh_original(tmp_path):
    pytest.importorskip("transformers")
    _, pruned = _bert_pruned()
    slimtorch.compress_(pruned, slimtorch.CompressConfig(sparsity=0.5, speed_check=False))
    path = tmp_path / "pruned_sparse.safetensors"
    slimtorch.save(pruned, path)
    fresh = slimtorch.load_(bert(), path)
    with torch.no_grad():
        assert torch.equal(fresh(**_inputs()).last_hidden_state, pruned(**_inputs()).last_hidden_state)


def test_resized_entries_that_grow_are_rejected_and_model_unchanged(tmp_path):
    import json
    import struct

    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    path = tmp_path / "m.safetensors"
    slimtorch.save(model, path)
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = json.loads(header["__metadata__"]["slimtorch"])
    target = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    for resized in ({"0.weight": [64, 16]}, {"0.weight": [32]}, {"nope": [1]}, {"0.weight": "x"}, [1],
                    {"0.weight": [2**64, 16]}, {"0.weight": [-1, 16]}, {"0.weight": [True, 16]},
                    {"1": [1]}, {"0.weight": [16, 16]}):
        meta["resized"] = resized
        header["__metadata__"]["slimtorch"] = json.dumps(meta)
        text = json.dumps(header).encode()
        (tmp_path / "bad.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n:])
        with pytest.raises(ValueError, match="^path: "):
            slimtorch.load_(target, tmp_path / "bad.safetensors")
        assert all(torch.equal(v, target.state_dict()[k]) for k, v in before.items())
        assert target[0].out_features == 32
