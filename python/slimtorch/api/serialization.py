"""``save(model, path)`` / ``load_(model, path)``: compressed models on disk.

File format (versions 1-3) — a plain safetensors file, or, written with
``save(..., compress=True)``, the same file compressed as one xz stream
(``xz -d`` gives the plain file back; ``load_`` tells them apart by the xz
magic bytes):

- tensors: the model's ``state_dict`` entries, stored once each. Bool tensors
  (pruning masks) are bit-packed to ``uint8`` (``numpy.packbits``, little bit
  order); a pruned weight is stored as its effective (masked) value under its
  ``parametrizations.weight.original`` key. Tensors that share memory (tied
  weights) are stored once and listed under ``aliases``.
- header ``__metadata__["slimtorch"]``: a JSON object

  ``format``   "slimtorch";  ``version``  1
  ``slimtorch`` / ``torch``   versions that wrote the file (informational)
  ``layers``   {module name: {"class": "SparseLinear" | "Int8Linear",
               "format": "sparse" | "sparse_int8" | "int8_dynamic" | ...,
               "sparsity": fraction of zero weights,
               "init": {constructor keyword arguments}}} — modules swapped for
               ``slimtorch.nn`` layers: sizes, value dtype, quantization mode
               and static activation scale/zero point (dtypes as
               {"dtype": "int8"}); their packed data (nnz values, int8
               weights, scales, quantization parameters) are the tensors
  ``pruned``   {module name: {"sparsity": fraction masked}}
  ``packed_bool`` {key: shape};  ``aliases`` {key: key stored}
  ``encoded``  {key: [how, dtype, shape(, row_ptr key)]} — tensors stored in a
               smaller, lossless form (version 2; see below)
  ``sha256``   version 1: {key: hex digest of the stored bytes}; version 2:
               one hex digest over every stored tensor (key, dtype, shape and
               bytes, in key order)

Version 2 stores derivable or narrower data compactly (the in-memory tensors
are rebuilt exactly on load; nothing lossy): ``"counts"`` — a ``row_ptr``
(compressed-row offsets, starting at 0) as its per-row counts; ``"narrow"`` —
an integer tensor (counts, column indices) in the narrowest of uint8 / int16 /
int32 that holds its values; ``"row_deltas"`` — column indices as uint8
differences from the previous column of the same row (the first of a row: the
column itself), where every difference fits (written by version 2 only);
``"nonempty_rows"`` — int8 row scales of a ``SparseLinear`` stored for rows
holding nonzeros only (an empty row's scale is the fixed ``choose_qparams``
minimum, 2**-23, that packing gives it).

Version 3 adds ``"narrow"`` for float32 tensors: one whose every value
(bit for bit) is a float16, or else a bfloat16, value is stored in that dtype
(row scales kept by ``"nonempty_rows"`` are narrowed the same way), and
``"varint_row_deltas"``, which replaces ``"row_deltas"``: the same in-row
differences (columns ascending within each row) as unsigned LEB128 varints in
a uint8 stream (7 bits per byte, low bits first, the high bit set on every
byte but a number's last), so one difference of 128 or more costs a byte
more instead of disabling the encoding; small differences compress better
than the columns themselves.

Compression (xz, LZMA2) is for small models and files to ship: it writes
about 2-3 MB/s and reads about 20 MB/s (2-core Zen 4).

Loading never unpickles and never imports anything named by the file: layer
classes are looked up among the layer classes registered in
``slimtorch.nn.registry.LAYER_CLASSES`` only. ``load_`` first
applies the recorded structure to a freshly built model of the original
architecture (swaps the layers, attaches masks), checks every key, shape, dtype
and checksum, and only then copies the tensors, so a bad file leaves the model
untouched and raises ``ValueError`` naming the problem.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from slimtorch._io import atomic_write_bytes
from slimtorch.api import _backend
from slimtorch.api.pruning import WeightMask, is_pruned, weight_mask

__all__ = ["save", "load_", "read_file", "data_length", "FORMAT_VERSION"]

FORMAT_NAME = "slimtorch"
FORMAT_VERSION = 3
_META_KEY = "slimtorch"
_MASK_KEY = "parametrizations.weight.0.mask"
_ORIGINAL_KEY = "parametrizations.weight.original"


def _check_args(model: object, path: object) -> str:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    return os.fspath(path)


def _sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(tensors):
        value = tensors[key]
        digest.update(f"{key}\0{value.dtype}\0{list(value.shape)}\0".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _narrow(t: torch.Tensor) -> torch.Tensor:
    """The integer tensor ``t`` in the narrowest dtype that holds its values."""
    if t.numel() == 0:
        return t.to(torch.uint8)
    low, high = int(t.min()), int(t.max())
    for dtype in (torch.uint8, torch.int16, torch.int32):
        info = torch.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return t.to(dtype)
    return t


# An all-zero row's scale: choose_qparams's minimum (SparseLinear packs int8 with it).
_EMPTY_ROW_SCALE = torch.finfo(torch.float32).eps


def _encode_sparse_linear(prefix: str, tensors: dict[str, torch.Tensor], encoded: dict[str, list]) -> None:
    """Compact, lossless on-disk forms of one SparseLinear's packed tensors
    (in place in ``tensors``; how to undo each is recorded in ``encoded``)."""
    row_ptr_key, col_key, scales_key = prefix + "row_ptr", prefix + "col_idx", prefix + "row_scales"
    row_ptr = tensors.get(row_ptr_key)
    if row_ptr is None or row_ptr.dim() != 1 or row_ptr.numel() < 1 or int(row_ptr[0]) != 0:
        return
    counts = row_ptr.diff()
    if bool((counts < 0).any()):
        return
    scales = tensors.get(scales_key)
    if scales is not None and scales.dtype == torch.float32 and scales.shape == counts.shape:
        empty = counts == 0
        if bool((scales[empty] == _EMPTY_ROW_SCALE).all()):
            encoded[scales_key] = ["nonempty_rows", "float32", list(scales.shape), row_ptr_key]
            tensors[scales_key] = scales[~empty].contiguous()
    encoded[row_ptr_key] = ["counts", str(row_ptr.dtype).removeprefix("torch."), list(row_ptr.shape)]
    tensors[row_ptr_key] = _narrow(counts)
    col = tensors.get(col_key)
    if col is None or col.is_floating_point() or col.shape != (int(row_ptr[-1]),):
        return
    dtype_name = str(col.dtype).removeprefix("torch.")
    wide = col.to(torch.int64)
    deltas = wide - torch.cat([wide.new_zeros(1), wide[:-1]])
    deltas[row_ptr[:-1][counts > 0]] = wide[row_ptr[:-1][counts > 0]]  # a row starts from column 0
    if col.numel() and int(wide.min()) >= 0 and int(deltas.min()) >= 0:
        encoded[col_key] = ["varint_row_deltas", dtype_name, list(col.shape), row_ptr_key]
        tensors[col_key] = _varint_encode(deltas)
    elif (narrow := _narrow(col)).dtype != col.dtype:
        encoded[col_key] = ["narrow", dtype_name, list(col.shape)]
        tensors[col_key] = narrow


def _varint_encode(values: torch.Tensor) -> torch.Tensor:
    """Non-negative int64 ``values`` as unsigned LEB128 varints (uint8)."""
    values = values.to(torch.int64)
    sizes = torch.ones_like(values)
    for bits in range(7, 63, 7):
        sizes += values >= (1 << bits)
    owner = torch.repeat_interleave(torch.arange(values.numel()), sizes)
    first = torch.cumsum(sizes, 0) - sizes
    part = torch.arange(owner.numel()) - first[owner]  # 0 for a number's lowest 7 bits
    chunk = (values[owner] >> (7 * part)) & 0x7F
    more = part < sizes[owner] - 1
    return (chunk | (more.to(torch.int64) << 7)).to(torch.uint8)


def _varint_decode(stream: torch.Tensor, count: int) -> torch.Tensor:
    """Undoes :func:`_varint_encode`: ``count`` int64 values, or ValueError."""
    if stream.dtype != torch.uint8 or stream.dim() != 1:
        raise ValueError("varints must be a 1-d uint8 tensor")
    data = stream.to(torch.int64)
    last = data < 0x80  # a number's last byte
    ends = last.nonzero().flatten()
    if ends.numel() != count or (data.numel() and not bool(last[-1])):
        raise ValueError(f"varint stream holds {ends.numel()} complete numbers, expected {count}")
    owner = torch.cumsum(last.to(torch.int64), 0) - last.to(torch.int64)
    first = torch.cat([ends.new_zeros(1), ends[:-1] + 1])
    part = torch.arange(data.numel()) - first[owner]
    if data.numel() and int(part.max()) > 8:  # more than 63 bits
        raise ValueError("varint longer than 9 bytes")
    return torch.zeros(count, dtype=torch.int64).index_add_(0, owner, (data & 0x7F) << (7 * part))


def _narrow_floats(tensors: dict[str, torch.Tensor], encoded: dict[str, list]) -> None:
    """Stores each float32 tensor whose values are all float16 (else bfloat16)
    values, bit for bit, in that dtype (in place; recorded in ``encoded``).
    A tensor already encoded keeps its encoding: its decoder casts back."""
    for key, value in tensors.items():
        if value.dtype != torch.float32 or value.numel() == 0:
            continue
        bits = value.view(torch.int32)
        for narrow_dtype in (torch.float16, torch.bfloat16):
            narrow = value.to(narrow_dtype)
            if torch.equal(narrow.to(torch.float32).view(torch.int32), bits):
                tensors[key] = narrow
                encoded.setdefault(key, ["narrow", "float32", list(value.shape)])
                break


def _decode(tensors: dict[str, torch.Tensor], encoded: dict[str, list]) -> None:
    """Undoes :func:`_encode_sparse_linear` and :func:`_narrow_floats` (row
    offsets first: column deltas and row scales need them)."""
    for key in sorted(encoded, key=lambda k: encoded[k][0] in ("nonempty_rows", "row_deltas", "varint_row_deltas")):
        how, dtype_name, shape, *extra = encoded[key]
        dtype = getattr(torch, str(dtype_name), None)
        if not isinstance(dtype, torch.dtype) or key not in tensors:
            raise ValueError(f"encoding of {key!r} is corrupt")
        stored = tensors[key]
        if how == "counts":
            value = torch.zeros(stored.numel() + 1, dtype=torch.int64)
            torch.cumsum(stored.to(torch.int64), 0, out=value[1:])
            value = value.to(dtype)
        elif how == "narrow":
            value = stored.to(dtype)
        elif how in ("row_deltas", "varint_row_deltas") and len(extra) == 1 and extra[0] in tensors:
            row_ptr = tensors[extra[0]]
            if row_ptr.dim() != 1 or row_ptr.numel() < 1:
                raise ValueError(f"encoding of {key!r} does not match its row offsets")
            nnz = int(row_ptr[-1])
            deltas = stored.to(torch.int64) if how == "row_deltas" else _varint_decode(stored, nnz)
            if deltas.numel() != nnz:
                raise ValueError(f"encoding of {key!r} does not match its row offsets")
            running = torch.cumsum(deltas, 0)
            before_row = torch.cat([running.new_zeros(1), running])[row_ptr[:-1]]  # sum up to each row's start
            rows = torch.repeat_interleave(torch.arange(row_ptr.numel() - 1), row_ptr.diff())
            value = (running - before_row[rows]).to(dtype)
        elif how == "nonempty_rows" and len(extra) == 1 and extra[0] in tensors:
            rows = tensors[extra[0]].diff() != 0
            if int(rows.sum()) != stored.numel():
                raise ValueError(f"encoding of {key!r} does not match its row offsets")
            value = torch.full((rows.numel(),), _EMPTY_ROW_SCALE, dtype=dtype)
            value[rows] = stored.to(dtype)
        else:
            raise ValueError(f"encoding of {key!r} is corrupt ({how!r})")
        if list(value.shape) != list(shape):
            raise ValueError(f"encoding of {key!r} gives shape {list(value.shape)}, expected {shape}")
        tensors[key] = value


def _json_value(value: Any) -> Any:
    """A layer attribute as JSON (dtypes tagged), or raises TypeError."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, (tuple, list)):
        return [_json_value(v) for v in value]
    raise TypeError(type(value).__name__)


def _from_json_value(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"dtype"}:
        dtype = getattr(torch, str(value["dtype"]), None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"unknown dtype {value['dtype']!r}")
        return dtype
    if isinstance(value, list):
        return tuple(_from_json_value(v) for v in value)
    return value


def _is_slimtorch_layer(module: nn.Module) -> bool:
    return type(module).__module__.startswith("slimtorch.nn")


def _describe_layer(name: str, module: nn.Module) -> dict:
    from slimtorch.nn.registry import LAYER_CLASSES

    spec = LAYER_CLASSES.get(type(module).__name__)
    if spec is None:
        raise TypeError(f"model: layer {name!r} is a {type(module).__name__}, which slimtorch.save cannot store")
    weight = module.to_dense().weight
    return {
        "class": type(module).__name__,
        "format": spec.format_of(module),
        "sparsity": round(float((weight == 0).sum()) / weight.numel(), 6) if weight.numel() else 0.0,
        "init": {k: _json_value(v) for k, v in spec.init_args(module).items()},
    }


def save(model: nn.Module, path: str | os.PathLike, *, compress: bool = False) -> None:
    """Write ``model``'s weights and compression structure to ``path`` (see the
    module docstring for the format). The write is atomic.

    ``compress=True`` writes the file as one xz stream: lossless, smallest on
    disk (int8 values, column deltas and zeros compress well), and slower to
    write and read (about 2-3 MB/s and 20 MB/s), so meant for small models and
    files to ship. :func:`load_` and ``slimtorch inspect`` read both forms.
    """
    path = _check_args(model, path)
    if not isinstance(compress, bool):
        raise TypeError(f"compress: expected a bool, got {type(compress).__name__}")
    layers: dict[str, dict] = {}
    pruned: dict[str, dict] = {}
    effective: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if _is_slimtorch_layer(module):
            layers[name] = _describe_layer(name, module)
        if is_pruned(module):
            mask = weight_mask(module)
            pruned[name] = {"sparsity": round(1.0 - mask.sum().item() / mask.numel(), 6) if mask.numel() else 0.0}
            prefix = f"{name}." if name else ""
            effective[prefix + _ORIGINAL_KEY] = module.weight.detach()
    tensors: dict[str, torch.Tensor] = {}
    packed_bool: dict[str, list[int]] = {}
    aliases: dict[str, str] = {}
    stored_at: dict[tuple, str] = {}
    for key, value in model.state_dict().items():
        value = effective.get(key, value).detach()
        if value.numel():
            where = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape),
                     value.stride(), value.dtype, value.device)
            if where in stored_at:
                aliases[key] = stored_at[where]
                continue
            stored_at[where] = key
        value = value.cpu().contiguous()
        if value.dtype == torch.bool:
            packed_bool[key] = list(value.shape)
            value = torch.from_numpy(np.packbits(value.reshape(-1).numpy(), bitorder="little"))
        tensors[key] = value
    encoded: dict[str, list] = {}
    for name, info in layers.items():
        if info["class"] == "SparseLinear":
            _encode_sparse_linear(f"{name}." if name else "", tensors, encoded)
    _narrow_floats(tensors, encoded)
    from slimtorch import __version__

    meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "slimtorch": __version__, "torch": torch.__version__,
            "layers": layers, "pruned": pruned, "packed_bool": packed_bool, "aliases": aliases,
            "encoded": encoded, "sha256": _checksum(tensors)}
    import safetensors.torch

    data = safetensors.torch.save(tensors, {_META_KEY: json.dumps(meta, allow_nan=False, separators=(",", ":"))})
    if compress:
        # lc=0: the bytes (int8 values, deltas, float halves) are not text, so
        # the previous byte predicts little; measured 2-4% smaller than lc=3.
        # Preset 6 (94 MB of encoder memory): as small as 9e here, and as fast.
        data = lzma.compress(data, format=lzma.FORMAT_XZ, filters=[
            {"id": lzma.FILTER_LZMA2, "preset": 6, "lc": 0, "lp": 0, "pb": 0}])
    atomic_write_bytes(path, data)


XZ_MAGIC = b"\xfd7zXZ\x00"
# The largest safetensors header read (the limit safetensors itself applies).
_MAX_HEADER_BYTES = 100 << 20


def data_length(header: dict) -> int:
    """The tensor-data length a parsed safetensors header describes (its
    largest end offset); raises ValueError, KeyError or TypeError when malformed."""
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    if not all(isinstance(end, int) and end >= 0 for end in ends):
        raise ValueError("bad data offsets")
    return max(ends, default=0)


def _unxz(data: bytes, header_only: bool) -> bytes:
    """The safetensors bytes inside an xz stream. Decompresses the 8-byte
    length and the header first, then exactly the data length the header
    gives, so a small file can never expand beyond what it claims to hold."""
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    head = decompressor.decompress(data, max_length=8)
    length = int.from_bytes(head, "little")
    if len(head) < 8 or length > _MAX_HEADER_BYTES:
        raise ValueError("the compressed file is truncated or not a slimtorch file")
    header = decompressor.decompress(b"", max_length=length)
    if len(header) < length:
        raise ValueError("the compressed file is truncated")
    if header_only:
        return head + header
    size = data_length(json.loads(header))
    body = decompressor.decompress(b"", max_length=size) if size else b""
    if len(body) < size:
        raise ValueError("the compressed file is truncated")
    if not decompressor.eof and decompressor.decompress(b"", max_length=1):
        raise ValueError("the compressed file holds more data than its header describes")
    if not decompressor.eof or decompressor.unused_data:
        raise ValueError("the compressed file is truncated or has trailing data")
    return head + header + body


def read_file(path: str, *, header_only: bool = False) -> tuple[bytes, bool]:
    """The safetensors bytes of the slimtorch file at ``path`` (decompressed
    when it is an xz stream) and whether it was compressed. ``header_only``:
    the 8-byte length and the JSON header only. Raises ``ValueError``."""
    try:
        with open(path, "rb") as f:
            data = f.read(len(XZ_MAGIC))
            if data != XZ_MAGIC and header_only:
                data += f.read(8 - len(data))
                length = int.from_bytes(data, "little") if len(data) == 8 else 0
                data += f.read(min(length, _MAX_HEADER_BYTES))
            else:
                data += f.read()
    except OSError as error:
        raise ValueError(f"path: cannot read {path!r}: {error.strerror or error}") from error
    if not data.startswith(XZ_MAGIC):
        return data, False
    try:
        return _unxz(data, header_only), True
    except (lzma.LZMAError, ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
        raise ValueError(f"path: {path!r} is corrupt or truncated ({error})") from None


def _read(path: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """Metadata and tensors of a slimtorch file, fully verified."""
    data, _ = read_file(path)
    if len(data) < 8:
        raise ValueError(f"path: {path!r} is not a slimtorch file (too short: {len(data)} bytes)")
    header_len = int.from_bytes(data[:8], "little")
    if header_len > len(data) - 8:
        raise ValueError(f"path: {path!r} is truncated or not a safetensors file (header says {header_len} bytes, "
                         f"file has {len(data) - 8} after the length field)")
    try:
        header = json.loads(data[8:8 + header_len])
        meta = json.loads(header["__metadata__"][_META_KEY])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise ValueError(f"path: {path!r} is corrupt or not a slimtorch file (header: {error})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ValueError(f"path: {path!r} is not a slimtorch file (format {meta.get('format')!r})")
    version = meta.get("version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ValueError(f"path: {path!r} has format version {version!r}; this slimtorch reads versions 1..{FORMAT_VERSION}")
    fields = ("layers", "pruned", "packed_bool", "aliases") + (("sha256",) if version == 1 else ("encoded",))
    for field in fields:
        if not isinstance(meta.get(field), dict):
            raise ValueError(f"path: {path!r} is corrupt (metadata field {field!r} missing or not an object)")
    import safetensors.torch

    try:
        tensors = safetensors.torch.load(data)
    except Exception as error:  # safetensors raises its own error type for malformed files
        raise ValueError(f"path: {path!r} is truncated or corrupt ({error})") from None
    if version == 1:
        if set(tensors) != set(meta["sha256"]):
            raise ValueError(f"path: {path!r} is corrupt (tensor list does not match its metadata)")
        for key, value in tensors.items():
            if _sha256(value) != meta["sha256"][key]:
                raise ValueError(f"path: {path!r} is corrupt (checksum of tensor {key!r} does not match)")
    else:
        if _checksum(tensors) != meta.get("sha256"):
            raise ValueError(f"path: {path!r} is corrupt (checksum of the tensors does not match)")
        try:
            _decode(tensors, meta["encoded"])
        except (ValueError, TypeError, RuntimeError, IndexError) as error:
            raise ValueError(f"path: {path!r} is corrupt ({error})") from None
    for key, shape in meta["packed_bool"].items():
        numel = int(np.prod(shape)) if shape else 1
        bits = np.unpackbits(tensors[key].numpy(), count=numel, bitorder="little")
        tensors[key] = torch.from_numpy(bits.astype(np.bool_)).reshape(shape)
    for key, target in meta["aliases"].items():
        if target not in tensors:
            raise ValueError(f"path: {path!r} is corrupt (alias {key!r} -> missing {target!r})")
        tensors[key] = tensors[target]
    return meta, tensors


def _build_layer(name: str, info: Any, tensors: dict[str, torch.Tensor], device: torch.device) -> nn.Module:
    """A ``slimtorch.nn`` layer built empty from its recorded constructor
    arguments, then loaded with its tensors from the file."""
    from slimtorch.nn.registry import LAYER_CLASSES

    if not isinstance(info, dict) or not isinstance(info.get("class"), str) or not isinstance(info.get("init"), dict):
        raise ValueError(f"path: layer entry {name!r} is corrupt")
    if info["class"] not in LAYER_CLASSES:  # only registered slimtorch layers are ever built
        raise ValueError(f"path: layer {name!r} has unknown class {info['class']!r}")
    try:
        layer = LAYER_CLASSES[info["class"]].build({k: _from_json_value(v) for k, v in info["init"].items()})
        prefix = f"{name}."
        LAYER_CLASSES[info["class"]].upgrade_keys(tensors, prefix)  # keys of files written by earlier versions
        layer.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, strict=True)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"path: cannot rebuild layer {name!r} ({info['class']}): {error}") from None
    return layer.to(device)


def load_(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a file written by :func:`save` into ``model`` (a freshly built
    model of the original architecture, or the same compressed model): swaps
    in the recorded layers, attaches the recorded masks, and copies every
    tensor exactly. Raises ``ValueError`` for a truncated, corrupt or
    mismatched file, leaving ``model`` unchanged. Returns ``model``."""
    path = _check_args(model, path)
    meta, tensors = _read(path)
    modules = dict(model.named_modules())
    swaps: dict[str, nn.Module] = {}
    for name, info in meta["layers"].items():
        if name == "":
            raise ValueError(f"path: {path!r} stores the whole model as one layer; load it with that layer's class")
        current = modules.get(name)
        if current is None:
            raise ValueError(f"path: {path!r} has layer {name!r}, which model does not have")
        if not (isinstance(current, nn.Linear) or type(current).__name__ == info.get("class")):
            raise ValueError(f"path: {path!r} has a {info.get('class')} at {name!r}, where model has "
                             f"{type(current).__name__}")
        device = next(iter(current.parameters()), next(iter(current.buffers()), torch.empty(0))).device
        layer = _build_layer(name, info, tensors, device)
        for attr in ("in_features", "out_features"):
            if getattr(current, attr, None) != getattr(layer, attr, None):
                raise ValueError(f"path: {path!r} does not match model at {name!r}: file has {attr}="
                                 f"{getattr(layer, attr, None)}, model has {getattr(current, attr, None)}")
        if (getattr(current, "bias", None) is None) != (getattr(layer, "bias", None) is None):
            raise ValueError(f"path: {path!r} does not match model at {name!r}: bias present in one, not the other")
        swaps[name] = layer
    for name in meta["pruned"]:
        if name not in modules or name in swaps:
            raise ValueError(f"path: {path!r} has pruned module {name!r}, which model does not have as a dense layer")
    # The state_dict keys model will have once the structure is applied.
    expected: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if not any(key.startswith(f"{name}.") for name in swaps):
            expected[key] = value
    swapped_keys = {f"{name}.{k}" for name, layer in swaps.items() for k in layer.state_dict()}
    for name in meta["pruned"]:
        prefix = f"{name}." if name else ""
        if not is_pruned(modules[name]):
            weight = expected.pop(prefix + "weight", None)
            if weight is None:
                raise ValueError(f"path: {path!r} has pruned module {name!r}, which has no weight in model")
            expected[prefix + _ORIGINAL_KEY] = weight
            expected[prefix + _MASK_KEY] = torch.empty(weight.shape, dtype=torch.bool)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected) - swapped_keys)
    if missing or unexpected:
        raise ValueError(f"path: {path!r} does not match model: missing {missing[:5]}, unexpected {unexpected[:5]}"
                         + (" (and more)" if len(missing) > 5 or len(unexpected) > 5 else ""))
    for key, want in expected.items():
        got = tensors[key]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise ValueError(f"path: {path!r} does not match model at {key!r}: file has "
                             f"{got.dtype} {tuple(got.shape)}, model has {want.dtype} {tuple(want.shape)}")
    # Everything checked: apply the structure, then copy.
    for name, layer in swaps.items():
        layer.train(modules[name].training)
        model.set_submodule(name, layer)
    for name in meta["pruned"]:
        module = modules[name]
        if not is_pruned(module):
            keep = torch.ones(module.weight.shape, dtype=torch.bool, device=module.weight.device)
            parametrize.register_parametrization(module, "weight", WeightMask(keep))
    with torch.no_grad():
        model.load_state_dict(tensors, strict=True)
    return model
