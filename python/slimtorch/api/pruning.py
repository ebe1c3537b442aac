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

import numbers
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from slimtorch.api import _backend
from slimtorch._checks import check_fraction

__all__ = ["AGPSchedule", "PruneReport", "prune_", "strip_", "is_pruned", "weight_mask"]

FilterFn = Callable[[nn.Module, str], bool]
_SCOPES = ("global", "layer")
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


def _default_filter(module: nn.Module, name: str) -> bool:
    return isinstance(module, _DEFAULT_TYPES)


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


@torch.no_grad()
def _apply_masks(targets: list[tuple[str, nn.Module]], sparsity: float, scope: str) -> PruneReport:
    groups = [targets] if scope == "global" else [[t] for t in targets]
    # All masks are computed before any is applied: a rejected sparsity changes nothing.
    for name, module in targets:
        if module.weight.isnan().any():
            raise ValueError(f"model: the weight of {name!r} contains NaN, which has no magnitude to rank")
    plans = []
    for group in groups:
        old = [weight_mask(module) for _, module in group]
        new = _grow_masks([module.weight.detach() for _, module in group], old, sparsity)
        plans.extend(zip(group, new, old))
    for (_, module), mask, previous in plans:
        if previous is None:
            parametrize.register_parametrization(module, "weight", WeightMask(mask.contiguous()))
        else:
            previous.copy_(mask)
        # Zero the stored original too, so it agrees with the effective weight.
        module.parametrizations["weight"].original.masked_fill_(~mask, 0)
    layers, pruned, numel = {}, 0, 0
    for name, module in targets:
        mask = weight_mask(module)
        n_pruned = int(mask.numel() - mask.sum().item())
        layers[name] = n_pruned / mask.numel() if mask.numel() else 0.0
        pruned += n_pruned
        numel += mask.numel()
    total = pruned / numel if numel else 0.0
    return PruneReport(sparsity=sparsity, scope=scope, layers=layers, total=total, pruned=pruned, numel=numel)


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    return model


def _check_filter(filter_fn: object) -> FilterFn | None:
    if filter_fn is not None and not callable(filter_fn):
        raise TypeError(f"filter_fn: expected None or a callable (module, name) -> bool, got {type(filter_fn).__name__}")
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
                f"initial_sparsity: expected at most final_sparsity ({self.final_sparsity}), got {self.initial_sparsity}"
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


def prune_(model: nn.Module, sparsity: float | AGPSchedule, *, scope: str = "global",
           filter_fn: FilterFn | None = None) -> PruneReport:
    """Prune ``model`` in place by weight magnitude and keep it pruned while training.

    Args:
        model: any ``nn.Module``.
        sparsity: a fraction in [0, 1] — exactly ``round(sparsity * N)`` weights
            are masked (N over all selected weights for ``scope='global'``, per
            layer for ``scope='layer'``) — or an :class:`AGPSchedule`, which is
            bound to the model, prunes to its initial sparsity now and re-prunes
            on ``schedule.step()``.
        scope: ``'global'`` (one magnitude threshold across layers) or ``'layer'``.
        filter_fn: ``filter_fn(module, name) -> bool`` chooses among modules
            whose ``weight`` is a float parameter of rank >= 2 (default:
            ``nn.Linear`` and ``nn.Conv1d/2d/3d``).

    Returns:
        A :class:`PruneReport` (per-layer and total sparsity). Pruning an
        already pruned model grows its masks; it never lowers sparsity.
    """
    _check_model(model)
    if isinstance(scope, bool) or not isinstance(scope, str):
        raise TypeError(f"scope: expected 'global' or 'layer', got {type(scope).__name__}")
    if scope not in _SCOPES:
        raise ValueError(f"scope: expected 'global' or 'layer', got {scope!r}")
    _check_filter(filter_fn)
    targets = _targets(model, filter_fn)
    if not targets:
        raise ValueError("model: no layer to prune (no Linear/Conv weight, or filter_fn accepted none)")
    if isinstance(sparsity, AGPSchedule):
        return sparsity._bind(model, targets, scope)
    if not isinstance(sparsity, (numbers.Real, torch.Tensor)) or isinstance(sparsity, bool):
        raise TypeError(f"sparsity: expected a number in [0, 1] or an AGPSchedule, got {type(sparsity).__name__}")
    return _apply_masks(targets, check_fraction("sparsity", sparsity), scope)


def strip_(model: nn.Module) -> nn.Module:
    """Make pruning permanent: remove the masks, leaving plain ``weight``
    parameters (same ``Parameter`` objects) that hold the zeros, and plain
    ``state_dict`` keys. Returns ``model``."""
    _check_model(model)
    for module in model.modules():
        if is_pruned(module):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model
