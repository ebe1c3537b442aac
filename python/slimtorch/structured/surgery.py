"""Physically slicing parameters and buffers, and keeping module attributes
(``in_features``, ``num_features``, ``num_heads``, ...) consistent with the
new shapes so the modules' unchanged ``forward`` code runs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PrunedMultiheadAttention(nn.MultiheadAttention):
    """An ``nn.MultiheadAttention`` that lost whole heads.

    ``prune_channels`` turns an ``nn.MultiheadAttention`` into this subclass
    (same parameters, same ``state_dict`` keys) when it removes heads:
    ``num_heads`` drops, ``head_dim`` stays, and the q/k/v projections map
    ``embed_dim -> num_heads * head_dim`` (``inner_dim``), which the stock
    forward cannot express because it derives ``head_dim`` from ``embed_dim``.
    The forward follows the stock one (packed q/k/v projection, additive or
    boolean masks, ``is_causal``, ``need_weights``, ``average_attn_weights``,
    ``batch_first``, unbatched input). A 3-d ``attn_mask`` must have
    ``batch * num_heads`` (the pruned count) entries in its first dimension.
    ``_qkv_same_embed_dim`` is set to False so that torch's fused
    ``TransformerEncoderLayer`` fast path, which assumes ``inner_dim ==
    embed_dim``, is not taken; ``in_proj_weight`` stays packed.
    """

    @property
    def inner_dim(self) -> int:
        return self.num_heads * self.head_dim

    def forward(  # type: ignore[override]
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        T, B, E = query.shape
        S = key.shape[0]
        H, D = self.num_heads, self.head_dim
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q = b_k = b_v = None
        if self.in_proj_bias is not None:
            b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        # [L, B, H*D] -> [B, H, L, D]
        q = F.linear(query, w_q, b_q).view(T, B, H, D).permute(1, 2, 0, 3)
        k = F.linear(key, w_k, b_k).view(S, B, H, D).permute(1, 2, 0, 3)
        v = F.linear(value, w_v, b_v).view(S, B, H, D).permute(1, 2, 0, 3)

        mask = torch.zeros((), dtype=q.dtype, device=q.device)
        if attn_mask is not None:
            m = _additive(attn_mask, q.dtype)
            mask = mask + (m.view(B, H, T, S) if m.dim() == 3 else m)
        elif is_causal:
            mask = mask + torch.full((T, S), float("-inf"), dtype=q.dtype, device=q.device).triu(1)
        if key_padding_mask is not None:
            mask = mask + _additive(key_padding_mask, q.dtype).view(B, 1, 1, S)

        scores = (q * D**-0.5) @ k.transpose(-2, -1) + mask
        weights = scores.softmax(-1)
        if self.training and self.dropout > 0:
            weights = F.dropout(weights, self.dropout)
        out = (weights @ v).permute(2, 0, 1, 3).reshape(T * B, H * D)
        out = self.out_proj(out).view(T, B, E)
        if unbatched:
            out = out.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        weights = weights.mean(1) if average_attn_weights else weights
        return out, (weights.squeeze(0) if unbatched else weights)


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask (True = masked out) as an additive float mask."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


def slice_tensors(model: nn.Module, keep: dict[str, dict[int, torch.Tensor]]) -> None:
    """Replaces each named parameter/buffer by ``index_select`` of the kept
    indices along each listed dim. Tied parameters are replaced everywhere."""
    params = dict(model.named_parameters(remove_duplicate=False))
    buffers = dict(model.named_buffers(remove_duplicate=False))
    old_to_new: dict[int, torch.Tensor] = {}
    for name, dims in keep.items():
        tensor = params.get(name, buffers.get(name))
        new = tensor.detach()
        for dim, idx in sorted(dims.items()):
            new = new.index_select(dim, idx.to(new.device))
        if isinstance(tensor, nn.Parameter):
            new = nn.Parameter(new.contiguous(), requires_grad=tensor.requires_grad)
        old_to_new[id(tensor)] = new.contiguous() if not isinstance(new, nn.Parameter) else new
    for table in (params, buffers):
        for name, tensor in table.items():
            if id(tensor) in old_to_new:
                owner, _, attr = name.rpartition(".")
                module = model.get_submodule(owner) if owner else model
                if table is params:
                    setattr(module, attr, old_to_new[id(tensor)])
                else:
                    module._buffers[attr] = old_to_new[id(tensor)]


def fix_attributes(model: nn.Module) -> None:
    """Makes the attributes each module's forward reads match its new shapes."""
    # children first: a parent's fix-up may read its children's new state
    for module in reversed(list(model.modules())):
        if isinstance(module, nn.Linear):
            module.out_features, module.in_features = module.weight.shape
        elif isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
            out_c = module.weight.shape[0]
            if module.groups > 1 and module.groups == module.in_channels == module.out_channels:
                module.groups = module.in_channels = out_c  # depthwise
            else:
                module.in_channels = module.weight.shape[1] * module.groups
            module.out_channels = out_c
        elif isinstance(module, nn.modules.batchnorm._NormBase):
            ref = module.weight if module.weight is not None else module.running_mean
            if ref is not None:
                module.num_features = ref.shape[0]
        elif isinstance(module, nn.Embedding):
            module.num_embeddings, module.embedding_dim = module.weight.shape
        elif isinstance(module, nn.MultiheadAttention):
            inner = module.in_proj_weight.shape[0] // 3 if module.in_proj_weight is not None else module.embed_dim
            if inner != module.num_heads * module.head_dim:
                module.num_heads = inner // module.head_dim
                module.__class__ = PrunedMultiheadAttention
                # nn.TransformerEncoderLayer's fused fast path assumes
                # inner == embed_dim; this flag is one of the conditions that
                # turn it off (the packed in_proj_weight is still used here)
                module._qkv_same_embed_dim = False
        if getattr(module, "use_nested_tensor", False) and any(
            isinstance(m, PrunedMultiheadAttention) for m in module.modules()
        ):
            module.use_nested_tensor = False  # nn.TransformerEncoder: the nested path is fused too
        # transformers-style self-attention (BertSelfAttention and relatives)
        query = getattr(module, "query", None)
        if isinstance(query, nn.Linear) and all(
            hasattr(module, a) for a in ("num_attention_heads", "attention_head_size", "all_head_size")
        ):
            module.all_head_size = query.weight.shape[0]
            module.num_attention_heads = module.all_head_size // module.attention_head_size


# Modules whose tensors resize_ may shrink: the ones fix_attributes knows how
# to make consistent again.
_RESIZABLE = (nn.Linear, nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase, nn.Embedding,
              nn.MultiheadAttention)


# Attribute of a prune_channels result: {state-dict key: shape} of every tensor
# that is smaller than in the original model. slimtorch.save records it so that
# load_ can rebuild the smaller modules in a freshly built original model.
RESIZED_ATTR = "_slimtorch_resized"


def plan_resize(model: nn.Module, shapes: object) -> dict[str, tuple[int, ...]]:
    """The checked, effective part of ``shapes`` for :func:`resize_` (entries
    that change a shape); raises without touching ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(shapes, dict):
        raise TypeError(f"shapes: expected a dict of state-dict key -> shape, got {type(shapes).__name__}")
    tensors = {**dict(model.named_parameters(remove_duplicate=False)),
               **dict(model.named_buffers(remove_duplicate=False))}
    plan: dict[str, tuple[int, ...]] = {}
    for key, shape in shapes.items():
        if not isinstance(key, str) or key not in tensors:
            raise ValueError(f"shapes: {str(key)[:80]!r} is not a parameter or buffer of the model")
        if not isinstance(shape, (tuple, list)) or not all(
                isinstance(d, int) and not isinstance(d, bool) for d in shape):
            raise ValueError(f"shapes: {key!r}: expected a shape (a tuple of ints), got {str(shape)[:80]}")
        old = tuple(tensors[key].shape)
        if len(shape) != len(old) or not all(0 <= new <= was for new, was in zip(shape, old)):
            raise ValueError(f"shapes: {key!r}: {tuple(shape)} is not a shrunken {old} (same rank, "
                             "no dimension larger than the model's)")
        owner = model.get_submodule(key.rpartition(".")[0]) if "." in key else model
        if tuple(shape) != old and not isinstance(owner, _RESIZABLE):
            raise ValueError(f"shapes: {key!r} belongs to a {type(owner).__name__}, whose size cannot change here")
        if tuple(shape) != old:
            plan[key] = tuple(shape)
    return plan


def resize_(model: nn.Module, shapes: dict[str, tuple[int, ...]]) -> nn.Module:
    """Shrink ``model``'s parameters and buffers to ``shapes`` (``{state-dict
    key: shape}``, as a channel-pruned copy of the same architecture has
    them), then fix the modules' size attributes, so that the pruned
    state_dict loads into a freshly built original model.

    Only shrinking is allowed (every dimension in ``[0, original]``, same
    rank), only on Linear, Conv, BatchNorm, Embedding and MultiheadAttention
    tensors; everything is checked before anything changes. New tensors are
    zero-filled (``load_state_dict`` fills them). Tied tensors change together.
    The model remembers the shapes (``slimtorch.save`` records them).
    """
    plan = plan_resize(model, shapes)
    keep = {key: {dim: torch.arange(size) for dim, size in enumerate(shape)} for key, shape in plan.items()}
    slice_tensors(model, keep)
    with torch.no_grad():
        for key in plan:
            owner_name, _, attr = key.rpartition(".")
            owner = model.get_submodule(owner_name) if owner_name else model
            getattr(owner, attr).zero_()
    fix_attributes(model)
    recorded = dict(getattr(model, RESIZED_ATTR, {}))
    recorded.update({key: tuple(shape) for key, shape in shapes.items()})
    model.__dict__[RESIZED_ATTR] = recorded
    return model
