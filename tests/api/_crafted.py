"""Building hostile slimtorch files for the reader tests (imported by name:
pytest puts tests/api on sys.path)."""

from __future__ import annotations

import json
import lzma
import os
import subprocess
import sys
from pathlib import Path

import safetensors
import torch
from torch import nn

import slimtorch
from slimtorch.api.serialization import _checksum

ST_DTYPES = {torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16", torch.int32: "I32",
             torch.int64: "I64", torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32",
             torch.float64: "F64"}


def safetensors_bytes(entries: dict[str, tuple[str, list, bytes]], metadata: dict | None = None,
                      header_edit=None) -> bytes:
    """A safetensors file from raw entries {key: (dtype name, shape, bytes)},
    laid out in order; ``header_edit(header)`` may change the parsed header
    (any JSON) before it is written."""
    header: dict = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    position = 0
    for key, (dtype, shape, data) in entries.items():
        header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [position, position + len(data)]}
        position += len(data)
    if header_edit is not None:
        header = header_edit(header)
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(data for _, _, data in entries.values())


def tensor_entries(tensors: dict[str, torch.Tensor]) -> dict[str, tuple[str, list, bytes]]:
    return {k: (ST_DTYPES[v.dtype], list(v.shape), v.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
            for k, v in tensors.items()}


def slimtorch_file(tensors: dict[str, torch.Tensor], meta: dict, *, checksum: bool = True, header_edit=None) -> bytes:
    """A slimtorch file holding ``tensors`` with metadata ``meta`` (its
    checksum recomputed unless ``checksum`` is False)."""
    meta = dict(meta)
    if checksum:
        meta["sha256"] = _checksum(tensors)
    return safetensors_bytes(tensor_entries(tensors), {"slimtorch": json.dumps(meta)}, header_edit)


def base_meta(**fields) -> dict:
    meta = {"format": "slimtorch", "version": 3, "layers": {}, "pruned": {}, "packed_bool": {}, "aliases": {},
            "encoded": {}, "sha256": ""}
    meta.update(fields)
    return meta


def read_parts(path: os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """The metadata and stored tensors of a valid (plain) slimtorch file."""
    with safetensors.safe_open(path, "pt") as f:
        # safe_open is not iterable: only .keys() lists the tensors
        return json.loads(f.metadata()["slimtorch"]), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def mixed_model() -> nn.Module:
    """A SparseLinear int8 layer with empty rows, a pruned Linear, an
    Int8Linear and a SparseLinear float16 layer, on Linear(12, 16, 8, 6, 3)."""
    from slimtorch.nn import Int8Linear, SparseLinear

    torch.manual_seed(0)
    model = mixed_architecture()
    with torch.no_grad():
        model[0].weight[[0, 5]] = 0
    model[0] = SparseLinear.from_dense(model[0], sparsity=0.8, values_dtype=torch.int8)
    slimtorch.prune_(model[2], 0.5)
    model[4] = Int8Linear.from_dense(model[4])
    model[6] = SparseLinear.from_dense(model[6], sparsity=0.5, values_dtype=torch.float16)
    return model


def mixed_architecture() -> nn.Module:
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(),
                         nn.Linear(6, 3))


def xz(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ)


# Runs in a fresh interpreter: builds the model from MODEL_CODE, caps the
# address space at what it uses now plus CAP_MB, loads the file and prints
# what happened as JSON.
_CAPPED_LOAD = r"""
import json, resource, sys, time
import torch, slimtorch
from torch import nn
model = eval(sys.argv[2])
model(torch.randn(2, model[0].in_features) if isinstance(model, nn.Sequential) else torch.zeros(1))
def vm_bytes():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
cap = vm_bytes() + int(sys.argv[3]) * 2**20
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    slimtorch.load_(model, sys.argv[1])
    error, message = None, ""
except BaseException as exc:
    error, message = type(exc).__name__, str(exc)
print(json.dumps({"error": error, "message": message[:300], "seconds": time.perf_counter() - start,
                  "peak_growth_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before}))
"""


def load_capped(path: Path, model_code: str, cap_mb: int = 256) -> dict:
    """Loads ``path`` into ``eval(model_code)`` in a subprocess whose address
    space may grow by at most ``cap_mb`` MiB; returns the error type, message,
    time and peak resident growth."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run([sys.executable, "-c", _CAPPED_LOAD, str(path), model_code, str(cap_mb)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
