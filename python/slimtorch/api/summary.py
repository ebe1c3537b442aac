"""``summary(model)``: per-layer type, shape, sparsity, dtype, bytes and
compression ratio, with totals; a printable table that is also plain data.

A row is a module that holds tensors itself (parameters or persistent
buffers, not counting its children); a parametrized (pruned) module is one row that includes
its mask. ``bytes`` is what the module holds now; ``dense_bytes`` is what the
same layer holds as a dense float32 layer, and ``ratio = dense_bytes / bytes``.
Sparsity is the fraction of exact zeros in the (effective) weight. A tensor
shared by several modules (a head tied to the token embedding) is counted
once, in the first row that holds it; later rows name it in ``tied_to``
(also an int8 table that a compressed embedding and its tied head share).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from slimtorch.api.pruning import storage_key

__all__ = ["LayerSummary", "ModelSummary", "summary"]

_FP32_BYTES = 4


@dataclass(frozen=True)
class LayerSummary:
    """One row of :class:`ModelSummary`."""

    name: str
    type: str
    shape: tuple[int, ...]
    dtype: str
    weight_numel: int
    zeros: int
    bytes: int
    dense_bytes: int
    tied_to: str = ""  # the row that holds (and counts) this module's shared weight

    @property
    def sparsity(self) -> float:
        return self.zeros / self.weight_numel if self.weight_numel else 0.0

    @property
    def ratio(self) -> float:
        return self.dense_bytes / self.bytes if self.bytes else 1.0


@dataclass(frozen=True)
class ModelSummary:
    """Rows plus totals. ``str()`` gives the table, ``to_dict()`` the data."""

    layers: list[LayerSummary]

    @property
    def bytes(self) -> int:
        return sum(layer.bytes for layer in self.layers)

    @property
    def dense_bytes(self) -> int:
        return sum(layer.dense_bytes for layer in self.layers)

    @property
    def ratio(self) -> float:
        return self.dense_bytes / self.bytes if self.bytes else 1.0

    @property
    def sparsity(self) -> float:
        """Fraction of zeros over all weights (the ``weight`` of each row)."""
        numel = sum(layer.weight_numel for layer in self.layers)
        return sum(layer.zeros for layer in self.layers) / numel if numel else 0.0

    def to_dict(self) -> dict:
        rows = [dict(asdict(layer), sparsity=layer.sparsity, ratio=layer.ratio) for layer in self.layers]
        totals = {"bytes": self.bytes, "dense_bytes": self.dense_bytes, "ratio": self.ratio, "sparsity": self.sparsity}
        return {"layers": rows, "total": totals}

    def __str__(self) -> str:
        header = ("name", "type", "shape", "sparsity", "dtype", "bytes", "ratio")
        rows = [
            ((layer.name or "(model)") + (f" (tied to {layer.tied_to})" if layer.tied_to else ""), layer.type,
             "x".join(map(str, layer.shape)) or "-", f"{layer.sparsity:.1%}" if layer.weight_numel else "-",
             layer.dtype, f"{layer.bytes:,}", f"{layer.ratio:.2f}x")
            for layer in self.layers
        ]
        rows.append(("total", "", "", f"{self.sparsity:.1%}", "", f"{self.bytes:,}", f"{self.ratio:.2f}x"))
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        right = {3, 5, 6}

        def fmt(row: tuple) -> str:
            return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                             for i, (c, w) in enumerate(zip(row, widths))).rstrip()

        rule = "-" * len(fmt(header))
        return "\n".join([fmt(header), rule, *map(fmt, rows[:-1]), rule, fmt(rows[-1])])


def _own_tensors(module: nn.Module) -> list[torch.Tensor]:
    tensors = [t for t in module._parameters.values() if t is not None]
    # Persistent buffers only: caches a layer rebuilds (e.g. a dense fallback
    # copy) are not what it stores.
    tensors += [t for k, t in module._buffers.items() if t is not None and k not in module._non_persistent_buffers_set]
    if parametrize.is_parametrized(module):
        for plist in module.parametrizations.values():
            tensors += list(plist.parameters()) + list(plist.buffers())
    return tensors


def _nbytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _row(name: str, module: nn.Module, holders: dict[tuple, str]) -> LayerSummary | None:
    """The module's row; ``holders`` maps each storage counted so far to its row."""
    all_tensors = _own_tensors(module)
    if not all_tensors:
        return None
    tensors, tied_to = [], ""
    for t in all_tensors:
        holder = holders.setdefault(storage_key(t), name) if t.numel() else name
        if holder == name:
            tensors.append(t)
        else:
            tied_to = tied_to or holder
    nbytes = _nbytes(tensors)
    weight = None
    if "weight" in module._parameters or parametrize.is_parametrized(module, "weight"):
        weight = module.weight.detach()
    if weight is not None:
        # A plain (possibly masked) layer: dense fp32 holds each float value once, no mask.
        dense_numel = sum(t.numel() for t in tensors if t.dtype != torch.bool)
        counted = holders.get(storage_key(weight), name) == name  # not another row's (tied) weight
        return LayerSummary(name, type(module).__name__.removeprefix("Parametrized"), tuple(weight.shape),
                            str(weight.dtype).removeprefix("torch."), weight.numel() if counted else 0,
                            int((weight == 0).sum()) if counted else 0, nbytes, dense_numel * _FP32_BYTES, tied_to)
    to_dense = getattr(module, "to_dense", None)
    if callable(to_dense) and (hasattr(module, "out_features") or hasattr(module, "num_embeddings")):
        # A compressed layer: compare with the dense layer it stands for. Its
        # table may be another row's (a head sharing a tied embedding's int8
        # table): then only what it holds itself (a bias) counts here.
        dense = to_dense()
        w = dense.weight.detach()
        bias_numel = dense.bias.numel() if getattr(dense, "bias", None) is not None else 0
        counted = not tied_to
        largest = max(tensors or all_tensors, key=lambda t: t.numel() * t.element_size())
        return LayerSummary(name, type(module).__name__, tuple(w.shape), str(largest.dtype).removeprefix("torch."),
                            w.numel() if counted else 0, int((w == 0).sum()) if counted else 0, nbytes,
                            ((w.numel() if counted else 0) + bias_numel) * _FP32_BYTES, tied_to)
    largest = max(tensors, key=lambda t: t.numel())
    return LayerSummary(name, type(module).__name__, tuple(largest.shape), str(largest.dtype).removeprefix("torch."),
                        0, 0, nbytes, sum(t.numel() for t in tensors) * _FP32_BYTES)


def summary(model: nn.Module) -> ModelSummary:
    """Per-layer type, shape, sparsity, dtype, bytes and compression ratio.

    ``print(summary(model))`` shows a table with totals; the returned
    :class:`ModelSummary` holds the same numbers as data (``.layers``,
    ``.bytes``, ``.ratio``, ``.sparsity``, ``.to_dict()``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    inside_parametrizations = {id(m) for mod in model.modules() if parametrize.is_parametrized(mod)
                               for m in mod.parametrizations.modules()}
    rows = []
    holders: dict[tuple, str] = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if id(module) in inside_parametrizations:
                continue
            row = _row(name, module, holders)
            if row is not None:
                rows.append(row)
    return ModelSummary(rows)
