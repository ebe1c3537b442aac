"""compress_ with CompressConfig(compute_dtype=torch.bfloat16): validation, the
bf16 model it builds where the CPU computes bf16 natively, the speed check's
bf16 rivals, the accuracy check and its revert, and CPUs without native bf16."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _api_models import bert_input, make_bert
from torch import nn

import slimtorch
from slimtorch import benchmark, ops
from slimtorch.api import _backend
from slimtorch.api.compress import _mean_cosine
from slimtorch.nn import Int8Embedding, Int8Linear, SparseLinear

BF16 = torch.bfloat16
native_bf16 = pytest.mark.skipif(not ops.cpu_bf16_status().startswith("on"),
                                 reason=f"no native bf16: {ops.cpu_bf16_status()}")


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(24, 64), nn.LayerNorm(64), nn.GELU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 8)).eval()


def example() -> torch.Tensor:
    return torch.randn(32, 24, generator=torch.Generator().manual_seed(3))


def float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items() if t.is_floating_point()}


# ---- validation -------------------------------------------------------------------------

@pytest.mark.parametrize("value, error", [("bfloat16", TypeError), (None, TypeError), (torch.float16, ValueError),
                                          (torch.int8, ValueError), (torch.float64, ValueError)])
def test_compute_dtype_validated(value, error):
    with pytest.raises(error, match="^compute_dtype: expected torch.float32 or torch.bfloat16"):
        slimtorch.CompressConfig(quantize="int8_dynamic", compute_dtype=value)


@pytest.mark.parametrize("value, error", [("high", TypeError), (1.5, ValueError), (-0.1, ValueError)])
def test_min_output_cosine_validated(value, error):
    with pytest.raises(error, match="^min_output_cosine: "):
        slimtorch.CompressConfig(compute_dtype=BF16, min_output_cosine=value)


def test_defaults_keep_float32():
    config = slimtorch.CompressConfig()
    assert config.compute_dtype == torch.float32 and config.min_output_cosine == 0.99
    model = make_model()
    report = slimtorch.compress_(model, slimtorch.CompressConfig(quantize="int8_dynamic", speed_check=False))
    assert report.compute_dtype == torch.float32 and report.compute_dtype_reason == ""
    assert "compute dtype" not in str(report)
    assert model[1].weight.dtype == torch.float32


def test_bfloat16_needs_example_inputs():
    model = make_model()
    before = float_state(model)
    with pytest.raises(ValueError, match="^example_inputs: compute_dtype=torch.bfloat16 needs example_inputs"):
        slimtorch.compress_(model, slimtorch.CompressConfig(quantize="int8_dynamic", compute_dtype=BF16))
    assert all(torch.equal(before[k], v) for k, v in float_state(model).items())
    assert isinstance(model[0], nn.Linear)


# ---- the bf16 model ---------------------------------------------------------------------

@native_bf16
@pytest.mark.parametrize("quantize, sparsity, layer_class", [("int8_dynamic", None, Int8Linear),
                                                             ("int8_weight_only", None, Int8Linear),
                                                             ("int8_dynamic", 0.8, SparseLinear),
                                                             (None, 0.8, SparseLinear)])
def test_bfloat16_model_within_tolerance(quantize, sparsity, layer_class):
    model, x = make_model(), example()
    config = slimtorch.CompressConfig(quantize=quantize, sparsity=sparsity, speed_check=False, compute_dtype=BF16)
    # The rival: the same compression, float32 throughout.
    float32_model = make_model()
    slimtorch.compress_(float32_model, slimtorch.CompressConfig(quantize=quantize, sparsity=sparsity,
                                                                speed_check=False))
    with torch.no_grad():
        expected = float32_model(x)
    report = slimtorch.compress_(model, config, example_inputs=x)
    assert report.compute_dtype == BF16
    assert report.compute_dtype_reason.startswith("on: ") and "mean cosine to float32" in report.compute_dtype_reason
    assert "compute dtype bfloat16: on: " in str(report)
    assert len(report.swapped) == 3 and all(isinstance(model[i], layer_class) for i in (0, 3, 5))
    # The uncompressed parts run in bf16; int8 weights keep their float32 scales (and an
    # Int8Linear its float32 bias); a sparse layer's float parts follow the compute dtype.
    assert model[1].weight.dtype == BF16 and model[1].bias.dtype == BF16
    for i in (0, 3, 5):
        if layer_class is Int8Linear:
            assert model[i].weight_scale.dtype == torch.float32 and model[i].bias.dtype == torch.float32
        else:
            assert model[i].bias.dtype == BF16
            assert model[i].values.dtype == (torch.int8 if quantize else BF16)
    with torch.no_grad():
        y = model(x.to(BF16))
    assert y.dtype == BF16
    cosine = nn.functional.cosine_similarity(y.float(), expected, dim=-1).mean()
    assert cosine >= config.min_output_cosine
    # The cosine the report gives is the one of this output.
    reported = float(re.search(r"mean cosine to float32 ([0-9.]+) >= min_output_cosine 0.99$",
                               report.compute_dtype_reason).group(1))
    assert abs(reported - float(cosine)) < 1e-4


@native_bf16
def test_speed_check_times_candidates_against_the_dense_bf16_layer(monkeypatch):
    seen = []

    class Recording(benchmark.Interleaved):
        def __init__(self, candidates, **kwargs):
            with torch.no_grad():
                seen.append({name: fn().dtype for name, fn in candidates.items()})
            super().__init__(candidates, **kwargs)

    monkeypatch.setattr(benchmark, "Interleaved", Recording)
    model, x = make_model(), example()
    report = slimtorch.compress_(model, slimtorch.CompressConfig(quantize="int8_dynamic", compute_dtype=BF16),
                                 example_inputs=x)
    assert len(seen) == 3
    assert all(outputs == {"dense": BF16, "int8_dynamic": BF16} for outputs in seen)
    # Whatever each layer chose, it runs in bf16: compressed, or the dense layer cast to bf16.
    assert report.compute_dtype == BF16
    for i in (0, 3, 5):
        assert isinstance(model[i], Int8Linear) or model[i].weight.dtype == BF16
        assert (report.swapped.get(str(i)) is not None) == isinstance(model[i], Int8Linear)


@native_bf16
def test_bf16_break_even_table_screens_sparse_candidates(break_even):
    # With compute_dtype bf16 a sparse candidate has bf16 values and meets the
    # dense bf16 layer: the bf16 table rules it out untimed, the float one does not.
    float_tables = {f"{kind}/{size}": [[1, 0.9], [16, 0.9], [128, 0.9]]
                    for kind in ("float", "int8") for size in ("cached", "large")}
    break_even({**float_tables, "bf16/cached": [[1, 0.9], [16, 0.0]]})
    model = make_model()
    report = slimtorch.compress_(model, slimtorch.CompressConfig(sparsity=0.9, compute_dtype=BF16),
                                 example_inputs=example())
    assert not report.swapped
    assert all("break-even data" in d.reason for d in report.layers), [d.reason for d in report.layers]
    assert all(model[i].weight.dtype == BF16 for i in (0, 3, 5))
    break_even(float_tables)
    model = make_model()
    report = slimtorch.compress_(model, slimtorch.CompressConfig(sparsity=0.9, compute_dtype=BF16),
                                 example_inputs=example())
    assert not any("break-even data" in d.reason for d in report.layers)


@native_bf16
def test_embeddings_return_bf16_rows():
    model = make_bert()
    x = bert_input()
    config = slimtorch.CompressConfig(quantize="int8_dynamic", embeddings=True, speed_check=False, compute_dtype=BF16)
    report = slimtorch.compress_(model, config, example_inputs=x)
    assert report.compute_dtype == BF16
    embedding = model.embeddings.word_embeddings
    assert isinstance(embedding, Int8Embedding) and embedding.dtype == BF16
    assert embedding(torch.tensor([1, 2])).dtype == BF16
    with torch.no_grad():
        assert model(x).last_hidden_state.dtype == BF16


@native_bf16
def test_save_and_load_a_bf16_model(tmp_path):
    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 32), nn.LayerNorm(32), nn.Linear(32, 4)).eval()

    model, ids = build(), torch.randint(0, 50, (4, 8), generator=torch.Generator().manual_seed(1))
    config = slimtorch.CompressConfig(quantize="int8_dynamic", embeddings=True, speed_check=False,
                                      compute_dtype=BF16)
    assert slimtorch.compress_(model, config, example_inputs=ids).compute_dtype == BF16
    path = tmp_path / "model.safetensors"
    slimtorch.save(model, path)
    with torch.no_grad():
        expected = model(ids)
    # The file holds bf16 tensors: it loads into the architecture cast to bf16, bit-exactly.
    float32_model = build()
    with pytest.raises(ValueError, match="file has torch.bfloat16 .* model has torch.float32"):
        slimtorch.load_(float32_model, path)
    assert isinstance(float32_model[1], nn.Linear) and float32_model[2].weight.dtype == torch.float32
    fresh = build().bfloat16()
    slimtorch.load_(fresh, path)
    with torch.no_grad():
        assert torch.equal(fresh(ids), expected)


# ---- revert -----------------------------------------------------------------------------

@native_bf16
def test_drift_beyond_tolerance_reverts_to_float32():
    model, x = make_model(), example()
    before = float_state(model)
    # int8 weights alone move the outputs off the float32 ones: a cosine of 1 cannot be met.
    config = slimtorch.CompressConfig(quantize="int8_dynamic", speed_check=False, compute_dtype=BF16,
                                      min_output_cosine=1.0)
    report = slimtorch.compress_(model, config, example_inputs=x)
    assert report.compute_dtype == torch.float32
    assert report.compute_dtype_reason.startswith("bfloat16 undone, compressed in float32: outputs' mean cosine")
    assert "< min_output_cosine 1.0" in report.compute_dtype_reason
    # The float32 result: every float tensor of the uncompressed parts exactly as before,
    # the layers compressed again from their float32 weights.
    assert model[1].weight.dtype == torch.float32
    after = float_state(model)
    for name in ("1.weight", "1.bias"):
        assert torch.equal(after[name], before[name])
    for i in (0, 3, 5):
        linear = nn.Linear(model[i].in_features, model[i].out_features)
        linear.load_state_dict({"weight": before[f"{i}.weight"], "bias": before[f"{i}.bias"]})
        reference = Int8Linear.from_dense(linear)
        assert torch.equal(model[i].weight_int8, reference.weight_int8)
    with torch.no_grad():
        assert model(x).dtype == torch.float32


@native_bf16
def test_static_calibration_batches_are_read_once_also_on_revert():
    model, x = make_model(), example()
    read = []

    def batches():  # a one-shot iterable, as a data loader may be
        for seed in range(3):
            read.append(seed)
            yield torch.randn(16, 24, generator=torch.Generator().manual_seed(seed))

    config = slimtorch.CompressConfig(quantize="int8_static", speed_check=False, compute_dtype=BF16,
                                      min_output_cosine=1.0)
    report = slimtorch.compress_(model, config, example_inputs=x, calibration=batches())
    assert read == [0, 1, 2]
    assert report.compute_dtype == torch.float32 and report.compute_dtype_reason.startswith("bfloat16 undone")
    assert report.swapped == {"0": "int8_static", "3": "int8_static", "5": "int8_static"}
    expected = slimtorch.calibrate(make_model(), [torch.randn(16, 24, generator=torch.Generator().manual_seed(s))
                                                  for s in range(3)])
    assert model[3]._state[1].scale == pytest.approx(expected["3"].activation_scale, rel=1e-6)


class _Float32Inside(nn.Module):
    """Builds a float32 tensor in forward, as some models do: it cannot run in bf16."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(24, 24)

    def forward(self, x):
        return self.linear(x) @ torch.eye(24)


@native_bf16
def test_a_model_that_fails_in_bf16_is_reverted():
    model = nn.Sequential(_Float32Inside(), nn.LayerNorm(24), nn.Linear(24, 8)).eval()
    before = float_state(model)
    report = slimtorch.compress_(model, slimtorch.CompressConfig(quantize="int8_dynamic", speed_check=False,
                                                                 compute_dtype=BF16), example_inputs=example())
    assert report.compute_dtype == torch.float32
    assert report.compute_dtype_reason.startswith("bfloat16 undone, compressed in float32: the model failed in "
                                                  "bfloat16 (RuntimeError")
    assert torch.equal(model[1].weight, before["1.weight"])
    assert isinstance(model[0].linear, Int8Linear) and isinstance(model[2], Int8Linear)
    with torch.no_grad():
        assert model(example()).dtype == torch.float32


def test_mean_cosine():
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert _mean_cosine(a, a.clone()) == 1.0  # two zero vectors count as equal
    assert _mean_cosine({"x": a, "n": 3}, {"x": torch.tensor([[0.0, 1.0], [0.0, 0.0]]), "n": 3}) == 0.5
    assert _mean_cosine((a, a), (a, -a)) == 0.0  # the worst of several outputs: (-1 + 1) / 2
    unlike = (torch.tensor([[float("nan"), 0.0], [0.0, 0.0]]), torch.ones(3, 2), (a, a),
              torch.ones(2, 2, dtype=torch.int64))
    for got in unlike:
        assert math.isnan(_mean_cosine(a, got))


# ---- CPUs without native bf16 -----------------------------------------------------------

def test_without_native_bf16_the_option_is_ignored(monkeypatch):
    monkeypatch.setattr(_backend, "cpu_bf16_status", lambda: "off: simulated CPU without bf16")
    model, x = make_model(), example()
    before = float_state(model)
    report = slimtorch.compress_(model, slimtorch.CompressConfig(quantize="int8_dynamic", speed_check=False,
                                                                 compute_dtype=BF16), example_inputs=x)
    assert report.compute_dtype == torch.float32
    assert report.compute_dtype_reason == "bfloat16 not used (off: simulated CPU without bf16)"
    assert "compute dtype float32: bfloat16 not used" in str(report)
    assert torch.equal(model[1].weight, before["1.weight"]) and model[1].weight.dtype == torch.float32
    assert all(isinstance(model[i], Int8Linear) for i in (0, 3, 5))
    with torch.no_grad():
        assert model(x).dtype == torch.float32


@pytest.mark.skipif("avx2" not in ops.build_info().get("isa_supported", ""),
                    reason="needs the native module on an x86 CPU with AVX2")
def test_slimtorch_isa_avx2_turns_bf16_off():
    code = ("import torch, slimtorch\n"
            "from torch import nn\n"
            "from slimtorch import ops\n"
            "torch.manual_seed(0)\n"
            "model = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 4))\n"
            "report = slimtorch.compress_(model, slimtorch.CompressConfig(quantize='int8_dynamic', "
            "speed_check=False, compute_dtype=torch.bfloat16), example_inputs=torch.randn(4, 8))\n"
            "print(ops.cpu_bf16_status()); print(report.compute_dtype, model[1].weight.dtype)\n")
    python_dir = Path(slimtorch.__file__).resolve().parents[1]
    env = dict(os.environ, SLIMTORCH_ISA="avx2", PYTHONPATH=str(python_dir))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    status, dtypes = out.strip().splitlines()
    assert status == "off: the active ISA path (avx2) has neither AMX-BF16 nor AVX512-BF16"
    assert dtypes == "torch.float32 torch.float32"
