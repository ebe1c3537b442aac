"""Files written by slimtorch before the scheme vocabulary (``mode=``,
``activations=``, ``x_scale``, state-dict keys ``input_scale`` /
``input_zero_point``) load bit-exactly: every layer kind, plain and xz.

``tests/data/written_before_schemes`` was made by ``make_files.py`` (kept
there) with that earlier version; ``expected.json`` holds the input and each
model's output then."""

from __future__ import annotations

import json
import pathlib
import warnings

import pytest
import torch
from torch import nn

import slimtorch

DATA = pathlib.Path(__file__).parent.parent / "data" / "written_before_schemes"
EXPECTED = json.loads((DATA / "expected.json").read_text())
SCHEMES = {"sparse_float": None, "sparse_fp16": None, "sparse_int8": "int8_weight_only",
           "sparse_int8_dynamic": "int8_dynamic", "sparse_nobias": None, "int8_dynamic": "int8_dynamic",
           "int8_weight_only": "int8_weight_only", "int8_static": "int8_static", "int8_nobias": "int8_dynamic"}


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "xz"])
@pytest.mark.parametrize("name", sorted(EXPECTED["expected"]))
def test_file_written_before_loads_bit_exactly(name, compressed):
    model = nn.Sequential(nn.Linear(40, 12, bias="nobias" not in name))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loading an earlier file is not a deprecated use
        slimtorch.load_(model, DATA / f"{name}{'_xz' if compressed else ''}.safetensors")
    layer = model[0]
    assert type(layer).__name__ == ("Int8Linear" if name.startswith("int8") else "SparseLinear")
    assert layer.scheme == SCHEMES[name]
    x = torch.tensor(EXPECTED["x"])
    with torch.no_grad():
        assert torch.equal(model(x), torch.tensor(EXPECTED["expected"][name]["y"]))
    if name == "int8_static":
        assert {"activation_scale", "activation_zero_point"} <= set(layer.state_dict())
