"""Shared fixtures. ``isa`` runs a test once per CPU code path this machine
supports (x86: scalar, avx2, avx512, amx; ARM64: scalar, neon, dotprod,
i8mm), so every path is checked against the reference wherever the suite
runs; ``device`` runs it once per device with kernels here (cpu, and cuda
where a GPU and the CUDA kernels exist), and ``accelerator`` once per non-CPU
device (skipped where there is none)."""

from __future__ import annotations

import pytest
import torch

from slimtorch import _native


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
