"""The suites' runner: pytest-benchmark drives the rounds of
:class:`slimtorch.benchmark.Interleaved`, and at the end of the session each
suite's rows are written to ``<results>/<cpu>/<suite>.json`` and ``.md``
(``<results>`` is ``benchmarks/results`` unless SLIMTORCH_BENCH_RESULTS says
otherwise). Nothing is written when benchmarks are disabled (plain
``pytest benchmarks`` runs every case once, as a smoke test). Threads:
SLIMTORCH_BENCH_THREADS (default 2).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import torch

from benchmarks.common import ROUNDS
from slimtorch.benchmark import Comparison, Interleaved, cpu_slug, machine

_rows: dict[str, list[dict]] = {}


def pytest_addoption(parser):
    parser.addoption("--bert-layers", type=int, default=2, help="encoder layers of the api suite (BERT-base: 12)")


def pytest_configure(config):
    # A test build that emulates the AMX tiles (SLIMTORCH_AMX_EMULATION) times
    # software, and break_even would write its tables into the shipped data.
    from slimtorch import _native

    if _native.cpu is not None and _native.cpu.amx_status().startswith("on (emulated"):
        pytest.exit("the native module emulates AMX in software (a test build): nothing to time; "
                    "build it without SLIMTORCH_AMX_EMULATION", returncode=2)


@pytest.fixture(autouse=True)
def bench_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("SLIMTORCH_BENCH_THREADS", "2")))
    yield
    torch.set_num_threads(previous)


def suite_of(module_name: str) -> str:
    return module_name.rpartition(".")[2].removeprefix("bench_")


@pytest.fixture
def bench(benchmark, request) -> Callable[..., Comparison]:
    """``bench(case, candidates, baseline=..., also=(), not_measured={}, rounds=ROUNDS, **timer_options)``:
    times ``candidates`` ({impl: zero-argument callable}) interleaved, records
    one row per impl (``case`` fields, ms per call, ``x vs <baseline>`` and
    ``x vs <also>``; ``not_measured`` impls get a row with the reason) and
    returns the :class:`~slimtorch.benchmark.Comparison`."""

    def run(case: Mapping[str, object], candidates: Mapping[str, Callable[[], object]], *, baseline: str,
            also: tuple[str, ...] = (), not_measured: Mapping[str, str] | None = None, rounds: int = ROUNDS,
            **timer_options) -> Comparison:
        timer = Interleaved(candidates, baseline=baseline, **timer_options)
        benchmark.pedantic(timer.round, rounds=rounds, iterations=1, warmup_rounds=0)
        result = timer.result()
        rows = []
        for impl in candidates:
            row = {**case, "impl": impl, "ms": result.seconds[impl] * 1e3, f"x vs {baseline}": result.ratios[impl]}
            for other in also:
                if other in candidates:
                    row[f"x vs {other}"] = result.ratio(other, impl)
            rows.append(row)
        for impl, reason in (not_measured or {}).items():
            rows.append({**case, "impl": impl, "note": f"not measured: {reason}"})
        benchmark.extra_info.update(case={k: str(v) for k, v in case.items()}, rows=rows)
        if not benchmark.disabled:
            _rows.setdefault(suite_of(request.module.__name__), []).extend(rows)
        return result

    return run


def results_dir() -> Path:
    root = Path(os.environ.get("SLIMTORCH_BENCH_RESULTS", Path(__file__).parent / "results"))
    info = machine()
    from slimtorch._native import build_info

    detected = build_info().get("isa_detected")
    # A forced ISA path (SLIMTORCH_ISA) gets its own folder next to the CPU's own numbers.
    forced = f"-isa-{info['isa']}" if detected is not None and detected != info["isa"] else ""
    return root / f"{cpu_slug()}{forced}"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def markdown(suite: str, info: Mapping[str, object], rows: list[dict]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    family_model = info.get("cpu_family_model")
    cpu = f"{info['cpu']} (family {family_model[0]}, model {family_model[1]})" if family_model else info["cpu"]
    lines = [f"# {suite}", "",
             f"Measured on {cpu}, ISA path {info['isa']}, {info['threads']} threads, torch {info['torch']}, "
             f"slimtorch {info['slimtorch']}. Times: median ms per call over interleaved rounds; "
             "x vs B: median over rounds of time(B) / time(this row), > 1 means this row is faster.", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(suite: str, rows: list[dict], directory: Path) -> tuple[Path, Path]:
    info = machine()
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / f"{suite}.json", directory / f"{suite}.md"
    json_path.write_text(json.dumps({"suite": suite, "machine": info, "rows": rows}, indent=1) + "\n")
    md_path.write_text(markdown(suite, info, rows))
    return json_path, md_path


def pytest_sessionfinish(session, exitstatus):
    if not _rows:
        return
    directory = results_dir()
    for suite, rows in _rows.items():
        paths = write_results(suite, rows, directory)
        print(f"\nwrote {paths[0]} and {paths[1]}")
