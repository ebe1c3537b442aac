"""Writes the files of this folder with the slimtorch version before the
scheme vocabulary (run it there: it uses that version's mode= / activations=
/ x_scale= spellings): ``python make_files.py <folder>``."""
import json
import sys

import torch
from torch import nn

import slimtorch
from slimtorch.nn import Int8Linear, SparseLinear

torch.manual_seed(0)
def lin(i,o):
    return nn.Linear(i,o)
out = sys.argv[1]
def model(layer):
    return nn.Sequential(layer)
layers = {
 "sparse_float": lambda: SparseLinear.from_dense(lin(40,12), sparsity=0.7),
 "sparse_fp16": lambda: SparseLinear.from_dense(lin(40,12), sparsity=0.6, values_dtype=torch.float16),
 "sparse_int8": lambda: SparseLinear.from_dense(lin(40,12), sparsity=0.7, values_dtype=torch.int8),
 "sparse_int8_dynamic": lambda: SparseLinear.from_dense(lin(40,12), sparsity=0.7, activations="int8_dynamic"),
 "sparse_nobias": lambda: SparseLinear.from_dense(nn.Linear(40,12,bias=False), sparsity=0.5),
 "int8_dynamic": lambda: Int8Linear.from_dense(lin(40,12), mode="dynamic"),
 "int8_weight_only": lambda: Int8Linear.from_dense(lin(40,12), mode="weight_only"),
 "int8_static": lambda: Int8Linear.from_dense(lin(40,12), mode="static", x_scale=0.037, x_zero_point=117),
 "int8_nobias": lambda: Int8Linear.from_dense(nn.Linear(40,12,bias=False), mode="dynamic"),
}
x = torch.randn(3, 40, generator=torch.Generator().manual_seed(1))
expected = {}
for name, make in layers.items():
    m = model(make())
    for c in (False, True):
        fn = f"{out}/{name}{'_xz' if c else ''}.safetensors"
        slimtorch.save(m, fn, compress=c)
    with torch.no_grad():
        y = m(x)
    expected[name] = {"y": y.tolist(), "state": {k: v.tolist() for k, v in m.state_dict().items()},
                      "dtypes": {k: str(v.dtype) for k, v in m.state_dict().items()}}
with open(f"{out}/expected.json", "w") as f:
    json.dump({"x": x.tolist(), "expected": {k: {"y": v["y"]} for k, v in expected.items()}}, f)
