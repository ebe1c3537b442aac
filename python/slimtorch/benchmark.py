"""The one timing harness: every speed comparison slimtorch makes goes
through it (the benchmark suites, ``slimtorch bench``, the demo's latency
table and ``compress_``'s speed check).

How it times, and why:

- Candidates are timed *interleaved*: every round takes one sample of each
  candidate, in turn, starting with a different one each round. On a shared
  or throttling machine the load drifts; interleaving makes the drift hit all
  candidates alike instead of whichever happened to run at the time.
- Each candidate is called ``warmup`` times first (first-call allocations,
  lazily packed weights, caches), then the number of calls per sample is sized
  so a sample lasts about ``sample_seconds``, long enough to beat the timer's
  resolution and per-call jitter on small layers.
- With ``settle`` > 0, each sample is preceded by that many untimed calls of
  the same candidate. Whole models whose sample is one call need it: the
  candidate before them in the round evicted their weights from the caches,
  and the first call after the switch pays for that. On a 2-core Xeon the
  model timed right after a float32 BERT ran 20% slower than an identical
  model elsewhere in the round.
- A ratio is the median over rounds of the per-round ratio
  ``baseline time / candidate time`` (x > 1: the candidate is faster). Drift
  within a round cancels in the ratio; the median drops rounds that a burst of
  outside load hit. Times per call are the medians of the samples.
- :meth:`Comparison.fastest_ratio` compares least disturbed samples instead
  (other work only ever adds time), and :meth:`Comparison.fastest_ratio_noise`
  says how far that ratio may be off by chance, from how much the even and the
  odd rounds disagree about it. A difference inside that band is noise.
- :func:`machine` records what the numbers were measured on (CPU model, the
  ISA path slimtorch's kernels use, threads, versions); :func:`cpu_slug`
  names the results folder, so numbers from different CPUs never mix.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

__all__ = ["SUITES", "Comparison", "Interleaved", "compare", "machine", "cpu_model", "cpu_slug", "cpu_family_model",
           "cpu_has", "isa_path", "force_sparse_kernel"]

# The benchmark suites (benchmarks/bench_<name>.py); the op families carry the
# same names as in csrc/, slimtorch.ops and tests/.
SUITES = ("threshold", "select", "quantize", "spmm", "qgemm", "api", "structured", "distill", "break_even")


@dataclass(frozen=True)
class Comparison:
    """Result of timing candidates against each other.

    ``seconds``: median seconds per call of each candidate; ``ratios``: median
    per-round ``baseline / candidate`` (1.0 for the baseline itself; empty when
    there is no baseline); ``calls``: calls per sample; ``rounds``: samples per
    candidate.
    """

    seconds: dict[str, float]
    ratios: dict[str, float]
    baseline: str | None
    rounds: int
    calls: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict, repr=False)

    def fastest(self, name: str) -> float:
        """``name``'s least disturbed sample (seconds per call): other work on
        the machine only ever adds time, so on a busy machine this is the
        steadiest estimate of its own speed."""
        return min(self.samples[name])

    def ratio(self, baseline: str, candidate: str) -> float:
        """Median per-round ``time(baseline) / time(candidate)`` for any pair of candidates."""
        return statistics.median(b / c for b, c in zip(self.samples[baseline], self.samples[candidate]))

    def fastest_ratio(self, baseline: str, candidate: str) -> float:
        """``baseline``'s least disturbed sample over ``candidate``'s (x > 1: the candidate is faster)."""
        return self.fastest(baseline) / self.fastest(candidate)

    def fastest_ratio_noise(self, baseline: str, candidate: str, *, k: float = 2.0) -> float:
        """How far :meth:`fastest_ratio` may be off by chance, as a relative
        amount (0.05: 5%): ``k`` times the disagreement between that ratio on
        the even rounds and on the odd rounds. The two halves are timed
        interleaved under the same conditions, so what sets them apart is
        noise; a machine that never leaves one candidate undisturbed makes
        them disagree widely. Infinite with fewer than two rounds."""
        halves = []
        for start in (0, 1):
            rounds = slice(start, None, 2)
            if not self.samples[baseline][rounds]:
                return math.inf
            halves.append(min(self.samples[baseline][rounds]) / min(self.samples[candidate][rounds]))
        return math.expm1(k * abs(math.log(halves[0] / halves[1])))


def _time_once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Interleaved:
    """Interleaved timing of named zero-argument callables.

    ``round()`` takes one sample of every candidate (the first call warms up
    and sizes the samples); ``result()`` summarizes the rounds so far. Driving
    the rounds from outside lets pytest-benchmark's ``pedantic`` run them.
    """

    def __init__(self, candidates: Mapping[str, Callable[[], object]], *, baseline: str | None = None,
                 sample_seconds: float = 0.002, max_calls: int = 1000, warmup: int = 1, settle: int = 0) -> None:
        if not candidates:
            raise ValueError("candidates: expected at least one callable")
        if baseline is not None and baseline not in candidates:
            raise ValueError(f"baseline: {baseline!r} is not one of the candidates {list(candidates)}")
        if isinstance(settle, bool) or not isinstance(settle, int) or settle < 0:
            raise ValueError(f"settle: expected an int >= 0, got {settle!r}")
        self.candidates = dict(candidates)
        self.baseline = baseline
        self.sample_seconds = sample_seconds
        self.max_calls = max_calls
        self.warmup = warmup
        self.settle = settle
        self.calls: dict[str, int] = {}
        self.samples: dict[str, list[float]] = {name: [] for name in self.candidates}

    def _prepare(self) -> None:
        for name, fn in self.candidates.items():
            for _ in range(max(self.warmup, 0)):
                fn()
            # The fastest of a few calls: one call that the scheduler delayed
            # (a busy machine) would make every sample a handful of calls.
            once = max(min(_time_once(fn) for _ in range(3)), 1e-9)
            self.calls[name] = max(1, min(self.max_calls, int(self.sample_seconds / once)))

    def round(self) -> None:
        """One sample (``calls[name]`` calls, timed together) of each candidate."""
        if not self.calls:
            self._prepare()
        names = list(self.candidates)
        shift = len(self.samples[names[0]]) % len(names)  # a different candidate goes first each round
        for name in names[shift:] + names[:shift]:
            fn, calls = self.candidates[name], self.calls[name]
            for _ in range(self.settle):
                fn()
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            self.samples[name].append((time.perf_counter() - start) / calls)

    def result(self) -> Comparison:
        rounds = len(next(iter(self.samples.values())))
        if rounds == 0:
            raise RuntimeError("no round was timed")
        seconds = {name: statistics.median(s) for name, s in self.samples.items()}
        ratios = {}
        if self.baseline is not None:
            base = self.samples[self.baseline]
            ratios = {name: statistics.median(b / t for b, t in zip(base, s)) for name, s in self.samples.items()}
        return Comparison(seconds, ratios, self.baseline, rounds, dict(self.calls),
                          {name: list(s) for name, s in self.samples.items()})


def compare(candidates: Mapping[str, Callable[[], object]], *, baseline: str | None = None, rounds: int = 7,
            sample_seconds: float = 0.002, max_calls: int = 1000, warmup: int = 1, settle: int = 0) -> Comparison:
    """Times ``candidates`` interleaved for ``rounds`` rounds (see the module docstring)."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds: expected an int >= 1, got {rounds!r}")
    timer = Interleaved(candidates, baseline=baseline, sample_seconds=sample_seconds, max_calls=max_calls,
                        warmup=warmup, settle=settle)
    for _ in range(rounds):
        timer.round()
    return timer.result()


# ---- what the numbers were measured on ----------------------------------------------

@functools.cache  # read once: it is consulted on every compress_ and benchmark record
def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` knows)."""
    match = re.search(r"^(model name|Model|Hardware)\s*:\s*(.+)$", _cpuinfo(), re.MULTILINE)
    if match:
        return " ".join(match.group(2).split())
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_has(flag: str) -> bool:
    """Whether the CPU reports ``flag`` (e.g. ``"amx_int8"``) in ``/proc/cpuinfo``."""
    return re.search(rf"^(flags|Features)\s*:.*\b{re.escape(flag)}\b", _cpuinfo(), re.MULTILINE) is not None


def cpu_family_model() -> tuple[int, int] | None:
    """The x86 CPU's family and model numbers from ``/proc/cpuinfo``, or None."""
    info = _cpuinfo()
    family = re.search(r"^cpu family\s*:\s*(\d+)", info, re.MULTILINE)
    model = re.search(r"^model\s*:\s*(\d+)", info, re.MULTILINE)
    return (int(family.group(1)), int(model.group(1))) if family and model else None


def cpu_slug(model: str | None = None, family_model: tuple[int, int] | None = None) -> str:
    """A folder name for a CPU model: lowercase words joined by '-', without
    trademark marks and filler words (``"Intel(R) Core(TM) i7-8700 CPU"`` ->
    ``"intel-core-i7-8700"``). A name without a model number, as virtual
    machines often show (``"AMD EPYC"``), names no one CPU, so the family and
    model numbers are appended (``"amd-epyc-family25-model17"``); without
    ``model``, both come from this CPU."""
    if model is None:
        model, family_model = cpu_model(), cpu_family_model()
    text = re.sub(r"\((r|tm)\)|\b(cpu|with|radeon graphics)\b|@.*$", " ", model.lower())
    slug = "-".join(re.findall(r"[a-z0-9.]+", text)).replace(".", "_") or "unknown-cpu"
    if family_model is not None and not re.search(r"\d", slug):
        slug += "-family{}-model{}".format(*family_model)
    return slug


def isa_path() -> str:
    """The CPU ISA path slimtorch's kernels run on ("reference" without the native module)."""
    from slimtorch._native import build_info

    return str(build_info().get("isa_active", "reference"))


def machine() -> dict[str, object]:
    """What a measurement ran on: CPU model (and x86 family and model numbers),
    ISA path, AMX, threads, versions."""
    from slimtorch import __version__

    return {"cpu": cpu_model(), "cpu_family_model": cpu_family_model(), "isa": isa_path(), "amx": cpu_has("amx_int8"),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__, "slimtorch": __version__, "python": platform.python_version(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)")}


def force_sparse_kernel(layer: torch.nn.Module) -> torch.nn.Module:
    """Makes a ``SparseLinear`` run its sparse kernel at every batch size (no
    dense fallback), so a benchmark times the kernel itself; returns the layer."""
    layer.dispatch = "sparse"
    return layer
