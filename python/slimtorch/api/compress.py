"""``compress_(model, config)``: swap ``nn.Linear`` layers (and Hugging Face
``Conv1D``, converted to a linear once) for compressed ones. Layers whose
weight is tied to another parameter (a tied embedding and head) stay as they
are: compressing one member alone would untie or damage the group.

Each compressed layer *format* is a small frozen dataclass (one per kind of
layer, torchao style) with a handler registered for its type that builds the
layer from a dense ``nn.Linear``; the layer classes are looked up by name, so
this module imports none of them:

=================== ================================================== ==============================
format              handler builds                                     tried for
=================== ================================================== ==============================
sparse              ``SparseLinear.from_dense(linear)``                sparse weights, no quantize
sparse_int8_dynamic ``SparseLinear``, scheme int8_dynamic              sparse weights + int8_dynamic
sparse_int8         ``SparseLinear``, scheme int8_weight_only          sparse + int8_dynamic or
                                                                       int8_weight_only
int8_dynamic        ``Int8Linear`` with that scheme                    quantize='int8_dynamic'
int8_weight_only                                                       quantize='int8_weight_only'
int8_static         (calibrated activation scale)                      quantize='int8_static'
=================== ================================================== ==============================

A layer's weights count as sparse when ``config.sparsity`` is a number (the
layer is first pruned to it by magnitude) or, with ``sparsity=None``, when at
least ``config.min_sparsity`` of its weights are already zero. For sparse +
quantized layers the dense int8 format is the fallback candidate.

Speed check (``config.speed_check``, on by default): the candidate layers and
the dense layer are timed interleaved by :mod:`slimtorch.benchmark` on the
layer's real input (recorded from ``example_inputs``) or on
``config.speed_check_rows`` random rows, 15 rounds. A speed-up compares the
least disturbed samples (dense time / candidate time) and is held to a noise
band: twice the disagreement between the even and the odd rounds about it,
at least 3%. The prior stands unless the measurement contradicts it beyond
that band:

- the shipped break-even data (:mod:`slimtorch.data`) rules out, untimed, a
  ``SparseLinear`` whose density is above the break-even at this many rows
  (it would run its dense copy, or its kernel is not expected to pay);
- the first remaining candidate (the table's order) is kept unless it is
  clearly slower than dense (then the next one is considered) or another
  candidate is clearly faster than it; within noise of dense it is kept,
  since it meets "at least as fast" and is what the config asked for;
- when every candidate is clearly slower than dense the layer stays dense.

The report gives each layer's speed-up and the noise band it was held to.
Timing makes the choice depend on the machine; ``speed_check=False`` swaps
every layer the config asks for.
"""

from __future__ import annotations

import fnmatch
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from slimtorch import benchmark
from slimtorch._checks import check_bool, check_fraction, check_int
from slimtorch.api import _backend
from slimtorch.api._batches import run_batch
from slimtorch.api._linear_like import as_linear, is_linear_like
from slimtorch.api.pruning import tied_weights, weight_mask
from slimtorch.api.quantization import ActivationRange, QATLinear, calibrate
from slimtorch.nn.registry import LAYER_CLASSES, register_layer_class
from slimtorch.schemes import INT8_DYNAMIC, INT8_STATIC, INT8_WEIGHT_ONLY, SCHEMES, check_scheme

__all__ = ["CompressConfig", "CompressReport", "LayerDecision", "compress_", "SparseFormat", "Int8Format",
           "register_format_handler", "FORMAT_HANDLERS", "register_layer_class", "LAYER_CLASSES"]

FilterFn = Callable[[nn.Module, str], bool]
QUANTIZE_SCHEMES = (None, *SCHEMES)


# ---- formats and their handlers ----------------------------------------------------

@dataclass(frozen=True)
class SparseFormat:
    """A ``SparseLinear`` with quantization scheme ``scheme``: None (float
    values), ``"int8_weight_only"`` (int8 values, float activations) or
    ``"int8_dynamic"`` (int8 values, activation rows quantized at run time)."""

    scheme: str | None = None

    @property
    def name(self) -> str:
        return {None: "sparse", INT8_WEIGHT_ONLY: "sparse_int8", INT8_DYNAMIC: "sparse_int8_dynamic"}[self.scheme]


@dataclass(frozen=True)
class Int8Format:
    """An ``Int8Linear`` with quantization scheme ``scheme``."""

    scheme: str

    @property
    def name(self) -> str:
        return self.scheme


LayerFormat = SparseFormat | Int8Format
Handler = Callable[[LayerFormat, nn.Linear, "ActivationRange | None"], nn.Module]
FORMAT_HANDLERS: dict[type, Handler] = {}


def register_format_handler(format_type: type) -> Callable[[Handler], Handler]:
    """Decorator registering ``handler(fmt, linear, activation_range) -> module`` for ``format_type``."""

    def decorate(handler: Handler) -> Handler:
        FORMAT_HANDLERS[format_type] = handler
        return handler

    return decorate


def build_layer(fmt: LayerFormat, linear: nn.Linear, activation: ActivationRange | None) -> nn.Module:
    """The compressed layer of format ``fmt`` for ``linear``."""
    return FORMAT_HANDLERS[type(fmt)](fmt, linear, activation)


@register_format_handler(SparseFormat)
def _build_sparse(fmt: SparseFormat, linear: nn.Linear, _: ActivationRange | None) -> nn.Module:
    cls = _backend.layer_class("SparseLinear")
    if fmt.scheme == INT8_DYNAMIC:
        return cls.from_dense(linear, scheme=INT8_DYNAMIC)
    if fmt.scheme == INT8_WEIGHT_ONLY:
        return cls.from_dense(linear, scheme=INT8_WEIGHT_ONLY)
    return cls.from_dense(linear)


@register_format_handler(Int8Format)
def _build_int8(fmt: Int8Format, linear: nn.Linear, activation: ActivationRange | None) -> nn.Module:
    cls = _backend.layer_class("Int8Linear")
    if fmt.scheme != INT8_STATIC:
        return cls.from_dense(linear, scheme=fmt.scheme)
    if activation is None:
        raise ValueError("no calibrated activation range for this layer")
    return cls.from_dense(linear, scheme=INT8_STATIC, activation_scale=activation.activation_scale,
                          activation_zero_point=activation.activation_zero_point)


# {(weights sparse, quantize scheme): formats to try, preferred first}
_CANDIDATES: dict[tuple[bool, str | None], tuple[LayerFormat, ...]] = {
    (False, None): (),
    (True, None): (SparseFormat(),),
    (False, INT8_DYNAMIC): (Int8Format(INT8_DYNAMIC),),
    (True, INT8_DYNAMIC): (SparseFormat(INT8_DYNAMIC), SparseFormat(INT8_WEIGHT_ONLY), Int8Format(INT8_DYNAMIC)),
    (False, INT8_WEIGHT_ONLY): (Int8Format(INT8_WEIGHT_ONLY),),
    (True, INT8_WEIGHT_ONLY): (SparseFormat(INT8_WEIGHT_ONLY), Int8Format(INT8_WEIGHT_ONLY)),
    (False, INT8_STATIC): (Int8Format(INT8_STATIC),),
    (True, INT8_STATIC): (Int8Format(INT8_STATIC),),
}


def _candidates(sparse: bool, quantize: str | None) -> tuple[LayerFormat, ...]:
    """Formats to try, preferred first."""
    return _CANDIDATES[(sparse, quantize)]


# ---- configuration -----------------------------------------------------------------

@dataclass
class CompressConfig:
    """What ``compress_`` does to each ``nn.Linear``.

    Attributes:
        sparsity: None keeps the weights' existing zeros; a number in [0, 1]
            first prunes each layer to that sparsity by magnitude.
        quantize: None, ``'int8_dynamic'`` (int8 weights, activations
            quantized per row at run time), ``'int8_weight_only'`` or
            ``'int8_static'`` (per-tensor activation scale from calibration).
        overrides: ``{module-name pattern: CompressConfig or None}``; the first
            pattern (``fnmatch`` syntax, in insertion order) that matches a
            layer's name gives its sparsity/quantize; None leaves it dense.
        filter_fn: ``filter_fn(module, name) -> bool``; layers it rejects stay dense.
        min_sparsity: with ``sparsity=None``, the fraction of zero weights at
            which a layer is stored sparse.
        speed_check: keep a compressed layer only if it is faster than the
            dense one (see the module docstring).
        speed_check_rows: rows of the random input timed when ``compress_`` got
            no ``example_inputs``.
        embeddings: also store every ``nn.Embedding`` (not tied to another
            parameter) as an int8 table with one scale per row
            (``Int8Embedding``: only the rows a batch looks up are
            dequantized); ``overrides`` and ``filter_fn`` apply to them too.
    """

    sparsity: float | None = None
    quantize: str | None = None
    overrides: Mapping[str, CompressConfig | None] = field(default_factory=dict)
    filter_fn: FilterFn | None = None
    min_sparsity: float = 0.5
    speed_check: bool = True
    speed_check_rows: int = 128
    embeddings: bool = False

    def __post_init__(self) -> None:
        if self.sparsity is not None:
            if isinstance(self.sparsity, bool) or not isinstance(self.sparsity, numbers.Real):
                raise TypeError(f"sparsity: expected None or a number in [0, 1], got {type(self.sparsity).__name__}")
            self.sparsity = check_fraction("sparsity", self.sparsity)
        check_scheme("quantize", self.quantize, QUANTIZE_SCHEMES)
        if not isinstance(self.overrides, Mapping):
            raise TypeError("overrides: expected a mapping of pattern -> CompressConfig or None, "
                            f"got {type(self.overrides).__name__}")
        for pattern, value in self.overrides.items():
            if not isinstance(pattern, str):
                raise TypeError(f"overrides: expected str patterns, got {type(pattern).__name__}")
            if value is not None and not isinstance(value, CompressConfig):
                raise TypeError(f"overrides: value for {pattern!r} must be a CompressConfig or None, "
                                f"got {type(value).__name__}")
        if self.filter_fn is not None and not callable(self.filter_fn):
            raise TypeError("filter_fn: expected None or a callable (module, name) -> bool, "
                            f"got {type(self.filter_fn).__name__}")
        self.min_sparsity = check_fraction("min_sparsity", self.min_sparsity)
        check_bool("speed_check", self.speed_check)
        self.speed_check_rows = check_int("speed_check_rows", self.speed_check_rows, minimum=1)
        check_bool("embeddings", self.embeddings)

    def for_layer(self, name: str) -> CompressConfig | None:
        """The configuration that applies to layer ``name`` (None: leave dense)."""
        for pattern, value in self.overrides.items():
            if fnmatch.fnmatchcase(name, pattern):
                if value is None:
                    return None
                return replace(self, sparsity=value.sparsity, quantize=value.quantize, overrides={})
        return self


# ---- report ------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerDecision:
    """What happened to one layer: ``format`` is None when it stayed dense."""

    name: str
    format: str | None
    reason: str
    sparsity: float
    dense_us: float | None = None
    compressed_us: float | None = None
    speedup: float | None = None  # dense time / compressed time, least disturbed samples of each
    margin: float | None = None  # the noise band (relative) the speed check held that speed-up to


@dataclass(frozen=True)
class CompressReport:
    """Per-layer decisions of ``compress_``; ``str()`` gives a table."""

    layers: list[LayerDecision]

    @property
    def swapped(self) -> dict[str, str]:
        return {d.name: d.format for d in self.layers if d.format is not None}

    @property
    def dense(self) -> dict[str, str]:
        return {d.name: d.reason for d in self.layers if d.format is None}

    def __str__(self) -> str:
        def us(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"

        rows = [("layer", "format", "sparsity", "dense us", "new us", "reason")]
        rows += [(d.name, d.format or "dense", f"{d.sparsity:.1%}", us(d.dense_us), us(d.compressed_us), d.reason)
                 for d in self.layers]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] for r in rows]
        lines.append(f"{len(self.swapped)} of {len(self.layers)} layers compressed")
        return "\n".join(lines)


# ---- timing --------------------------------------------------------------------------

SPEED_CHECK_ROUNDS = 15
SPEED_CHECK_SAMPLE_SECONDS = 0.002  # short samples: some fall between another process's time slices
# A measured difference counts only beyond the noise band: the larger of this
# floor and the band the rounds themselves show (twice the disagreement of
# their even and odd halves, Comparison.fastest_ratio_noise). The floor covers
# what two halves of one layer's rounds cannot show: a state (clock, cache)
# that held for all of them.
MIN_SPEEDUP_MARGIN = 0.03


@dataclass(frozen=True)
class _Verdict:
    """The speed check's choice for one layer: ``format`` (None: stay dense);
    ``measured``, the format whose ``speedup`` over dense is reported (the
    chosen one, else the fastest); ``margin``, the noise band (relative) the
    deciding comparison was held to."""

    format: str | None
    measured: str
    speedup: float
    margin: float
    why: str


def _noise_band(timing: benchmark.Comparison, baseline: str, candidate: str) -> float:
    return max(MIN_SPEEDUP_MARGIN, timing.fastest_ratio_noise(baseline, candidate))


def _decide(timing: benchmark.Comparison, formats: list[str]) -> _Verdict:
    """The layer to keep, from interleaved timings of ``dense`` and ``formats``.

    Speed-ups compare least disturbed samples (other work only adds time).
    ``formats`` come in the order of the prior (the break-even data has
    already removed the ones it expects no faster than the alternatives); the
    first is kept unless the measurement contradicts it beyond the noise band:
    it is clearly slower than dense (then the next one is considered, and
    dense when none is left), or another format is clearly faster than it. A
    compressed layer within noise of dense meets "at least as fast" and is
    what the config asked for, so it stays.
    """
    speedup = {f: timing.fastest_ratio("dense", f) for f in formats}
    band = {f: _noise_band(timing, "dense", f) for f in formats}
    timed = ", ".join(f"{f} {speedup[f]:.2f}x +-{band[f]:.0%}" for f in formats)
    how = (f"dense time / format time, least disturbed of {timing.rounds} interleaved rounds; noise band: twice "
           f"the even and odd rounds' disagreement, at least {MIN_SPEEDUP_MARGIN:.0%}")
    kept = [f for f in formats if speedup[f] * (1.0 + band[f]) >= 1.0]  # not clearly slower than dense
    if not kept:
        fastest = max(formats, key=speedup.get)
        return _Verdict(None, fastest, speedup[fastest], band[fastest],
                        f"compressed would be slower: the fastest, {fastest}, {speedup[fastest]:.2f}x "
                        f"(noise band {band[fastest]:.0%}); timed: {timed} ({how})")
    chosen = kept[0]
    margin = band[chosen]
    note = ""
    rival = max(kept, key=speedup.get)
    if rival != chosen:
        rival_band = _noise_band(timing, chosen, rival)
        if timing.fastest_ratio(chosen, rival) > 1.0 + rival_band:
            chosen, margin = rival, rival_band
            note = f"; clearly faster than {kept[0]} (noise band {rival_band:.0%})"
        else:
            note = f"; {rival} within noise of it (noise band {rival_band:.0%})"
    verdict = "faster than dense" if speedup[chosen] > 1.0 + band[chosen] else "within noise of dense"
    return _Verdict(chosen, chosen, speedup[chosen], margin,
                    f"{speedup[chosen]:.2f}x: {verdict} (noise band {band[chosen]:.0%}){note}; timed: {timed} ({how})")


def _break_even_rules_out(fmt: LayerFormat, density: float, rows: int, linear: nn.Linear) -> str | None:
    """Why the shipped break-even data rules ``fmt`` out for ``rows`` input
    rows, or None. A ``SparseLinear`` with float or int8 values runs its
    dense copy above the break-even batch of its density: the dense layer's
    speed at best, with a packed copy to carry. The dynamic sparse kernel has
    no table of its own; the int8 one stands in for it (the same packed int8
    rows), which errs towards the dense int8 layer it competes with, itself
    faster than the dense float layer the table was measured against."""
    if not isinstance(fmt, SparseFormat):
        return None
    values = linear.weight.dtype if fmt.scheme is None else torch.int8
    max_batch = _backend.sparse_max_batch(density, values, linear.in_features * linear.out_features,
                                          linear.weight.device)
    if rows <= max_batch:
        return None
    outcome = "it would run its dense copy" if fmt.scheme != INT8_DYNAMIC else "the sparse kernel is not expected to pay"
    return (f"{fmt.name}: not timed, {outcome} at {rows} rows "
            f"(break-even data: sparse kernel up to {max_batch} rows at density {density:.0%})")


def _record_inputs(model: nn.Module, names: list[str], example_inputs: object) -> dict[str, tuple]:
    """Shape, dtype and device of each layer's first input (timing does not
    depend on the values, so none are kept)."""
    inputs: dict[str, tuple] = {}
    handles = []
    for name in names:
        def hook(module: nn.Module, args: tuple, name: str = name) -> None:
            if name not in inputs and args and isinstance(args[0], torch.Tensor):
                inputs[name] = (tuple(args[0].shape), args[0].dtype, args[0].device)
        handles.append(model.get_submodule(name).register_forward_pre_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            run_batch(model, example_inputs)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return inputs


# ---- compress_ ---------------------------------------------------------------------

@torch.no_grad()
def _prune_layer(module: nn.Module, sparsity: float) -> None:
    keep = _backend.magnitude_masks([module.weight.detach()], sparsity)[0]
    mask = weight_mask(module)
    if mask is None:
        module.weight.masked_fill_(~keep, 0)
    else:  # a prune_-masked layer: write through to the stored original and the mask
        module.parametrizations["weight"].original.masked_fill_(~keep, 0)
        mask.logical_and_(keep)


def _zero_fraction(module: nn.Module) -> float:
    w = module.weight
    return float((w == 0).sum()) / w.numel() if w.numel() else 0.0


def compress_(model: nn.Module, config: CompressConfig, *, example_inputs: object = None,
              calibration: Mapping[str, ActivationRange] | Iterable | None = None) -> CompressReport:
    """Swap the ``nn.Linear`` layers of ``model`` for compressed layers, in place.

    Args:
        model: any ``nn.Module``; every ``nn.Linear`` and Hugging Face
            ``Conv1D`` in it is considered, except tied ones
            (including pruned ones; ``QATLinear`` is left to ``convert_qat_``).
        config: a :class:`CompressConfig`.
        example_inputs: one batch (tensor, tuple or dict, as ``calibrate``
            takes them) whose per-layer inputs the speed check times.
        calibration: for ``'int8_static'``: the result of
            :func:`slimtorch.calibrate`, or an iterable of batches to calibrate on.

    Returns:
        A :class:`CompressReport`: the format of every layer, or why it stayed dense.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, CompressConfig):
        raise TypeError(f"config: expected a slimtorch.CompressConfig, got {type(config).__name__}")
    linears = [(name, m) for name, m in model.named_modules()
               if is_linear_like(m) and not isinstance(m, QATLinear) and name]
    embeddings = [(name, m) for name, m in model.named_modules()
                  if config.embeddings and type(m) is nn.Embedding and name]
    tied = tied_weights(model, linears + embeddings)
    plans, embedding_plans = [], []
    for targets, out in ((linears, plans), (embeddings, embedding_plans)):
        for name, module in targets:
            layer_config = config.for_layer(name)
            if name in tied:
                out.append((name, module, None, f"weight tied to {', '.join(tied[name])}; "
                                                "a tied group is never compressed in part"))
            elif layer_config is None:
                out.append((name, module, None, "override: left dense"))
            elif config.filter_fn is not None and not config.filter_fn(module, name):
                out.append((name, module, None, "filter_fn: left dense"))
            else:
                out.append((name, module, layer_config, ""))
    wants_static = any(c is not None and c.quantize == "int8_static" for _, _, c, _ in plans)
    ranges: Mapping[str, ActivationRange] = {}
    if wants_static:
        if calibration is None:
            raise ValueError("calibration: quantize='int8_static' needs calibrate(...) results or calibration batches")
        if isinstance(calibration, Mapping):
            ranges = calibration
        else:
            ranges = calibrate(model, calibration)
    any_check = any(c is not None and c.speed_check for _, _, c, _ in plans)
    inputs = {}
    if any_check and example_inputs is not None:
        inputs = _record_inputs(model, [n for n, *_ in plans], example_inputs)

    decisions = []
    for name, linear, layer_config, reason in plans:
        if layer_config is None:
            decisions.append(LayerDecision(name, None, reason, _zero_fraction(linear)))
            continue
        decision, layer = _compress_layer(name, linear, layer_config, ranges.get(name), inputs.get(name))
        decisions.append(decision)
        if layer is not None:
            model.set_submodule(name, layer.train(linear.training))
    for name, embedding, layer_config, reason in embedding_plans:
        if layer_config is None:
            decisions.append(LayerDecision(name, None, reason, _zero_fraction(embedding)))
            continue
        decision, layer = _compress_embedding(name, embedding)
        decisions.append(decision)
        if layer is not None:
            model.set_submodule(name, layer.train(embedding.training))
    return CompressReport(decisions)


def _compress_embedding(name: str, embedding: nn.Embedding) -> tuple[LayerDecision, nn.Module | None]:
    """The int8 table of ``embedding``; a lookup costs next to nothing, so it is not timed."""
    sparsity = _zero_fraction(embedding)
    try:
        layer = _backend.layer_class("Int8Embedding").from_dense(embedding)
    except _BUILD_ERRORS as error:
        return LayerDecision(name, None, f"int8_embedding: {error}", sparsity), None
    return LayerDecision(name, "int8_embedding", "int8 rows, dequantized on lookup (not timed)", sparsity), layer


_BUILD_ERRORS = (TypeError, ValueError, RuntimeError, NotImplementedError)


def _compress_layer(name: str, module: nn.Module, config: CompressConfig, activation: ActivationRange | None,
                    input_spec: tuple | None) -> tuple[LayerDecision, nn.Module | None]:
    """Prune (if asked), build the candidate formats, time them against the
    dense layer (if asked) and pick one; returns the decision and the new
    layer (None: stay dense)."""
    if config.sparsity is not None:
        _prune_layer(module, config.sparsity)  # element-wise: the same for any weight layout
    sparsity = _zero_fraction(module)
    linear = as_linear(module)
    sparse = config.sparsity is not None or (sparsity > 0 and sparsity >= config.min_sparsity)
    candidates = _candidates(sparse, config.quantize)
    if not candidates:
        return LayerDecision(name, None, f"nothing to do: weights {sparsity:.0%} zero, no quantization", sparsity), None
    shape, dtype, device = input_spec or ((config.speed_check_rows, linear.in_features), linear.weight.dtype,
                                          linear.weight.device)
    rows = math.prod(shape[:-1])
    built, failures, ruled_out = [], [], []
    for candidate in candidates:
        fmt = candidate.name
        why_not = _break_even_rules_out(candidate, 1.0 - sparsity, rows, linear) if config.speed_check else None
        if why_not is not None:
            ruled_out.append(why_not)
            continue
        try:
            built.append((fmt, build_layer(candidate, linear, activation)))
        except _BUILD_ERRORS as error:
            failures.append(f"{fmt}: {error}")
            continue
        if not config.speed_check:
            return LayerDecision(name, fmt, "speed check off", sparsity), built[0][1]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype=dtype, device=device)
    runnable = []
    for fmt, layer in built:  # a layer that cannot run this input (dtype, size) is no candidate
        try:
            with torch.no_grad():
                layer(x)
            runnable.append((fmt, layer))
        except _BUILD_ERRORS as error:
            failures.append(f"{fmt}: {error}")
    if not runnable:
        return LayerDecision(name, None, "; ".join(ruled_out + failures), sparsity), None
    timer = benchmark.Interleaved({"dense": lambda: module(x), **{fmt: (lambda layer=layer: layer(x))
                                                                  for fmt, layer in runnable}},
                                  baseline="dense", sample_seconds=SPEED_CHECK_SAMPLE_SECONDS)
    with torch.no_grad():
        for _ in range(SPEED_CHECK_ROUNDS):
            timer.round()
    timing = timer.result()
    verdict = _decide(timing, [fmt for fmt, _ in runnable])
    why = "; ".join([verdict.why] + ruled_out)
    decision = LayerDecision(name, verdict.format, why, sparsity, timing.fastest("dense") * 1e6,
                             timing.fastest(verdict.measured) * 1e6, verdict.speedup, verdict.margin)
    return decision, (None if verdict.format is None else dict(runnable)[verdict.format])
