"""Quantization calibration and quantization-aware training.

Observers watch float tensors and turn what they saw into a range
``(lo, hi)`` and int8/uint8 quantization parameters:

- :class:`MinMaxObserver`: the running min and max.
- :class:`MovingAverageMinMaxObserver`: an exponential moving average of each
  batch's min and max (robust to one outlier batch; what QAT uses).
- :class:`PercentileObserver`: the ``100 - p`` and ``p`` percentiles.
- :class:`MSEObserver`: the clipping range that minimizes the expected
  squared quantization error (clipping + rounding) of the values seen.

The last two keep a histogram (``bins`` bins over the range seen so far; when a
batch widens the range, old counts move to the new bin holding their old bin's
centre), so their ranges are exact up to one bin width.

:func:`calibrate` runs data through a model and returns the range of the input
of every selected ``nn.Linear`` (what static int8 quantization needs).
:func:`prepare_qat_` swaps ``nn.Linear`` for :class:`QATLinear`, which
fake-quantizes weights (per output channel, symmetric int8 in [-127, 127]) and
activations (uint8, per row — ``scheme='int8_dynamic'`` — or per tensor from
a moving average observer — ``scheme='int8_static'``) exactly as
``slimtorch.nn.Int8Linear`` does (the same op-level quantization rules),
with a straight-through estimator: the gradient passes through rounding
unchanged and is zero where a value was clipped. :func:`convert_qat_` turns
``QATLinear`` into ``Int8Linear``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from slimtorch._checks import (
    check_bool,
    check_float_tensor,
    check_fraction,
    check_int,
    check_module,
    check_qdtype,
    check_real,
)
from slimtorch.api import _backend
from slimtorch.api._batches import run_batch
from slimtorch.api._linear_like import is_linear_like
from slimtorch.schemes import INT8_DYNAMIC, INT8_STATIC, check_scheme, deprecated_alias

__all__ = [
    "Observer", "MinMaxObserver", "MovingAverageMinMaxObserver", "PercentileObserver", "MSEObserver",
    "ActivationRange", "calibrate", "QATLinear", "prepare_qat_", "convert_qat_",
]

FilterFn = Callable[[nn.Module, str], bool]
QAT_SCHEMES = (INT8_DYNAMIC, INT8_STATIC)


class Observer(nn.Module):
    """Base class: ``forward(x)`` records ``x`` and returns it unchanged.

    Args:
        symmetric: symmetric quantization parameters (zero point 0 for int8).
        dtype: ``torch.uint8`` (activations of ``Int8Linear``) or ``torch.int8``.
    """

    def __init__(self, *, symmetric: bool = False, dtype: torch.dtype = torch.uint8) -> None:
        super().__init__()
        self.symmetric = check_bool("symmetric", symmetric)
        self.dtype = check_qdtype("dtype", dtype)
        self.register_buffer("min_val", torch.tensor(math.inf))
        self.register_buffer("max_val", torch.tensor(-math.inf))

    @property
    def observed(self) -> bool:
        return bool(self.min_val <= self.max_val)

    def reset(self) -> None:
        """Forget everything observed."""
        self.min_val.fill_(math.inf)
        self.max_val.fill_(-math.inf)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_float_tensor("x", x)
        if x.numel() == 0:
            return x
        values = x.detach().float().reshape(-1)
        lo, hi = torch.aminmax(values)
        if not (torch.isfinite(lo) and torch.isfinite(hi)):
            raise ValueError(f"x: expected finite values to observe, got {'NaN' if values.isnan().any() else 'Inf'}")
        self._observe(values, lo, hi)
        return x

    def _observe(self, values: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> None:
        self.min_val.copy_(torch.minimum(self.min_val, lo))
        self.max_val.copy_(torch.maximum(self.max_val, hi))

    def range(self) -> tuple[float, float]:
        """The range ``(lo, hi)`` to quantize, from what was observed."""
        if not self.observed:
            raise RuntimeError(f"{type(self).__name__}: nothing observed yet")
        return float(self.min_val), float(self.max_val)

    def calculate_qparams(self) -> tuple[float, int]:
        """``(scale, zero_point)`` for :meth:`range` (DESIGN.md formula)."""
        lo, hi = self.range()
        return _backend.qparams_from_range(lo, hi, symmetric=self.symmetric, dtype=self.dtype)

    def extra_repr(self) -> str:
        return (f"symmetric={self.symmetric}, dtype={self.dtype}, min_val={float(self.min_val)}, "
                f"max_val={float(self.max_val)}")


class MinMaxObserver(Observer):
    """The running minimum and maximum of everything observed."""


class MovingAverageMinMaxObserver(Observer):
    """``range += averaging_constant * (batch range - range)``; the first batch sets it."""

    def __init__(self, averaging_constant: float = 0.01, **kwargs) -> None:
        super().__init__(**kwargs)
        self.averaging_constant = check_fraction("averaging_constant", averaging_constant)
        if self.averaging_constant == 0:
            raise ValueError("averaging_constant: expected a number in (0, 1], got 0.0")

    def _observe(self, values: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> None:
        if not self.observed:
            super()._observe(values, lo, hi)
            return
        c = self.averaging_constant
        self.min_val.add_(c * (lo - self.min_val))
        self.max_val.add_(c * (hi - self.max_val))


class _HistogramObserver(Observer):
    """Keeps ``bins`` counts over [min_val, max_val] (float64 counts)."""

    def __init__(self, bins: int = 2048, **kwargs) -> None:
        super().__init__(**kwargs)
        self.bins = check_int("bins", bins, minimum=16)
        self.register_buffer("histogram", torch.zeros(self.bins, dtype=torch.float64))

    def reset(self) -> None:
        super().reset()
        self.histogram.zero_()

    def _observe(self, values: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> None:
        old_lo, old_hi = float(self.min_val), float(self.max_val)
        had = self.observed
        super()._observe(values, lo, hi)
        new_lo, new_hi = float(self.min_val), float(self.max_val)
        if had and (new_lo, new_hi) != (old_lo, old_hi) and self.histogram.sum() > 0:
            # Move old counts to the new bins holding the old bin centres.
            width = (old_hi - old_lo) / self.bins
            centres = old_lo + (torch.arange(self.bins, dtype=torch.float64) + 0.5) * width
            moved = torch.zeros_like(self.histogram)
            moved.index_add_(0, self._bin_of(centres, new_lo, new_hi), self.histogram)
            self.histogram.copy_(moved)
        self.histogram.index_add_(0, self._bin_of(values.double(), new_lo, new_hi),
                                  torch.ones(values.numel(), dtype=torch.float64))

    def _bin_of(self, v: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        if hi <= lo:
            return torch.zeros(v.numel(), dtype=torch.long)
        return ((v - lo) * (self.bins / (hi - lo))).floor().clamp_(0, self.bins - 1).long()

    def _edges(self) -> torch.Tensor:
        return torch.linspace(float(self.min_val), float(self.max_val), self.bins + 1, dtype=torch.float64)


class PercentileObserver(_HistogramObserver):
    """Range from the ``100 - percentile`` and ``percentile`` percentiles of the values seen."""

    def __init__(self, percentile: float = 99.99, bins: int = 2048, **kwargs) -> None:
        super().__init__(bins, **kwargs)
        p = check_real("percentile", percentile)
        if not 50.0 < p <= 100.0:
            raise ValueError(f"percentile: expected a number in (50, 100], got {p}")
        self.percentile = p

    def _quantile(self, q: float) -> float:
        cdf = torch.cumsum(self.histogram, 0)
        target = q * float(cdf[-1])
        i = int(torch.searchsorted(cdf, torch.tensor([target], dtype=torch.float64)).clamp(max=self.bins - 1))
        before = float(cdf[i - 1]) if i else 0.0
        inside = float(self.histogram[i])
        edges = self._edges()
        frac = (target - before) / inside if inside else 0.0
        return float(edges[i] + min(max(frac, 0.0), 1.0) * (edges[i + 1] - edges[i]))

    def range(self) -> tuple[float, float]:
        lo, hi = super().range()
        if lo == hi:
            return lo, hi
        q = self.percentile / 100.0
        return max(lo, self._quantile(1.0 - q)), min(hi, self._quantile(q))


class MSEObserver(_HistogramObserver):
    """The range ``[a * lo, b * hi]`` that minimizes the expected squared
    error of the values seen: clipping error outside the range plus
    ``scale**2 / 12`` rounding error inside. ``a`` and ``b`` run over
    ``steps`` geometrically spaced candidates in [1e-3, 1] (coordinate descent, one factor at a time;
    one common factor for symmetric quantization)."""

    def __init__(self, steps: int = 100, bins: int = 2048, **kwargs) -> None:
        super().__init__(bins, **kwargs)
        self.steps = check_int("steps", steps, minimum=1)

    def _errors(self, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Expected squared error for each candidate range (lo[i], hi[i])."""
        qmin, qmax = (-128, 127) if self.dtype == torch.int8 else (0, 255)
        lo, hi = lo.clamp(max=0), hi.clamp(min=0)
        if self.symmetric:
            scale = torch.maximum(-lo, hi) / 127
            zero_point = torch.full_like(scale, 0 if self.dtype == torch.int8 else 128)
        else:
            scale = (hi - lo) / (qmax - qmin)
            zero_point = (qmin - torch.round(lo / scale.clamp_min(_backend.MIN_SCALE))).clamp(qmin, qmax)
        scale = scale.clamp_min(_backend.MIN_SCALE)[:, None]
        q_lo, q_hi = (qmin - zero_point)[:, None] * scale, (qmax - zero_point)[:, None] * scale
        edges = self._edges()
        centres = ((edges[:-1] + edges[1:]) / 2)[None, :]
        clipped = torch.minimum(torch.maximum(centres, q_lo), q_hi)
        per_value = (centres - clipped) ** 2 + (centres == clipped) * scale**2 / 12
        return (per_value * self.histogram[None, :]).sum(dim=1)

    def range(self) -> tuple[float, float]:
        lo, hi = super().range()
        if lo == hi:
            return lo, hi
        # Geometric candidates: heavy tails need factors far below 1 as much as near it.
        factors = torch.logspace(-3, 0, self.steps, dtype=torch.float64)
        if self.symmetric:
            best = int(torch.argmin(self._errors(factors * lo, factors * hi)))
            return float(factors[best] * lo), float(factors[best] * hi)
        a, b = 1.0, 1.0
        for _ in range(3):
            b = float(factors[int(torch.argmin(self._errors(torch.full_like(factors, a * lo), factors * hi)))])
            a = float(factors[int(torch.argmin(self._errors(factors * lo, torch.full_like(factors, b * hi))))])
        return a * lo, b * hi


# ---- calibration ---------------------------------------------------------------

@dataclass(frozen=True)
class ActivationRange:
    """The observed range of one layer's input and its quantization
    parameters: the activation scale and zero point of ``int8_static``."""

    min: float
    max: float
    activation_scale: float
    activation_zero_point: int

    @property
    def scale(self) -> float:
        """Deprecated: use :attr:`activation_scale`."""
        warnings.warn("ActivationRange.scale is deprecated; use activation_scale", DeprecationWarning, stacklevel=2)
        return self.activation_scale

    @property
    def zero_point(self) -> int:
        """Deprecated: use :attr:`activation_zero_point`."""
        warnings.warn("ActivationRange.zero_point is deprecated; use activation_zero_point", DeprecationWarning,
                      stacklevel=2)
        return self.activation_zero_point


def _check_filter(filter_fn: object) -> None:
    if filter_fn is not None and not callable(filter_fn):
        raise TypeError("filter_fn: expected None or a callable (module, name) -> bool, "
                        f"got {type(filter_fn).__name__}")


def _observe_input(obs: Observer) -> Callable:
    def hook(module: nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], torch.Tensor):
            obs(args[0])
    return hook


def calibrate(model: nn.Module, data: Iterable, *, observer: Callable[[], Observer] = MinMaxObserver,
              filter_fn: FilterFn | None = None, max_batches: int | None = None) -> dict[str, ActivationRange]:
    """Run ``data`` through ``model`` and collect the input range of every
    ``nn.Linear`` (and linear-like module such as Hugging Face's ``Conv1D``)
    that ``filter_fn(module, name)`` accepts (default: all).

    Args:
        model: the float model; run in eval mode under ``no_grad`` (its mode is
            restored afterwards).
        data: an iterable of batches: a tensor is passed as ``model(batch)``, a
            tuple/list as ``model(*batch)``, a dict as ``model(**batch)``.
        observer: makes one observer per layer, e.g. ``PercentileObserver`` or
            ``functools.partial(PercentileObserver, percentile=99.9)``.
        max_batches: stop after this many batches (default: all of ``data``).

    Returns:
        ``{layer name: ActivationRange}`` for the layers that saw data.
    """
    check_module("model", model)
    if not isinstance(data, Iterable) or isinstance(data, (torch.Tensor, str, bytes)):
        raise TypeError(f"data: expected an iterable of batches, got {type(data).__name__}")
    if not callable(observer):
        raise TypeError(f"observer: expected an Observer class or factory, got {type(observer).__name__}")
    _check_filter(filter_fn)
    check_int("max_batches", max_batches, minimum=1, allow_none=True)
    observers: dict[str, Observer] = {}
    handles = []
    for name, module in model.named_modules():
        if is_linear_like(module) and (filter_fn is None or filter_fn(module, name)):
            obs = observer()
            if not isinstance(obs, Observer):
                raise TypeError(f"observer: expected a factory of Observer, it made a {type(obs).__name__}")
            observers[name] = obs
            handles.append(module.register_forward_pre_hook(_observe_input(obs)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i, batch in enumerate(data):
                if max_batches is not None and i >= max_batches:
                    break
                run_batch(model, batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    result = {}
    for name, obs in observers.items():
        if obs.observed:
            lo, hi = obs.range()
            scale, zero_point = obs.calculate_qparams()
            result[name] = ActivationRange(lo, hi, scale, zero_point)
    return result


# ---- quantization-aware training -------------------------------------------------

def _fake_quantize_weight(w: torch.Tensor) -> torch.Tensor:
    # Exactly Int8Linear's weights (per output channel, symmetric int8, the
    # op-level quantization rules), with a straight-through gradient: the
    # range covers every weight, so nothing is clipped.
    detached = w.detach()
    scale, zero_point = _backend.choose_qparams(detached, axis=0, symmetric=True, dtype=torch.int8)
    q = _backend.quantize(detached, scale, zero_point, axis=0, dtype=torch.int8)
    dequantized = _backend.dequantize(q, scale, zero_point, axis=0, dtype=w.dtype)
    return w + (dequantized - w).detach()


class QATLinear(nn.Linear):
    """``nn.Linear`` that trains against int8 rounding (see the module docstring).

    Holds the same ``weight``/``bias`` parameters as the layer it replaced.
    ``scheme='int8_static'`` keeps a :class:`MovingAverageMinMaxObserver` of its
    input that updates in training mode (freeze it with ``observe = False``).
    ``activation`` (``'dynamic'``, ``'static'``): deprecated alias of ``scheme``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, scheme: str = INT8_DYNAMIC,
                 activation: str | None = None, device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        scheme = deprecated_alias("activation", activation, "scheme", scheme, INT8_DYNAMIC, translate=True)
        self.scheme = check_scheme("scheme", scheme, QAT_SCHEMES)
        self.observe = True
        self.observer = MovingAverageMinMaxObserver(dtype=torch.uint8) if scheme == INT8_STATIC else None

    @property
    def activation(self) -> str:
        """Deprecated: ``'dynamic'`` or ``'static'``; use :attr:`scheme`."""
        return self.scheme.removeprefix("int8_")

    @classmethod
    def from_linear(cls, linear: nn.Linear, scheme: str = INT8_DYNAMIC) -> QATLinear:
        qat = cls(linear.in_features, linear.out_features, linear.bias is not None, scheme=scheme,
                  device="meta")
        qat.weight, qat.bias = linear.weight, linear.bias  # the same Parameters: optimizers keep working
        if qat.observer is not None:
            qat.observer.to(linear.weight.device)
        qat.train(linear.training)
        return qat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2d = x.reshape(-1, self.in_features)
        if self.scheme == INT8_DYNAMIC:
            xq = _backend.fake_quantize_rows(x2d)  # the rows Int8Linear's dynamic kernel multiplies
        else:
            if self.training and self.observe:
                self.observer(x2d)
            if not self.observer.observed:
                raise RuntimeError("QATLinear: the static activation observer saw no data; run a training step first")
            scale, zero_point = self.observer.calculate_qparams()
            xq = torch.fake_quantize_per_tensor_affine(x2d, scale, zero_point, 0, 255)
        y = nn.functional.linear(xq, _fake_quantize_weight(self.weight), self.bias)
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scheme={self.scheme!r}"


def prepare_qat_(model: nn.Module, *, scheme: str = INT8_DYNAMIC, filter_fn: FilterFn | None = None,
                 activation: str | None = None) -> nn.Module:
    """Swap every ``nn.Linear`` that ``filter_fn(module, name)`` accepts for a
    :class:`QATLinear` (fake int8 quantization with a straight-through
    estimator), in place. ``scheme`` is ``'int8_dynamic'`` (activations per
    row) or ``'int8_static'`` (per tensor, observed); ``activation``
    (``'dynamic'``, ``'static'``) is its deprecated alias. Returns ``model``."""
    check_module("model", model)
    scheme = deprecated_alias("activation", activation, "scheme", scheme, INT8_DYNAMIC, translate=True)
    check_scheme("scheme", scheme, QAT_SCHEMES)
    _check_filter(filter_fn)
    swaps = [(name, module) for name, module in model.named_modules()
             if type(module) is nn.Linear and (filter_fn is None or filter_fn(module, name))]
    if not swaps:
        raise ValueError("model: no nn.Linear to prepare (or filter_fn accepted none)")
    for name, module in swaps:
        model.set_submodule(name, QATLinear.from_linear(module, scheme))
    return model


def convert_qat_(model: nn.Module) -> nn.Module:
    """Replace every :class:`QATLinear` by ``slimtorch.nn.Int8Linear`` (scheme
    ``'int8_dynamic'``, or ``'int8_static'`` with the observed activation
    range). Returns ``model``."""
    check_module("model", model)
    int8_linear = _backend.layer_class("Int8Linear")
    swaps = [(name, m) for name, m in model.named_modules() if isinstance(m, QATLinear)]
    if not swaps:
        raise ValueError("model: no QATLinear to convert (call prepare_qat_ first)")
    for name, qat in swaps:
        dense = nn.Linear(qat.in_features, qat.out_features, qat.bias is not None, device="meta")
        dense.weight, dense.bias = qat.weight, qat.bias
        if qat.scheme == INT8_DYNAMIC:
            layer = int8_linear.from_dense(dense, scheme=INT8_DYNAMIC)
        else:
            scale, zero_point = qat.observer.calculate_qparams()
            layer = int8_linear.from_dense(dense, scheme=INT8_STATIC, activation_scale=scale,
                                           activation_zero_point=zero_point)
        model.set_submodule(name, layer)
    return model
