"""save / load_: exact round trips, compact files, and clear errors for bad files."""

from __future__ import annotations

import json
import os

import pytest
import safetensors.torch
import torch
from _api_models import bert_input, make_bert, make_mlp
from torch import nn

import slimtorch
from slimtorch.api.pruning import is_pruned, weight_mask


def tensor_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def test_plain_roundtrip_is_bit_exact(tmp_path):
    model = make_mlp()
    path = tmp_path / "m.safetensors"
    slimtorch.save(model, path)
    fresh = make_mlp(seed=1)
    assert slimtorch.load_(fresh, path) is fresh
    x = torch.randn(9, 12)
    assert torch.equal(fresh(x), model(x))
    assert os.path.getsize(path) < tensor_bytes(model) + 4096
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left


def test_pruned_roundtrip_into_fresh_model(tmp_path):
    model = make_mlp()
    slimtorch.prune_(model, 0.8)
    with torch.no_grad():  # drift originals at pruned positions: the file stores effective weights
        model[0].parametrizations.weight.original.add_(1)
    path = tmp_path / "pruned.safetensors"
    slimtorch.save(model, path)
    fresh = make_mlp(seed=5)
    slimtorch.load_(fresh, str(path))
    x = torch.randn(6, 12)
    assert torch.equal(fresh(x), model(x))
    for a, b in zip(model, fresh):
        if is_pruned(a):
            assert is_pruned(b) and torch.equal(weight_mask(a), weight_mask(b))
    # masks are bit-packed: far smaller than the bool (1 byte per weight) state_dict
    masks = sum(weight_mask(m).numel() for m in model if is_pruned(m))
    assert os.path.getsize(path) < tensor_bytes(model) - masks + masks // 8 + 4096
    meta = json.loads(safetensors.safe_open(path, "pt").metadata()["slimtorch"])
    assert meta["version"] == slimtorch.api.serialization.FORMAT_VERSION and set(meta["pruned"]) == {"0", "2", "4"}
    # loading into the same (already pruned) model works too
    slimtorch.load_(model, path)
    assert torch.equal(model(x), fresh(x))


def test_stripped_model_saves_plain_keys(tmp_path):
    model = make_mlp()
    slimtorch.prune_(model, 0.5)
    slimtorch.strip_(model)
    slimtorch.save(model, tmp_path / "s.safetensors")
    with safetensors.safe_open(tmp_path / "s.safetensors", "pt") as f:
        assert sorted(f.keys()) == sorted(make_mlp().state_dict())


def test_bert_roundtrip(tmp_path):
    model = make_bert()
    slimtorch.prune_(model, 0.5, scope="layer")
    slimtorch.save(model, tmp_path / "bert.safetensors")
    fresh = make_bert(seed=3)
    slimtorch.load_(fresh, tmp_path / "bert.safetensors")
    x = bert_input()
    with torch.no_grad():
        assert torch.equal(fresh(x).last_hidden_state, model(x).last_hidden_state)


def test_tied_weights_stored_once(tmp_path):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(50, 16)
            self.out = nn.Linear(16, 50, bias=False)
            self.out.weight = self.emb.weight

        def forward(self, x):
            return self.out(self.emb(x))

    torch.manual_seed(0)
    model = Tied()
    slimtorch.save(model, tmp_path / "t.safetensors")
    assert os.path.getsize(tmp_path / "t.safetensors") < 50 * 16 * 4 + 2048
    fresh = Tied()
    slimtorch.load_(fresh, tmp_path / "t.safetensors")
    x = torch.arange(10)
    assert torch.equal(fresh(x), model(x)) and fresh.out.weight is fresh.emb.weight


@pytest.fixture
def saved(tmp_path):
    model = make_mlp()
    slimtorch.prune_(model, 0.5)
    path = tmp_path / "good.safetensors"
    slimtorch.save(model, path)
    return path


def _unchanged(model: nn.Module, before: dict) -> bool:
    return (model.state_dict().keys() == before.keys()
            and all(torch.equal(before[k], v) for k, v in model.state_dict().items()))


def _assert_load_refused(path, match: str) -> None:
    """load_ of ``path`` raises a ValueError naming the argument and ``match``,
    and the model it was loading into keeps every value."""
    victim = make_mlp(seed=9)
    before = {k: v.clone() for k, v in victim.state_dict().items()}
    with pytest.raises(ValueError, match=f"^path: .*{match}"):
        slimtorch.load_(victim, path)
    assert _unchanged(victim, before)


@pytest.mark.parametrize("damage, match", [
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b[:-1], "truncated or corrupt"),
    (lambda b: b[:5], "too short"),
    (lambda b: b[:-5] + bytes([b[-5] ^ 0xFF]) + b[-4:], "checksum"),
    (lambda b: b[:8] + b"}" + b[9:], "corrupt"),
    (lambda b: b"", "too short"),
])
def test_damaged_file_raises_and_leaves_model_alone(saved, tmp_path, damage, match):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(damage(saved.read_bytes()))
    _assert_load_refused(bad, match)


def test_mismatched_model_raises(saved):
    for other in (nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3)),
                  nn.Sequential(nn.Linear(12, 32)),
                  make_mlp().double()):
        before = {k: v.clone() for k, v in other.state_dict().items()}
        with pytest.raises(ValueError, match="^path: .*(does not match|does not have)"):
            slimtorch.load_(other, saved)
        assert _unchanged(other, before)


def test_foreign_or_future_files_rejected(tmp_path):
    plain = tmp_path / "plain.safetensors"
    safetensors.torch.save_file({"0.weight": torch.zeros(2, 2)}, plain)
    with pytest.raises(ValueError, match="not a slimtorch file"):
        slimtorch.load_(make_mlp(), plain)
    future = tmp_path / "future.safetensors"
    meta = {"format": "slimtorch", "version": 99}
    safetensors.torch.save_file({"x": torch.zeros(1)}, future, metadata={"slimtorch": json.dumps(meta)})
    with pytest.raises(ValueError, match="version 99"):
        slimtorch.load_(make_mlp(), future)
    pickled = tmp_path / "pickle.pt"
    torch.save(make_mlp().state_dict(), pickled)
    with pytest.raises(ValueError, match="^path"):
        slimtorch.load_(make_mlp(), pickled)
    with pytest.raises(ValueError, match="cannot read"):
        slimtorch.load_(make_mlp(), tmp_path / "missing.safetensors")


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="^model"):
        slimtorch.save("model", tmp_path / "x")
    with pytest.raises(TypeError, match="^path"):
        slimtorch.save(make_mlp(), 3)
    with pytest.raises(TypeError, match="^model"):
        slimtorch.load_(None, tmp_path / "x")
    with pytest.raises(ValueError, match="^path"):
        slimtorch.save(make_mlp(), tmp_path / "no" / "dir" / "x.safetensors")


# ---- compact, lossless encoding of SparseLinear's packed tensors ----------


def _sparse_int8_mlp(in_features: int = 12) -> nn.Sequential:
    """Three SparseLinear int8 layers with empty rows (rows 0 and 5 of each)."""
    from slimtorch.nn import SparseLinear

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(in_features, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3))
    for i in (0, 2, 4):
        with torch.no_grad():
            model[i].weight[[0, 2 if i == 4 else 5]] = 0
        model[i] = SparseLinear.from_dense(model[i], sparsity=0.8, values_dtype=torch.int8)
    return model


@pytest.mark.parametrize("in_features", [12, 300])  # uint8 column indices, and int16 ones (>= 256)
def test_sparse_int8_roundtrip_is_exact_and_compact(tmp_path, in_features):
    model = _sparse_int8_mlp(in_features)
    path = tmp_path / "sparse.safetensors"
    slimtorch.save(model, path)
    fresh = nn.Sequential(nn.Linear(in_features, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3))
    slimtorch.load_(fresh, path)
    want, got = model.state_dict(), fresh.state_dict()
    assert want.keys() == got.keys()
    for key in want:  # the in-memory packed layout is rebuilt exactly
        assert want[key].dtype == got[key].dtype and torch.equal(want[key], got[key]), key
    x = torch.randn(5, in_features)
    assert torch.equal(fresh(x), model(x))
    with safetensors.safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()["slimtorch"])
        stored = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    assert meta["version"] == 3 and isinstance(meta["sha256"], str)
    assert stored["0.row_ptr"].dtype == torch.uint8 and stored["0.row_ptr"].numel() == 32  # per-row counts
    assert torch.equal(stored["0.row_ptr"].long(), want["0.row_ptr"].diff())
    assert stored["0.col_idx"].dtype == torch.uint8  # in-row deltas as varints
    assert meta["encoded"]["0.col_idx"][0] == "varint_row_deltas"
    nonempty = want["0.row_ptr"].diff() > 0
    assert not nonempty.all() and torch.equal(stored["0.row_scales"], want["0.row_scales"][nonempty])
    assert meta["encoded"]["0.row_scales"][0] == "nonempty_rows"


def test_sparse_encoding_skipped_when_not_derivable(tmp_path):
    model = _sparse_int8_mlp()
    model[0].row_scales[0] = 0.5  # an empty row with a non-default scale must be stored as it is
    path = tmp_path / "s.safetensors"
    slimtorch.save(model, path)
    fresh = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3))
    slimtorch.load_(fresh, path)
    assert torch.equal(fresh[0].row_scales, model[0].row_scales)
    meta = json.loads(safetensors.safe_open(path, "pt").metadata()["slimtorch"])
    assert "0.row_scales" not in meta["encoded"] and "2.row_scales" in meta["encoded"]


def test_corrupt_encoding_rejected(tmp_path):
    path = tmp_path / "s.safetensors"
    slimtorch.save(_sparse_int8_mlp(), path)
    with safetensors.safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()["slimtorch"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    from slimtorch.api.serialization import _checksum

    for how, edit in (("bad kind", lambda m: m["encoded"]["0.row_ptr"].__setitem__(0, "zip")),
                      ("bad shape", lambda m: m["encoded"]["0.col_idx"].__setitem__(2, [3])),
                      ("bad rows", lambda m: m["encoded"]["0.row_scales"].__setitem__(3, "4.row_ptr")),
                      ("bad dtype", lambda m: m["encoded"]["0.row_ptr"].__setitem__(1, "nothing"))):
        bad = json.loads(json.dumps(meta))
        edit(bad)
        bad["sha256"] = _checksum(tensors)
        broken = tmp_path / f"{how}.safetensors"
        safetensors.torch.save_file(tensors, broken, metadata={"slimtorch": json.dumps(bad)})
        with pytest.raises(ValueError, match="^path: .*corrupt"):
            slimtorch.load_(make_mlp(), broken)


@pytest.mark.parametrize("version", [1, 2, 4, "3", True, None])
def test_other_format_versions_rejected_naming_both_versions(tmp_path, version):
    model = make_mlp()
    path = tmp_path / "m.safetensors"
    slimtorch.save(model, path)
    with safetensors.safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()["slimtorch"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    meta["version"] = version
    safetensors.torch.save_file(tensors, path, metadata={"slimtorch": json.dumps(meta)})
    with pytest.raises(ValueError, match=f"^path: .*format version {version}; this slimtorch reads version 3"):
        slimtorch.load_(make_mlp(seed=1), path)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def _fixture_model() -> nn.Module:
    """The architecture of tests/data/v3_mixed.* before compression."""
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 17), nn.ReLU(), nn.Linear(17, 8), nn.ReLU(),
                         nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))


@pytest.mark.parametrize("name", ["v3_mixed.safetensors", "v3_mixed.safetensors.xz"])
def test_files_written_by_the_release_load_bit_exactly(tmp_path, name):
    """Files saved by the release that introduced format 3 (SparseLinear int8
    with empty rows and float16, a pruned Linear, Int8Linear static and
    dynamic) load into the same state, bit for bit, and save back to the
    same stored tensors."""
    data = os.path.join(os.path.dirname(__file__), "..", "data")
    model = slimtorch.load_(_fixture_model(), os.path.join(data, name))
    # The release spelled the static activation scale input_scale / input_zero_point.
    renamed = {"input_scale": "activation_scale", "input_zero_point": "activation_zero_point"}

    def current(key: str) -> str:
        head, _, last = key.rpartition(".")
        return f"{head}.{renamed.get(last, last)}" if head else renamed.get(last, last)

    want = {current(k): v for k, v in safetensors.torch.load_file(
        os.path.join(data, "v3_mixed.state_dict.safetensors")).items()}
    got = model.state_dict()
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key].dtype == value.dtype and torch.equal(_bits(got[key]), _bits(value)), key
    again = tmp_path / "again.safetensors"
    slimtorch.save(model, again)
    plain = os.path.join(data, "v3_mixed.safetensors")
    with safetensors.safe_open(plain, "pt") as f, safetensors.safe_open(again, "pt") as g:
        old_meta, new_meta = json.loads(f.metadata()["slimtorch"]), json.loads(g.metadata()["slimtorch"])
        assert sorted(current(k) for k in f.keys()) == sorted(g.keys())  # noqa: SIM118 (safe_open is not iterable)
        for key in f.keys():  # noqa: SIM118 (safe_open is not iterable)
            assert torch.equal(_bits(f.get_tensor(key)), _bits(g.get_tensor(current(key)))), key
    for field in ("sha256", "encoded", "pruned", "packed_bool", "aliases"):
        if field != "sha256":
            old_meta[field] = {current(k): v for k, v in old_meta[field].items()}
    assert {k: v for k, v in old_meta.items() if k in ("pruned", "packed_bool", "aliases", "encoded")} == \
        {k: v for k, v in new_meta.items() if k in ("pruned", "packed_bool", "aliases", "encoded")}
    assert {n: (i["class"], i["format"], i["sparsity"]) for n, i in old_meta["layers"].items()} == \
        {n: (i["class"], i["format"], i["sparsity"]) for n, i in new_meta["layers"].items()}


def test_varint_deltas_hold_any_gap(tmp_path):
    from slimtorch.api.serialization import _varint_decode, _varint_encode
    from slimtorch.nn import SparseLinear

    values = torch.tensor([0, 1, 127, 128, 255, 256, 16383, 16384, 65535, 2**40])
    stream = _varint_encode(values)
    assert stream.tolist()[:6] == [0, 1, 127, 0x80, 1, 0xFF] and stream.numel() == 1 + 1 + 1 + 2 + 2 + 2 + 2 + 3 + 3 + 6
    assert torch.equal(_varint_decode(stream, values.numel()), values)
    for bad, count in ((stream[:-1], values.numel()), (stream, values.numel() - 1), (stream.to(torch.int16), 10),
                       (torch.full((12,), 0x80, dtype=torch.uint8), 0)):
        with pytest.raises(ValueError):
            _varint_decode(bad, count)
    dense = nn.Linear(70000, 4)  # int32 columns; gaps of 1 to 69999
    with torch.no_grad():
        dense.weight.zero_()
        dense.weight[0, [3, 700, 69999]] = 1.0
        dense.weight[1, 999] = 2.0
        dense.weight[3, [0, 1, 255, 510, 66000]] = 3.0
    model = nn.Sequential(SparseLinear.from_dense(dense))
    path = tmp_path / "gap.safetensors"
    slimtorch.save(model, path)
    meta = json.loads(safetensors.safe_open(path, "pt").metadata()["slimtorch"])
    assert meta["encoded"]["0.col_idx"][:2] == ["varint_row_deltas", "int32"]
    fresh = nn.Sequential(nn.Linear(70000, 4))
    slimtorch.load_(fresh, path)
    assert torch.equal(fresh[0].col_idx, model[0].col_idx) and fresh[0].col_idx.dtype == torch.int32


# ---- float32 tensors that are exactly float16/bfloat16 are stored narrow ----------


def test_exact_narrow_floats_are_stored_narrow(tmp_path):
    model = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 3), nn.Linear(3, 2))
    with torch.no_grad():
        model[0].bias.copy_(torch.tensor([0.5, -0.0, 65504.0, 2.0**-24, float("inf"), -3.0]))  # float16
        model[0].weight.copy_(torch.randn(6, 4).bfloat16().float() * 2.0**100)  # bfloat16, out of float16 range
        model[1].bias.copy_(torch.tensor([float("nan"), 0.5, 0.25]))  # NaN's bits change in float16: kept
        model[2].bias.copy_(torch.tensor([1.0, 1.0 + 2.0**-11]))  # 11 fraction bits: neither float16 nor bfloat16
    path = tmp_path / "f.safetensors"
    slimtorch.save(model, path)
    with safetensors.safe_open(path, "pt") as f:
        stored = {k: f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    assert stored["0.bias"] == torch.float16 and stored["0.weight"] == torch.bfloat16
    assert stored["1.bias"] == stored["2.bias"] == stored["1.weight"] == torch.float32
    fresh = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 3), nn.Linear(3, 2))
    slimtorch.load_(fresh, path)
    for key, value in model.state_dict().items():  # bit for bit, NaN and -0.0 included
        assert torch.equal(fresh.state_dict()[key].view(torch.int32), value.view(torch.int32)), key


# ---- compress=True: the same file as one xz stream ----------


def test_compressed_roundtrip_is_exact_and_smaller(tmp_path):
    model = _sparse_int8_mlp(300)
    plain, packed = tmp_path / "m.safetensors", tmp_path / "m.safetensors.xz"
    slimtorch.save(model, plain)
    slimtorch.save(model, packed, compress=True)
    import lzma

    data = packed.read_bytes()
    assert data[:6] == b"\xfd7zXZ\x00" and len(data) < 0.8 * os.path.getsize(plain)
    assert lzma.decompress(data) == plain.read_bytes()  # `xz -d` gives the plain file
    fresh = nn.Sequential(nn.Linear(300, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3))
    slimtorch.load_(fresh, packed)
    x = torch.randn(5, 300)
    assert torch.equal(fresh(x), model(x))
    with pytest.raises(TypeError, match="^compress"):
        slimtorch.save(model, packed, compress="xz")


@pytest.mark.parametrize("damage, match", [
    (lambda b, p: b[: len(b) // 2], "truncated"),
    (lambda b, p: b[:20], "truncated"),
    (lambda b, p: b[:-1], "corrupt or truncated"),
    (lambda b, p: b[:40] + bytes([b[40] ^ 0x55]) + b[41:], "corrupt"),
    (lambda b, p: b + b"\0" * 4, "corrupt"),
    (lambda b, p: b + b, "trailing data"),
    (lambda b, p: __import__("lzma").compress(p + b"\0" * 1000), "more data than its header"),
    (lambda b, p: __import__("lzma").compress(b"\xff" * 16), "not a slimtorch file"),
])
def test_damaged_compressed_file_raises_and_leaves_model_alone(tmp_path, damage, match):
    model = make_mlp()
    slimtorch.prune_(model, 0.5)
    plain, packed = tmp_path / "p.safetensors", tmp_path / "p.safetensors.xz"
    slimtorch.save(model, plain)
    slimtorch.save(model, packed, compress=True)
    bad = tmp_path / "bad.xz"
    bad.write_bytes(damage(packed.read_bytes(), plain.read_bytes()))
    _assert_load_refused(bad, match)


def test_compressed_file_cannot_expand_past_its_header(tmp_path):
    """A stream whose header matches the model but which holds 256 MiB of
    zeros after the data is rejected after decompressing only what the header
    describes."""
    import lzma

    model = make_mlp()
    plain = tmp_path / "m.safetensors"
    slimtorch.save(model, plain)
    compressor = lzma.LZMACompressor()
    chunk = b"\0" * (1 << 20)
    bomb = compressor.compress(plain.read_bytes()) + b"".join(compressor.compress(chunk) for _ in range(256))
    bomb += compressor.flush()
    assert len(bomb) < 100_000
    (tmp_path / "bomb.xz").write_bytes(bomb)
    with pytest.raises(ValueError, match="more data than its header"):
        slimtorch.load_(make_mlp(seed=1), tmp_path / "bomb.xz")
