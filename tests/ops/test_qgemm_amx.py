"""int8 GEMM ops on the Intel AMX tile path: tile edge cases against the
reference, bit for bit.

The integer results (``qgemm_s32``) are exact, so they must equal the
reference. The dynamic and static linear modes share their epilogue with the
AVX-512 path and only the exact int32 sums differ in how they are computed,
so their float outputs must be bit-identical to the AVX-512 path's (the
general tests in test_qgemm.py compare both with the reference epilogue to a
few ulps). Runs only where the CPU, OS and build give AMX.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
import torch

from slimtorch import _native, ops
from slimtorch.reference import qgemm as ref

pytestmark = pytest.mark.skipif(
    _native.cpu is None or _native.cpu.detected_isa() != "amx",
    reason=f"no AMX: {_native.cpu.amx_status() if _native.cpu is not None else 'no native CPU module'}",
)

# Tile edges: K steps of 64 bytes (+/- 1, a single group, a long K with a
# tail), 16-column blocks and 32-column tiles +/- 1, 16-row tiles +/- 1 and
# the row count below which the VNNI kernels keep the work.
EDGE_K = [1, 63, 64, 65, 127, 4096 + 4]
EDGE_N = [1, 15, 16, 17, 33]
EDGE_M = [0, 1, 15, 16, 17, 33]


@pytest.fixture
def amx():
    previous = _native.cpu.active_isa()
    _native.cpu.set_active_isa("amx")
    yield
    _native.cpu.set_active_isa(previous)


def _bits(y: torch.Tensor) -> torch.Tensor:
    return y.contiguous().view(torch.int32)


def _linear_on(isa: str, fn, *args):
    previous = _native.cpu.active_isa()
    _native.cpu.set_active_isa(isa)
    try:
        return fn(*args)
    finally:
        _native.cpu.set_active_isa(previous)


@pytest.mark.parametrize("k", EDGE_K)
@pytest.mark.parametrize("n", EDGE_N)
def test_s32_tile_edges_exact(amx, k, n):
    g = torch.Generator().manual_seed(k * 100 + n)
    q = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)
    weight = ops.qgemm_pack_weight(q, torch.ones(n))
    for m in EDGE_M:
        a = torch.randint(0, 256, (m, k), generator=g, dtype=torch.uint8)
        assert torch.equal(ops.qgemm_s32(a, weight), ref.qgemm_s32(a, q)), (m, k, n)


def test_s32_strided_rows(amx):
    # Rows that do not start on cache lines (a column slice) take the copy path.
    g = torch.Generator().manual_seed(3)
    a = torch.randint(0, 256, (70, 300), generator=g, dtype=torch.uint8)[:, 5:205]
    q = torch.randint(-127, 128, (97, 200), generator=g, dtype=torch.int8)
    assert torch.equal(ops.qgemm_s32(a, ops.qgemm_pack_weight(q, torch.ones(97))), ref.qgemm_s32(a, q))


@pytest.mark.parametrize("k", EDGE_K)
@pytest.mark.parametrize("n", EDGE_N)
def test_linear_modes_bit_identical_to_avx512(k, n):
    g = torch.Generator().manual_seed(k + 7 * n)
    w = torch.randn(n, k, generator=g)
    b = torch.randn(n, generator=g)
    weight = ops.qgemm_prepare_weight(w)
    for m in EDGE_M:
        # Mostly positive rows: zero points away from 0 exercise the colsum term.
        x = torch.randn(m, k, generator=g) * 2 + 0.5
        if m > 3:
            x[2, 0] = float("nan")
        for fn, args in [(ops.qlinear_dynamic, (x, weight, b)),
                         (ops.qlinear_static, (x, weight, 0.03, 77, b))]:
            y_amx = _linear_on("amx", fn, *args)
            y_avx512 = _linear_on("avx512", fn, *args)
            assert torch.equal(_bits(y_amx), _bits(y_avx512)), (fn.__name__, m, k, n)


def test_dynamic_matches_reference_at_layer_size(amx, threads):
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(5)
    x, w, b = torch.randn(300, 768, generator=g), torch.randn(1000, 768, generator=g), torch.randn(1000, generator=g)
    q, w_scale = ops.qgemm_quantize_weight(w)
    y = ops.qlinear_dynamic(x, ops.qgemm_pack_weight(q, w_scale), b)
    a, a_scale, zp = ref.quantize_rows(x)
    acc = ref.qgemm_s32(a, q) - zp.reshape(-1, 1) * q.sum(1, dtype=torch.int32)
    expected = acc.float() * (a_scale.reshape(-1, 1) * w_scale) + b
    assert torch.equal(_bits(y), _bits(expected))


def test_python_threads_each_use_their_own_tiles(amx, threads):
    # Tile configuration is per thread: concurrent callers with different row
    # tails (different configurations) must not disturb each other.
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(9)
    cases = []
    for m, k, n in [(17, 256, 48), (40, 130, 33), (33, 768, 100)]:
        a = torch.randint(0, 256, (m, k), generator=g, dtype=torch.uint8)
        q = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)
        cases.append((a, ops.qgemm_pack_weight(q, torch.ones(n)), ref.qgemm_s32(a, q)))
    failures = []

    def work(case):
        a, weight, expected = case
        for _ in range(30):
            if not torch.equal(ops.qgemm_s32(a, weight), expected):
                failures.append(a.shape)

    workers = [threading.Thread(target=work, args=(case,)) for case in cases]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not failures


def _on(status: str) -> bool:
    """AMX in use: "on", or "on (emulated ...)" in a SLIMTORCH_AMX_EMULATION test build."""
    return status == "on" or status.startswith("on (emulated")


def test_amx_status_follows_the_active_path():
    previous = _native.cpu.active_isa()
    try:
        _native.cpu.set_active_isa("amx")
        assert _on(_native.cpu.amx_status())
        _native.cpu.set_active_isa("avx512")
        assert _native.cpu.amx_status().startswith("off: lowered")
    finally:
        _native.cpu.set_active_isa(previous)


@pytest.mark.parametrize("forced, active", [("amx", "amx"), ("avx512", "avx512"), ("scalar", "scalar")])
def test_isa_environment_variable(forced, active):
    code = "from slimtorch import _native; print(_native.cpu.active_isa(), _native.cpu.amx_status())"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "SLIMTORCH_ISA": forced},
                         capture_output=True, text=True, check=True)
    isa, status = out.stdout.strip().split(" ", 1)
    assert isa == active
    assert _on(status) == (active == "amx")


def test_interleaves_with_torch_bf16_on_the_same_threads(amx, threads):
    # torch's bf16 Linear runs on AMX tiles too (oneDNN): our configuration and
    # release between its calls must leave both correct.
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(11)
    x = torch.randn(64, 256, generator=g)
    w = torch.randn(128, 256, generator=g)
    a = torch.randint(0, 256, (48, 256), generator=g, dtype=torch.uint8)
    q = torch.randint(-127, 128, (128, 256), generator=g, dtype=torch.int8)
    weight = ops.qgemm_pack_weight(q, torch.ones(128))
    expected_int = ref.qgemm_s32(a, q)
    expected_bf16 = torch.nn.functional.linear(x.bfloat16(), w.bfloat16())
    for _ in range(10):
        assert torch.equal(ops.qgemm_s32(a, weight), expected_int)
        assert torch.equal(torch.nn.functional.linear(x.bfloat16(), w.bfloat16()), expected_bf16)


# Weight-only on bf16 tiles: test_qgemm.py's weight-only bf16 tests run on every
# path that rounds x to bf16, the AMX tiles included.
