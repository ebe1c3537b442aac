"""Int8Embedding: an ``nn.Embedding`` whose table is stored as int8, one
symmetric scale per row (per token), and dequantized only for the rows a
batch looks up.

The rows are quantized with the same rule as an int8 linear weight's output
channels (:func:`slimtorch.ops.qgemm_quantize_weight`: ``scale = max|row| /
127``, round half to even), so a language-model head tied to the embedding shares the same int8 codes and
scales: :meth:`Int8Embedding.share_table` makes the layer use another layer's
``weight_int8`` / ``weight_scale`` tensors themselves (an ``Int8Linear`` head
whose weight is the table, or another ``Int8Embedding``), so the table is held
and saved once. The shared tensors are read-only: loading a state_dict gives
the layer new tensors instead of writing into shared ones.
"""

from __future__ import annotations

import torch
from torch import nn

from slimtorch import ops
from slimtorch._checks import check_int, check_module, check_tensor
from slimtorch.nn._shared import convert_once
from slimtorch.nn.registry import register_layer_class

__all__ = ["Int8Embedding"]

_INDEX_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def _check_table(weight_int8: object, weight_scale: object, num_embeddings: int, embedding_dim: int,
                 prefix: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """The packed table is what this layer needs, or a ValueError/TypeError naming the key."""
    weight_int8 = check_tensor(f"{prefix}weight_int8", weight_int8, (torch.int8,))
    weight_scale = check_tensor(f"{prefix}weight_scale", weight_scale, (torch.float32,))
    if tuple(weight_int8.shape) != (num_embeddings, embedding_dim):
        raise ValueError(f"{prefix}weight_int8: expected shape {(num_embeddings, embedding_dim)}, "
                         f"got {tuple(weight_int8.shape)}")
    if tuple(weight_scale.shape) != (num_embeddings,):
        raise ValueError(f"{prefix}weight_scale: expected shape ({num_embeddings},), got {tuple(weight_scale.shape)}")
    if weight_int8.numel() and int(weight_int8.min()) < -127:
        raise ValueError(f"{prefix}weight_int8: expected symmetric int8 codes in [-127, 127], found -128")
    if weight_scale.numel() and not bool(((weight_scale > 0) & torch.isfinite(weight_scale)).all()):
        raise ValueError(f"{prefix}weight_scale: expected finite positive scales")
    return weight_int8, weight_scale


class Int8Embedding(nn.Module):
    """``weight[ids]`` with ``weight`` stored as int8 codes and per-row scales.

    Buffers (the whole state_dict): ``weight_int8`` int8 ``[num_embeddings,
    embedding_dim]`` and ``weight_scale`` float32 ``[num_embeddings]``. The
    table is frozen. ``padding_idx`` is kept for ``to_dense()`` and gives the
    usual zero row when the table was built from an embedding whose padding
    row is zero.

    Args:
        num_embeddings, embedding_dim: sizes, as ``nn.Embedding``.
        padding_idx: as ``nn.Embedding`` (non-negative or None).
        dtype: dtype of the output rows (float32, float16 or bfloat16).
        device: where the buffers live.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.num_embeddings = check_int("num_embeddings", num_embeddings, minimum=0)
        self.embedding_dim = check_int("embedding_dim", embedding_dim, minimum=0)
        if padding_idx is not None:
            padding_idx = check_int("padding_idx", padding_idx, minimum=-num_embeddings, maximum=num_embeddings - 1)
            padding_idx %= max(num_embeddings, 1)
        self.padding_idx = padding_idx
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise TypeError(f"dtype: expected float32, float16 or bfloat16, got {dtype}")
        self.dtype = dtype
        self.register_buffer("weight_int8", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.ones(num_embeddings, dtype=torch.float32, device=device))

    @classmethod
    def from_dense(cls, embedding: nn.Embedding) -> Int8Embedding:
        """Quantize ``embedding`` (not modified) row by row into an Int8Embedding on its device."""
        if not isinstance(embedding, nn.Embedding):
            raise TypeError(f"embedding: expected a torch.nn.Embedding, got {type(embedding).__name__}")
        if embedding.max_norm is not None:
            raise ValueError("embedding: max_norm renormalises rows on lookup, which a frozen int8 table cannot do")
        weight = embedding.weight.detach()
        if weight.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise TypeError(f"embedding: expected a float32, float16 or bfloat16 weight, got {weight.dtype}")
        q, scale = ops.qgemm_quantize_weight(weight)
        layer = cls(embedding.num_embeddings, embedding.embedding_dim, embedding.padding_idx,
                    dtype=weight.dtype, device=weight.device)
        layer.weight_int8.copy_(q)
        layer.weight_scale.copy_(scale)
        return layer

    def share_table(self, owner: nn.Module) -> Int8Embedding:
        """Use ``owner``'s ``weight_int8`` and ``weight_scale`` tensors as this
        layer's table (the same tensors, not copies; they may be on another
        device than the current table, e.g. when this layer was built on
        ``"meta"``). ``owner``: an ``Int8Linear`` whose weight is this table
        (a tied head: ``[num_embeddings, embedding_dim]``, one scale per output
        channel = per row) or another ``Int8Embedding``. Returns ``self``."""
        check_module("owner", owner)
        weight_int8, weight_scale = _check_table(getattr(owner, "weight_int8", None),
                                                 getattr(owner, "weight_scale", None), self.num_embeddings,
                                                 self.embedding_dim, "owner.")
        if weight_scale.device != weight_int8.device:
            raise ValueError(f"owner.weight_scale: expected a tensor on {weight_int8.device}, "
                             f"got {weight_scale.device}")
        self._buffers["weight_int8"] = weight_int8
        self._buffers["weight_scale"] = weight_scale
        return self

    def shares_table_with(self, other: nn.Module) -> bool:
        """Whether ``other`` holds this layer's table and scales in the same memory."""
        mine = (self.weight_int8, self.weight_scale)
        theirs = (getattr(other, "weight_int8", None), getattr(other, "weight_scale", None))
        return all(isinstance(t, torch.Tensor) and t.data_ptr() == m.data_ptr() and t.shape == m.shape
                   and t.device == m.device for m, t in zip(mine, theirs))

    def dequantized_weight(self) -> torch.Tensor:
        """The whole table as float32 ``q * scale``."""
        return self.weight_int8.float() * self.weight_scale[:, None]

    def to_dense(self) -> nn.Embedding:
        """An ``nn.Embedding`` holding the dequantized table (in ``dtype``)."""
        embedding = nn.Embedding(self.num_embeddings, self.embedding_dim, self.padding_idx,
                                 device=self.weight_int8.device, dtype=self.dtype)
        with torch.no_grad():
            embedding.weight.copy_(self.dequantized_weight())
        return embedding

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids``: integer tensor of any shape; returns ``[*ids.shape, embedding_dim]``."""
        if not isinstance(ids, torch.Tensor):
            raise TypeError(f"ids: expected a torch.Tensor, got {type(ids).__name__}")
        if ids.dtype not in _INDEX_DTYPES:
            raise TypeError(f"ids: expected an integer tensor, got {ids.dtype}")
        if ids.device != self.weight_int8.device:
            raise ValueError(f"ids: expected a tensor on {self.weight_int8.device} (the layer's device), "
                             f"got {ids.device}")
        # Only the looked-up rows are widened: memory follows the batch, not the vocabulary.
        flat = ids.reshape(-1).long()
        rows = self.weight_int8.index_select(0, flat).float() * self.weight_scale.index_select(0, flat)[:, None]
        return rows.to(self.dtype).view(*ids.shape, self.embedding_dim)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        keys = (prefix + "weight_int8", prefix + "weight_scale")
        if all(key in state_dict for key in keys):
            try:  # the whole table is checked before either buffer is touched
                table = _check_table(state_dict[keys[0]], state_dict[keys[1]], self.num_embeddings,
                                     self.embedding_dim, prefix)
            except (TypeError, ValueError) as error:
                error_msgs.append(str(error))
                return
            # New tensors, never a write into the current ones: those may be
            # shared with a tied head whose kernel layout was built from them.
            device = self.weight_int8.device
            self._buffers["weight_int8"], self._buffers["weight_scale"] = (
                t.detach().to(device, copy=True) for t in table)
        elif any(key in state_dict for key in keys):
            # A half table would pair new codes with old scales: refuse it even when strict=False.
            present = [key for key in keys if key in state_dict]
            error_msgs.append(f"{present[0]}: weight_int8 and weight_scale must be loaded together")
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def _apply(self, fn, recurse=True):
        # .half() / .to(dtype) would round the float32 scales; they follow
        # device moves only (as Int8Linear's do). A table shared with a tied
        # head is converted once for both.
        scale = self.weight_scale
        super()._apply(lambda t: convert_once(fn, t), recurse)
        device = self.weight_scale.device
        if self.weight_scale.dtype != torch.float32:
            self._buffers["weight_scale"] = convert_once(fn, scale, "float32", lambda t: t.to(device))
        return self

    def extra_repr(self) -> str:
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            text += f", padding_idx={self.padding_idx}"
        return text + f", dtype={str(self.dtype).removeprefix('torch.')}"


def _build(init: dict) -> Int8Embedding:
    return Int8Embedding(**init)


@register_layer_class("Int8Embedding", lambda layer: "int8_embedding", _build, replaces=(nn.Embedding,),
                      sizes=("num_embeddings", "embedding_dim"))
def _init_args(layer: nn.Module) -> dict:
    check_module("layer", layer)
    return {"num_embeddings": layer.num_embeddings, "embedding_dim": layer.embedding_dim,
            "padding_idx": layer.padding_idx, "dtype": layer.dtype}
