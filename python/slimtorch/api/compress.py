"""``compress_(model, config)``: swap ``nn.Linear`` layers (and Hugging Face
``Conv1D``, converted to a linear once) for compressed ones.

Tied weights (a token embedding that is also the language-model head's
weight) are compressed only as a whole group, never one member alone: with
``embeddings=True`` and a ``quantize`` scheme, a group of ``nn.Embedding``
modules and at most one linear head whose weight is the same ``[vocab,
hidden]`` table becomes ``Int8Embedding`` layers and an ``Int8Linear`` head
that share one int8 table and per-row scale (an embedding row's scale is the
head's output-channel scale; a head bias tied to a tensor outside the group,
as BERT's masked-LM head has, stays that tensor). Sparsity is not applied to
a tied group. The head keeps the kernel layout every ``Int8Linear`` builds
from its weight (the int8 kernels need it; computing from the row-major table
is slower than the dense head); the stored table is held, counted and saved
once. A group with any other member, or that the config leaves partly dense,
stays as it is and the report says why.

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

import copy
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
from slimtorch.api.pruning import storage_key, tensor_owners, weight_mask
from slimtorch.api.quantization import ActivationRange, QATLinear, calibrate
from slimtorch.nn.registry import LAYER_CLASSES, register_layer_class
from slimtorch.schemes import INT8_DYNAMIC, INT8_STATIC, INT8_WEIGHT_ONLY, SCHEMES, check_scheme

__all__ = ["CompressConfig", "CompressReport", "LayerDecision", "compress_", "SparseFormat", "Int8Format",
           "register_format_handler", "FORMAT_HANDLERS", "register_layer_class", "LAYER_CLASSES"]

FilterFn = Callable[[nn.Module, str], bool]
QUANTIZE_SCHEMES = (None, *SCHEMES)
COMPUTE_DTYPES = (torch.float32, torch.bfloat16)


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
        embeddings: also store every ``nn.Embedding`` as an int8 table with
            one scale per row (``Int8Embedding``: only the rows a batch looks
            up are dequantized); ``overrides`` and ``filter_fn`` apply to them
            too. An embedding tied to a head is compressed together with it
            (one shared int8 table; see the module docstring).
        compute_dtype: ``torch.float32`` (default: every dtype stays as it
            is) or ``torch.bfloat16``: on a CPU with native bf16 (AMX-BF16
            or AVX512-BF16, see ``slimtorch.ops.cpu_bf16_status``) the parts
            left uncompressed are cast to bf16 like ``model.bfloat16()``, the
            compressed layers take and return bf16, and the speed check
            times every layer in bf16 against the dense bf16 layer. Needs
            ``example_inputs``. Elsewhere it is ignored (the model stays
            float32) and the report says why. Model-wide: the value in an
            ``overrides`` entry is not used.
        min_output_cosine: with ``compute_dtype=torch.bfloat16``, the least
            mean cosine similarity (over output vectors, last dimension)
            between the bf16 model's outputs on ``example_inputs`` and those
            of the same compressed layers with float32 everywhere else (what
            bf16 adds, apart from pruning and int8); below it (or on NaN/Inf,
            or an error in bf16) ``compress_`` undoes the bf16 result and
            compresses in float32 instead.
    """

    sparsity: float | None = None
    quantize: str | None = None
    overrides: Mapping[str, CompressConfig | None] = field(default_factory=dict)
    filter_fn: FilterFn | None = None
    min_sparsity: float = 0.5
    speed_check: bool = True
    speed_check_rows: int = 128
    embeddings: bool = False
    compute_dtype: torch.dtype = torch.float32
    min_output_cosine: float = 0.99

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
        if not isinstance(self.compute_dtype, torch.dtype):
            raise TypeError(f"compute_dtype: expected torch.float32 or torch.bfloat16, "
                            f"got {type(self.compute_dtype).__name__}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype: expected torch.float32 or torch.bfloat16, got {self.compute_dtype}")
        self.min_output_cosine = check_fraction("min_output_cosine", self.min_output_cosine)

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
    """Per-layer decisions of ``compress_``; ``str()`` gives a table.
    ``compute_dtype``: the dtype the model now computes in where it is not
    compressed; ``compute_dtype_reason``: why (empty when none was asked)."""

    layers: list[LayerDecision]
    compute_dtype: torch.dtype = torch.float32
    compute_dtype_reason: str = ""

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
        if self.compute_dtype_reason:
            lines.append(f"compute dtype {str(self.compute_dtype).removeprefix('torch.')}: "
                         f"{self.compute_dtype_reason}")
        return "\n".join(lines)


# ---- timing --------------------------------------------------------------------------

SPEED_CHECK_ROUNDS = 15
SPEED_CHECK_SAMPLE_SECONDS = 0.002  # short samples: some fall between another process's time slices
# A measured difference counts only beyond the noise band: the larger of this
# floor and the band the rounds themselves show (twice the disagreement of
# their even and odd halves, Comparison.fastest_ratio_noise). The floor covers
# what two halves of one layer's rounds cannot show: a state (clock, cache,
# memory layout) that held for all of them and differs from run to run
# (benchmarks/compress_stability.py measures the effect).
MIN_SPEEDUP_MARGIN = 0.08


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


def _break_even_rules_out(fmt: LayerFormat, density: float, rows: int, linear: nn.Linear,
                          compute_dtype: torch.dtype) -> str | None:
    """Why the shipped break-even data rules ``fmt`` out for ``rows`` input
    rows, or None. A ``SparseLinear`` with float or int8 values runs its
    dense copy at the batches where the data says dense wins at its
    density: the dense layer's speed at best, with a packed copy to
    carry. Float values are those of
    the compute dtype (bf16 values meet a bf16 dense layer: their own
    table). The dynamic sparse kernel's own table is not shipped yet; the
    int8 one stands in for it (the same packed int8 rows), which errs
    towards the dense int8 layer it competes with, itself faster than the
    dense float layer the table was measured against."""
    if not isinstance(fmt, SparseFormat):
        return None
    if fmt.scheme is not None:
        values = torch.int8
    else:
        values = compute_dtype if compute_dtype != torch.float32 else linear.weight.dtype
    batches = _backend.sparse_batches(density, values, linear.in_features * linear.out_features,
                                      linear.weight.device)
    if rows in batches:
        return None
    outcome = ("it would run its dense copy" if fmt.scheme != INT8_DYNAMIC
               else "the sparse kernel is not expected to pay")
    return (f"{fmt.name}: not timed, {outcome} at {rows} rows "
            f"(break-even data: sparse kernel at rows {batches} at density {density:.0%})")


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
            ``Conv1D`` in it is considered, including pruned ones
            (``QATLinear`` is left to ``convert_qat_``); a tied one only with
            its whole group (see the module docstring).
        config: a :class:`CompressConfig`.
        example_inputs: one batch (tensor, tuple or dict, as ``calibrate``
            takes them) whose per-layer inputs the speed check times; with
            ``compute_dtype=torch.bfloat16`` (then required) the bf16 model's
            outputs on it are also checked (see ``min_output_cosine``).
        calibration: for ``'int8_static'``: the result of
            :func:`slimtorch.calibrate`, or an iterable of batches to calibrate on.

    Returns:
        A :class:`CompressReport`: the format of every layer, or why it stayed
        dense, and the dtype the model computes in.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, CompressConfig):
        raise TypeError(f"config: expected a slimtorch.CompressConfig, got {type(config).__name__}")
    if config.compute_dtype != torch.float32:
        return _compress_in_compute_dtype(model, config, example_inputs, calibration)
    return _compress(model, config, example_inputs, calibration)


def _compress(model: nn.Module, config: CompressConfig, example_inputs: object,
              calibration: Mapping[str, ActivationRange] | Iterable | None) -> CompressReport:
    """``compress_`` on checked arguments; the candidates and the dense layer
    they are timed against are in ``config.compute_dtype`` (float32: as they are)."""
    linears = [(name, m) for name, m in model.named_modules()
               if is_linear_like(m) and not isinstance(m, QATLinear) and name]
    all_embeddings = [(name, m) for name, m in model.named_modules() if type(m) is nn.Embedding and name]
    embeddings = all_embeddings if config.embeddings else []
    left_as_is, groups = _plan_tied_groups(model, config, linears, all_embeddings)
    in_groups = {name for group in groups for name in group.names}
    plans, embedding_plans = [], []
    for targets, out in ((linears, plans), (embeddings, embedding_plans)):
        for name, module in targets:
            layer_config = config.for_layer(name)
            if name in in_groups:
                continue
            if name in left_as_is:
                out.append((name, module, None, left_as_is[name]))
            elif layer_config is None:
                out.append((name, module, None, "override: left dense"))
            elif config.filter_fn is not None and not config.filter_fn(module, name):
                out.append((name, module, None, "filter_fn: left dense"))
            else:
                out.append((name, module, layer_config, ""))
    heads = [group.head for group in groups if group.head is not None]
    wants_static = any(c is not None and c.quantize == "int8_static" for _, _, c, _ in plans + heads)
    ranges: Mapping[str, ActivationRange] = {}
    if wants_static:
        if calibration is None:
            raise ValueError("calibration: quantize='int8_static' needs calibrate(...) results or calibration batches")
        if isinstance(calibration, Mapping):
            ranges = calibration
        else:
            ranges = calibrate(model, calibration)
    any_check = any(c is not None and c.speed_check for _, _, c, _ in plans + heads)
    inputs = {}
    if any_check and example_inputs is not None:
        inputs = _record_inputs(model, [n for n, *_ in plans + heads], example_inputs)

    decisions = []
    for name, linear, layer_config, reason in plans:
        if layer_config is None:
            decisions.append(LayerDecision(name, None, reason, _zero_fraction(linear)))
            continue
        decision, layer = _compress_layer(name, linear, layer_config, ranges.get(name), inputs.get(name))
        decisions.append(decision)
        if layer is not None:
            model.set_submodule(name, layer.train(linear.training))
    for group in groups:
        decisions += _compress_tied_group(model, group, ranges, inputs)
    for name, embedding, layer_config, reason in embedding_plans:
        if layer_config is None:
            decisions.append(LayerDecision(name, None, reason, _zero_fraction(embedding)))
            continue
        decision, layer = _compress_embedding(name, embedding)
        decisions.append(decision)
        if layer is not None:
            model.set_submodule(name, layer.train(embedding.training))
    return CompressReport(decisions)


@dataclass(frozen=True)
class _TiedGroup:
    """Embeddings and at most one head sharing one ``[vocab, hidden]`` table,
    all of which the config compresses: ``head`` is ``(name, module, config, "")``."""

    embeddings: list[tuple[str, nn.Embedding]]
    head: tuple[str, nn.Module, CompressConfig, str] | None
    head_bias: str | None = None  # a tensor outside the group that is the head's bias (BERT's masked-LM head)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.embeddings] + ([self.head[0]] if self.head else [])


def _same_view(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``a`` and ``b`` are the same matrix in the same memory."""
    return (storage_key(a) == storage_key(b) and a.storage_offset() == b.storage_offset() and a.shape == b.shape
            and a.stride() == b.stride() and a.dtype == b.dtype)


def _tied_group_problem(model: nn.Module, config: CompressConfig, owners: list[str], linears: dict[str, nn.Module],
                        embeddings: dict[str, nn.Embedding]) -> str:
    """Why the tied group of parameters/buffers ``owners`` cannot be
    compressed as a whole ("" when it can)."""
    members = [name.rpartition(".") for name in owners]
    for (module_name, _, attr), owner in zip(members, owners):
        if attr != "weight" or (module_name not in linears and module_name not in embeddings):
            return f"{owner} is not the weight of an nn.Embedding or a linear layer"
    names = [module_name for module_name, _, _ in members]
    tables = [embeddings[n].weight for n in names if n in embeddings]
    heads = [n for n in names if n in linears]
    if not tables:
        return "no nn.Embedding in the group to hold the shared int8 table"
    for name in heads:
        module = linears[name]
        weight = module.weight if isinstance(module, nn.Linear) else module.weight.T  # [out, in]
        if not _same_view(weight, tables[0]):
            return (f"{name} computes with the table as a {'x'.join(map(str, weight.shape))} weight, not as "
                    f"the {'x'.join(map(str, tables[0].shape))} rows it can share")
    if len(heads) > 1:
        return f"{len(heads)} heads ({', '.join(heads)}); one int8 head per table is supported"
    for name in names:
        if name in embeddings and not _same_view(embeddings[name].weight, tables[0]):
            return f"{name} uses another part or shape of the table"
        if name in embeddings and embeddings[name].max_norm is not None:
            return f"{name} renormalises rows on lookup (max_norm)"
        if name in embeddings and embeddings[name].weight.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            return f"{name} has a {embeddings[name].weight.dtype} table"
    if not config.embeddings:
        return f"embeddings=False leaves {', '.join(n for n in names if n in embeddings)} as it is"
    for name in names:
        layer_config = config.for_layer(name)
        if layer_config is None:
            return f"an override leaves {name} dense"
        if config.filter_fn is not None and not config.filter_fn(model.get_submodule(name), name):
            return f"filter_fn leaves {name} dense"
        if name in linears and layer_config.quantize is None:
            return f"quantize=None leaves the head {name} dense"
    return ""


def _plan_tied_groups(model: nn.Module, config: CompressConfig, linears: list[tuple[str, nn.Module]],
                      embeddings: list[tuple[str, nn.Embedding]]) -> tuple[dict[str, str], list[_TiedGroup]]:
    """The tied groups among ``linears`` and ``embeddings``: ``({member: why
    it is left as it is}, the groups compressed as a whole)``."""
    linear_of, embedding_of = dict(linears), dict(embeddings)
    found = []  # (owners, member modules, problem)
    biases: dict[str, tuple[list[str], str]] = {}  # head: (owners, the tensor outside its bias is tied to)
    for owners in tensor_owners(model).values():
        targets = list(dict.fromkeys(name for name in (owner.rpartition(".")[0] for owner in owners)
                                     if name in linear_of or name in embedding_of))
        if len(owners) < 2 or not targets:
            continue
        outside = [owner for owner in owners if owner.rpartition(".")[0] not in targets]
        if len(targets) == 1 and targets[0] in linear_of and f"{targets[0]}.bias" in owners and outside:
            biases[targets[0]] = (owners, outside[0])  # decided with the head's weight group below
            continue
        found.append((owners, targets, _tied_group_problem(model, config, owners, linear_of, embedding_of)))
    heads = {name for owners, targets, problem in found if not problem for name in targets if name in linear_of}
    for head, (owners, outside) in biases.items():
        problem = "" if head in heads else f"the bias of {head} is tied to {outside}"
        found.append((owners, [head], problem))
    left_as_is: dict[str, str] = {}
    short: dict[str, str] = {}  # what a module left as is is tied to
    changed = True
    while changed:  # a module left as is for one tie (a tied bias) keeps its other ties as they are too
        changed = False
        for i, (owners, targets, problem) in enumerate(found):
            if not problem:
                problem = next((f"{name} is also tied to {short[name]}" for name in targets if name in short), "")
                found[i] = (owners, targets, problem)
            for name in targets:
                if problem and name not in left_as_is:
                    what = "weight" if f"{name}.weight" in owners else "tensor"
                    others = ", ".join(sorted(o for o in owners if o.rpartition(".")[0] != name))
                    left_as_is[name] = (f"{what} tied to {others}; left as is: {problem} "
                                        "(a tied group is compressed only as a whole)")
                    short[name] = others
                    changed = True
    groups = []
    for _, targets, problem in found:
        if not problem and any(name in embedding_of for name in targets):
            head = next(((name, linear_of[name], config.for_layer(name), "") for name in targets
                         if name in linear_of), None)
            groups.append(_TiedGroup([(name, embedding_of[name]) for name in targets if name in embedding_of],
                                     head, biases[head[0]][1] if head and head[0] in biases else None))
    return left_as_is, groups


def _compress_tied_group(model: nn.Module, group: _TiedGroup, ranges: Mapping[str, ActivationRange],
                         inputs: dict[str, tuple]) -> list[LayerDecision]:
    """Swaps the whole group for int8 layers sharing one table, or none of it.
    The head goes through the same build and speed check as any layer (as a
    dense int8 layer: no sparsity); the embeddings then share its table."""
    table = group.embeddings[0][1].weight
    sparsity = _zero_fraction(group.embeddings[0][1])
    unpruned = "sparsity is not applied to a tied group" if group.head and group.head[2].sparsity is not None else ""
    owner, decisions = None, []
    if group.head is not None:
        name, module, config, _ = group.head
        decision, layer = _compress_layer(name, module, replace(config, sparsity=None, min_sparsity=1.0),
                                          ranges.get(name), inputs.get(name))
        why = None if layer is not None else decision.reason
        if layer is not None and type(layer).__name__ != "Int8Linear":
            why = f"{decision.format} holds no int8 table"
        elif layer is not None and group.head_bias is not None:  # the tensor the dense head's bias was
            module_name, _, attr = group.head_bias.rpartition(".")
            try:
                layer.share_bias(getattr(model.get_submodule(module_name), attr))
            except _BUILD_ERRORS as error:
                why = f"its bias cannot be {group.head_bias}: {error}"
        if why is not None:
            return [replace(decision, format=None, reason=f"tied group left as is: {why}")] + [
                LayerDecision(e, None, f"tied group left as is: its head {name} stays dense", sparsity)
                for e, _ in group.embeddings]
        owner = layer
        shared = ", ".join(e for e, _ in group.embeddings)
        decisions.append(replace(decision, reason="; ".join(filter(None, [
            decision.reason, f"one int8 table shared with {shared}", unpruned]))))
    cls = _backend.layer_class("Int8Embedding")
    holder = group.names[-1] if group.head else group.names[0]
    built = []
    for name, embedding in group.embeddings:
        if owner is None:  # no head: the first embedding holds the table
            try:
                owner = layer = cls.from_dense(embedding)
            except _BUILD_ERRORS as error:
                return [LayerDecision(e, None, f"tied group left as is: int8_embedding: {error}", sparsity)
                        for e in group.names]
            why = "int8 rows, dequantized on lookup (not timed)"
        else:
            layer = cls(embedding.num_embeddings, embedding.embedding_dim, embedding.padding_idx,
                        dtype=table.dtype, device="meta").share_table(owner)
            why = f"int8 rows shared with {holder} (one table)"
        built.append((name, layer))
        decisions.append(LayerDecision(name, "int8_embedding", "; ".join(filter(None, [why, unpruned])), sparsity))
    if group.head is not None:
        model.set_submodule(group.head[0], owner.train(group.head[1].training))
    for (name, layer), (_, embedding) in zip(built, group.embeddings):
        model.set_submodule(name, layer.train(embedding.training))
    return decisions


# ---- compute dtype -------------------------------------------------------------------

def _compress_in_compute_dtype(model: nn.Module, config: CompressConfig, example_inputs: object,
                               calibration: Mapping[str, ActivationRange] | Iterable | None) -> CompressReport:
    """``compress_`` with ``config.compute_dtype`` bfloat16: where the CPU
    computes it natively, the layers are chosen in it, the rest of the model
    is cast to it, and the outputs on ``example_inputs`` are checked against
    those of the same compressed layers in a float32 model; otherwise, or
    when they drift, ``compress_`` in float32 (the report says why)."""
    dtype = config.compute_dtype
    if example_inputs is None:
        raise ValueError(f"example_inputs: compute_dtype={dtype} needs example_inputs, on which the outputs "
                         "are checked against float32 ones")
    in_float32 = replace(config, compute_dtype=torch.float32)
    status = _native_status(model)
    if not status.startswith("on"):
        report = _compress(model, in_float32, example_inputs, calibration)
        return replace(report, compute_dtype_reason=f"bfloat16 not used ({status})")
    if calibration is not None and not isinstance(calibration, Mapping):
        calibration = calibrate(model, calibration)  # once: a float32 retry must not read the batches again
    before = dict(model.named_modules())
    report = _compress(model, config, example_inputs, calibration)
    undo: list[Callable[[], None]] = []
    try:
        # The compressed layers take float32 too: the rival isolates what bf16 adds.
        expected = _outputs(model, example_inputs)
        undo = _cast_uncompressed(model, dtype)
        cosine = _mean_cosine(expected, _outputs(model, _cast_floats(example_inputs, dtype)))
    except _BUILD_ERRORS as error:  # a module that cannot run in bfloat16
        verdict = f"the model failed in bfloat16 ({type(error).__name__}: {error})"
    else:
        if cosine >= config.min_output_cosine:
            return replace(report, compute_dtype=dtype, compute_dtype_reason=(
                f"{status}; outputs' mean cosine to float32 {cosine:.5f} >= min_output_cosine "
                f"{config.min_output_cosine}"))
        verdict = (f"outputs' mean cosine to float32 {cosine:.5f} < min_output_cosine {config.min_output_cosine}"
                   if not math.isnan(cosine) else "outputs not comparable to float32 (NaN/Inf or no float outputs)")
    for step in reversed(undo):
        step()
    for decision in report.layers:
        if decision.format is not None:
            model.set_submodule(decision.name, before[decision.name])
    report = _compress(model, in_float32, example_inputs, calibration)
    return replace(report, compute_dtype_reason=f"bfloat16 undone, compressed in float32: {verdict}")


def _native_status(model: nn.Module) -> str:
    """``ops.cpu_bf16_status()`` for a CPU model ("on: ..." / "off: why")."""
    devices = {t.device.type for t in model.parameters()} | {t.device.type for t in model.buffers()}
    if devices - {"cpu"}:
        return f"off: compute_dtype bfloat16 is implemented for CPU models, this one is on {', '.join(sorted(devices))}"
    return _backend.cpu_bf16_status()


def _outputs(model: nn.Module, batch: object) -> object:
    """The model's output on one batch, in eval mode without autograd."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return run_batch(model, batch)
    finally:
        model.train(was_training)


def _cast_floats(batch: object, dtype: torch.dtype) -> object:
    """``batch`` with its float tensors (in tuples, lists, mappings) in ``dtype``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(dtype) if batch.is_floating_point() else batch
    if isinstance(batch, Mapping):
        return {key: _cast_floats(value, dtype) for key, value in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_cast_floats(value, dtype) for value in batch)
    return batch


def _float_tensors(output: object) -> list[torch.Tensor]:
    """The float tensors of a model's output (tensor, tuple, list, mapping), in order."""
    if isinstance(output, torch.Tensor):
        return [output] if output.is_floating_point() else []
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return [t for value in output for t in _float_tensors(value)]
    return []


def _mean_cosine(expected: object, actual: object) -> float:
    """Over the float tensors of two outputs of one model, the least mean
    cosine similarity of corresponding vectors (last dimension; two zero
    vectors count as equal), in float64. NaN where the outputs do not
    correspond, have no float tensor, or hold NaN/Inf."""
    want, got = _float_tensors(expected), _float_tensors(actual)
    if not want or len(want) != len(got) or any(a.shape != b.shape for a, b in zip(want, got)):
        return math.nan
    worst = 1.0
    for a, b in zip(want, got):
        if a.numel() == 0:
            continue
        width = a.shape[-1] if a.dim() else 1
        a, b = a.detach().double().reshape(-1, width), b.detach().double().reshape(-1, width)
        cosine = nn.functional.cosine_similarity(a, b, dim=-1)
        both_zero = (a == 0).all(dim=-1) & (b == 0).all(dim=-1)
        mean = float(torch.where(both_zero, torch.ones_like(cosine), cosine).mean())
        if not mean >= worst:  # NaN stays
            worst = mean
    return worst


def _cast_uncompressed(model: nn.Module, dtype: torch.dtype) -> list[Callable[[], None]]:
    """Casts the float parameters and buffers of every module except the
    compressed layers (which keep their own dtypes and take any float input)
    to ``dtype``, as ``model.to(dtype)`` would; an ``Int8Embedding`` returns
    rows in ``dtype``. Returns the steps that undo it, in order."""
    embedding = _backend.layer_class("Int8Embedding")
    compressed = tuple(_backend.layer_class(name) for name in LAYER_CLASSES)
    undo: list[Callable[[], None]] = []
    for module in model.modules():
        if isinstance(module, embedding) and module.dtype != dtype:
            undo.append(lambda module=module, old=module.dtype: setattr(module, "dtype", old))
            module.dtype = dtype
        if isinstance(module, compressed):
            continue
        for param in module._parameters.values():
            if param is not None and param.is_floating_point() and param.dtype != dtype:
                undo.append(lambda param=param, old=param.data: setattr(param, "data", old))
                param.data = param.data.to(dtype)
        for key, buffer in module._buffers.items():
            if buffer is not None and buffer.is_floating_point() and buffer.dtype != dtype:
                undo.append(lambda buffers=module._buffers, key=key, old=buffer: buffers.__setitem__(key, old))
                module._buffers[key] = buffer.to(dtype)
    return undo


def _in_compute_dtype(layer: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A compressed candidate as it will run in a model computing in ``dtype``:
    its float parts (a sparse layer's float values and bias) in that dtype;
    int8 weights and their float32 scales stay as they are."""
    return layer if dtype == torch.float32 else layer.to(dtype)


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
        why_not = (_break_even_rules_out(candidate, 1.0 - sparsity, rows, linear, config.compute_dtype)
                   if config.speed_check else None)
        if why_not is not None:
            ruled_out.append(why_not)
            continue
        try:
            built.append((fmt, _in_compute_dtype(build_layer(candidate, linear, activation), config.compute_dtype)))
        except _BUILD_ERRORS as error:
            failures.append(f"{fmt}: {error}")
            continue
        if not config.speed_check:
            return LayerDecision(name, fmt, "speed check off", sparsity), built[0][1]
    dense = module
    if config.compute_dtype != torch.float32:  # the rival is the dense layer in the compute dtype
        dtype, dense = config.compute_dtype, copy.deepcopy(module).to(config.compute_dtype)
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
    timer = benchmark.Interleaved({"dense": lambda: dense(x), **{fmt: (lambda layer=layer: layer(x))
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
