"""The native module's plumbing: ISA selection, thread pool, build info, CLI."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
import torch

from slimtorch import _native, ops, reference
from slimtorch.cli import main

pytestmark = pytest.mark.skipif(_native.cpu is None, reason="no native CPU module")


def test_set_active_isa_rejects_unknown_names():
    with pytest.raises(ValueError, match="isa: expected 'scalar', 'avx2' or 'avx512'"):
        _native.cpu.set_active_isa("sse9")


def test_isa_environment_variable_lowers_the_path():
    code = "from slimtorch import _native; print(_native.cpu.active_isa())"
    out = subprocess.run(
        [sys.executable, "-c", code], env={**__import__("os").environ, "SLIMTORCH_ISA": "scalar"},
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == "scalar"


def test_concurrent_callers_share_the_pool(threads):
    # Several Python threads call kernels at once (the GIL is released inside):
    # a caller that finds the pool busy runs its chunks itself. Results must
    # not mix.
    torch.set_num_threads(2)
    inputs = [torch.randn(300_001, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    expected = [reference.prune_mask(w, 0.3) for w in inputs]
    results: list[torch.Tensor | None] = [None] * len(inputs)

    def work(i: int) -> None:
        for _ in range(5):
            results[i] = ops.prune_mask(inputs[i], 0.3)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for got, want in zip(results, expected):
        assert torch.equal(got, want)


def test_info_command(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for key in ("version", "isa_active", "threads", "cuda_kernels", "cuda_usable"):
        assert key in out
    assert _native.cpu.detected_isa() in out


def test_cli_requires_a_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2


def test_missing_native_module_falls_back_to_reference_with_one_warning(monkeypatch):
    monkeypatch.setattr(_native, "cpu", None)
    monkeypatch.setattr(_native, "_warned", set())
    w = torch.tensor([0.1, -2.0, 0.4])
    with pytest.warns(RuntimeWarning, match="using the slower pure-torch reference"):
        assert ops.threshold_(w, 0.5) == 1
    assert w.tolist() == [0.0, -2.0, 0.0]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ops.threshold_(w, 0.5)  # warned once already
