"""Structured channel pruning: :func:`prune_channels` returns a physically
smaller dense copy of a model.

What is pruned
--------------
The model is traced with ``torch.export`` and every tensor dimension is
labelled with a channel space (see :mod:`slimtorch.structured.graph`).
Dimensions that must keep the same channels form a *group*, pruned together:
Linear -> Linear, Conv -> BatchNorm -> Conv, both sides of a residual add,
the parts of a ``torch.cat``, a conv's channels flattened into a Linear,
the heads of ``nn.MultiheadAttention`` and of transformers' BERT-style
self-attention (q/k/v rows and the output projection's columns), and a
transformer's FFN intermediate size.

Never pruned (the group is left whole): dimensions that reach the model's
inputs or outputs; dimensions that a LayerNorm/softmax/reduction runs over
(so a transformer's hidden size stays; a CNN's residual channels, which only
meet BatchNorm, are pruned); sizes written into the graph as literals by
``view``/``reshape``/``expand`` (a head size in ``view(b, t, -1, 64)``
stays, ``-1`` entries follow the pruned count); dimensions that are indexed,
sliced or pass through an operator this module does not know; grouped
(non-depthwise) convolutions; an ``nn.MultiheadAttention``'s
``embed_dim`` (its input/output width), and all of it when it has
``kdim``/``vdim``, ``add_bias_kv``, ``add_zero_attn``, a 3-d ``attn_mask``
or is called from more than one place; the outputs of modules in ``ignore``.
Attention heads are removed whole (``head_dim`` is kept). Blocking is the
safe default: an unsupported pattern costs compression, never correctness,
and the pruned copy is run once on ``example_inputs`` (in eval mode) to check
its output shapes before it is returned.

Scores are computed on the original weights for every group before any
slicing, so the result does not depend on the order of the groups.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from slimtorch._checks import check_real
from slimtorch.structured.graph import Analysis, Slot, analyze
from slimtorch.structured.surgery import (
    RESIZED_ATTR,
    PrunedMultiheadAttention,
    fix_attributes,
    resize_,
    slice_tensors,
)

__all__ = ["prune_channels", "channel_groups", "PrunedMultiheadAttention", "resize_", "pruned_shapes"]

Importance = Callable[[list[torch.Tensor]], torch.Tensor]


def _check_inputs(example_inputs: object) -> tuple[tuple, dict]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    if isinstance(example_inputs, Mapping):
        if not all(isinstance(k, str) for k in example_inputs):
            raise TypeError("example_inputs: expected a dict with str keys (keyword argument names)")
        return (), dict(example_inputs)
    raise TypeError(
        "example_inputs: expected a tensor, a tuple of positional inputs or a dict of keyword inputs, "
        f"got {type(example_inputs).__name__}"
    )


def _check_ratio(ratio: object) -> float:
    value = check_real("ratio", ratio)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"ratio: expected a number in [0, 1), got {value}")
    return value


def _check_importance(importance: object) -> Importance:
    if callable(importance):
        return importance
    if importance == "l2":
        return lambda rows: torch.stack([(r.double() ** 2).sum(1) for r in rows]).sum(0).sqrt()
    if importance == "l1":
        return lambda rows: torch.stack([r.double().abs().sum(1) for r in rows]).sum(0)
    if isinstance(importance, str):
        raise ValueError(f"importance: expected 'l1', 'l2' or a callable, got {importance!r}")
    raise TypeError(f"importance: expected 'l1', 'l2' or a callable, got {type(importance).__name__}")


def _check_ignore(model: nn.Module, ignore: object) -> list[str]:
    if ignore is None:
        return []
    items = [ignore] if isinstance(ignore, (str, nn.Module)) else ignore
    if not isinstance(items, Iterable):
        raise TypeError(f"ignore: expected modules or module names, got {type(ignore).__name__}")
    names = {id(m): n for n, m in model.named_modules()}
    out = []
    for item in items:
        if isinstance(item, str):
            try:
                model.get_submodule(item)
            except AttributeError:
                raise ValueError(f"ignore: the model has no submodule named {item!r}") from None
            out.append(item)
        elif isinstance(item, nn.Module):
            if id(item) not in names:
                raise ValueError(f"ignore: {type(item).__name__} module is not part of the model")
            out.append(names[id(item)])
        else:
            raise TypeError(f"ignore: expected modules or module names, got {type(item).__name__}")
    return out


def _trace(model: nn.Module, args: tuple, kwargs: dict) -> torch.export.ExportedProgram:
    try:
        return torch.export.export(model, args, kwargs, strict=False)
    except Exception as e:
        raise ValueError(
            f"model: could not be traced with torch.export on example_inputs ({type(e).__name__}: {e})"
        ) from e


def _rows(tensor: torch.Tensor, slot: Slot, n: int) -> torch.Tensor:
    """The entries of ``tensor`` that belong to each channel, as ``[n, -1]``."""
    labels = slot.labels
    order = torch.argsort(labels, stable=True)
    order = order[labels[order] >= 0]  # indices of channel 0, then channel 1, ...
    picked = tensor.detach().index_select(slot.dim, order.to(tensor.device)).movedim(slot.dim, 0)
    return picked.reshape(n, -1).float().cpu()


def _analyse(model: nn.Module, example_inputs: object, ignored: list[str]) -> tuple[Analysis, list, list]:
    args, kwargs = _check_inputs(example_inputs)
    ep = _trace(model, args, kwargs)
    analysis = analyze(ep, model)
    for path in ignored:  # the ignored modules' output channels (dim 0 of each parameter)
        prefix = "" if not path else path + "."
        for name, dims in analysis.tensor_dims.items():
            if name.startswith(prefix) and name in analysis.parameters and dims:
                analysis.spaces.block(dims[0])
        if path in analysis.mha_heads:
            analysis.spaces.block(analysis.mha_heads[path])
    user_outputs = set(ep.graph_signature.user_outputs)
    out_node = next(n for n in ep.graph.nodes if n.op == "output")
    shapes = [
        tuple(x.meta["val"].shape)
        for x in torch.utils._pytree.tree_leaves(out_node.args)
        if isinstance(x, torch.fx.Node) and x.name in user_outputs and isinstance(x.meta.get("val"), torch.Tensor)
    ]
    return analysis, analysis.groups(), shapes


def channel_groups(model: nn.Module, example_inputs: object, *, ignore: object = None) -> list[list[tuple[str, int]]]:
    """The prunable channel groups of ``model``: for each, the
    ``(parameter or buffer name, dim)`` pairs pruned together. For inspection."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    _, groups, _ = _analyse(model, example_inputs, _check_ignore(model, ignore))
    return [[(s.name, s.dim) for s in slots] for _, slots in groups]


def prune_channels(
    model: nn.Module,
    example_inputs: torch.Tensor | tuple | dict,
    ratio: float,
    *,
    importance: str | Importance = "l2",
    ignore: nn.Module | str | Iterable[nn.Module | str] | None = None,
) -> nn.Module:
    """Removes the least important ``ratio`` of channels of every prunable group.

    Args:
        model: the model; it is not modified (a deep copy is pruned and returned).
        example_inputs: a tensor, a tuple (or list) of positional inputs, or
            a dict of keyword inputs, used to trace ``model`` with
            ``torch.export`` (shapes are specialised to these inputs for the
            analysis only; the pruned model accepts any shapes the original did).
        ratio: fraction of channels removed from each group, in ``[0, 1)``.
            A group of ``n`` channels loses ``round(ratio * n)`` of them
            (Python rounding, half to even), but always keeps at least one.
        importance: ``"l2"`` (default): a channel's score is the L2 norm of
            every parameter entry removed with it, over the whole group
            (outgoing and incoming weights, biases, BatchNorm affine);
            ``"l1"``: the sum of their absolute values; or a callable that
            takes one ``[n, k_i]`` float tensor per parameter slot of the
            group (row ``c``: the entries that belong to channel ``c``) and
            returns ``n`` scores. Higher scores are kept; ties keep the lower
            channel index.
        ignore: modules, or their qualified names, whose output channels
            (dim 0 of their parameters, recursively; their heads for
            ``nn.MultiheadAttention``) must not be pruned. ``""`` names the
            whole model.

    Returns:
        A plain ``nn.Module`` of the same classes with smaller parameters,
        attributes updated (``in_features``, ``out_channels``,
        ``num_features``, ``num_heads``, ``num_attention_heads``, ...). An
        ``nn.MultiheadAttention`` that loses heads becomes a
        :class:`PrunedMultiheadAttention` (a subclass). At ``ratio == 0`` the
        copy is returned unchanged (the model is not traced). See the module
        docstring for what is pruned.

    Raises:
        TypeError / ValueError naming the argument on bad input, including a
        model that ``torch.export`` cannot trace on ``example_inputs``.
        RuntimeError if the pruned copy fails its shape check (a bug in the
        dependency analysis, never expected).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    ratio = _check_ratio(ratio)
    score_fn = _check_importance(importance)
    args, kwargs = _check_inputs(example_inputs)
    ignored = _check_ignore(model, ignore)  # names: they also address the copy
    pruned = copy.deepcopy(model)
    if ratio == 0.0:
        return pruned
    analysis, groups, expected = _analyse(pruned, example_inputs, ignored)
    tensors = {**dict(pruned.named_buffers()), **dict(pruned.named_parameters())}
    masks: dict[int, torch.Tensor] = {}
    for leaf, slots in groups:
        n = analysis.spaces.size[leaf]
        remove = min(n - 1, round(ratio * n))
        if remove == 0:
            continue
        rows = [_rows(tensors[s.name], s, n) for s in slots if s.is_parameter]
        scores = torch.as_tensor(score_fn(rows)).reshape(-1)
        if scores.numel() != n:
            raise ValueError(f"importance: expected the callable to return {n} scores, got shape {tuple(scores.shape)}")
        if torch.isnan(scores).any():
            raise ValueError("importance: the scores contain NaN")
        order = torch.argsort(-scores.double(), stable=True)
        mask = torch.zeros(n, dtype=torch.bool)
        mask[order[: n - remove]] = True
        masks[leaf] = mask
    keep: dict[str, dict[int, torch.Tensor]] = {}
    for name, dims in analysis.tensor_dims.items():
        for d, space in enumerate(dims):
            m = analysis.spaces.keep_mask(space, masks)
            if not bool(m.all()):
                keep.setdefault(name, {})[d] = m.nonzero().flatten()
    slice_tensors(pruned, keep)
    fix_attributes(pruned)
    pruned.__dict__[RESIZED_ATTR] = {**getattr(model, RESIZED_ATTR, {}), **pruned_shapes(pruned, model)}
    _verify(pruned, expected, args, kwargs)
    return pruned


def _verify(pruned: nn.Module, expected: list[tuple[int, ...]], args: tuple, kwargs: dict) -> None:
    """The pruned copy must run and give outputs of the traced shapes. It runs
    in eval mode (restored afterwards) so BatchNorm statistics do not move."""
    modes = {m: m.training for m in pruned.modules()}
    pruned.eval()
    try:
        with torch.no_grad():
            out = pruned(*args, **kwargs)
    except Exception as e:
        raise RuntimeError(f"prune_channels: the pruned model failed to run ({type(e).__name__}: {e})") from e
    finally:
        for m, mode in modes.items():
            m.training = mode
    got = [tuple(t.shape) for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    if sorted(got) != sorted(expected):
        raise RuntimeError(f"prune_channels: the pruned model's output shapes {got} differ from {expected}")


def pruned_shapes(model: nn.Module, original: nn.Module) -> dict[str, tuple[int, ...]]:
    """``{state-dict key: shape}`` of every tensor of ``model`` (a
    :func:`prune_channels` result) whose shape differs from ``original``'s:
    what :func:`resize_` needs to rebuild the pruned modules in a fresh copy
    of ``original``."""
    before = original.state_dict(keep_vars=True)
    shapes = {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        if key in before and tuple(before[key].shape) != tuple(tensor.shape):
            shapes[key] = tuple(tensor.shape)
    return shapes
