"""load_ and `slimtorch inspect` on hostile files: every one raises ValueError
naming the path (inspect: one line, exit 2), leaves the model untouched, and
allocates nothing the model does not need."""

from __future__ import annotations

import json
import lzma

import numpy as np
import pytest
import torch
from _crafted import (
    base_meta,
    load_capped,
    mixed_architecture,
    mixed_model,
    read_parts,
    safetensors_bytes,
    slimtorch_file,
    tensor_entries,
)
from torch import nn

import slimtorch
from slimtorch import cli

# ---- the three reported examples, under a memory cap in a subprocess ----------


def test_packed_bool_claiming_a_billion_elements(tmp_path):
    model = nn.Sequential(nn.Linear(16, 3))
    slimtorch.prune_(model, 0.5)
    meta, tensors = _parts_of(model, tmp_path)
    key = "0.parametrizations.weight.0.mask"
    meta["packed_bool"][key] = [2**30]
    path = tmp_path / "bool.safetensors"
    path.write_bytes(slimtorch_file(tensors, meta))
    assert path.stat().st_size < 1024
    result = load_capped(path, "(lambda m: (slimtorch.prune_(m, 0.5), m)[1])(nn.Sequential(nn.Linear(16, 3)))")
    assert result["error"] == "ValueError" and key in result["message"], result
    assert result["peak_growth_kb"] < 64 * 1024, result


def test_huge_layer_for_a_small_linear(tmp_path):
    init = {"in_features": 16384, "out_features": 65536, "bias": True, "mode": "weight_only"}
    meta = base_meta(layers={"0": {"class": "Int8Linear", "format": "int8_weight_only", "sparsity": 0.0,
                                   "init": init}})
    path = tmp_path / "layer.safetensors"
    path.write_bytes(slimtorch_file({"0.bias": torch.zeros(3)}, meta))
    assert path.stat().st_size < 1024
    result = load_capped(path, "nn.Sequential(nn.Linear(16, 3))")
    assert result["error"] == "ValueError" and "in_features=16384, model has 16" in result["message"], result
    assert result["peak_growth_kb"] < 64 * 1024, result


def test_xz_declaring_512_mib_for_a_4_byte_buffer(tmp_path):
    numel = 2**27  # float32: 512 MiB
    header = json.dumps({"__metadata__": {"slimtorch": json.dumps(base_meta())},
                         "0.weight": {"dtype": "F32", "shape": [numel], "data_offsets": [0, 4 * numel]}}).encode()
    compressor = lzma.LZMACompressor(format=lzma.FORMAT_XZ, preset=1)
    stream = compressor.compress(len(header).to_bytes(8, "little") + header)
    zeros = b"\0" * (16 << 20)
    stream += b"".join(compressor.compress(zeros) for _ in range(32)) + compressor.flush()
    path = tmp_path / "bomb.safetensors.xz"
    path.write_bytes(stream)
    assert path.stat().st_size < 128 * 1024
    result = load_capped(path, "nn.Sequential(nn.Linear(1, 1, bias=False))")
    assert result["error"] == "ValueError" and "0.weight" in result["message"], result
    assert result["peak_growth_kb"] < 64 * 1024, result


def test_peak_memory_of_a_good_load_is_bounded(tmp_path):
    """A valid load of a 16 MiB model stays within the model's size twice plus the file."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2048, 2048))
    path = tmp_path / "big.safetensors"
    slimtorch.save(model, path)
    size_mb = 2 * path.stat().st_size // 2**20 + 2 * 16 + 16
    result = load_capped(path, "nn.Sequential(nn.Linear(2048, 2048))", cap_mb=size_mb)
    assert result["error"] is None, result


def _parts_of(model: nn.Module, tmp_path) -> tuple[dict, dict[str, torch.Tensor]]:
    path = tmp_path / "valid.safetensors"
    slimtorch.save(model, path)
    return read_parts(path)


# ---- malformed files: ValueError naming the path, model untouched ----------


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> tuple[dict, dict[str, torch.Tensor]]:
    path = tmp_path_factory.mktemp("valid") / "mixed.safetensors"
    slimtorch.save(mixed_model(), path)
    return read_parts(path)


def _meta_edit(edit):
    def build(meta, tensors):
        edit(meta)
        return slimtorch_file(tensors, meta)
    return build


def _tensor_edit(edit):
    def build(meta, tensors):
        edit(meta, tensors)
        return slimtorch_file(tensors, meta)
    return build


def _header_edit(edit):
    def build(meta, tensors):
        return slimtorch_file(tensors, meta, header_edit=edit)
    return build


def _raw(data):
    return lambda meta, tensors: data


def _set(path: str, value):
    """Sets meta[a][b]... = value for the dotted ``path`` ('|' separates keys holding dots)."""
    def edit(meta):
        *parents, last = path.split("|")
        target = meta
        for key in parents:
            target = target[int(key) if isinstance(target, list) else key]
        target[int(last) if isinstance(target, list) else last] = value
    return edit


def _delete(path: str):
    def edit(meta):
        *parents, last = path.split("|")
        target = meta
        for key in parents:
            target = target[key]
        del target[last]
    return edit


def _store(key: str, value: torch.Tensor, encoding=None):
    def edit(meta, tensors):
        tensors[key] = value
        if encoding is None:
            meta["encoded"].pop(key, None)
        else:
            meta["encoded"][key] = encoding
    return edit


DEEP = "[" * 30_000 + "]" * 30_000  # within the header size the test model admits
HUGE = 10**30
HOSTILE = {
    # header JSON
    "header deeply nested": _raw(len(DEEP).to_bytes(8, "little") + DEEP.encode()),
    "header a list": _header_edit(lambda h: [h]),
    "header a number": _header_edit(lambda h: 3),
    "header invalid utf-8": _header_edit(lambda h: b'{"a\xff": 1}'),
    "header huge integer": _header_edit(lambda h: ('{"x": ' + "9" * 5000 + "}").encode()),
    "metadata not an object": _header_edit(lambda h: {**h, "__metadata__": [1]}),
    "metadata missing": _header_edit(lambda h: {k: v for k, v in h.items() if k != "__metadata__"}),
    "slimtorch metadata not a string": _header_edit(lambda h: {**h, "__metadata__": {"slimtorch": {"a": 1}}}),
    "slimtorch metadata deeply nested": _header_edit(lambda h: {**h, "__metadata__": {"slimtorch": DEEP}}),
    "slimtorch metadata a list": _header_edit(lambda h: {**h, "__metadata__": {"slimtorch": "[1, 2]"}}),
    "slimtorch metadata NaN": _header_edit(lambda h: {**h, "__metadata__": {"slimtorch": "NaN"}}),
    # tensor entries
    "entry not an object": _header_edit(lambda h: {**h, "0.row_ptr": 5}),
    "entry unknown dtype": _header_edit(lambda h: {**h, "0.row_ptr": {**h["0.row_ptr"], "dtype": "Q7"}}),
    "entry negative shape": _header_edit(lambda h: {**h, "0.row_ptr": {**h["0.row_ptr"], "shape": [-1]}}),
    "entry bool shape": _header_edit(lambda h: {**h, "0.row_ptr": {**h["0.row_ptr"], "shape": [True]}}),
    "entry float shape": _header_edit(lambda h: {**h, "0.row_ptr": {**h["0.row_ptr"], "shape": [1.5]}}),
    "entry huge shape": _header_edit(lambda h: {**h, "0.row_ptr": {**h["0.row_ptr"], "shape": [HUGE]}}),
    "entry offsets reversed": _header_edit(lambda h: {**h, "0.row_ptr": {**h["0.row_ptr"], "data_offsets":
                                                                         h["0.row_ptr"]["data_offsets"][::-1]}}),
    "entry offsets huge": _header_edit(lambda h: {**h, "0.row_ptr": {**h["0.row_ptr"], "data_offsets":
                                                                     [0, 2**70]}}),
    "entry offsets negative": _header_edit(lambda h: {**h, "0.row_ptr": {**h["0.row_ptr"], "data_offsets":
                                                                         [-16, 0]}}),
    "entry offsets overlap": _header_edit(lambda h: {**h, "0.bias": {**h["0.bias"], "data_offsets":
                                                                     h["2.bias"]["data_offsets"],
                                                                     "shape": h["2.bias"]["shape"],
                                                                     "dtype": h["2.bias"]["dtype"]}}),
    "entry offsets not a pair": _header_edit(lambda h: {**h, "0.row_ptr": {**h["0.row_ptr"], "data_offsets": [0]}}),
    # slimtorch metadata fields
    "format missing": _meta_edit(_delete("format")),
    "format other": _meta_edit(_set("format", "pytorch")),
    "version bool": _meta_edit(_set("version", True)),
    "version float": _meta_edit(_set("version", 3.0)),
    "version huge": _meta_edit(_set("version", HUGE)),
    "layers a list": _meta_edit(_set("layers", [])),
    "layers missing": _meta_edit(_delete("layers")),
    "pruned a list": _meta_edit(_set("pruned", ["2"])),
    "packed_bool a string": _meta_edit(_set("packed_bool", "x")),
    "aliases null": _meta_edit(_set("aliases", None)),
    "encoded a number": _meta_edit(_set("encoded", 7)),
    "sha256 a number": lambda meta, tensors: slimtorch_file(tensors, {**meta, "sha256": 7}, checksum=False),
    "layer entry a string": _meta_edit(_set("layers|0", "SparseLinear")),
    "layer class a number": _meta_edit(_set("layers|0|class", 7)),
    "layer class unknown": _meta_edit(_set("layers|0|class", "Linear")),
    "layer class not a layer": _meta_edit(_set("layers|0|class", "__init__")),
    "layer init a list": _meta_edit(_set("layers|0|init", [12, 16])),
    "layer init missing": _meta_edit(_delete("layers|0|init")),
    "layer in_features string": _meta_edit(_set("layers|0|init|in_features", "12")),
    "layer in_features bool": _meta_edit(_set("layers|0|init|in_features", True)),
    "layer in_features negative": _meta_edit(_set("layers|0|init|in_features", -12)),
    "layer in_features huge": _meta_edit(_set("layers|0|init|in_features", HUGE)),
    "layer out_features float": _meta_edit(_set("layers|0|init|out_features", 16.0)),
    "layer out_features NaN": _meta_edit(_set("layers|0|init|out_features", float("nan"))),
    "layer bias not a bool": _meta_edit(_set("layers|0|init|bias", 1)),
    "layer bias missing where model has one": _meta_edit(_set("layers|0|init|bias", False)),
    "layer unknown argument": _meta_edit(_set("layers|0|init|colour", "red")),
    "layer device argument": _meta_edit(_set("layers|0|init|device", "meta")),
    "layer values_dtype unknown": _meta_edit(_set("layers|0|init|values_dtype", {"dtype": "complex64"})),
    "layer values_dtype not a dtype": _meta_edit(_set("layers|0|init|values_dtype", {"dtype": "Tensor"})),
    "layer values_dtype a number": _meta_edit(_set("layers|0|init|values_dtype", 3)),
    "layer values_dtype nested": _meta_edit(_set("layers|0|init|values_dtype", [[[[{"dtype": "int8"}]]]])),
    "layer activations unknown": _meta_edit(_set("layers|0|init|activations", "int4")),
    "layer mode unknown": _meta_edit(_set("layers|4|init|mode", "fast")),
    "layer mode static without scale": _meta_edit(_set("layers|4|init|mode", "static")),
    "layer x_scale NaN": _meta_edit(lambda m: m["layers"]["4"]["init"].update(mode="static", x_scale=float("nan"),
                                                                              x_zero_point=0)),
    "layer x_zero_point huge": _meta_edit(lambda m: m["layers"]["4"]["init"].update(mode="static", x_scale=0.1,
                                                                                    x_zero_point=HUGE)),
    "layer where model has none": _meta_edit(_set("layers|1", {"class": "SparseLinear", "init": {}})),
    "layer at the root": _meta_edit(_set("layers|", {"class": "SparseLinear", "init": {}})),
    "layer absent from model": _meta_edit(_set("layers|9", {"class": "SparseLinear", "init": {}})),
    "layer sparsity a string": _meta_edit(_set("layers|0|sparsity", "high")),
    "pruned entry a number": _meta_edit(_set("pruned|2", 0.5)),
    "pruned module absent": _meta_edit(_set("pruned|7", {"sparsity": 0.5})),
    "pruned module swapped": _meta_edit(_set("pruned|0", {"sparsity": 0.5})),
    "packed_bool shape negative": _meta_edit(_set("packed_bool|2.parametrizations.weight.0.mask", [-8, 16])),
    "packed_bool shape huge": _meta_edit(_set("packed_bool|2.parametrizations.weight.0.mask", [2**40])),
    "packed_bool shape a string": _meta_edit(_set("packed_bool|2.parametrizations.weight.0.mask", "8x16")),
    "packed_bool shape wrong": _meta_edit(_set("packed_bool|2.parametrizations.weight.0.mask", [16, 8])),
    "packed_bool of a missing key": _meta_edit(_set("packed_bool|nothing", [1])),
    "alias to a missing key": _meta_edit(_set("aliases|2.bias", "nothing")),
    "alias of a stored key": _meta_edit(_set("aliases|0.bias", "6.bias")),
    "alias a number": _meta_edit(_set("aliases|0.bias", 3)),
    "alias of row offsets": _tensor_edit(lambda m, t: (t.pop("6.row_ptr"), m["encoded"].pop("6.row_ptr", None),
                                                       m["aliases"].update({"6.row_ptr": "0.row_ptr"}))),
    "encoding a string": _meta_edit(_set("encoded|0.row_ptr", "counts")),
    "encoding too short": _meta_edit(_set("encoded|0.row_ptr", ["counts"])),
    "encoding unknown": _meta_edit(_set("encoded|0.row_ptr|0", "zip")),
    "encoding unknown dtype": _meta_edit(_set("encoded|0.row_ptr|1", "Tensor")),
    "encoding shape huge": _meta_edit(_set("encoded|0.row_ptr|2", [HUGE])),
    "encoding shape wrong": _meta_edit(_set("encoded|0.row_ptr|2", [3])),
    "encoding row key wrong": _meta_edit(_set("encoded|0.col_idx|3", "6.row_ptr")),
    "encoding row key a number": _meta_edit(_set("encoded|0.col_idx|3", 6)),
    "encoding of a missing key": _meta_edit(_set("encoded|nothing", ["narrow", "int64", [1]])),
    "retired row_deltas encoding": _meta_edit(_set("encoded|0.col_idx|0", "row_deltas")),
    "checksum wrong": lambda meta, tensors: slimtorch_file(tensors, {**meta, "sha256": "0" * 64}, checksum=False),
    # tensor data: offsets, counts, varints
    "raw row offsets that wrap": _tensor_edit(_store("6.row_ptr", torch.tensor([0, 2**63 - 1, -2, 1]))),
    "raw row offsets decreasing": _tensor_edit(_store("6.row_ptr", torch.tensor([0, 5, 4, 9]))),
    "raw row offsets not starting at 0": _tensor_edit(_store("6.row_ptr", torch.tensor([1, 3, 6, 9]))),
    "raw row offsets float": _tensor_edit(_store("6.row_ptr", torch.zeros(4))),
    "counts that wrap": _tensor_edit(_store("6.row_ptr", torch.tensor([2**62, 2**62, 2**62]),
                                            ["counts", "int64", [4]])),
    "counts negative": _tensor_edit(_store("6.row_ptr", torch.tensor([5, -1, 5]), ["counts", "int64", [4]])),
    "counts over the row width": _tensor_edit(_store("6.row_ptr", torch.tensor([9, 0, 0]),
                                                     ["counts", "int64", [4]])),
    "counts float": _tensor_edit(_store("6.row_ptr", torch.ones(3), ["counts", "int64", [4]])),
    "counts one short": _tensor_edit(_store("0.row_ptr", torch.ones(15, dtype=torch.uint8),
                                            ["counts", "int64", [17]])),
    "counts disagree with nnz": _tensor_edit(_store("6.row_ptr", torch.full((3,), 2, dtype=torch.uint8),
                                                    ["counts", "int64", [4]])),
    "varint columns out of range": _tensor_edit(lambda m, t: t.update({"0.col_idx": torch.full_like(t["0.col_idx"],
                                                                                                    13)})),
    "varint huge deltas": _tensor_edit(lambda m, t: t.update({"0.col_idx": torch.tensor(
        ([0xFF] * 8 + [0x7F]) * 4, dtype=torch.uint8)})),
    "varint stream unterminated": _tensor_edit(lambda m, t: t.update({"0.col_idx": torch.full_like(t["0.col_idx"],
                                                                                                   0x80)})),
    "varint stream too long": _tensor_edit(lambda m, t: t.update({"0.col_idx": torch.cat(
        [t["0.col_idx"], torch.zeros(10_000, dtype=torch.uint8)])})),
    "varint stream int16": _tensor_edit(lambda m, t: t.update({"0.col_idx": t["0.col_idx"].to(torch.int16)})),
    "nonempty rows count wrong": _tensor_edit(lambda m, t: t.update({"0.row_scales": t["0.row_scales"][:-1]})),
    "nonempty rows int": _tensor_edit(lambda m, t: t.update({"0.row_scales": t["0.row_scales"].to(torch.int32)})),
    "narrow values outside the dtype": _tensor_edit(_store("6.col_idx", torch.full((9,), 2**20, dtype=torch.int32),
                                                           ["narrow", "int16", [9]])),
    "narrow float64 to float32": _tensor_edit(lambda m, t: t.update({"4.bias": t["4.bias"].double()})),
    "narrow to int from float": _tensor_edit(_store("6.col_idx", torch.zeros(9), ["narrow", "int16", [9]])),
    "bias of the wrong shape": _tensor_edit(lambda m, t: t.update({"2.bias": torch.zeros(9)})),
    "bias of the wrong dtype": _tensor_edit(lambda m, t: t.update({"2.bias": torch.zeros(8, dtype=torch.float64)})),
    "int8 weight of another shape": _tensor_edit(lambda m, t: t.update({"4.weight_int8": torch.zeros(
        6, 9, dtype=torch.int8)})),
    "too many nonzeros": _tensor_edit(lambda m, t: t.update({"6.values": torch.zeros(19, dtype=torch.float16)})),
    "unexpected tensor": _tensor_edit(lambda m, t: t.update({"extra": torch.zeros(1)})),
    "missing tensor": _tensor_edit(lambda m, t: t.pop("2.bias")),
    "truncated data": lambda meta, tensors: slimtorch_file(tensors, meta)[:-3],
    "trailing data": lambda meta, tensors: slimtorch_file(tensors, meta) + b"\0" * 8,
    "header length past the end": lambda meta, tensors: (2**40).to_bytes(8, "little")
    + slimtorch_file(tensors, meta)[8:],
    "empty": _raw(b""),
    "seven bytes": _raw(b"\x01" * 7),
    "pickle": _raw(b"\x80\x04\x95" + b"\0" * 64),
    "xz of garbage": _raw(lzma.compress(b"\xff" * 64)),
    "xz truncated": lambda meta, tensors: lzma.compress(slimtorch_file(tensors, meta))[:-20],
    "xz with a huge dictionary": _raw(lzma.compress(b"x", format=lzma.FORMAT_XZ, filters=[
        {"id": lzma.FILTER_LZMA2, "dict_size": 1536 << 20}])),
    "xz header length huge": _raw(lzma.compress((2**31).to_bytes(8, "little") + b"\0" * 1000)),
}


def _state(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model: nn.Module, before: dict) -> bool:
    after = model.state_dict()
    return after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_file_raises_value_error_naming_the_path(case, valid, tmp_path):
    meta, tensors = valid
    data = HOSTILE[case](json.loads(json.dumps(meta)), dict(tensors))
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(data)
    model = mixed_architecture()
    before = _state(model)
    with pytest.raises(ValueError, match=r"^path: ") as error:
        slimtorch.load_(model, path)
    assert str(path) in str(error.value) or "'path'" in str(error.value)
    assert _same(model, before) and all(type(m) in (nn.Linear, nn.ReLU, nn.Sequential) for m in model.modules())


# Cases only the full load can see (sizes and data checked against a model).
_DATA_LEVEL = {case for case in HOSTILE if any(word in case for word in (
    "layer ", "pruned ", "alias", "counts", "varint", "nonempty", "narrow", "raw row", "bias", "int8 weight",
    "nonzeros", "tensor", "checksum", "encoding", "packed_bool shape wrong", "packed_bool of", "retired"))}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_inspect_prints_one_line_for_hostile_files(case, valid, tmp_path, capsys):
    meta, tensors = valid
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(HOSTILE[case](json.loads(json.dumps(meta)), dict(tensors)))
    code = cli.main(["inspect", str(path)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if code == 2:
        assert captured.out == "" and captured.err.count("\n") == 1
        assert captured.err.startswith("slimtorch: error: inspect: ") and str(path) in captured.err
    else:
        assert code == 0 and case in _DATA_LEVEL, captured
        assert all(len(line) < 400 for line in captured.out.splitlines())


def test_row_offsets_of_a_hostile_state_never_reach_a_kernel(valid, tmp_path):
    """The issue's wrapping offsets, as per-row counts in an xz file, are
    rejected at load; nothing runs a forward on them."""
    meta, tensors = valid
    data = HOSTILE["counts that wrap"](json.loads(json.dumps(meta)), dict(tensors))
    path = tmp_path / "wrap.safetensors.xz"
    path.write_bytes(lzma.compress(data))
    with pytest.raises(ValueError, match="row counts must be integers in"):
        slimtorch.load_(mixed_architecture(), path)


def test_good_file_still_loads_and_matches(valid, tmp_path):
    meta, tensors = valid
    path = tmp_path / "good.safetensors"
    path.write_bytes(slimtorch_file(tensors, meta))
    model = slimtorch.load_(mixed_architecture(), path)
    reference = mixed_model()
    x = torch.randn(4, 12)
    assert torch.equal(model(x), reference(x))


def test_tensor_entries_helper_roundtrip():
    data = safetensors_bytes(tensor_entries({"a": torch.arange(3)}))
    assert np.frombuffer(data[-24:], dtype=np.int64).tolist() == [0, 1, 2]


@pytest.mark.parametrize("compress", [False, True])
def test_inspect_rejects_a_file_whose_tensor_data_was_changed(tmp_path, capsys, compress):
    """inspect reads the data once to check the checksum: a flipped data byte
    is a malformed file (exit 2, one line), not a listing."""
    model = nn.Sequential(nn.Linear(8, 4))
    plain = tmp_path / "m.safetensors"
    slimtorch.save(model, plain)
    data = bytearray(plain.read_bytes())
    data[-1] ^= 0x40  # the last byte is tensor data
    path = tmp_path / ("bad.safetensors.xz" if compress else "bad.safetensors")
    path.write_bytes(lzma.compress(bytes(data)) if compress else bytes(data))
    assert cli.main(["inspect", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "checksum" in captured.err
