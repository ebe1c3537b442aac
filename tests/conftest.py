"""Shared fixtures. ``isa`` runs a test once per CPU code path this machine
supports (x86: scalar, avx2, avx512; ARM64: scalar, neon, dotprod, i8mm), so every path is checked against the
reference wherever the suite runs."""

from __future__ import annotations

import pytest
import torch

from slimtorch import _native

def supported_isas() -> list[str]:
    if _native.cpu is None:
        return []
    return list(_native.cpu.supported_isas())


@pytest.fixture(params=supported_isas() or [pytest.param("none", marks=pytest.mark.skip(reason="no native CPU module"))])
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


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
