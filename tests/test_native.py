"""The native module's plumbing: ISA selection, thread pool, build info, CLI."""

from __future__ import annotations

import ctypes
import subprocess
import sys
import threading

import pytest
import torch

from slimtorch import _native, ops, reference
from slimtorch.cli import main

pytestmark = pytest.mark.skipif(_native.cpu is None, reason="no native CPU module")


def test_set_active_isa_rejects_unknown_names():
    with pytest.raises(ValueError, match="^isa: expected 'scalar', .*, got 'sse9'"):
        _native.cpu.set_active_isa("sse9")


def test_isa_environment_variable_lowers_the_path():
    code = "from slimtorch import _native; print(_native.cpu.active_isa())"
    out = subprocess.run(
        [sys.executable, "-c", code], env={**__import__("os").environ, "SLIMTORCH_ISA": "scalar"},
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == "scalar"


def _openmp_visible() -> bool:
    """Whether an OpenMP runtime (torch's libgomp) is in the process's global
    symbol scope, where the native module looks for it. torch's x86-64 wheels
    put it there; where they do not, the built-in pool is the only one."""
    return hasattr(ctypes.CDLL(None), "GOMP_parallel")


OPENMP = pytest.param("openmp", marks=pytest.mark.skipif(not _openmp_visible(), reason="no OpenMP runtime visible"))


@pytest.fixture(params=[OPENMP, "builtin"])
def pool(request, monkeypatch):
    """Runs a test on torch's OpenMP team and on the built-in pool."""
    if request.param == "builtin":
        monkeypatch.setenv("SLIMTORCH_POOL", "builtin")
    else:
        monkeypatch.delenv("SLIMTORCH_POOL", raising=False)
    assert _native.cpu.thread_pool() == request.param
    return request.param


def test_thread_pool_follows_the_environment(monkeypatch):
    monkeypatch.delenv("SLIMTORCH_POOL", raising=False)
    assert _native.cpu.thread_pool() == ("openmp" if _openmp_visible() else "builtin")
    monkeypatch.setenv("SLIMTORCH_POOL", "builtin")
    assert _native.cpu.thread_pool() == "builtin"
    assert _native.build_info()["thread_pool"] == "builtin"


def test_both_pools_give_the_same_results(pool):
    torch.set_num_threads(2)
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(2_000_003, generator=generator), torch.randn(777, 1001, generator=generator)]
    assert ops.magnitude_threshold(weights, 0.7) == reference.magnitude_threshold(weights, 0.7)
    x = torch.randn(3_000_001, generator=generator)
    scale, zero_point = torch.tensor(0.02), torch.tensor(3, dtype=torch.int32)
    assert torch.equal(ops.quantize(x, scale, zero_point), reference.quantize(x, scale, zero_point, None, torch.int8))


def test_concurrent_callers_share_the_pool(threads, pool):
    # Several Python threads call kernels at once (the GIL is released inside):
    # on the built-in pool a caller that finds it busy runs its chunks itself;
    # on OpenMP each caller gets its own team. Results must not mix.
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
    for key in ("version", "isa_active", "isa_supported", "amx", "weight_only_bf16", "threads", "thread_pool",
                "cuda_kernels", "cuda_usable"):
        assert key in out
    assert _native.cpu.detected_isa() in out
    assert _native.cpu.amx_status() in out
    bf16_rows = _native.cpu.weight_only_bf16_min_rows()
    assert (f"from {bf16_rows} rows" if bf16_rows else "off (float32 x)") in out
    vbmi2 = "on" if _native.cpu.has_avx512_vbmi2() else "off"
    assert any(line.split() == ["bitmap_bf16_vbmi2", vbmi2] for line in out.splitlines())


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


@pytest.mark.parametrize("pool_env", ["openmp", "builtin"])
def test_forked_child_runs_parallel_kernels(pool_env):
    # The parent's threads do not exist in a forked child; waiting on them
    # would hang (torch's own OpenMP ops do). The child must get a fresh pool.
    code = """
import os, torch
from slimtorch import ops, _native
torch.set_num_threads(2)
x = torch.randn(4_000_000, generator=torch.Generator().manual_seed(0))
expected = ops.magnitude_threshold([x], 0.5)  # the parent's pool is now running
pid = os.fork()
if pid == 0:
    ok = ops.magnitude_threshold([x], 0.5) == expected and _native.cpu.thread_pool() == "builtin"
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""
    env = {**__import__("os").environ}
    env.pop("SLIMTORCH_POOL", None)
    if pool_env == "builtin":
        env["SLIMTORCH_POOL"] = "builtin"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"
