"""compress_ with the real layers (SparseLinear, Int8Linear): outputs, per-row
dynamic quantization, save/load of compressed models, summary, QAT conversion."""

from __future__ import annotations

import json
import os

import pytest
import safetensors
import torch
from _api_models import bert_input, make_bert, make_mlp
from torch import nn

import slimtorch

layers = pytest.importorskip("slimtorch.nn", reason="slimtorch.nn layers not merged yet")
SparseLinear = getattr(layers, "SparseLinear", None)
Int8Linear = getattr(layers, "Int8Linear", None)
if SparseLinear is None or Int8Linear is None:
    pytest.skip("SparseLinear / Int8Linear not merged yet", allow_module_level=True)

CONFIGS = {
    "sparse": (dict(sparsity=0.9), SparseLinear),
    "int8_dynamic": (dict(quantize="int8_dynamic"), Int8Linear),
    "int8_weight_only": (dict(quantize="int8_weight_only"), Int8Linear),
    "sparse_int8_dynamic": (dict(sparsity=0.9, quantize="int8_dynamic"), SparseLinear),
    "sparse_int8": (dict(sparsity=0.9, quantize="int8_weight_only"), SparseLinear),
    "int8_static": (dict(quantize="int8_static"), Int8Linear),
}


def compress(model: nn.Module, name: str, data: list) -> slimtorch.CompressReport:
    kwargs, _ = CONFIGS[name]
    config = slimtorch.CompressConfig(speed_check=False, **kwargs)
    return slimtorch.compress_(model, config, calibration=data if name == "int8_static" else None)


def mlp_data() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.randn(16, 12, generator=g) for _ in range(3)]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_mlp_formats_swap_and_stay_close(name):
    model, reference = make_mlp(), make_mlp()
    data = mlp_data()
    report = compress(model, name, data)
    assert report.swapped == {"0": name, "2": name, "4": name}
    assert all(isinstance(model[i], CONFIGS[name][1]) for i in (0, 2, 4))
    if "sparse" in name:  # the reference is the same model pruned the same way
        for i in (0, 2, 4):
            keep = slimtorch.ops.magnitude_masks([reference[i].weight], 0.9)[0]
            with torch.no_grad():
                reference[i].weight.masked_fill_(~keep, 0)
    x = data[0]
    with torch.no_grad():
        want, got = reference(x), model(x)
    tol = 1e-5 if name == "sparse" else 0.05
    assert torch.allclose(got, want, atol=tol, rtol=tol), (got - want).abs().max()


def test_dynamic_quantization_is_per_row():
    model = make_mlp()
    compress(model, "int8_dynamic", [])
    x = torch.randn(6, 12)
    x[2] *= 1000  # one row with a huge range must not change the others' quantization
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i:i + 1]) for i in range(6)])
    assert torch.equal(together, alone)
    scaled = x.clone()
    scaled[2] = x[2] / 1000
    with torch.no_grad():
        others = model(scaled)
    assert torch.equal(others[[0, 1, 3, 4, 5]], together[[0, 1, 3, 4, 5]])


@pytest.mark.parametrize("name", list(CONFIGS))
def test_save_load_compressed_mlp_bit_exact(tmp_path, name):
    model = make_mlp()
    data = mlp_data()
    compress(model, name, data)
    path = tmp_path / f"{name}.safetensors"
    slimtorch.save(model, path)
    fresh = make_mlp(seed=4)
    slimtorch.load_(fresh, path)
    assert [type(m) for m in fresh] == [type(m) for m in model]
    x = torch.randn(5, 12)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    packed = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert os.path.getsize(path) <= packed + 4096
    meta = json.loads(safetensors.safe_open(path, "pt").metadata()["slimtorch"])
    assert sorted(meta["layers"]) == ["0", "2", "4"]
    entry = meta["layers"]["2"]
    assert entry["class"] == CONFIGS[name][1].__name__ and entry["format"] == name
    assert entry["sparsity"] == pytest.approx(0.9 if "sparse" in name else 0.0, abs=0.01)
    if name == "int8_static":
        assert entry["init"]["activation_scale"] == float(model[2].activation_scale)


@pytest.mark.parametrize("name", ["sparse_int8_dynamic", "sparse_int8", "int8_dynamic"])
def test_bert_compress_save_load(tmp_path, name):
    model = make_bert()
    x = bert_input()
    with torch.no_grad():
        dense_out = model(x).last_hidden_state
    report = compress(model, name, [])
    assert len(report.swapped) == 13
    with torch.no_grad():
        out = model(x).last_hidden_state
    assert (out - dense_out).abs().mean() < (0.5 if "sparse" in name else 0.05)
    slimtorch.save(model, tmp_path / "bert.safetensors")
    fresh = make_bert(seed=1)
    slimtorch.load_(fresh, tmp_path / "bert.safetensors")
    with torch.no_grad():
        assert torch.equal(fresh(x).last_hidden_state, out)
    s = slimtorch.summary(model)
    linear_rows = [r for r in s.layers if r.type in ("SparseLinear", "Int8Linear")]
    assert len(linear_rows) == 13 and all(r.ratio > 3 for r in linear_rows)
    if name.startswith("sparse"):
        assert all(r.sparsity == pytest.approx(0.9, abs=0.01) for r in linear_rows)
    assert "Int8Linear" in str(s) or "SparseLinear" in str(s)


def test_load_rejects_mismatched_compressed_file(tmp_path):
    model = make_mlp()
    compress(model, "int8_dynamic", [])
    slimtorch.save(model, tmp_path / "m.safetensors")
    other = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3))
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ValueError, match="^path"):
        slimtorch.load_(other, tmp_path / "m.safetensors")
    assert all(type(m) in (nn.Linear, nn.ReLU) for m in other)
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())


def test_speed_check_swaps_what_it_reports():
    """Whatever the timings, the model holds exactly the layers the report
    names, and every layer is pruned whether or not it was swapped."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 8))
    report = slimtorch.compress_(model, slimtorch.CompressConfig(sparsity=0.95, quantize="int8_dynamic"),
                                 example_inputs=torch.randn(64, 512))
    kinds = {"sparse_int8_dynamic": SparseLinear, "sparse_int8": SparseLinear, "int8_dynamic": Int8Linear}
    assert [d.name for d in report.layers] == ["0", "2"]
    for d in report.layers:
        module = model.get_submodule(d.name)
        if d.format is None:  # only a clearly slower layer is left dense
            assert type(module) is nn.Linear and d.reason.startswith("compressed would be slower")
            assert d.speedup * (1 + d.margin) < 1
            assert int((module.weight == 0).sum()) == round(0.95 * module.weight.numel())
        else:
            assert type(module) is kinds[d.format] and d.speedup * (1 + d.margin) >= 1
        assert f"{d.speedup:.2f}x" in d.reason and f"noise band {d.margin:.0%}" in d.reason
        assert d.sparsity == pytest.approx(0.95, abs=1e-3)
        assert d.dense_us > 0 and d.compressed_us > 0 and d.speedup > 0 and d.margin >= 0.03
    assert str(report).splitlines()[0].startswith("layer")


@pytest.mark.parametrize("activation", ["dynamic", "static"])
def test_qat_convert_to_int8_linear(activation):
    model = make_mlp()
    slimtorch.prepare_qat_(model, activation=activation)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(32, 12), torch.randn(32, 3)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        qat_out = model(x)
        fq_weights = [slimtorch.api.quantization._fake_quantize_weight(model[i].weight) for i in (0, 2, 4)]
    slimtorch.convert_qat_(model)
    assert all(isinstance(model[i], Int8Linear) and model[i].mode == activation for i in (0, 2, 4))
    for i, w in zip((0, 2, 4), fq_weights):
        assert torch.equal(model[i].to_dense().weight, w)  # QAT trained against exactly these weights
    with torch.no_grad():
        assert torch.allclose(model(x), qat_out, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="^model"):
        slimtorch.convert_qat_(model)
