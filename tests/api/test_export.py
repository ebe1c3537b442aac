"""export_chain and the C++ example that runs its files (examples/edge):
predictions and logits equal Python's, unsupported models refused before
anything is written, malformed files rejected by the reader without a crash.

The example is built once per session with CMake under build/edge-test (set
SLIMTORCH_EDGE_SANITIZE=1 to build it with AddressSanitizer + UBSan, or
SLIMTORCH_EDGE_CHAIN to a built edge_chain binary to use that one, plus
SLIMTORCH_EDGE_FOREIGN=1 when that binary runs another instruction set, e.g.
an aarch64 build under qemu: its kernels then round differently from this
machine's, so logits are compared to a float tolerance instead of bit for
bit); the tests that run it are skipped where CMake or a C++ compiler is
missing.
"""

from __future__ import annotations

import inspect
import itertools
import json
import os
import random
import shutil
import struct
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

import slimtorch
from slimtorch import ops
from slimtorch.nn import Int8Linear, SparseLinear

REPO = Path(__file__).resolve().parents[2]
FOREIGN = os.environ.get("SLIMTORCH_EDGE_FOREIGN") == "1"


# ---- building and running the example ------------------------------------------

@pytest.fixture(scope="session")
def edge_chain() -> str:
    given = os.environ.get("SLIMTORCH_EDGE_CHAIN")
    if given:
        return given
    if shutil.which("cmake") is None or (shutil.which("c++") is None and shutil.which("g++") is None):
        pytest.skip("cmake or a C++ compiler is missing: the edge example cannot be built")
    sanitize = os.environ.get("SLIMTORCH_EDGE_SANITIZE") == "1"
    build = REPO / "build" / ("edge-test-sanitize" if sanitize else "edge-test")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    configure = ["cmake", "-S", str(REPO / "examples" / "edge"), "-B", str(build), *generator,
                 f"-DEDGE_SANITIZE={'ON' if sanitize else 'OFF'}"]
    if sanitize:
        configure.append("-DCMAKE_BUILD_TYPE=Debug")
    for command in (configure, ["cmake", "--build", str(build)]):
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return str(build / "edge_chain")


def run_edge(binary: str, model: Path, x: torch.Tensor, *extra: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The example's (predictions, logits) for the rows of x."""
    inputs, logits = model.with_suffix(".in.f32"), model.with_suffix(".out.f32")
    x.contiguous().numpy().astype("<f4").tofile(inputs)
    result = subprocess.run([binary, str(model), str(inputs), "--logits", str(logits), *extra],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    predictions = torch.tensor([int(line) for line in result.stdout.split()], dtype=torch.int64)
    out = torch.from_numpy(np.fromfile(logits, dtype="<f4").copy())
    return predictions, out.reshape(x.shape[0], -1)


def run_raw(binary: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *args], capture_output=True, text=True, errors="replace")


def assert_clean_rejection(result: subprocess.CompletedProcess) -> None:
    """Exit status 1 with the reader's own message: no crash, no sanitizer report."""
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert result.stderr.startswith("edge_chain: error: "), result.stderr
    assert "Sanitizer" not in result.stderr and "runtime error" not in result.stderr, result.stderr


# ---- models ------------------------------------------------------------------------

def int8_linear(linear: nn.Linear, scheme: str, scale: float | None = None,
                zero_point: int | None = None) -> Int8Linear:
    """Int8Linear.from_dense with the scheme keywords of whichever API this is
    (``scheme=``/``activation_scale=`` or the older ``mode=``/``x_scale=``)."""
    parameters = inspect.signature(Int8Linear.from_dense).parameters
    static = {} if scale is None else (
        {"activation_scale": scale, "activation_zero_point": zero_point} if "activation_scale" in parameters
        else {"x_scale": scale, "x_zero_point": zero_point})
    if "scheme" in parameters:
        return Int8Linear.from_dense(linear, scheme=scheme, **static)
    return Int8Linear.from_dense(linear, mode=scheme.removeprefix("int8_"), **static)


def sparse_linear(linear: nn.Linear, sparsity: float, values_dtype: torch.dtype, dynamic: bool = False) -> SparseLinear:
    if dynamic:
        parameters = inspect.signature(SparseLinear.from_dense).parameters
        key = "scheme" if "scheme" in parameters else "activations"
        return SparseLinear.from_dense(linear, sparsity=sparsity, values_dtype=values_dtype, **{key: "int8_dynamic"})
    return SparseLinear.from_dense(linear, sparsity=sparsity, values_dtype=values_dtype)


def linears(*widths: int, seed: int = 0) -> list[nn.Linear]:
    torch.manual_seed(seed)
    return [nn.Linear(a, b) for a, b in itertools.pairwise(widths)]


def kernel_chain(values_dtype: torch.dtype, first_scheme: str, sparsity: float) -> nn.Sequential:
    """64-300-100-10 of slimtorch layers only, with ReLU: Python runs the same
    kernels as the example at every batch size when built under the
    ``sparse_kernels`` fixture (SparseLinear then never takes its dense
    fallback, which the example does not have)."""
    a, b, c = linears(64, 300, 100, 10)
    return nn.Sequential(
        sparse_linear(a, sparsity, values_dtype, dynamic=first_scheme == "int8_dynamic"), nn.ReLU(),
        int8_linear(b, "int8_weight_only"), nn.ReLU(),
        int8_linear(c, "int8_static", 0.05, 3) if first_scheme != "int8_dynamic" else int8_linear(c, "int8_dynamic"),
    ).eval()


def mixed_chain() -> nn.Sequential:
    """Every layer and activation kind, nested Sequentials, and the modules
    the export drops (Identity, Dropout, Flatten)."""
    a, b, c, d, e = linears(64, 96, 80, 40, 20, 10)
    return nn.Sequential(
        nn.Flatten(), sparse_linear(a, 0.6, torch.float32), nn.GELU(),
        nn.Sequential(int8_linear(b, "int8_dynamic"), nn.Dropout(0.1), nn.GELU(approximate="tanh")),
        sparse_linear(c, 0.2, torch.int8, dynamic=True), nn.ReLU(), nn.Identity(),
        d, nn.ReLU(), sparse_linear(e, 0.5, torch.bfloat16),
    ).eval()


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)


# ---- the example against Python ----------------------------------------------------

@pytest.mark.parametrize("values_dtype,scheme", [
    (torch.int8, "int8_weight_only"), (torch.int8, "int8_dynamic"), (torch.float32, None),
    (torch.float16, None), (torch.bfloat16, None)])
@pytest.mark.parametrize("sparsity", [0.6, 0.9])
def test_kernel_layers_give_pythons_exact_logits(edge_chain, sparse_kernels, tmp_path, values_dtype, scheme,
                                                sparsity):
    model = kernel_chain(values_dtype, scheme, sparsity)
    path = tmp_path / "chain.safetensors"
    slimtorch.export_chain(model, path)
    torch.manual_seed(1)
    # 1 (GEMV and bitmap kernels), odd, and both sides of the 32-row switch
    # to the int8_dynamic sparse kernel.
    for batch in (1, 7, 31, 32, 45):
        x = torch.randn(batch, 64)
        expected = forward(model, x)
        predictions, logits = run_edge(edge_chain, path, x)
        if FOREIGN:
            torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
        else:
            assert torch.equal(logits, expected), (batch, (logits - expected).abs().max())
        assert torch.equal(predictions, expected.argmax(1))


@pytest.mark.parametrize("values_dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("density", [0.25, 0.35])
def test_batch_one_bitmap_rule_matches_pythons(edge_chain, sparse_kernels, tmp_path, values_dtype, density):
    """The example builds the batch-1 column bitmap where Python does (float32
    values from 20% density, the others from 30%): the bitmap and gather
    kernels sum in different orders, so only the same choice gives Python's
    exact logits (float layers only: an int8 layer's quantized input would
    hide the difference)."""
    a, b = linears(64, 300, 10, seed=5)
    model = nn.Sequential(sparse_linear(a, 1 - density, values_dtype), nn.ReLU(),
                          sparse_linear(b, 1 - density, values_dtype)).eval()
    with_bitmap = density >= ops.spmm.BITMAP_MIN_DENSITY[values_dtype]
    assert all((layer.packed().bitmap is not None) == with_bitmap for layer in (model[0], model[2]))
    path = tmp_path / "chain.safetensors"
    slimtorch.export_chain(model, path)
    torch.manual_seed(2)
    x = torch.randn(1, 64)
    expected = forward(model, x)
    _, logits = run_edge(edge_chain, path, x)
    if FOREIGN:
        torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(logits, expected), (logits - expected).abs().max()


def test_mixed_chain_matches_python(edge_chain, tmp_path):
    """nn.Linear (torch's GEMM in Python, the sparse kernel in C++), GELU
    (torch's vectorized erf/tanh) and SparseLinear's dense fallback round
    differently: logits agree to float32 rounding, predictions exactly."""
    model = mixed_chain()
    path = tmp_path / "mixed.safetensors"
    description = slimtorch.export_chain(model, path)
    assert [layer["op"] for layer in description["layers"]] == [
        "sparse_linear", "gelu", "int8_linear", "gelu", "sparse_linear", "relu", "linear", "relu", "sparse_linear"]
    assert [layer["name"] for layer in description["layers"]][2:4] == ["3.0", "3.2"]
    torch.manual_seed(2)
    for batch in (1, 5, 64):
        x = torch.randn(batch, 64)
        expected = forward(model, x)
        predictions, logits = run_edge(edge_chain, path, x)
        torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
        assert torch.equal(predictions, expected.argmax(1))


def test_batches_and_threads_do_not_change_results(edge_chain, sparse_kernels, tmp_path):
    model = kernel_chain(torch.int8, "int8_weight_only", 0.9)
    path = tmp_path / "chain.safetensors"
    slimtorch.export_chain(model, path)
    x = torch.randn(40, 64)
    _, whole = run_edge(edge_chain, path, x)
    _, chunked = run_edge(edge_chain, path, x, "--batch", "8", "--threads", "1")
    expected = torch.cat([forward(model, part) for part in x.split(8)])
    compare = (lambda a, b: torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)) if FOREIGN else (
        lambda a, b: torch.testing.assert_close(a, b, rtol=0, atol=0))
    compare(chunked, expected)
    compare(whole, forward(model, x))


def test_unsorted_and_wide_columns(edge_chain, tmp_path):
    """Columns not ascending within a row are stored "plain"; in_features
    above 65536 takes 32-bit column indices."""
    narrow, = linears(50, 12, seed=3)
    layer = SparseLinear.from_dense(narrow, sparsity=0.7)
    state = layer.state_dict()
    row_ptr = state["row_ptr"]
    order = torch.cat([torch.arange(int(row_ptr[r + 1]) - 1, int(row_ptr[r]) - 1, -1)
                       for r in range(row_ptr.numel() - 1)])  # every row reversed
    state["col_idx"], state["values"] = state["col_idx"][order], state["values"][order]
    layer.load_state_dict(state)
    wide = SparseLinear.from_dense(linears(70_000, 3, seed=4)[0], sparsity=0.999)
    cases = [(nn.Sequential(layer, nn.ReLU()), 50, "plain"), (nn.Sequential(wide), 70_000, "varint_row_deltas")]
    for model, features, encoding in cases:
        path = tmp_path / f"{encoding}.safetensors"
        assert slimtorch.export_chain(model.eval(), path)["layers"][0]["columns"] == encoding
        x = torch.randn(3, features)
        _, logits = run_edge(edge_chain, path, x)
        torch.testing.assert_close(logits, forward(model, x), rtol=1e-5, atol=1e-5)


# ---- the file ------------------------------------------------------------------------

def student_int8() -> nn.Sequential:
    """The demo's int8 student in shape: 64-300-100-10 at 97.5% sparsity,
    int8 values, float16-precision biases (as demo.to_kernel_layers makes it)."""
    torch.manual_seed(5)
    layers: list[nn.Module] = []
    for a, b in ((64, 300), (300, 100), (100, 10)):
        linear = nn.Linear(a, b)
        with torch.no_grad():
            linear.bias.copy_(linear.bias.half().float())
        layers += [SparseLinear.from_dense(linear, sparsity=0.975, values_dtype=torch.int8), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).eval()


def test_file_is_safetensors_with_a_json_chain_and_no_larger_than_save(tmp_path):
    model = student_int8()
    exported, saved = tmp_path / "chain.safetensors", tmp_path / "saved.safetensors"
    description = slimtorch.export_chain(model, exported)
    slimtorch.save(model, saved)
    assert os.path.getsize(exported) <= os.path.getsize(saved)
    with safetensors.safe_open(str(exported), "pt") as handle:
        metadata = json.loads(handle.metadata()["slimtorch_chain"])
        keys = set(handle.keys())
        bias = handle.get_tensor("0.bias")
    assert metadata == description
    assert metadata["format"] == "slimtorch-chain" and metadata["version"] == 1
    assert (metadata["in_features"], metadata["out_features"]) == (64, 10)
    assert keys == {f"{i}.{name}" for i in (0, 2, 4)
                    for name in ("row_counts", "columns", "values", "row_scales", "bias")}
    assert bias.dtype == torch.float16 and torch.equal(bias.float(), model[0].bias.detach())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chain.safetensors", "saved.safetensors"]


def test_scheme_is_read_under_its_new_name_first(tmp_path):
    """The new spelling (``scheme``) is read before the deprecated ``mode``, so
    exporting an up-to-date layer raises no DeprecationWarning."""
    layer = int8_linear(linears(8, 4)[0], "int8_weight_only")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert slimtorch.export_chain(nn.Sequential(layer), tmp_path / "a")["layers"][0]["scheme"] == "int8_weight_only"
    if not hasattr(type(layer), "scheme") and "scheme" not in vars(layer):  # the layer still spells it mode
        vars(layer)["scheme"] = "int8_dynamic"
        assert slimtorch.export_chain(nn.Sequential(layer), tmp_path / "b")["layers"][0]["scheme"] == "int8_dynamic"


# ---- refusals: nothing written ----------------------------------------------------------

class Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        return self.linear(x)


@pytest.mark.parametrize("model,match", [
    (nn.Sequential(nn.Linear(4, 4), nn.Tanh()), r"module '1' \(torch\.nn\.modules\.activation\.Tanh\)"),
    (nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), nn.Conv1d(1, 1, 1))), r"module '1\.1' \(.*Conv1d\)"),
    (nn.Sequential(nn.Linear(4, 4), Custom()), r"module '1' \(.*Custom\)"),
    (Custom(), r"export_chain takes an nn.Sequential.*got Custom"),
    (nn.Sequential(nn.Flatten(0), nn.Linear(4, 4)), r"module '0' \(Flatten\(start_dim=0"),
    (nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(4, 2)), r"'2' takes 4 features but '0' gives 5"),
    (nn.Sequential(nn.ReLU()), r"no Linear"),
])
def test_unsupported_models_are_refused_before_writing(tmp_path, model, match):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"old")
    with pytest.raises(ValueError, match=r"^model: .*" + match):
        slimtorch.export_chain(model, path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_bad_arguments():
    with pytest.raises(TypeError, match="^model: "):
        slimtorch.export_chain("not a model", "x.safetensors")
    with pytest.raises(TypeError, match="^path: "):
        slimtorch.export_chain(nn.Sequential(nn.Linear(2, 2)), 3)
    with pytest.raises(ValueError, match="^path: "):
        slimtorch.export_chain(nn.Sequential(nn.Linear(2, 2)), "/no/such/directory/x.safetensors")


# ---- the reader against malformed files -------------------------------------------------

def split_file(data: bytes) -> tuple[dict, bytes]:
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), data[8 + length:]


def join_file(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


@pytest.fixture
def good_file(tmp_path) -> tuple[Path, Path]:
    """A small exported chain and an input file for it."""
    a, b = linears(6, 5, 3, seed=7)
    model = nn.Sequential(SparseLinear.from_dense(a, sparsity=0.5, values_dtype=torch.int8), nn.ReLU(),
                          int8_linear(b, "int8_dynamic")).eval()
    path = tmp_path / "good.safetensors"
    slimtorch.export_chain(model, path)
    inputs = tmp_path / "x.f32"
    torch.randn(4, 6).numpy().astype("<f4").tofile(inputs)
    return path, inputs


def edit_chain(header: dict, edit) -> dict:
    chain = json.loads(header["__metadata__"]["slimtorch_chain"])
    edit(chain)
    header["__metadata__"]["slimtorch_chain"] = json.dumps(chain)
    return header


def malformed_variants(data: bytes) -> dict[str, bytes]:
    header, body = split_file(data)
    (length,) = struct.unpack("<Q", data[:8])

    def with_header(edit) -> bytes:
        copy = json.loads(json.dumps(header))
        edit(copy)
        return join_file(copy, body)

    def set_offsets(h, key, begin, end):
        h[key]["data_offsets"] = [begin, end]

    columns_begin, columns_end = header["0.columns"]["data_offsets"]
    return {
        "empty": b"",
        "short length": data[:5],
        "header cut": data[:8 + length // 2],
        "body cut": data[:-3],
        "length past end": struct.pack("<Q", len(data)) + data[8:],
        "length huge": struct.pack("<Q", 2**63 + 5) + data[8:],
        "length zero": struct.pack("<Q", 0) + data[8:],
        "offsets past end": with_header(lambda h: set_offsets(h, "0.values", 0, len(body) + 64)),
        "offsets reversed": with_header(lambda h: set_offsets(h, "0.values", 4, 2)),
        "offsets huge": with_header(lambda h: set_offsets(h, "0.values", 2**62, 2**62 + 10)),
        "shape larger than data": with_header(lambda h: h["0.values"].update(shape=[10**6])),
        "shape overflow": with_header(lambda h: h["0.values"].update(shape=[2**40, 2**40])),
        "negative shape": with_header(lambda h: h["0.values"].update(shape=[-1])),
        "unknown dtype": with_header(lambda h: h["0.values"].update(dtype="F8")),
        "not json": struct.pack("<Q", length) + b"{" * length + body,
        "deep nesting": join_file({"__metadata__": {"slimtorch_chain": "[" * 100000}}, b""),
        "nesting in header": struct.pack("<Q", 20000) + b"[" * 20000,
        "no chain metadata": with_header(lambda h: h.pop("__metadata__")),
        "chain not json": with_header(lambda h: h["__metadata__"].update(slimtorch_chain="{'a': 1}")),
        "wrong version": with_header(lambda h: edit_chain(h, lambda c: c.update(version=2))),
        "unknown op": with_header(lambda h: edit_chain(h, lambda c: c["layers"][1].update(op="tanh"))),
        "sizes do not chain": with_header(lambda h: edit_chain(h, lambda c: c["layers"][2].update(in_features=7))),
        "nnz mismatch": with_header(lambda h: edit_chain(h, lambda c: c["layers"][0].update(nnz=3))),
        "huge nnz": with_header(lambda h: edit_chain(h, lambda c: c["layers"][0].update(nnz=2**47))),
        "huge features": with_header(lambda h: edit_chain(h, lambda c: c.update(in_features=2**40))),
        "missing tensor": with_header(lambda h: h.pop("2.weight_scale")),
        "extra tensor": with_header(lambda h: h.update({"9.extra": {"dtype": "U8", "shape": [1],
                                                                    "data_offsets": [0, 1]}})),
        "varint stream runs on": data[:8 + length + columns_begin] + b"\xff" * (columns_end - columns_begin)
                                  + data[8 + length + columns_end:],
        "column past in_features": data[:8 + length + columns_begin] + b"\x7f" * (columns_end - columns_begin)
                                   + data[8 + length + columns_end:],
    }


def test_malformed_files_are_rejected_without_crashing(edge_chain, good_file, tmp_path):
    path, inputs = good_file
    assert run_raw(edge_chain, str(path), str(inputs)).returncode == 0
    for name, data in malformed_variants(path.read_bytes()).items():
        bad = tmp_path / "bad.safetensors"
        bad.write_bytes(data)
        result = run_raw(edge_chain, str(bad), str(inputs))
        assert result.returncode == 1, (name, result.returncode, result.stderr)
        assert_clean_rejection(result)


def test_random_corruptions_never_crash(edge_chain, good_file, tmp_path):
    path, inputs = good_file
    data = path.read_bytes()
    rng = random.Random(0)
    outcomes = set()
    for _ in range(150):
        corrupt = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            corrupt[rng.randrange(len(corrupt))] = rng.randrange(256)
        bad = tmp_path / "bad.safetensors"
        bad.write_bytes(bytes(corrupt))
        result = run_raw(edge_chain, str(bad), str(inputs))
        outcomes.add(result.returncode)
        if result.returncode != 0:
            assert_clean_rejection(result)
    assert outcomes <= {0, 1} and 1 in outcomes


def test_bad_inputs_and_usage(edge_chain, good_file, tmp_path):
    path, inputs = good_file
    ragged = tmp_path / "ragged.f32"
    ragged.write_bytes(inputs.read_bytes()[:-4])
    assert_clean_rejection(run_raw(edge_chain, str(path), str(ragged)))
    assert_clean_rejection(run_raw(edge_chain, str(path), str(tmp_path / "missing.f32")))
    assert_clean_rejection(run_raw(edge_chain, str(tmp_path / "missing.safetensors"), str(inputs)))
    for args in ([str(path)], [str(path), str(inputs), "--threads", "0"], [str(path), str(inputs), "--batch"],
                 [str(path), str(inputs), "--bogus", "1"]):
        assert run_raw(edge_chain, *args).returncode == 2
