"""``save(model, path)`` / ``load_(model, path)``: compressed models on disk.

File format, version 3 — a plain safetensors file, or, written with
``save(..., compress=True)``, the same file compressed as one xz stream
(``xz -d`` gives the plain file back; ``load_`` tells them apart by the xz
magic bytes):

- tensors: the model's ``state_dict`` entries, stored once each. Bool tensors
  (pruning masks) are bit-packed to ``uint8`` (``numpy.packbits``, little bit
  order); a pruned weight is stored as its effective (masked) value under its
  ``parametrizations.weight.original`` key. Tensors that share memory (tied
  weights, and the int8 table and scales that a compressed embedding shares
  with its tied head) are stored once and listed under ``aliases``.
- header ``__metadata__["slimtorch"]``: a JSON object

  ``format``   "slimtorch";  ``version``  3
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
  ``resized``  (optional) {parameter or buffer name: shape} — tensors that
               ``prune_channels`` made smaller than the original architecture
               has them; ``load_`` rebuilds those modules smaller in a freshly
               built original model (only ever smaller, checked first)
  ``packed_bool`` {key: shape};  ``aliases`` {key: key stored}
  ``encoded``  {key: [how, dtype, shape(, row_ptr key)]} — tensors stored in a
               smaller, lossless form (see below)
  ``sha256``   one hex digest over every stored tensor (key, dtype, shape and
               bytes, in key order)

Encodings (the in-memory tensors are rebuilt exactly on load; nothing lossy):

- ``"counts"``: a ``row_ptr`` (compressed-row offsets, starting at 0) stored
  as its per-row counts.
- ``"narrow"``: an integer tensor (counts, column indices) in the narrowest of
  uint8 / int16 / int32 that holds its values; a float32 tensor whose every
  value (bit for bit) is a float16, or else a bfloat16, value in that dtype.
- ``"varint_row_deltas"``: column indices as differences from the previous
  column of the same row (the first of a row: the column itself; columns
  ascend within a row), as unsigned LEB128 varints in a uint8 stream (7 bits
  per byte, low bits first, the high bit set on every byte but a number's
  last). Small differences compress better than the columns themselves.
- ``"nonempty_rows"``: int8 row scales of a ``SparseLinear`` stored for rows
  holding nonzeros only (an empty row's scale is the fixed ``choose_qparams``
  minimum, 2**-23, that packing gives it); narrowed like other float32 tensors.

Compression (xz, LZMA2) is for small models and files to ship: it is far
slower to write and read than the plain file.

Loading treats every byte of the file as hostile. It never unpickles and never
imports anything named by the file: layer classes are looked up among the
layer classes registered in
``slimtorch.nn.registry.LAYER_CLASSES`` only. ``load_`` reads the header
first and checks every size it declares (tensor shapes, packed and encoded
lengths, layer constructor arguments, the data length) against ``model``
before it allocates or decompresses anything, and that every group of tied
tensors in ``model`` stays one tensor (the file stores it once: dense, or as
one int8 table of ``Int8Embedding`` layers and at most one ``Int8Linear``
head, never one member compressed or pruned alone); then it reads the data, checks
the checksum, decodes with every offset and count range-checked (in int64
without overflow), builds the recorded layers and checks every key, shape and
dtype, and only then changes ``model``. A bad file leaves the model untouched
and raises ``ValueError`` naming the path and the problem.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from slimtorch._io import atomic_write_bytes
from slimtorch.api._linear_like import is_linear_like, linear_features
from slimtorch.api.pruning import WeightMask, is_pruned, tied_groups, weight_mask
from slimtorch.nn.registry import LAYER_CLASSES
from slimtorch.structured.surgery import RESIZED_ATTR, plan_resize, resize_

__all__ = ["save", "load_", "read_header", "FileHeader", "TensorEntry", "FORMAT_VERSION"]

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


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(tensors):
        value = tensors[key]
        digest.update(f"{key}\0{value.dtype}\0{list(value.shape)}\0".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy())
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
    write and read, so meant for small models and files to ship. :func:`load_`
    and ``slimtorch inspect`` read both forms.
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
    resized = getattr(model, RESIZED_ATTR, None)
    if resized:
        meta["resized"] = {key: [int(d) for d in shape] for key, shape in resized.items()}
    import safetensors.torch

    data = safetensors.torch.save(tensors, {_META_KEY: json.dumps(meta, allow_nan=False, separators=(",", ":"))})
    if compress:
        # lc=0: the bytes (int8 values, deltas, float halves) are not text, so
        # the previous byte predicts little. Preset 6: an 8 MiB dictionary,
        # which the reader's decoder memory limit admits.
        data = lzma.compress(data, format=lzma.FORMAT_XZ, filters=[
            {"id": lzma.FILTER_LZMA2, "preset": 6, "lc": 0, "lp": 0, "pb": 0}])
    atomic_write_bytes(path, data)


XZ_MAGIC = b"\xfd7zXZ\x00"
# The largest safetensors header read without a model to size it by (the
# limit safetensors itself applies).
_MAX_HEADER_BYTES = 100 << 20
# Header bytes allowed per state_dict entry or module of the target model, on
# top of a fixed allowance: a real header holds one short entry for each.
_HEADER_BYTES_PER_ENTRY = 1024
_HEADER_BYTES_BASE = 64 << 10
_XZ_CHUNK = 16 << 20
# Decoder memory allowed to an xz stream (its dictionary): what save's preset
# needs, with room, so a stream cannot make the decoder allocate gigabytes.
_XZ_MEMORY_LIMIT = 64 << 20

# safetensors dtype names.
DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "U16": torch.uint16,
    "I32": torch.int32, "U32": torch.uint32, "I64": torch.int64, "U64": torch.uint64, "F16": torch.float16,
    "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64, "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
# dtype names an encoding may decode to.
_DECODED_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
    torch.float16, torch.bfloat16, torch.float32, torch.float64)}
_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)

# Packed layers whose tensor lengths depend on the data: class -> (row offsets
# key, keys holding one entry per stored nonzero).
_COMPRESSED_ROWS = {"SparseLinear": ("row_ptr", ("col_idx", "values"))}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors header, checked: known dtype, non-negative
    shape, and a byte range that matches it."""

    dtype_name: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.dtype_name]


@dataclass(frozen=True)
class FileHeader:
    """The verified header of a slimtorch file."""

    path: str
    entries: dict[str, TensorEntry]
    meta: dict
    header_bytes: int  # the 8-byte length field and the JSON header
    data_bytes: int  # tensor data after the header
    compressed: bool
    disk_bytes: int


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_shape(value: object) -> bool:
    return isinstance(value, list) and all(_is_int(n) and n >= 0 for n in value)


def _numel(shape: Any) -> int:
    return math.prod(shape)  # Python ints: never overflows


def _corrupt(path: str, what: str) -> ValueError:
    return ValueError(f"path: {path!r} is corrupt ({what})")


def _json_object(text: bytes | str, path: str, what: str) -> dict:
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise ValueError(f"path: {path!r} is corrupt or not a slimtorch file ({what}: "
                         f"{type(error).__name__}: {str(error)[:200]})") from None
    if not isinstance(value, dict):
        raise ValueError(f"path: {path!r} is corrupt or not a slimtorch file ({what} is not a JSON object)")
    return value


def _parse_entries(header: dict, path: str) -> tuple[dict[str, TensorEntry], int]:
    """The tensor entries of a safetensors header and the data length they
    cover; ranges must tile the data from 0 without gaps or overlaps."""
    entries: dict[str, TensorEntry] = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        if not (isinstance(entry, dict) and isinstance(entry.get("dtype"), str) and entry["dtype"] in DTYPES
                and _is_shape(entry.get("shape"))
                and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2
                and all(_is_int(n) for n in entry["data_offsets"])):
            raise _corrupt(path, f"tensor entry {key!r}")
        start, end = entry["data_offsets"]
        shape = tuple(entry["shape"])
        if not 0 <= start <= end or end - start != _numel(shape) * DTYPES[entry["dtype"]].itemsize:
            raise _corrupt(path, f"tensor entry {key!r}: data offsets do not match its shape and dtype")
        entries[key] = TensorEntry(entry["dtype"], shape, start, end)
    position = 0
    for key, entry in sorted(entries.items(), key=lambda item: (item[1].start, item[1].end)):
        if entry.start != position:
            raise _corrupt(path, f"tensor entry {key!r}: data overlaps another tensor or leaves a gap")
        position = entry.end
    return entries, position


def _check_meta(meta: dict, path: str) -> None:
    """The slimtorch metadata has every field, each of the right JSON type."""
    if meta.get("format") != FORMAT_NAME:
        raise ValueError(f"path: {path!r} is not a slimtorch file (format {str(meta.get('format'))[:40]!r})")
    version = meta.get("version")
    if not _is_int(version) or version != FORMAT_VERSION:
        raise ValueError(f"path: {path!r} has format version {str(version)[:40]}; "
                         f"this slimtorch reads version {FORMAT_VERSION}")
    for field in ("layers", "pruned", "packed_bool", "aliases", "encoded"):
        if not isinstance(meta.get(field), dict):
            raise _corrupt(path, f"metadata field {field!r} missing or not an object")
    if not isinstance(meta.get("sha256"), str):
        raise _corrupt(path, "metadata field 'sha256' missing or not a string")
    for name, info in meta["layers"].items():
        if not (isinstance(info, dict) and isinstance(info.get("class"), str)
                and isinstance(info.get("init"), dict) and isinstance(info.get("format", ""), str)
                and isinstance(info.get("sparsity", 0.0), (int, float))
                and not isinstance(info.get("sparsity", 0.0), bool)):
            raise _corrupt(path, f"layer entry {name!r}")
    for name, info in meta["pruned"].items():
        sparsity = info.get("sparsity", 0.0) if isinstance(info, dict) else None
        if not isinstance(sparsity, (int, float)) or isinstance(sparsity, bool):
            raise _corrupt(path, f"pruned entry {name!r}")
    for key, shape in meta["packed_bool"].items():
        if not _is_shape(shape):
            raise _corrupt(path, f"packed_bool entry {key!r}")
    for key, target in meta["aliases"].items():
        if not isinstance(target, str):
            raise _corrupt(path, f"alias {key!r}")
    if not isinstance(meta.get("resized", {}), dict) or not all(
            _is_shape(shape) for shape in meta.get("resized", {}).values()):
        raise _corrupt(path, "metadata field 'resized' is not an object of shapes")
    for key, how in meta["encoded"].items():
        if not (isinstance(how, list) and len(how) in (3, 4) and isinstance(how[0], str)
                and isinstance(how[1], str) and how[1] in _DECODED_DTYPES and _is_shape(how[2])
                and (len(how) == 3 or isinstance(how[3], str))):
            raise _corrupt(path, f"encoding of {key!r}")


def _declared_shape(meta: dict, key: str, entry: TensorEntry) -> list[int] | tuple[int, ...]:
    """The shape ``key`` has once loaded: packed and encoded tensors declare it."""
    if key in meta["packed_bool"]:
        return meta["packed_bool"][key]
    if key in meta["encoded"]:
        return meta["encoded"][key][2]
    return entry.shape


def _check_encodings(meta: dict, entries: dict[str, TensorEntry], path: str) -> None:
    """Each packed or encoded tensor is stored, once, in a form whose size
    fits the shape it declares."""
    for key in list(meta["packed_bool"]) + list(meta["encoded"]):
        if key not in entries or (key in meta["packed_bool"] and key in meta["encoded"]):
            raise _corrupt(path, f"encoding of {key[:80]!r} names no stored tensor, or two encodings")
    for key, shape in meta["packed_bool"].items():
        if entries[key].dtype_name != "U8" or entries[key].shape != (-(-_numel(shape) // 8),):
            raise _corrupt(path, f"packed bool tensor {key!r} does not hold shape {shape[:8]}")
    for key, (how, _, shape, *extra) in meta["encoded"].items():
        entry = entries[key]
        stored = _numel(entry.shape)
        if how == "counts":
            ok = len(entry.shape) == 1 and shape == [stored + 1]
        elif how == "narrow":
            ok = stored == _numel(shape)
        elif how == "varint_row_deltas":
            ok = entry.dtype_name == "U8" and len(entry.shape) == 1 and len(shape) == 1 and bool(extra)
        elif how == "nonempty_rows":
            ok = len(entry.shape) == 1 and len(shape) == 1 and stored <= shape[0] and bool(extra)
        else:
            raise _corrupt(path, f"encoding of {key!r} is unknown ({how[:40]!r})")
        if not ok:
            raise _corrupt(path, f"encoding of {key!r} does not fit its stored tensor")


def _read_exactly(handle: Any, count: int) -> bytearray:
    buffer = bytearray(count)
    view, done = memoryview(buffer), 0
    while done < count:
        got = handle.readinto(view[done:])
        if not got:
            break
        done += got
    del view
    return buffer[:done] if done < count else buffer


def _read_header(path: str, max_header_bytes: int) -> tuple[FileHeader, Callable[[], bytearray]]:
    """The verified header of the file at ``path`` and a function that reads
    its tensor data (decompressed when it is an xz stream; never more than
    the header declares). Raises ``ValueError``."""
    try:
        with open(path, "rb") as handle:
            disk_bytes = os.fstat(handle.fileno()).st_size
            start = handle.read(8)
            compressed = start.startswith(XZ_MAGIC)
            if compressed:
                raw = start + handle.read()
    except OSError as error:
        raise ValueError(f"path: cannot read {path!r}: {error.strerror or error}") from None
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=_XZ_MEMORY_LIMIT)
    unfed = [raw] if compressed else []  # compressed bytes not yet given to the decompressor

    def unxz(count: int, what: str) -> bytes:
        try:
            data = decompressor.decompress(unfed.pop() if unfed else b"", max_length=count)
        except (lzma.LZMAError, EOFError) as error:
            raise ValueError(f"path: {path!r} is corrupt or truncated ({error or 'the xz stream ended'})") from None
        if len(data) < count:
            raise ValueError(f"path: {path!r} is corrupt or truncated (the compressed {what} ends early)")
        return data

    if compressed:
        start = unxz(8, "file")
    elif len(start) < 8:
        raise ValueError(f"path: {path!r} is not a slimtorch file (too short: {disk_bytes} bytes)")
    header_len = int.from_bytes(start, "little")
    if header_len > max_header_bytes or (not compressed and header_len > disk_bytes - 8):
        raise ValueError(f"path: {path!r} is truncated or not a slimtorch file (header length {header_len} "
                         f"is more than " + (f"{max_header_bytes} bytes)" if header_len > max_header_bytes else
                                             f"the {disk_bytes - 8} bytes after the length field)"))
    if compressed:
        text = unxz(header_len, "header")
    else:
        try:
            with open(path, "rb") as handle:
                handle.seek(8)
                text = _read_exactly(handle, header_len)
        except OSError as error:
            raise ValueError(f"path: cannot read {path!r}: {error.strerror or error}") from None
        if len(text) < header_len:
            raise ValueError(f"path: {path!r} is truncated (the file changed while it was read)")
    header = _json_object(text, path, "header")
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or not isinstance(metadata.get(_META_KEY), str):
        raise ValueError(f"path: {path!r} is not a slimtorch file (a safetensors file, but not one written by "
                         f"slimtorch.save)" if isinstance(metadata, (dict, type(None)))
                         else f"path: {path!r} is corrupt (header __metadata__ is not an object)")
    meta = _json_object(metadata[_META_KEY], path, "slimtorch metadata")
    _check_meta(meta, path)
    entries, data_bytes = _parse_entries(header, path)
    _check_encodings(meta, entries, path)
    if not compressed and 8 + header_len + data_bytes != disk_bytes:
        raise ValueError(f"path: {path!r} is truncated or corrupt (its header describes "
                         f"{8 + header_len + data_bytes} bytes, the file has {disk_bytes})")
    info = FileHeader(path, entries, meta, 8 + header_len, data_bytes, compressed, disk_bytes)

    def read_body(keep: bool = True) -> bytearray:
        """The tensor data; ``keep=False``: only checks an xz stream to its end."""
        if not compressed:
            try:
                with open(path, "rb") as handle:
                    handle.seek(8 + header_len)
                    body = _read_exactly(handle, data_bytes + 1)
            except OSError as error:
                raise ValueError(f"path: cannot read {path!r}: {error.strerror or error}") from None
            if len(body) != data_bytes:
                raise ValueError(f"path: {path!r} is truncated or corrupt (the file changed while it was read)")
            return body
        body = bytearray(data_bytes if keep else 0)
        done = 0
        while done < data_bytes:
            chunk = unxz(min(_XZ_CHUNK, data_bytes - done), "tensor data")
            if keep:
                body[done:done + len(chunk)] = chunk
            done += len(chunk)
        try:
            extra = b"" if decompressor.eof else decompressor.decompress(unfed.pop() if unfed else b"", max_length=1)
        except (lzma.LZMAError, EOFError) as error:
            raise ValueError(f"path: {path!r} is corrupt or truncated ({error})") from None
        if extra:
            raise ValueError(f"path: {path!r} is corrupt (the compressed file holds more data than its "
                             f"header describes)")
        if not decompressor.eof or decompressor.unused_data:
            raise ValueError(f"path: {path!r} is corrupt or truncated (the xz stream is cut short or has "
                             f"trailing data)")
        return body

    return info, read_body


def read_header(path: str | os.PathLike) -> FileHeader:
    """The verified header and metadata of the slimtorch file at ``path``
    (for ``slimtorch inspect``): the tensor data is read to check its
    checksum, then dropped. Raises ``ValueError`` naming the path and the
    problem."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    header, read_body = _read_header(path, _MAX_HEADER_BYTES)
    # The data is read once to check its checksum (and, for an xz stream, that
    # it is whole: a truncated or padded stream shows only at its end).
    if _checksum(_tensor_views(header, read_body())) != header.meta["sha256"]:
        raise _corrupt(path, "checksum of the tensors does not match")
    return header


def _tensor_views(header: FileHeader, body: bytearray) -> dict[str, torch.Tensor]:
    """The stored tensors as views of ``body`` (no copies); sizes already checked."""
    tensors = {}
    for key, entry in header.entries.items():
        raw = torch.frombuffer(body, dtype=torch.uint8, count=entry.end - entry.start, offset=entry.start) \
            if entry.end > entry.start else torch.empty(0, dtype=torch.uint8)
        if entry.start % entry.dtype.itemsize:
            raw = raw.clone()  # an unaligned range cannot be viewed as a wider dtype
        tensors[key] = raw.view(entry.dtype).reshape(entry.shape)
    return tensors


@dataclass(frozen=True)
class _Expected:
    """What one key of the loaded state may hold: an exact shape (and dtype,
    where the model fixes it), or, for a packed layer's per-nonzero tensors,
    a 1-d length of at most ``max_length``."""

    shape: tuple[int, ...] | None
    dtype: torch.dtype | None = None
    max_length: int = 0

    def admits(self, shape: Any) -> bool:
        if self.shape is not None:
            return tuple(shape) == self.shape
        return len(shape) == 1 and shape[0] <= self.max_length


@dataclass(frozen=True)
class _RowOffsets:
    """A packed layer's row offsets key and the bounds its values must keep."""

    rows: int
    width: int  # columns per row: the most nonzeros one row can hold
    nnz_keys: tuple[str, ...]


def _registered_layer(name: str) -> bool:
    return name in LAYER_CLASSES


def _new_layer(path: str, name: str, info: dict, current: nn.Module,
               resized: dict[str, tuple[int, ...]]) -> nn.Module:
    """The layer ``info`` describes, built empty on the CPU once its
    constructor arguments are checked against the module it replaces (at its
    recorded smaller size where ``resized`` shrinks its weight)."""
    where = f"path: {path!r} does not match model at {name!r}"
    if not _registered_layer(info["class"]):  # only registered slimtorch layers are ever built
        raise ValueError(f"path: {path!r} has layer {name!r} of unknown class {info['class'][:60]!r}")
    spec = LAYER_CLASSES[info["class"]]
    # A linear-like module (Conv1D) stands where compress_ put a linear layer.
    linear_like = nn.Linear in spec.replaces and is_linear_like(current) and not isinstance(current, nn.Linear)
    if not (isinstance(current, spec.replaces) or linear_like or type(current).__name__ == info["class"]):
        raise ValueError(f"path: {path!r} has a {info['class']} at {name!r}, where model has "
                         f"{type(current).__name__}")
    init = info["init"]
    if linear_like:
        sizes = dict(zip(("in_features", "out_features"), linear_features(current)))
    else:
        sizes = {attr: getattr(current, attr, None) for attr in spec.sizes}
    if f"{name}.weight" in resized and len(resized[f"{name}.weight"]) == 2 and isinstance(current, nn.Linear):
        sizes["out_features"], sizes["in_features"] = resized[f"{name}.weight"]
    elif f"{name}.weight" in resized and isinstance(current, nn.Embedding):
        sizes["num_embeddings"], sizes["embedding_dim"] = resized[f"{name}.weight"]
    for attr, want in sizes.items():
        if not _is_int(init.get(attr)) or init[attr] != want:
            raise ValueError(f"{where}: file has {attr}={repr(init.get(attr))[:40]}, model has {want}")
    if "bias" in init and init["bias"] is not (getattr(current, "bias", None) is not None):
        raise ValueError(f"{where}: bias present in one, not the other")
    if "device" in init:
        raise ValueError(f"path: {path!r} is corrupt (layer {name!r} names a device)")
    try:
        # build() also takes the constructor spellings of earlier files
        return LAYER_CLASSES[info["class"]].build({k: _from_json_value(v) for k, v in init.items()})
    except (TypeError, ValueError, RuntimeError, OverflowError, RecursionError) as error:
        raise ValueError(f"path: {path!r}: cannot rebuild layer {name!r} ({info['class']}): {error}") from None


def _expected_state(path: str, model: nn.Module, meta: dict, resized: dict[str, tuple[int, ...]],
                    stored: set[str]) -> tuple[dict[str, nn.Module], dict[str, _Expected], dict[str, _RowOffsets]]:
    """The layers to swap in, what every key of the file may hold once the
    recorded structure (smaller modules, layers, masks) is applied to
    ``model``, and the row offsets keys of the packed layers. Allocates no
    more than the swapped-in layers. A layer's keys are expected under the
    names of earlier files where ``stored`` (the file's keys) has those."""
    modules = dict(model.named_modules())
    swaps: dict[str, nn.Module] = {}
    for name, info in meta["layers"].items():
        if name == "":
            raise ValueError(f"path: {path!r} stores the whole model as one layer; load it with that layer's class")
        if name not in modules:
            raise ValueError(f"path: {path!r} has layer {name[:80]!r}, which model does not have")
        if any(name.startswith(f"{other}.") for other in meta["layers"]):
            raise ValueError(f"path: {path!r} is corrupt (layer {name!r} inside another recorded layer)")
        swaps[name] = _new_layer(path, name, info, modules[name], resized)
    for name in meta["pruned"]:
        if name not in modules or name in swaps or any(name.startswith(f"{s}.") for s in swaps):
            raise ValueError(f"path: {path!r} has pruned module {name[:80]!r}, which model does not have as a "
                             f"dense layer")
    expected: dict[str, _Expected] = {}
    for key, value in model.state_dict().items():
        if not any(key.startswith(f"{name}.") for name in swaps):
            expected[key] = _Expected(resized.get(key, tuple(value.shape)), value.dtype)
    for name in meta["pruned"]:
        prefix = f"{name}." if name else ""
        if not is_pruned(modules[name]):
            weight = expected.pop(prefix + "weight", None)
            if weight is None:
                raise ValueError(f"path: {path!r} has pruned module {name!r}, which has no weight in model")
            expected[prefix + _ORIGINAL_KEY] = weight
            expected[prefix + _MASK_KEY] = _Expected(weight.shape, torch.bool)
    row_offsets: dict[str, _RowOffsets] = {}
    for name, layer in swaps.items():
        offsets_name, nnz_names = _COMPRESSED_ROWS.get(type(layer).__name__, (None, ()))
        nnz_max = layer.in_features * layer.out_features if offsets_name is not None else 0
        parameters = dict(layer.named_parameters())
        renamed = {new: old for old, new in LAYER_CLASSES[type(layer).__name__].old_keys.items()
                   if f"{name}.{old}" in stored and f"{name}.{new}" not in stored}
        for key, value in layer.state_dict().items():
            # A parameter keeps the dtype it is given, as in any module; buffers are the layer's own.
            dtype = None if key in parameters else value.dtype
            key = renamed.get(key, key)
            if key in nnz_names:
                expected[f"{name}.{key}"] = _Expected(None, dtype, max_length=nnz_max)
            else:
                expected[f"{name}.{key}"] = _Expected(tuple(value.shape), dtype)
        if offsets_name is not None:
            row_offsets[f"{name}.{offsets_name}"] = _RowOffsets(
                layer.out_features, layer.in_features, tuple(f"{name}.{k}" for k in nnz_names))
    return swaps, expected, row_offsets


_TABLE_KEYS = ("weight_int8", "weight_scale")
_TABLE_CLASSES = ("Int8Embedding", "Int8Linear")


def _check_ties(path: str, model: nn.Module, meta: dict, swaps: dict[str, nn.Module]
                ) -> tuple[list[list[str]], list[tuple[str, str]]]:
    """Every group of tensors that ``model`` ties (one memory under several
    names) stays one tensor: the file stores it once, either dense (aliases
    of one stored key, not pruned; an ``Int8Linear``'s bias may be one of
    them) or with every member swapped for a layer sharing one int8 table
    (``Int8Embedding`` layers and at most one ``Int8Linear`` head, whose table
    and scale keys alias one stored key each). Returns what to tie again once
    loaded: the swapped groups (module names, the head first) and
    ``(Int8Linear, tensor key)`` pairs of tied biases."""
    state_keys = set(model.state_dict())
    stored = meta["aliases"]
    swapped_groups: list[list[str]] = []
    biases: list[tuple[str, str]] = []
    for group in tied_groups(model):
        keys = [key for key in group if key in state_keys]
        modules = list(dict.fromkeys(key.rpartition(".")[0] for key in keys))
        if len(modules) < 2:
            continue
        where = f"path: {path!r} does not match model: {', '.join(keys)} are one tied tensor in model"
        swapped = [name for name in modules if name in swaps]
        # A head's bias tied to a tensor outside it stays a plain tensor in the file.
        bias_of = [name for name in swapped if type(swaps[name]).__name__ == "Int8Linear" and f"{name}.bias" in keys]
        if not swapped or (len(swapped) == 1 and bias_of):
            pruned = [name for name in modules if name in meta["pruned"]]
            if pruned:
                raise ValueError(f"{where}; the file prunes {', '.join(pruned)} alone")
            if len({stored.get(key, key) for key in keys}) > 1:
                raise ValueError(f"{where}; the file stores them as different tensors")
            if bias_of:
                biases.append((bias_of[0], next(key for key in keys if not key.startswith(f"{bias_of[0]}."))))
            continue
        if len(swapped) < len(modules):
            raise ValueError(f"{where}; the file compresses {', '.join(swapped)} alone")
        classes = [type(swaps[name]).__name__ for name in modules]
        if any(c not in _TABLE_CLASSES for c in classes) or classes.count("Int8Linear") > 1:
            raise ValueError(f"{where}; the file makes them {', '.join(classes)}, which cannot share one int8 table")
        for part in _TABLE_KEYS:
            if len({stored.get(f"{name}.{part}", f"{name}.{part}") for name in modules}) > 1:
                raise ValueError(f"{where}; the file gives them different int8 tables ({part})")
        modules.sort(key=lambda name: type(swaps[name]).__name__ != "Int8Linear")
        if modules not in swapped_groups:
            swapped_groups.append(modules)
    return swapped_groups, biases


def _varint_bytes(largest: int) -> int:
    """Bytes of the unsigned LEB128 varint of ``largest``."""
    return max(1, -(-largest.bit_length() // 7))


def _check_declared_sizes(path: str, header: FileHeader, expected: dict[str, _Expected],
                          row_offsets: dict[str, _RowOffsets]) -> None:
    """Every size the header declares is one ``model`` can hold, before any
    tensor data is read: stored shapes, packed-bool shapes, encoded shapes and
    the stored length of each encoding."""
    meta, entries = header.meta, header.entries
    unexpected = sorted(set(entries) - set(expected))
    for key, target in meta["aliases"].items():
        if key not in expected or key in entries or target not in entries:
            raise _corrupt(path, f"alias {key[:80]!r} -> {target[:80]!r}")
    missing = sorted(set(expected) - set(entries) - set(meta["aliases"]))
    if missing or unexpected:
        raise ValueError(f"path: {path!r} does not match model: missing {missing[:5]}, unexpected "
                         f"{[k[:80] for k in unexpected[:5]]}"
                         + (" (and more)" if len(missing) > 5 or len(unexpected) > 5 else ""))
    width_of = {key: offsets.width for offsets in row_offsets.values() for key in offsets.nnz_keys}
    for key, entry in entries.items():
        want = expected[key]
        ok, shape = True, _declared_shape(meta, key, entry)
        if key in meta["encoded"]:
            how = meta["encoded"][key][0]
            if how == "counts":
                ok = key in row_offsets
            elif how == "varint_row_deltas":
                ok = key in width_of and _numel(entry.shape) <= shape[0] * _varint_bytes(max(width_of[key] - 1, 0))
        if not ok or not want.admits(shape):
            raise ValueError(f"path: {path!r} does not match model at {key!r}: file declares shape "
                             f"{list(shape)[:8]} (stored as {entry.dtype_name} {list(entry.shape)[:8]}), model "
                             f"has " + (f"{list(want.shape)}" if want.shape is not None else
                                        f"at most {want.max_length} entries"))


def _narrowed(key: str, stored: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Undoes "narrow": exact by construction, so a value the target dtype
    cannot hold means the file is corrupt."""
    if dtype in _INT_DTYPES and stored.dtype in _INT_DTYPES:
        info = torch.iinfo(dtype)
        if stored.numel() and not (info.min <= int(stored.min()) and int(stored.max()) <= info.max):
            raise ValueError(f"encoding of {key!r}: values outside {dtype}")
        return stored.to(dtype)
    if dtype == torch.float32 and stored.dtype in (torch.float16, torch.bfloat16):
        return stored.to(dtype)
    raise ValueError(f"encoding of {key!r}: cannot narrow {dtype} to {stored.dtype}")


def _check_row_offsets(key: str, row_ptr: torch.Tensor, offsets: _RowOffsets) -> int:
    """Row offsets start at 0, never decrease, and give each row at most
    ``width`` entries; compared, not subtracted, so no difference can wrap.
    Returns nnz."""
    if row_ptr.dtype != torch.int64 or tuple(row_ptr.shape) != (offsets.rows + 1,):
        raise ValueError(f"{key!r}: expected int64 row offsets of shape [{offsets.rows + 1}], "
                         f"got {row_ptr.dtype} {list(row_ptr.shape)}")
    if int(row_ptr[0]) != 0 or bool((row_ptr[1:] < row_ptr[:-1]).any()):
        raise ValueError(f"{key!r}: row offsets must start at 0 and never decrease")
    nnz = int(row_ptr[-1])
    if nnz > offsets.rows * offsets.width or bool((row_ptr[1:] - row_ptr[:-1] > offsets.width).any()):
        raise ValueError(f"{key!r}: a row holds more than {offsets.width} entries")
    return nnz


def _decode(tensors: dict[str, torch.Tensor], encoded: dict[str, list], row_offsets: dict[str, _RowOffsets]
            ) -> None:
    """Undoes :func:`_encode_sparse_linear` and :func:`_narrow_floats`, in place,
    checking every count and offset before it is used: row offsets first, then
    the column deltas and row scales that need them."""
    for key, (how, dtype_name, _shape, *_extra) in encoded.items():
        if how == "counts":
            counts = tensors[key]
            width = row_offsets[key].width
            if counts.dtype not in _INT_DTYPES or (counts.numel() and (int(counts.min()) < 0
                                                                      or int(counts.max()) > width)):
                raise ValueError(f"encoding of {key!r}: row counts must be integers in [0, {width}]")
            value = torch.zeros(counts.numel() + 1, dtype=torch.int64)
            torch.cumsum(counts.to(torch.int64), 0, out=value[1:])  # at most rows * width: no overflow
            tensors[key] = _narrowed(key, value, _DECODED_DTYPES[dtype_name])
        elif how == "narrow":
            tensors[key] = _narrowed(key, tensors[key], _DECODED_DTYPES[dtype_name])
    nnz_of = {}
    for key, offsets in row_offsets.items():
        nnz = nnz_of[key] = _check_row_offsets(key, tensors[key], offsets)
        for nnz_key in offsets.nnz_keys:
            length = encoded[nnz_key][2][0] if nnz_key in encoded else tensors[nnz_key].shape[0]
            if length != nnz:
                raise ValueError(f"{nnz_key!r} holds {length} entries, its row offsets {nnz}")
    for key, (how, dtype_name, _shape, *extra) in encoded.items():
        if how not in ("varint_row_deltas", "nonempty_rows"):
            continue
        prefix = key.rpartition(".")[0]
        row_key = f"{prefix}.row_ptr"
        if extra != [row_key] or row_key not in row_offsets or key != f"{prefix}." + (
                "col_idx" if how == "varint_row_deltas" else "row_scales"):
            raise ValueError(f"encoding of {key!r} names the wrong row offsets")
        row_ptr, dtype = tensors[row_key], _DECODED_DTYPES[dtype_name]
        if how == "varint_row_deltas":
            width = row_offsets[row_key].width
            if dtype not in _INT_DTYPES:
                raise ValueError(f"encoding of {key!r}: column indices must be integers")
            deltas = _varint_decode(tensors[key], nnz_of[row_key])
            if deltas.numel() and int(deltas.max()) >= width:
                raise ValueError(f"encoding of {key!r}: a column difference is {int(deltas.max())}, "
                                 f"more than the {width} columns")
            running = torch.cumsum(deltas, 0)  # at most nnz * width: no overflow
            before_row = torch.cat([running.new_zeros(1), running])[row_ptr[:-1]]  # sum up to each row's start
            rows = torch.repeat_interleave(torch.arange(row_ptr.numel() - 1), row_ptr[1:] - row_ptr[:-1])
            columns = running - before_row[rows]
            if columns.numel() and int(columns.max()) >= width:
                raise ValueError(f"encoding of {key!r}: a column index is past the {width} columns")
            tensors[key] = columns.to(dtype)
        else:
            rows = row_ptr[1:] != row_ptr[:-1]
            stored = tensors[key]
            if int(rows.sum()) != stored.numel() or not stored.is_floating_point():
                raise ValueError(f"encoding of {key!r} does not match its row offsets")
            value = torch.full((rows.numel(),), _EMPTY_ROW_SCALE, dtype=dtype)
            value[rows] = stored.to(dtype)
            tensors[key] = value
    for key, (_how, dtype_name, shape, *_extra) in encoded.items():
        if list(tensors[key].shape) != list(shape) or tensors[key].dtype != _DECODED_DTYPES[dtype_name]:
            raise ValueError(f"encoding of {key!r} gives {tensors[key].dtype} {list(tensors[key].shape)}, "
                             f"expected {dtype_name} {shape}")


def _header_limit(model: nn.Module) -> int:
    entries = len(model.state_dict()) + sum(1 for _ in model.modules())
    return _HEADER_BYTES_BASE + _HEADER_BYTES_PER_ENTRY * entries


def _read(path: str, model: nn.Module
          ) -> tuple[dict, dict[str, nn.Module], dict[str, torch.Tensor], tuple[list, list]]:
    """The metadata, the layers to swap in, the tensors of the file at
    ``path``, every one checked against ``model``, and the swapped tied groups
    (see :func:`_check_ties`). Raises ``ValueError``."""
    header, read_body = _read_header(path, _header_limit(model))
    meta = header.meta
    try:
        resized = plan_resize(model, meta.get("resized", {}))
    except ValueError as error:
        raise ValueError(f"path: {path!r} does not match model: {error}") from None
    swaps, expected, row_offsets = _expected_state(path, model, meta, resized,
                                                   set(header.entries) | set(meta["aliases"]))
    for key in meta["aliases"]:
        if key in row_offsets or any(key in offsets.nnz_keys for offsets in row_offsets.values()):
            raise _corrupt(path, f"alias of packed tensor {key!r}")
    ties = _check_ties(path, model, meta, swaps)
    _check_declared_sizes(path, header, expected, row_offsets)
    body = read_body()
    tensors = _tensor_views(header, body)
    if _checksum(tensors) != meta["sha256"]:
        raise _corrupt(path, "checksum of the tensors does not match")
    try:
        _decode(tensors, meta["encoded"], row_offsets)
    except (ValueError, TypeError, RuntimeError, IndexError) as error:
        raise _corrupt(path, str(error)) from None
    for key, shape in meta["packed_bool"].items():
        bits = np.unpackbits(tensors[key].numpy(), count=_numel(shape), bitorder="little")
        tensors[key] = torch.from_numpy(bits.view(np.bool_)).reshape(shape)
    for key, target in meta["aliases"].items():
        tensors[key] = tensors[target]
    for key, want in expected.items():
        got = tensors[key]
        if not want.admits(got.shape) or (want.dtype is not None and got.dtype != want.dtype):
            raise ValueError(f"path: {path!r} does not match model at {key!r}: file has {got.dtype} "
                             f"{tuple(got.shape)}, model has {want.dtype} {want.shape}")
    swapped = tuple(f"{name}." for name in swaps)
    for key, value in tensors.items():
        # A layer may keep the tensors it is given: none of them may be a view
        # that keeps the whole file buffer alive.
        stored_key = meta["aliases"].get(key, key)
        if key.startswith(swapped) and stored_key not in meta["encoded"] and stored_key not in meta["packed_bool"]:
            tensors[key] = value.clone()
    return meta, swaps, tensors, ties


def load_(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a file written by :func:`save` into ``model`` (a freshly built
    model of the original architecture, or the same compressed model): swaps
    in the recorded layers, attaches the recorded masks, and copies every
    tensor exactly. Raises ``ValueError`` for a truncated, corrupt, foreign or
    mismatched file, naming the path and the problem, and leaves ``model``
    unchanged. Returns ``model``."""
    path = _check_args(model, path)
    meta, swaps, tensors, ties = _read(path, model)
    modules = dict(model.named_modules())
    for name, layer in swaps.items():
        prefix = f"{name}."
        LAYER_CLASSES[type(layer).__name__].upgrade_keys(tensors, prefix)  # keys of earlier files
        try:
            layer.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)},
                                  strict=True)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ValueError(f"path: {path!r}: cannot rebuild layer {name!r} ({type(layer).__name__}): "
                             f"{error}") from None
        current = modules[name]
        device = next(iter(current.parameters()), next(iter(current.buffers()), torch.empty(0))).device
        swaps[name] = layer.to(device)
    # Everything checked: apply the structure, then copy.
    if meta.get("resized"):
        resize_(model, meta["resized"])
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
    tables, biases = ties  # one tensor again where loading gave each layer an equal copy
    for head, *others in tables:
        for name in others:
            model.get_submodule(name).share_table(model.get_submodule(head))
    for head, key in biases:
        module_name, _, attr = key.rpartition(".")
        model.get_submodule(head).share_bias(getattr(model.get_submodule(module_name), attr))
    return model
