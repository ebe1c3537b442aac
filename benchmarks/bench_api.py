"""End-to-end latency of a BERT-base-shaped encoder (built from a config, no
download): dense fp32 vs compress_ with int8 dynamic, 90% sparse, and 90%
sparse-int8, at batch 1 and 16, sequence 128.

Run as a script for a table of medians and ratios (each ratio against the
dense model in the same process, timed interleaved round by round):

    PYTHONPATH=python python benchmarks/bench_api.py [--layers 12] [--rounds 5] [--threads 2]

or under pytest-benchmark: ``pytest benchmarks/bench_api.py --benchmark-enable``.
BERT-base has 12 layers; ``--layers`` (default 2 under pytest, to keep the
2-core machine usable) scales every variant alike, so ratios barely move.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import pytest
import torch

import slimtorch

SEQ = 128
VARIANTS = {
    "dense": None,
    "int8_dynamic": dict(quantize="int8_dynamic"),
    "sparse90": dict(sparsity=0.9),
    "sparse90_int8": dict(sparsity=0.9, quantize="int8_dynamic"),
}


def bert(layers: int) -> torch.nn.Module:
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=768, num_hidden_layers=layers, num_attention_heads=12,
                                     intermediate_size=3072, max_position_embeddings=512)
    return transformers.BertModel(config, add_pooling_layer=False).eval()


def inputs(batch: int) -> torch.Tensor:
    return torch.randint(0, 30522, (batch, SEQ), generator=torch.Generator().manual_seed(1))


def compressed(dense: torch.nn.Module, variant: str, batch: int) -> tuple[torch.nn.Module, object]:
    model = copy.deepcopy(dense)
    if VARIANTS[variant] is None:
        return model, None
    report = slimtorch.compress_(model, slimtorch.CompressConfig(**VARIANTS[variant]), example_inputs=inputs(batch))
    return model, report


def time_interleaved(models: dict[str, torch.nn.Module], x: torch.Tensor, rounds: int) -> dict[str, float]:
    """Median seconds per forward of each model, timed round-robin."""
    samples: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            model(x)
        for _ in range(rounds):
            for name, model in models.items():
                t0 = time.perf_counter()
                model(x)
                samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(s) for name, s in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--reports", action="store_true", help="print each compress_ report")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dense = bert(args.layers)
    print(f"BERT-base-shaped encoder: {args.layers} layers x 768, seq {SEQ}, {args.threads} threads, "
          f"median of {args.rounds} rounds")
    for batch in args.batches:
        models, reports = {}, {}
        for variant in VARIANTS:
            models[variant], reports[variant] = compressed(dense, variant, batch)
            if args.reports and reports[variant] is not None:
                print(f"--- {variant}, batch {batch}\n{reports[variant]}")
        times = time_interleaved(models, inputs(batch), args.rounds)
        for variant, t in times.items():
            swapped = "" if reports[variant] is None else f"  ({len(reports[variant].swapped)}/{len(reports[variant].layers)} layers swapped)"
            print(f"batch {batch:3d}  {variant:14s} {t * 1e3:9.1f} ms  {times['dense'] / t:5.2f}x vs dense{swapped}")


@pytest.fixture(scope="module")
def dense_model():
    pytest.importorskip("transformers")
    return bert(2)


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bert_encoder(benchmark, dense_model, variant, batch):
    model, report = compressed(dense_model, variant, batch)
    benchmark.extra_info.update(suite="api", model="bert-base-shaped (2 layers)", batch=batch, seq=SEQ,
                                impl="torch" if variant == "dense" else "slimtorch", variant=variant,
                                swapped=0 if report is None else len(report.swapped))
    x = inputs(batch)
    with torch.inference_mode():
        benchmark.pedantic(model, args=(x,), rounds=3, warmup_rounds=1)


if __name__ == "__main__":
    main()
