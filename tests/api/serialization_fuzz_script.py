"""Fuzzes load_ with mutated valid files, under an address-space cap (run by
test_serialization_fuzz.py in its own process: the cap must not bind pytest).

usage: python serialization_fuzz_script.py EXAMPLES [SEED]

Every mutated file must either raise ValueError or load into a model whose
forward matches a pure-torch reference built from the loaded state. Prints
"ran N cases: L loaded, R rejected" on success; exits non-zero otherwise.
"""

from __future__ import annotations

import json
import lzma
import os
import resource
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch
from _crafted import mixed_architecture, mixed_model, read_parts, slimtorch_file
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from torch import nn

import slimtorch
from slimtorch.nn import SparseLinear

HOSTILE_VALUES = st.sampled_from([0, 1, -1, 2, 7, 255, 2**15, 2**31 - 1, 2**31, 2**32, 2**62, 2**63 - 1, 2**63,
                                  2**64, -(2**63), 10**30, 0.5, float("nan"), float("inf"), True, False, None,
                                  "", "x", "int8", "SparseLinear", "counts", "narrow", "varint_row_deltas", [],
                                  [0], [2**40], [-1], [[[[[]]]]], {}, {"dtype": "int8"}, {"dtype": "x"}])


def paths(value, prefix=()):
    """Every (path, value) in a JSON tree."""
    yield prefix, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, prefix + (i,))


def replaced(tree, path, value):
    if not path:
        return value
    tree = json.loads(json.dumps(tree))
    target = tree
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return tree


def reference_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The loaded model with every SparseLinear computed densely in pure torch."""
    layers = [nn.Linear(m.in_features, m.out_features, bias=m.bias is not None) if isinstance(m, SparseLinear)
              else m for m in model]
    for layer, m in zip(layers, model):
        if isinstance(m, SparseLinear):
            dense = m.packed().to_dense().float()
            with torch.no_grad():
                layer.weight.copy_(dense)
                if m.bias is not None:
                    layer.bias.copy_(m.bias)
    with torch.no_grad():
        return nn.Sequential(*layers)(x)


def main() -> None:
    examples = int(sys.argv[1])
    fuzz_seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    work = tempfile.mkdtemp()
    original = mixed_model()
    valid_path = os.path.join(work, "valid.safetensors")
    slimtorch.save(original, valid_path)
    meta, tensors = read_parts(valid_path)
    with open(valid_path, "rb") as f:
        valid = f.read()
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(0))
    mixed_architecture()(x)  # start torch's thread pool before the cap
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    cap = vm + (512 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    counts = {"loaded": 0, "rejected": 0}

    meta_paths = [p for p, _ in paths(meta) if p]
    tensor_keys = sorted(tensors)

    @st.composite
    def mutated(draw) -> bytes:
        kind = draw(st.sampled_from(["meta", "header", "tensor", "bytes", "xz"]))
        if kind == "meta":
            path = draw(st.sampled_from(meta_paths))
            return slimtorch_file(tensors, replaced(meta, path, draw(HOSTILE_VALUES)),
                                  checksum=draw(st.booleans()))
        if kind == "header":
            key = draw(st.sampled_from(tensor_keys))
            field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
            value = draw(st.one_of(HOSTILE_VALUES, st.lists(st.integers(-2, 2**40), max_size=3),
                                   st.sampled_from(["U8", "I8", "I16", "I32", "I64", "F16", "BF16", "F32", "BOOL"])))
            return slimtorch_file(tensors, meta, header_edit=lambda h: {**h, key: {**h[key], field: value}})
        if kind == "tensor":
            key = draw(st.sampled_from(tensor_keys))
            stored = tensors[key].clone().reshape(-1)
            if stored.numel():
                info = torch.iinfo(stored.dtype) if not stored.is_floating_point() and stored.dtype != torch.bool \
                    else None
                for _ in range(draw(st.integers(1, 3))):
                    at = draw(st.integers(0, stored.numel() - 1))
                    value = draw(st.integers(info.min, info.max)) if info else draw(st.floats(width=16))
                    stored[at] = value
            length = draw(st.integers(0, stored.numel() + 2))
            stored = torch.cat([stored, stored[:1].repeat(max(length - stored.numel(), 0))])[:length]
            if draw(st.booleans()):
                stored = stored.reshape(tensors[key].shape) if stored.numel() == tensors[key].numel() else stored
            return slimtorch_file({**tensors, key: stored.contiguous()}, meta, checksum=draw(st.booleans()))
        data = bytearray(valid if kind == "bytes" else lzma.compress(valid))
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(data) - 1))
            data[at] ^= draw(st.integers(1, 255))
        cut = draw(st.integers(0, 8))
        return bytes(data[: len(data) - cut] if draw(st.booleans()) else data)

    path = os.path.join(work, "fuzzed.safetensors")

    @seed(fuzz_seed)
    @settings(max_examples=examples, deadline=None, database=None, derandomize=fuzz_seed == 0,
              suppress_health_check=list(HealthCheck))
    @given(mutated())
    def check(data: bytes) -> None:
        with open(path, "wb") as f:
            f.write(data)
        if sum(counts.values()) % 1000 == 999:
            print(f"{sum(counts.values()) + 1} cases so far", flush=True)
        model = mixed_architecture()
        try:
            slimtorch.load_(model, path)
        except ValueError:
            counts["rejected"] += 1
            assert all(type(m) in (nn.Linear, nn.ReLU, nn.Sequential) for m in model.modules())
            return
        counts["loaded"] += 1
        with torch.no_grad():
            got = model(x)
        want = reference_forward(model, x)
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4, equal_nan=True), (got, want)

    check()
    print(f"ran {sum(counts.values())} cases: {counts['loaded']} loaded, {counts['rejected']} rejected")


if __name__ == "__main__":
    main()
