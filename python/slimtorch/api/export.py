"""``export_chain(model, path)``: a chain of layers as a file that a program
without Python runs on the kernel library alone (``examples/edge``).

What can be exported: an ``nn.Sequential`` (Sequentials nested in it are
flattened) of ``nn.Linear``, :class:`slimtorch.nn.SparseLinear` and
:class:`slimtorch.nn.Int8Linear` layers with ``nn.ReLU`` / ``nn.GELU``
between them; ``nn.Identity``, ``nn.Dropout`` (inference: the identity) and
``nn.Flatten()`` (the chain works on flat rows) are dropped. Any other module,
or a module that is not an ``nn.Sequential`` at the top, is refused with a
``ValueError`` naming its path and type before anything is written. The chain
runs on float32 rows ``[batch, in_features]`` and gives float32 rows
``[batch, out_features]``.

File format ("slimtorch-chain", version 1): a safetensors file (no pickle)
whose ``__metadata__["slimtorch_chain"]`` is a JSON object

  ``format``  "slimtorch-chain";  ``version``  1
  ``in_features`` / ``out_features``  of the whole chain
  ``layers``  a list, in order, of objects with ``op`` and ``name`` (the
              module's path in the model) and, per ``op``:

  - ``"linear"``: ``in_features``, ``out_features``, ``bias`` (bool);
    tensors ``weight`` ``[out, in]`` (float32, float16 or bfloat16) and ``bias``.
  - ``"sparse_linear"``: ``in_features``, ``out_features``, ``bias``,
    ``nnz``, ``values_dtype`` ("float32" | "float16" | "bfloat16" | "int8"),
    ``scheme`` (null for float values, "int8_weight_only" for int8 values
    times float activations, "int8_dynamic" for rows quantized to uint8 on
    the fly) and ``columns`` ("varint_row_deltas" | "plain"); tensors
    ``row_counts`` ``[out]`` (nonzeros per row, uint8 / int16 / int32),
    ``columns``, ``values`` ``[nnz]``, ``row_scales`` (int8 values only: one
    per row that holds nonzeros, in row order) and ``bias``. ``columns``
    "plain": the column of every nonzero, as uint8 / int16 / int32;
    "varint_row_deltas": per row, its first column and then the differences
    to the previous column (columns ascend within each row), as unsigned
    LEB128 varints in one uint8 stream (7 bits per byte, low bits first, the
    high bit set on every byte but a number's last).
  - ``"int8_linear"``: ``in_features``, ``out_features``, ``bias``,
    ``scheme`` ("int8_dynamic" | "int8_weight_only" | "int8_static") and, for
    "int8_static", ``activation_scale`` (a float32 value) and
    ``activation_zero_point``; tensors ``weight_int8`` ``[out, in]`` (int8,
    symmetric per output channel) ``weight_scale`` ``[out]`` and ``bias``.
  - ``"relu"``; ``"gelu"`` with ``approximate`` ("none" | "tanh").

Tensors are named ``"<index in layers>.<tensor>"``. A float tensor that is
float32 in the model (scales, biases, dense weights) is stored as float16
(else bfloat16) where every value converts exactly, so reading it back as
float32 gives the same bits; SparseLinear values keep their dtype, so the
same kernel runs as in Python. The file is written atomically.
"""

from __future__ import annotations

import itertools
import json
import os

import torch
from torch import nn

from slimtorch._checks import check_module
from slimtorch._io import atomic_write_bytes
from slimtorch.nn import Int8Linear, SparseLinear
from slimtorch.schemes import INT8_DYNAMIC, INT8_STATIC, INT8_WEIGHT_ONLY, SCHEMES

__all__ = ["export_chain", "CHAIN_FORMAT", "CHAIN_VERSION", "CHAIN_METADATA_KEY"]

CHAIN_FORMAT = "slimtorch-chain"
CHAIN_VERSION = 1
CHAIN_METADATA_KEY = "slimtorch_chain"

_SKIPPED = (nn.Identity, nn.Dropout)
_SUPPORTED = ("nn.Linear, slimtorch.nn.SparseLinear, slimtorch.nn.Int8Linear, nn.ReLU, nn.GELU, nn.Identity, "
              "nn.Dropout, nn.Flatten()")
_MISSING = object()


def _attr(module: nn.Module, names: tuple[str, ...], default: object = _MISSING) -> object:
    """The first of ``names`` that ``module`` has: the current spelling first,
    so a deprecated alias (and its warning) is reached only on an older layer."""
    for name in names:
        value = getattr(module, name, _MISSING)
        if value is not _MISSING:
            return value
    if default is _MISSING:
        raise ValueError(f"model: {type(module).__name__} has none of the attributes {', '.join(names)}")
    return default


def _int8_scheme(layer: Int8Linear) -> str:
    scheme = _attr(layer, ("scheme", "mode"))
    scheme = scheme if str(scheme).startswith("int8_") else f"int8_{scheme}"  # old spelling: "dynamic"
    if scheme not in SCHEMES:
        raise ValueError(f"model: Int8Linear with unknown scheme {scheme!r}")
    return scheme


def _sparse_scheme(layer: SparseLinear) -> str | None:
    scheme = _attr(layer, ("scheme", "activations"), None)
    if scheme == INT8_DYNAMIC:
        return scheme
    if scheme not in (None, "float", INT8_WEIGHT_ONLY):
        raise ValueError(f"model: SparseLinear with unsupported scheme {scheme!r}")
    return INT8_WEIGHT_ONLY if layer.values.dtype == torch.int8 else None


def _flatten(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The chain's modules with their paths, nested Sequentials flattened;
    raises ValueError at the first module that cannot be exported."""
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"model: export_chain takes an nn.Sequential (of {_SUPPORTED}), "
                         f"got {type(model).__name__}")
    chain: list[tuple[str, nn.Module]] = []

    def visit(prefix: str, sequential: nn.Sequential) -> None:
        for name, module in sequential.named_children():
            path = f"{prefix}{name}"
            if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
                visit(path + ".", module)
            elif type(module) is nn.Flatten:
                if (module.start_dim, module.end_dim) != (1, -1):
                    raise ValueError(f"model: module {path!r} (Flatten(start_dim={module.start_dim}, "
                                     f"end_dim={module.end_dim})) is not supported: only Flatten() over "
                                     f"every dimension after the batch")
            elif type(module) in _SKIPPED:
                continue
            elif type(module) in (nn.Linear, SparseLinear, Int8Linear, nn.ReLU, nn.GELU):
                chain.append((path, module))
            else:
                raise ValueError(f"model: module {path!r} ({type(module).__module__}.{type(module).__qualname__}) "
                                 f"is not supported by export_chain; supported: {_SUPPORTED}")

    visit("", model)
    return chain


def _compact_float(t: torch.Tensor) -> torch.Tensor:
    """A float32 tensor as float16, else bfloat16, where that is exact (same bits back)."""
    t = t.detach().cpu().contiguous()
    if t.dtype != torch.float32 or t.numel() == 0:
        return t
    bits = t.view(torch.int32)
    for dtype in (torch.float16, torch.bfloat16):
        narrow = t.to(dtype)
        if torch.equal(narrow.float().view(torch.int32), bits):
            return narrow
    return t


def _smallest_int(t: torch.Tensor) -> torch.Tensor:
    """Non-negative integers in the narrowest of uint8 / int16 / int32."""
    high = int(t.max()) if t.numel() else 0
    for dtype in (torch.uint8, torch.int16, torch.int32):
        if high <= torch.iinfo(dtype).max:
            return t.to(dtype).contiguous()
    raise ValueError(f"model: integer {high} too large for the chain format")


def _varint_row_deltas(columns: torch.Tensor, counts: torch.Tensor) -> torch.Tensor | None:
    """The columns as varint row deltas (see the module docstring), or None
    where the columns do not ascend within each row."""
    if columns.numel() == 0:
        return torch.empty(0, dtype=torch.uint8)
    starts = torch.cumsum(counts, 0) - counts
    first = torch.zeros(columns.numel(), dtype=torch.bool)
    first[starts[counts > 0]] = True
    previous = torch.cat([columns.new_zeros(1), columns[:-1]])
    deltas = torch.where(first, columns, columns - previous)
    if bool((deltas[~first] <= 0).any()):
        return None
    # Byte j of a number holds its bits 7j..7j+6; every byte but the last has the high bit.
    lengths = torch.ones_like(deltas)
    for shift in range(7, 63, 7):
        lengths += deltas >= (1 << shift)
    owner = torch.repeat_interleave(torch.arange(deltas.numel()), lengths)
    byte_index = torch.arange(owner.numel()) - (torch.cumsum(lengths, 0) - lengths)[owner]
    low_bits = (deltas[owner] >> (7 * byte_index)) & 0x7F
    continues = byte_index < lengths[owner] - 1
    return (low_bits | (continues.to(torch.int64) << 7)).to(torch.uint8)


def _bias(layer: nn.Module, tensors: dict[str, torch.Tensor], key: str) -> bool:
    bias = getattr(layer, "bias", None)
    if bias is None:
        return False
    tensors[key + "bias"] = _compact_float(bias.float())
    return True


def _describe(index: int, path: str, layer: nn.Module, tensors: dict[str, torch.Tensor]) -> dict:
    key = f"{index}."
    entry: dict = {"op": "", "name": path}
    if isinstance(layer, (nn.ReLU, nn.GELU)):
        entry["op"] = "relu" if isinstance(layer, nn.ReLU) else "gelu"
        if isinstance(layer, nn.GELU):
            entry["approximate"] = layer.approximate
        return entry
    entry.update(in_features=int(layer.in_features), out_features=int(layer.out_features))
    if isinstance(layer, nn.Linear):
        entry["op"] = "linear"
        weight = layer.weight.detach()
        if weight.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"model: module {path!r} (Linear) has {weight.dtype} weights; "
                             f"expected float32, float16 or bfloat16")
        tensors[key + "weight"] = _compact_float(weight)
        entry["bias"] = _bias(layer, tensors, key)
    elif isinstance(layer, SparseLinear):
        entry["op"] = "sparse_linear"
        row_ptr = layer.row_ptr.detach().cpu().to(torch.int64)
        counts = row_ptr[1:] - row_ptr[:-1]
        col_idx = layer.col_idx.detach().cpu()
        columns = (col_idx.to(torch.int64) & 0xFFFF) if col_idx.dtype == torch.int16 else col_idx.to(torch.int64)
        values = layer.values.detach().cpu().contiguous()
        entry.update(nnz=int(values.numel()), values_dtype=str(values.dtype).removeprefix("torch."),
                     scheme=_sparse_scheme(layer))
        tensors[key + "row_counts"] = _smallest_int(counts)
        varints = _varint_row_deltas(columns, counts)
        entry["columns"] = "plain" if varints is None else "varint_row_deltas"
        tensors[key + "columns"] = _smallest_int(columns) if varints is None else varints
        tensors[key + "values"] = values
        if values.dtype == torch.int8:
            # An empty row's scale multiplies nothing: only the others are kept.
            tensors[key + "row_scales"] = _compact_float(layer.row_scales.detach().cpu()[counts > 0].float())
        entry["bias"] = _bias(layer, tensors, key)
    else:
        entry["op"] = "int8_linear"
        scheme = _int8_scheme(layer)
        entry["scheme"] = scheme
        if scheme == INT8_STATIC:
            scale = _attr(layer, ("activation_scale", "input_scale", "_x_scale"))
            zero_point = _attr(layer, ("activation_zero_point", "input_zero_point", "_x_zero_point"))
            entry["activation_scale"] = float(torch.as_tensor(scale, dtype=torch.float32))
            entry["activation_zero_point"] = int(zero_point)
        tensors[key + "weight_int8"] = layer.weight_int8.detach().cpu().contiguous()
        tensors[key + "weight_scale"] = _compact_float(layer.weight_scale.float())
        entry["bias"] = _bias(layer, tensors, key)
    return entry


def export_chain(model: nn.Module, path: str | os.PathLike) -> dict:
    """Writes ``model``, a chain of supported layers, to ``path`` in the
    "slimtorch-chain" format (see the module docstring) for
    ``examples/edge``. Nothing is written when the model is refused.

    Args:
        model: an ``nn.Sequential`` of ``nn.Linear`` / ``SparseLinear`` /
            ``Int8Linear`` with ``nn.ReLU`` / ``nn.GELU`` between them.
        path: the file to create or replace (its directory must exist).

    Returns:
        The chain description written to the file's metadata.
    """
    check_module("model", model)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    chain = _flatten(model)
    tensors: dict[str, torch.Tensor] = {}
    layers = [_describe(i, name, module, tensors) for i, (name, module) in enumerate(chain)]
    sized = [layer for layer in layers if "in_features" in layer]
    if not sized:
        raise ValueError("model: the chain holds no Linear, SparseLinear or Int8Linear layer")
    for before, after in itertools.pairwise(sized):
        if before["out_features"] != after["in_features"]:
            raise ValueError(f"model: module {after['name']!r} takes {after['in_features']} features but "
                             f"{before['name']!r} gives {before['out_features']}")
    description = {"format": CHAIN_FORMAT, "version": CHAIN_VERSION, "in_features": sized[0]["in_features"],
                   "out_features": sized[-1]["out_features"], "layers": layers}
    import safetensors.torch

    metadata = {CHAIN_METADATA_KEY: json.dumps(description, allow_nan=False, separators=(",", ":"))}
    atomic_write_bytes(path, safetensors.torch.save(tensors, metadata))
    return description
