"""api suite: end-to-end latency of a BERT-base-shaped encoder (768 wide, 12
heads, 3072 intermediate, sequence 128; built from a config, no download) at
batch 1 and 16: dense fp32 (baseline) against ``compress_`` with
int8_dynamic, 90% sparse, and 90% sparse + int8_dynamic (compress_'s speed
check on the real batch picks each layer's format). On CPUs with native bf16
``int8_dynamic_bf16`` adds int8_dynamic with ``compute_dtype=torch.bfloat16``
(the uncompressed parts in bf16, every layer timed against the dense bf16
layer), and ``sparse90_bf16`` / ``sparse90_int8_bf16`` / ``sparse80_bf16`` the
sparse variants the same way (80%: where the break-even data runs bf16
layers sparse from 16 rows but not at batch 1). On CPUs with native bf16 (AVX512-BF16 or AMX: AMD Zen 4 and later,
recent Xeons) the baselines a user of such a CPU has are added:
the model after ``.bfloat16()`` (eager), ``torch.compile`` of it, and torch's
PT2E int8 (``X86InductorQuantizer``, compiled with freezing) where this
torch has it.

BERT-base has 12 layers; ``--bert-layers`` (default 2, to keep a 2-core
machine usable) scales every variant alike.
"""

from __future__ import annotations

import copy

import pytest
import torch

from benchmarks.bench_qgemm import NATIVE_BF16, not_measured_reason, pt2e_int8, pt2e_unavailable
from benchmarks.common import grid
from slimtorch import CompressConfig, compress_, ops

SEQ = 128
BATCHES = grid([1, 16], [1])
VARIANTS = {
    "int8_dynamic": dict(quantize="int8_dynamic"),
    "sparse90": dict(sparsity=0.9),
    "sparse90_int8": dict(sparsity=0.9, quantize="int8_dynamic"),
    "int8_dynamic_bf16": dict(quantize="int8_dynamic", compute_dtype=torch.bfloat16),
    "sparse90_bf16": dict(sparsity=0.9, compute_dtype=torch.bfloat16),
    "sparse90_int8_bf16": dict(sparsity=0.9, quantize="int8_dynamic", compute_dtype=torch.bfloat16),
    "sparse80_bf16": dict(sparsity=0.8, compute_dtype=torch.bfloat16),
}


@pytest.fixture(scope="module")
def dense_model(request):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=768, num_hidden_layers=request.config.getoption("bert_layers"),
                                     num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512)
    return transformers.BertModel(config, add_pooling_layer=False).eval()


def inputs(batch: int) -> torch.Tensor:
    return torch.randint(0, 30522, (batch, SEQ), generator=torch.Generator().manual_seed(1))


def bf16_cpu_baselines(dense: torch.nn.Module, x: torch.Tensor) -> tuple[dict, dict]:
    candidates, missing = {}, {}
    bf16 = copy.deepcopy(dense).bfloat16()
    candidates["bf16"] = lambda: bf16(x)
    try:
        compiled = torch.compile(bf16)
        compiled(x)
        candidates["bf16_compiled"] = lambda: compiled(x)
    except Exception as error:  # any failure of torch's stack is reported, not fatal
        missing["bf16_compiled"] = not_measured_reason(error)
    reason = pt2e_unavailable()
    if reason is None:
        try:
            int8 = pt2e_int8(dense, (x,))
            candidates["pt2e_int8"] = lambda: int8(x)
        except Exception as error:
            missing["pt2e_int8"] = not_measured_reason(error)
    else:
        missing["pt2e_int8"] = reason
    return candidates, missing


@pytest.mark.parametrize("batch", BATCHES)
def test_bert_encoder(bench, dense_model, batch):
    x = inputs(batch)
    candidates, missing = {"dense": lambda: dense_model(x)}, {}
    with torch.inference_mode():
        for variant, options in VARIANTS.items():
            if "compute_dtype" in options and not ops.cpu_bf16_status().startswith("on"):
                missing[variant] = f"no native bf16 ({ops.cpu_bf16_status()})"
                continue
            model = copy.deepcopy(dense_model)
            report = compress_(model, CompressConfig(**options), example_inputs=x)
            if report.compute_dtype_reason:
                print(f"{variant}: {len(report.swapped)} of {len(report.layers)} layers compressed, compute dtype "
                      f"{report.compute_dtype}: {report.compute_dtype_reason}")
            candidates[variant] = lambda model=model: model(x)
        if NATIVE_BF16:
            extra, not_measured = bf16_cpu_baselines(dense_model, x)
            candidates.update(extra)
            missing.update(not_measured)
        layers = dense_model.config.num_hidden_layers
        bench({"model": f"bert-base-shaped ({layers} layers)", "batch": batch, "seq": SEQ}, candidates,
              baseline="dense", also=tuple(b for b in ("bf16", "bf16_compiled") if b in candidates),
              not_measured=missing, sample_seconds=0.0, settle=1)
