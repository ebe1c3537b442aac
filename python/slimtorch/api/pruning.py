"""Unstructured magnitude pruning of a whole model.

``prune_`` attaches a keep-mask to the weight of every selected layer as a
``torch.nn.utils.parametrize`` parametrization: ``module.weight`` is computed
as ``where(mask, original, 0)``. The optimizer updates ``original`` (the same
``Parameter`` object as before pruning, so existing optimizers keep working);
whatever momentum or weight decay do to ``original`` at pruned positions, the
weight the model computes with is exactly ``+0.0`` there. The mask is a bool
buffer, so ``state_dict`` checkpoints carry it
(``<module>.parametrizations.weight.0.mask``).

``AGPSchedule`` raises the sparsity while training on the cubic schedule of
Zhu & Gupta (2017). ``strip_`` removes the parametrizations and leaves plain
``weight`` parameters holding the zeros.

Masks only grow: a re-prune never revives a pruned weight (its ``original``
may have drifted under momentum). Pruning is by magnitude of the *effective*
weights, so pruned weights (magnitude 0) are pruned first; where exact-zero
ties would otherwise swap a pruned position for a never-pruned zero, the swap
is undone (both are zeros, so the count and the result are unchanged).
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize

from slimtorch._checks import check_choice, check_fraction
from slimtorch.api import _backend
from slimtorch.api._batches import run_batch
from slimtorch.api._linear_like import is_hf_conv1d

__all__ = ["AGPSchedule", "PruneReport", "prune_", "strip_", "is_pruned", "weight_mask", "input_norms", "is_hf_conv1d"]

FilterFn = Callable[[nn.Module, str], bool]
_SCOPES = ("global", "layer", "row")
_METHODS = ("magnitude", "wanda")
_DEFAULT_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class WeightMask(nn.Module):
    """Parametrization ``weight = where(mask, original, 0)``; ``mask`` is a bool buffer."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        # where (not multiply): exact +0.0 even where original is -x, Inf or NaN.
        return torch.where(self.mask, weight, 0.0)


def weight_mask(module: nn.Module) -> torch.Tensor | None:
    """The keep-mask ``prune_`` attached to ``module.weight``, or None."""
    if not parametrize.is_parametrized(module, "weight"):
        return None
    for p in module.parametrizations["weight"]:
        if isinstance(p, WeightMask):
            return p.mask
    return None


def is_pruned(module: nn.Module) -> bool:
    """True when ``prune_`` attached a mask to ``module.weight``."""
    return weight_mask(module) is not None


@dataclass(frozen=True)
class PruneReport:
    """What ``prune_`` did. ``layers`` maps module name to the fraction of its
    weight that is masked; ``total`` is the same over all pruned weights."""

    sparsity: float
    scope: str
    layers: dict[str, float]
    total: float
    pruned: int
    numel: int
    method: str = "magnitude"
    skipped: dict[str, str] = field(default_factory=dict)


def _default_filter(module: nn.Module, name: str) -> bool:
    return isinstance(module, _DEFAULT_TYPES) or is_hf_conv1d(module)


def _rows(module: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    """``weight`` as ``[out, inputs]``: one row per output (a view)."""
    return weight.T if is_hf_conv1d(module) else weight.reshape(weight.shape[0], -1)


def _from_rows(module: nn.Module, rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return rows.T if is_hf_conv1d(module) else rows.reshape(like.shape)


def storage_key(tensor: torch.Tensor) -> tuple:
    """Equal for tensors that share memory (tied parameters, views of one buffer)."""
    return tensor.untyped_storage().data_ptr(), tensor.device.type, tensor.device.index


def tensor_owners(model: nn.Module) -> dict[tuple, list[str]]:
    """``{storage_key: names of every parameter and buffer in that memory}``
    (a tied parameter appears under each of its names; empty tensors own nothing)."""
    owners: dict[tuple, list[str]] = {}
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for name, tensor in named:
        if tensor.numel():
            owners.setdefault(storage_key(tensor), []).append(name)
    return owners


def tied_groups(model: nn.Module) -> list[list[str]]:
    """The names of the parameters and buffers that share memory, one list per
    shared storage (tied embeddings and heads), in model order."""
    return [names for names in tensor_owners(model).values() if len(names) > 1]


def tied_weights(model: nn.Module, targets: list[tuple[str, nn.Module]]) -> dict[str, list[str]]:
    """Targets whose weight shares its memory with a parameter or buffer
    outside it (tied embeddings and heads): ``{module name: the others' names}``."""
    owners = tensor_owners(model)
    tied = {}
    for name, module in targets:
        weight = module.parametrizations["weight"].original if is_pruned(module) else module.weight
        if not weight.numel():
            continue
        own = (f"{name}.parametrizations.weight.original" if is_pruned(module) else f"{name}.weight").lstrip(".")
        others = [o for o in owners.get(storage_key(weight), []) if o != own]
        if others:
            tied[name] = sorted(others)
    return tied


def _targets(model: nn.Module, filter_fn: FilterFn | None) -> list[tuple[str, nn.Module]]:
    """Modules whose ``weight`` is pruned: a float parameter of rank >= 2 that
    ``filter_fn(module, name)`` accepts (default: Linear and Conv1d/2d/3d)."""
    chosen = []
    for name, module in model.named_modules():
        if is_pruned(module):
            weight = module.parametrizations["weight"].original
        else:
            weight = module._parameters.get("weight") if hasattr(module, "_parameters") else None
        if not isinstance(weight, torch.Tensor) or not weight.is_floating_point() or weight.dim() < 2:
            continue
        if (filter_fn or _default_filter)(module, name):
            chosen.append((name, module))
    return chosen


def _grow_masks(effective: list[torch.Tensor], old: list[torch.Tensor | None], sparsity: float) -> list[torch.Tensor]:
    """Keep-masks pruning ``round(sparsity * N)`` of ``effective`` by magnitude,
    never reviving a position pruned in ``old`` (see the module docstring)."""
    keep = _backend.magnitude_masks(effective, sparsity)
    if all(o is None for o in old):
        return keep
    sizes = [t.numel() for t in effective]
    flat_keep = torch.cat([k.reshape(-1) for k in keep])
    flat_old = torch.cat([
        (o if o is not None else torch.ones_like(k)).reshape(-1) for o, k in zip(old, keep)
    ])
    revived = (flat_keep & ~flat_old).nonzero().flatten()
    if revived.numel():
        # Revived positions are zero-magnitude ties; so are all newly pruned ones.
        newly_pruned = (~flat_keep & flat_old).nonzero().flatten()
        if newly_pruned.numel() < revived.numel():
            raise ValueError(
                f"sparsity: {sparsity} is below the sparsity these weights are already "
                "pruned to; masks only grow (strip_ the model to start over)"
            )
        flat_keep[revived] = False
        flat_keep[newly_pruned[: revived.numel()]] = True
    return [k.view(t.shape) for k, t in zip(flat_keep.split(sizes), effective)]


def _pattern_keep(ranks: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` highest-ranked of every ``m`` consecutive entries of each
    row of ``ranks [rows, cols]`` (ties: the lower column is kept)."""
    groups = ranks.reshape(ranks.shape[0], -1, m)
    order = torch.sort(groups, dim=-1, descending=True, stable=True).indices
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, order[..., :n], True)
    return keep.reshape(ranks.shape)


def _row_keep(ranks: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Prune ``round(sparsity * cols)`` lowest-ranked entries of each row
    (ties: the lower column is pruned first)."""
    count = round(sparsity * ranks.shape[1])
    order = torch.sort(ranks, dim=1, stable=True).indices
    keep = torch.ones_like(ranks, dtype=torch.bool)
    keep.scatter_(1, order[:, :count], False)
    return keep


@torch.no_grad()
def _apply_masks(targets: list[tuple[str, nn.Module]], sparsity: float | tuple[int, int], scope: str,
                 norms: dict[str, torch.Tensor] | None = None, skipped: dict[str, str] | None = None) -> PruneReport:
    """Prune ``targets`` to ``sparsity`` (a fraction, or ``(n, m)`` of an N:M
    pattern) ranking ``|W|``, or ``|W| * norms[name]`` per input when ``norms`` is given."""
    # All masks are computed before any is applied: a rejected sparsity changes nothing.
    _check_prunable(targets, sparsity)
    ranks = []
    for name, module in targets:
        weight = module.weight.detach()
        rank = weight.abs() if norms is None else (_rows(module, weight).abs().float() * norms[name]).to(weight.dtype)
        ranks.append(rank if norms is None else _from_rows(module, rank, weight))
    plans = []
    if isinstance(sparsity, tuple) or scope == "row":
        for (name, module), rank in zip(targets, ranks):
            rows = _rows(module, rank).float()
            if isinstance(sparsity, tuple):
                keep = _pattern_keep(rows, *sparsity)
            else:
                keep = _row_keep(rows, sparsity)
            old = weight_mask(module)
            keep = _from_rows(module, keep, rank)
            plans.append(((name, module), keep if old is None else keep & old, old))
    else:
        groups = [list(range(len(targets)))] if scope == "global" else [[i] for i in range(len(targets))]
        for group in groups:
            old = [weight_mask(targets[i][1]) for i in group]
            new = _grow_masks([ranks[i] for i in group], old, sparsity)
            plans.extend(zip([targets[i] for i in group], new, old))
    for (_, module), mask, previous in plans:
        if previous is None:
            parametrize.register_parametrization(module, "weight", WeightMask(mask.contiguous()))
        else:
            previous.copy_(mask)
        # Zero the stored original too, so it agrees with the effective weight.
        module.parametrizations["weight"].original.masked_fill_(~mask, 0)
    return _report(targets, sparsity, scope, "magnitude" if norms is None else "wanda", skipped)


def _check_prunable(targets: list[tuple[str, nn.Module]], sparsity: float | tuple[int, int]) -> None:
    """The checks that could reject pruning ``targets``, run before any is pruned."""
    for name, module in targets:
        if module.weight.isnan().any():
            raise ValueError(f"model: the weight of {name!r} contains NaN, which has no magnitude to rank")
        if isinstance(sparsity, tuple):
            n, m = sparsity
            inputs = _rows(module, module.weight).shape[1]
            if inputs % m:
                raise ValueError(f"sparsity: a {n}:{m} pattern needs the inputs per output of {name!r} "
                                 f"to be a multiple of {m}, got {inputs}")


def _report(targets: list[tuple[str, nn.Module]], sparsity: float | tuple[int, int], scope: str, method: str,
            skipped: dict[str, str] | None) -> PruneReport:
    layers, pruned, numel = {}, 0, 0
    for name, module in targets:
        mask = weight_mask(module)
        n_pruned = int(mask.numel() - mask.sum().item())
        layers[name] = n_pruned / mask.numel() if mask.numel() else 0.0
        pruned += n_pruned
        numel += mask.numel()
    total = pruned / numel if numel else 0.0
    nominal = sparsity if not isinstance(sparsity, tuple) else 1 - sparsity[0] / sparsity[1]
    return PruneReport(sparsity=nominal, scope=scope, layers=layers, total=total, pruned=pruned, numel=numel,
                       method=method, skipped=dict(skipped or {}))


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    return model


def _check_filter(filter_fn: object) -> FilterFn | None:
    if filter_fn is not None and not callable(filter_fn):
        raise TypeError("filter_fn: expected None or a callable (module, name) -> bool, "
                        f"got {type(filter_fn).__name__}")
    return filter_fn


class AGPSchedule:
    """Automated gradual pruning (Zhu & Gupta, 2017): the sparsity rises from
    ``initial_sparsity`` to ``final_sparsity`` between ``start_step`` and
    ``end_step`` along ``s(t) = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0))**3``,
    and the model is re-pruned every ``every`` steps (and at ``end_step``).

    Bind it with ``slimtorch.prune_(model, schedule, scope=..., filter_fn=...)``,
    which prunes to ``sparsity_at(0)``; then call ``step()`` once after every
    optimizer step. ``state_dict()``/``load_state_dict()`` save and restore the
    step counter (the masks themselves live in the model's ``state_dict``).
    """

    def __init__(self, final_sparsity: float, start_step: int, end_step: int, every: int = 1,
                 initial_sparsity: float = 0.0) -> None:
        self.final_sparsity = check_fraction("final_sparsity", final_sparsity)
        self.initial_sparsity = check_fraction("initial_sparsity", initial_sparsity)
        if self.initial_sparsity > self.final_sparsity:
            raise ValueError(
                f"initial_sparsity: expected at most final_sparsity ({self.final_sparsity}), "
                f"got {self.initial_sparsity}"
            )
        for arg, value, low in (("start_step", start_step, 0), ("end_step", end_step, 0), ("every", every, 1)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{arg}: expected an int, got {type(value).__name__}")
            if value < low:
                raise ValueError(f"{arg}: expected an int >= {low}, got {value}")
        if end_step <= start_step:
            raise ValueError(f"end_step: expected an int > start_step ({start_step}), got {end_step}")
        self.start_step, self.end_step, self.every = int(start_step), int(end_step), int(every)
        self.step_count = 0
        self.current_sparsity = 0.0
        self._model: nn.Module | None = None
        self._targets: list[tuple[str, nn.Module]] = []
        self._scope = "global"

    def __repr__(self) -> str:
        return (f"AGPSchedule(final_sparsity={self.final_sparsity}, start_step={self.start_step}, "
                f"end_step={self.end_step}, every={self.every}, initial_sparsity={self.initial_sparsity})")

    def sparsity_at(self, step: int) -> float:
        """The cubic schedule's value at ``step`` (clamped outside [start_step, end_step])."""
        if isinstance(step, bool) or not isinstance(step, numbers.Integral):
            raise TypeError(f"step: expected an int, got {type(step).__name__}")
        if step <= self.start_step:
            return self.initial_sparsity
        if step >= self.end_step:
            return self.final_sparsity
        remaining = 1.0 - (step - self.start_step) / (self.end_step - self.start_step)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * remaining**3

    def due(self, step: int) -> bool:
        """Whether the model is re-pruned when the step counter reaches ``step``."""
        if step < self.start_step or step > self.end_step:
            return False
        return (step - self.start_step) % self.every == 0 or step == self.end_step

    def _bind(self, model: nn.Module, targets: list[tuple[str, nn.Module]], scope: str) -> PruneReport:
        if self._model is not None and self._model is not model:
            raise ValueError("sparsity: this AGPSchedule is already bound to another model")
        self._model, self._targets, self._scope = model, targets, scope
        return self._prune(self.sparsity_at(self.step_count))

    def _prune(self, sparsity: float) -> PruneReport:
        report = _apply_masks(self._targets, sparsity, self._scope)
        self.current_sparsity = sparsity
        return report

    def step(self) -> None:
        """Advance one (optimizer) step; re-prune when due."""
        if self._model is None:
            raise RuntimeError("AGPSchedule.step: not bound to a model; call slimtorch.prune_(model, schedule) first")
        if not all(is_pruned(module) for _, module in self._targets):
            raise RuntimeError("AGPSchedule.step: the model's masks are gone (strip_ was called)")
        self.step_count += 1
        if self.due(self.step_count):
            target = self.sparsity_at(self.step_count)
            if target != self.current_sparsity:
                self._prune(target)

    def state_dict(self) -> dict:
        """The schedule's configuration and progress (plain Python values)."""
        return {
            "final_sparsity": self.final_sparsity, "initial_sparsity": self.initial_sparsity,
            "start_step": self.start_step, "end_step": self.end_step, "every": self.every,
            "step_count": self.step_count, "current_sparsity": self.current_sparsity,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore progress saved by ``state_dict()`` of a schedule with the same configuration."""
        if not isinstance(state, dict):
            raise TypeError(f"state: expected a dict, got {type(state).__name__}")
        mine = self.state_dict()
        missing = [k for k in mine if k not in state]
        if missing:
            raise ValueError(f"state: missing keys {missing}")
        for key in ("final_sparsity", "initial_sparsity", "start_step", "end_step", "every"):
            if state[key] != mine[key]:
                raise ValueError(f"state: {key} is {state[key]!r} but this schedule has {mine[key]!r}")
        step_count = state["step_count"]
        if isinstance(step_count, bool) or not isinstance(step_count, numbers.Integral) or step_count < 0:
            raise ValueError(f"state: step_count must be an int >= 0, got {step_count!r}")
        self.step_count = int(step_count)
        self.current_sparsity = check_fraction("state['current_sparsity']", state["current_sparsity"])


def _norm_hooks(targets: list[tuple[str, nn.Module]], sums: dict[str, torch.Tensor]) -> list:
    """Forward pre-hooks adding each target's per-input-channel sum of squares
    of its input to ``sums[name]`` (float64); returns their handles."""
    def hook_for(name: str, module: nn.Module) -> Callable:
        def hook(_: nn.Module, args: tuple) -> None:
            x = args[0].detach()
            if isinstance(module, nn.modules.conv._ConvNd):
                square = x.double().square().transpose(0, 1).reshape(x.shape[1], -1).sum(dim=1)
            else:
                square = x.double().square().reshape(-1, x.shape[-1]).sum(dim=0)
            sums[name] = square if name not in sums else sums[name] + square
        return hook

    return [module.register_forward_pre_hook(hook_for(name, module)) for name, module in targets]


def _norms_from_sums(targets: list[tuple[str, nn.Module]], sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    norms = {}
    for name, module in targets:
        if name not in sums:
            raise ValueError(f"calibration: layer {name!r} never ran on the calibration batches")
        norm = sums[name].sqrt().float()
        if isinstance(module, nn.modules.conv._ConvNd):
            # Row view of a conv weight: [out, in_channels * kernel elements], channel-major.
            norm = norm.repeat_interleave(math.prod(module.kernel_size))
        norms[name] = norm
    return norms


@torch.no_grad()
def input_norms(model: nn.Module, targets: list[tuple[str, nn.Module]],
                calibration: Iterable) -> dict[str, torch.Tensor]:
    """``{name: ||X[:, i]||_2 per input of the row view}`` of every target over
    the calibration batches run through the whole model (each layer sees the
    activations of the model as it is). Only a running sum of squares per
    input channel is kept, so memory stays at the model plus one batch's activations."""
    batches = _check_batches(calibration)
    sums: dict[str, torch.Tensor] = {}
    with _eval_mode(model):
        _calibration_pass(model, [], targets, batches, sums)
    return _norms_from_sums(targets, sums)


def _check_batches(calibration: Iterable) -> list:
    batches = list(calibration)
    if not batches:
        raise ValueError("calibration: expected at least one batch, got an empty iterable")
    return batches


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _block_list(model: nn.Module, targets: list[tuple[str, nn.Module]]) -> nn.ModuleList | None:
    """The repeated blocks of ``model`` (transformer layers): the ``nn.ModuleList``
    of at least two children, all of one class, holding the most targets."""
    target_ids = {id(module) for _, module in targets}
    best, best_count = None, 0
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) >= 2 and len({type(c) for c in module}) == 1:
            count = sum(id(m) in target_ids for block in module for m in block.modules())
            if count > best_count:
                best, best_count = module, count
    return best


def _first_tensor(output: object) -> torch.Tensor | None:
    """A block's hidden-state output: the tensor itself or a tuple's first element."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    return output if isinstance(output, torch.Tensor) else None


def _hidden_input(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """A block's hidden-state input: its first positional argument or ``hidden_states=``."""
    return args[0] if args else kwargs.get("hidden_states")


def _stateless(value: object) -> bool:
    """Tensors, plain values and containers of them: arguments a block can be
    called with again. Anything else (a key/value cache the model fills as
    it goes) would see the calls of the recording pass too."""
    if isinstance(value, (tuple, list)):
        return all(map(_stateless, value))
    if isinstance(value, dict):
        return all(map(_stateless, value.values()))
    return value is None or isinstance(value, (torch.Tensor, bool, int, float, str))


def _with_hidden(call: tuple[tuple, dict], hidden: torch.Tensor) -> tuple[tuple, dict]:
    args, kwargs = call
    return ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})


def _calibration_pass(model: nn.Module, blocks: Sequence[nn.Module], targets: list[tuple[str, nn.Module]],
                      batches: list, sums: dict[str, torch.Tensor]) -> list[tuple[tuple, dict]] | None:
    """Runs every batch through the model as it is (no autograd graph: nothing
    of a batch outlives its forward), adding every target's input sums of
    squares to ``sums``. Returns the ``(args, kwargs)`` the first of
    ``blocks`` got for each batch, or None when ``blocks`` do not form a chain
    (each called once per batch, in order, on the previous block's output) or
    the first gets an argument that may hold state (see ``_stateless``), so
    running them one at a time would not reproduce the model."""
    captured: list[tuple[tuple, dict]] = []
    state = {"next": 0, "previous": None, "chain": bool(blocks)}

    def before(index: int) -> Callable:
        def hook(_: nn.Module, args: tuple, kwargs: dict) -> None:
            hidden = _hidden_input(args, kwargs)
            if index != state["next"] or hidden is None or (index and hidden is not state["previous"]):
                state["chain"] = False
            if index == 0:
                captured.append((args, kwargs))
                if not _stateless((args, kwargs)):
                    state["chain"] = False
        return hook

    def after(index: int) -> Callable:
        def hook(_: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
            state["previous"], state["next"] = _first_tensor(output), index + 1
        return hook

    handles = _norm_hooks(targets, sums)
    for index, block in enumerate(blocks):
        handles.append(block.register_forward_pre_hook(before(index), with_kwargs=True))
        handles.append(block.register_forward_hook(after(index), with_kwargs=True))
    try:
        with torch.no_grad():
            for batch in batches:
                state["next"], state["previous"] = 0, None
                run_batch(model, batch)
                if state["next"] != len(blocks):
                    state["chain"] = False
    finally:
        for handle in handles:
            handle.remove()
    state["previous"] = None
    return captured if state["chain"] and len(captured) == len(batches) else None


@torch.no_grad()
def _prune_wanda(model: nn.Module, targets: list[tuple[str, nn.Module]], calibration: Iterable,
                 sparsity: float | tuple[int, int], scope: str) -> None:
    """Wanda. Where each layer's mask depends on its own weights only (per
    row, N:M) and the model has a chain of blocks, one block at a time: the
    calibration batches' inputs of the first block are captured, then for each
    block its targets' input norms are collected, the block is pruned, and its
    pruned outputs become the next block's inputs; targets outside the blocks
    use the norms of the capture pass (the model before pruning). Otherwise
    one whole-model pass, then every target pruned."""
    batches = _check_batches(calibration)
    # Every check that could refuse runs first: blocks are pruned one after the other.
    _check_prunable(targets, sparsity)
    per_layer = scope == "row" or isinstance(sparsity, tuple)
    blocks = _block_list(model, targets) if per_layer else None
    dense_sums: dict[str, torch.Tensor] = {}
    with _eval_mode(model):
        calls = _calibration_pass(model, blocks or [], targets, batches, dense_sums)
        dense_norms = _norms_from_sums(targets, dense_sums)  # also checks that every target ran
        if calls is None:
            _apply_masks(targets, sparsity, scope, dense_norms)
            return
        owner = {id(m): index for index, block in enumerate(blocks) for m in block.modules()}
        for index, block in enumerate(blocks):
            inside = [(name, module) for name, module in targets if owner.get(id(module)) == index]
            if inside:
                sums: dict[str, torch.Tensor] = {}
                handles = _norm_hooks(inside, sums)
                try:
                    for args, kwargs in calls:
                        block(*args, **kwargs)
                finally:
                    for handle in handles:
                        handle.remove()
                _apply_masks(inside, sparsity, scope, _norms_from_sums(inside, sums))
            if index + 1 < len(blocks):
                calls = [_with_hidden(call, _first_tensor(block(*call[0], **call[1]))) for call in calls]
        outside = [(name, module) for name, module in targets if id(module) not in owner]
        if outside:
            _apply_masks(outside, sparsity, scope, {name: dense_norms[name] for name, _ in outside})


def _parse_pattern(text: str) -> tuple[int, int]:
    parts = text.split(":")
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        n, m = int(parts[0]), int(parts[1])
        if 0 < n <= m:
            return n, m
    raise ValueError(f"sparsity: expected a number in [0, 1], an AGPSchedule or an 'N:M' pattern "
                     f"with 0 < N <= M such as '2:4', got {text!r}")


def prune_(model: nn.Module, sparsity: float | str | AGPSchedule, *, scope: str | None = None,
           filter_fn: FilterFn | None = None, method: str = "magnitude",
           calibration: Iterable | None = None) -> PruneReport:
    """Prune ``model`` in place and keep it pruned while training.

    Args:
        model: any ``nn.Module``.
        sparsity: a fraction in [0, 1]; an ``"N:M"`` pattern such as ``"2:4"``
            (in every group of M consecutive inputs of an output row, N are
            kept); or an :class:`AGPSchedule` (magnitude only), which is bound
            to the model, prunes to its initial sparsity now and re-prunes on
            ``schedule.step()``.
        scope: which weights compete (ignored by N:M patterns): ``'global'``
            (one threshold across layers; the default of ``'magnitude'``) —
            exactly ``round(sparsity * N)`` of all N selected weights are
            pruned —, ``'layer'`` (``round(sparsity * n)`` per layer) or
            ``'row'`` (``round(sparsity * inputs)`` per output row; the default
            of ``'wanda'``).
        filter_fn: ``filter_fn(module, name) -> bool`` chooses among modules
            whose ``weight`` is a float parameter of rank >= 2 (default:
            ``nn.Linear``, ``nn.Conv1d/2d/3d`` and Hugging Face ``Conv1D``).
        method: ``'magnitude'`` ranks ``|W|``; ``'wanda'`` ranks ``|W|`` times
            the L2 norm of the weight's input channel over ``calibration``.
        calibration: ``'wanda'`` only: an iterable of batches run through the
            model in eval mode without gradients (a tensor is passed as
            ``model(batch)``, a tuple/list as ``model(*batch)``, a dict as
            ``model(**batch)``). It is read once and kept as a list. With
            scope ``'row'`` or an N:M pattern, layers inside repeated blocks
            (an ``nn.ModuleList`` of one class called as a chain, such as a
            transformer's layers) are calibrated and pruned one block at a
            time, each block ranked on the outputs of the pruned blocks
            before it; everything else in one pass through the whole model.

    Returns:
        A :class:`PruneReport` (per-layer and total sparsity, layers skipped
        and why). Pruning an already pruned model grows its masks; it never
        lowers sparsity.
    """
    _check_model(model)
    check_choice("method", method, _METHODS)
    if scope is None:
        scope = "row" if method == "wanda" else "global"
    if isinstance(scope, bool) or not isinstance(scope, str):
        raise TypeError(f"scope: expected 'global', 'layer' or 'row', got {type(scope).__name__}")
    check_choice("scope", scope, _SCOPES)
    _check_filter(filter_fn)
    if method == "wanda" and calibration is None:
        raise ValueError("calibration: method='wanda' needs calibration batches")
    if method == "magnitude" and calibration is not None:
        raise ValueError("calibration: only method='wanda' uses calibration batches")
    if calibration is not None and not isinstance(calibration, Iterable):
        raise TypeError(f"calibration: expected an iterable of batches, got {type(calibration).__name__}")
    targets = _targets(model, filter_fn)
    skipped = {name: f"weight tied to {', '.join(others)}; a tied group is never pruned in part"
               for name, others in tied_weights(model, targets).items()}
    targets = [(name, module) for name, module in targets if name not in skipped]
    if not targets:
        why = "; ".join(f"{name}: {reason}" for name, reason in skipped.items())
        raise ValueError("model: no layer to prune (no Linear/Conv weight, or filter_fn accepted none)"
                         + (f"; skipped {why}" if why else ""))
    if isinstance(sparsity, AGPSchedule):
        if method != "magnitude":
            raise ValueError("method: an AGPSchedule prunes by magnitude only")
        return sparsity._bind(model, targets, scope)
    if isinstance(sparsity, str):
        amount: float | tuple[int, int] = _parse_pattern(sparsity)
    elif not isinstance(sparsity, (numbers.Real, torch.Tensor)) or isinstance(sparsity, bool):
        raise TypeError(f"sparsity: expected a number in [0, 1], an 'N:M' pattern or an AGPSchedule, "
                        f"got {type(sparsity).__name__}")
    else:
        amount = check_fraction("sparsity", sparsity)
    if method == "wanda":
        for name, module in targets:
            if getattr(module, "groups", 1) != 1:
                raise ValueError(f"method: 'wanda' does not support grouped convolutions ({name!r})")
    if method == "magnitude":
        return _apply_masks(targets, amount, scope, None, skipped)
    _prune_wanda(model, targets, calibration, amount, scope)
    return _report(targets, amount, scope, "wanda", skipped)


def strip_(model: nn.Module) -> nn.Module:
    """Make pruning permanent: remove the masks, leaving plain ``weight``
    parameters (same ``Parameter`` objects) that hold the zeros, and plain
    ``state_dict`` keys. Returns ``model``.

    A masked weight tied to another module's tensor (a mask put on one member
    of a tied group by hand; ``prune_`` never does) raises ``ValueError``
    before anything changes: making it permanent would write the zeros into
    every member."""
    _check_model(model)
    pruned = [(name, module) for name, module in model.named_modules() if is_pruned(module)]
    tied = tied_weights(model, pruned)
    if tied:
        name, others = next(iter(tied.items()))
        raise ValueError(f"model: the masked weight of {name!r} is tied to {', '.join(others)}; strip_ would "
                         "write its zeros into every member of the tied group")
    for _, module in pruned:
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model
