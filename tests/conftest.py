"""Shared fixtures. ``isa`` runs a test once per CPU code path this machine
supports (x86: scalar, avx2, avx512, amx; ARM64: scalar, neon, dotprod,
i8mm), so every path is checked against the reference wherever the suite
runs; ``device`` runs it once per device with kernels here (cpu, and cuda
where a GPU and the CUDA kernels exist), and ``accelerator`` once per non-CPU
device (skipped where there is none). ``break_even`` replaces the shipped
break-even data with tables the test gives, and ``sparse_kernels`` makes
every ``SparseLinear`` run its sparse kernel at every batch, whatever the
machine's break-even."""

from __future__ import annotations

import pytest
import torch

from slimtorch import _native, ops


def supported_isas() -> list[str]:
    if _native.cpu is None:
        return []
    return list(_native.cpu.supported_isas())


@pytest.fixture(params=supported_isas()
                or [pytest.param("none", marks=pytest.mark.skip(reason="no native CPU module"))])
def isa(request: pytest.FixtureRequest):
    previous = _native.cpu.active_isa()
    _native.cpu.set_active_isa(request.param)
    yield request.param
    _native.cpu.set_active_isa(previous)


@pytest.fixture
def threads(request: pytest.FixtureRequest):
    """Restores torch's thread count after a test that changes it."""
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


ACCELERATORS = ["cuda"] if _native.cuda_usable() else []
DEVICES = ["cpu"] + ACCELERATORS


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(params=ACCELERATORS or [pytest.param("none", marks=pytest.mark.skip(reason="no GPU with kernels"))])
def accelerator(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


# Break-even tables under which the sparse kernels pay at every batch and
# density: a SparseLinear then never builds its dense fallback.
SPARSE_AT_EVERY_BATCH = {f"{kind}/{size}": [[1, 1.0]] for kind in ("float", "int8") for size in ("cached", "large")}


@pytest.fixture
def break_even(monkeypatch: pytest.MonkeyPatch):
    """``break_even(tables)`` makes ``tables`` (``{"float/cached": [[batch,
    density], ...], ...}``, the schema of slimtorch/data/break_even.json) the
    break-even data of every ISA path and device for the test, instead of the
    shipped file; ``isa_paths={path: tables}`` (the first the default) and
    ``aliases`` give a table per path instead. A SparseLinear reads the data
    when its weight is installed: call this before building layers."""

    def install(tables: dict | None = None, *, isa_paths: dict | None = None, aliases: dict | None = None,
                cached_weight_bytes: int = 16 << 20) -> None:
        paths = {"any": tables} if isa_paths is None else isa_paths
        data = {"schema": 1, "default": next(iter(paths)), "aliases": aliases or {},
                "paths": {path: {"measured_on": "test", "cached_weight_bytes": cached_weight_bytes,
                                 "tables": path_tables} for path, path_tables in paths.items()}}
        monkeypatch.setattr(ops.spmm, "_break_even_data", lambda: data)

    return install


@pytest.fixture
def sparse_kernels(break_even):
    """Every SparseLinear built in the test runs its sparse kernel at every
    batch (never its dense fallback), on any machine: for tests that compare
    its output with the sparse kernels' own, bit for bit."""
    break_even(SPARSE_AT_EVERY_BATCH)
