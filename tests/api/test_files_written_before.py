"""Files written by slimtorch before the scheme vocabulary (``mode=``,
``activations=``, ``x_scale``, state-dict keys ``input_scale`` /
``input_zero_point``) load bit-exactly: every layer kind, plain and xz.

``tests/data/written_before_schemes`` was made by ``make_files.py`` (kept
there) with that earlier version; ``expected.json`` holds the input and each
model's output then. Those outputs come from the kernels that the shipped
break-even data of that version chose for 3 rows (its AVX-512 tables: the
sparse kernel for the layers at 30-40% density, ``F.linear`` on the dense
copy for the one at 50%), so the test reads those tables, not this
machine's. The dense copy runs torch's own GEMM, whose float rounding
depends on the CPU (MKL's AVX-512 code on the Intel Xeon that wrote the
expected outputs and on AMD Zen 4 differ in the last bit), so that layer
is compared bit-exactly with ``F.linear`` on its decoded weights here and
closely with the recorded output."""

from __future__ import annotations

import json
import pathlib
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import slimtorch
from slimtorch import _native

DATA = pathlib.Path(__file__).parent.parent / "data" / "written_before_schemes"
EXPECTED = json.loads((DATA / "expected.json").read_text())
# The outputs were computed on the AVX-512 kernels (the amx path runs the
# same ones at 3 rows); the layers whose sums are exact integers, with the
# epilogue every path shares, give the same bits on any path.
WRITTEN_ON_PATHS = ("avx512", "amx")
ACTIVE_PATH = "scalar" if _native.cpu is None else _native.cpu.active_isa()
INTEGER_SUMS = {"int8_dynamic", "int8_static", "int8_nobias"}
SCHEMES = {"sparse_float": None, "sparse_fp16": None, "sparse_int8": "int8_weight_only",
           "sparse_int8_dynamic": "int8_dynamic", "sparse_nobias": None, "int8_dynamic": "int8_dynamic",
           "int8_weight_only": "int8_weight_only", "int8_static": "int8_static", "int8_nobias": "int8_dynamic"}
# The break-even tables the expected outputs were computed under.
WRITTEN_UNDER = {"float/cached": [[1, 0.7], [16, 0.4], [128, 0.4]], "float/large": [[1, 0.7], [16, 0.6], [128, 0.4]],
                 "int8/cached": [[1, 0.7], [16, 0.4], [128, 0.4]], "int8/large": [[1, 0.7], [16, 0.7], [128, 0.5]]}
# The one layer (50% density) that those tables send to F.linear on its dense copy.
DENSE_FALLBACK = {"sparse_nobias"}


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "xz"])
@pytest.mark.parametrize("name", sorted(EXPECTED["expected"]))
def test_file_written_before_loads_bit_exactly(break_even, name, compressed):
    break_even(WRITTEN_UNDER)
    model = nn.Sequential(nn.Linear(40, 12, bias="nobias" not in name))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loading an earlier file is not a deprecated use
        slimtorch.load_(model, DATA / f"{name}{'_xz' if compressed else ''}.safetensors")
    layer = model[0]
    assert type(layer).__name__ == ("Int8Linear" if name.startswith("int8") else "SparseLinear")
    assert layer.scheme == SCHEMES[name]
    x = torch.tensor(EXPECTED["x"])
    with torch.no_grad():
        y, want = model(x), torch.tensor(EXPECTED["expected"][name]["y"])
    if name in DENSE_FALLBACK:
        assert torch.equal(y, F.linear(x, layer.to_dense().weight))
        torch.testing.assert_close(y, want, rtol=1e-6, atol=1e-6)
    elif ACTIVE_PATH in WRITTEN_ON_PATHS or name in INTEGER_SUMS:
        assert torch.equal(y, want)
    else:
        # Float kernels of other paths (AVX2, scalar, ARM64) add the products
        # in their own order.
        torch.testing.assert_close(y, want, rtol=1e-6, atol=1e-6)
    if name == "int8_static":
        assert {"activation_scale", "activation_zero_point"} <= set(layer.state_dict())
