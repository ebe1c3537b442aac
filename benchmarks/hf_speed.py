"""End-to-end speed of Hugging Face causal LMs compressed by ``compress_``.

    PYTHONPATH=python python -m benchmarks.hf_speed [--layers 4] [--rounds 7]

GPT-2 and a Llama-style model are built from their configs (random weights,
nothing downloaded; hidden size 768, ``--layers`` blocks). For each input
shape (1 x 128 and 8 x 128 tokens) a copy is compressed with
``CompressConfig(quantize="int8_dynamic", embeddings=True)`` and the speed
check on that input, then timed against the dense model, interleaved
(:func:`slimtorch.benchmark.compare`). Prints the layers chosen and the
speed-up (median of per-round ratios, above 1 = compressed faster).
"""

from __future__ import annotations

import argparse
import copy

import torch

import slimtorch
from slimtorch import benchmark


def _models(layers: int) -> dict[str, torch.nn.Module]:
    import transformers

    torch.manual_seed(0)
    gpt2 = transformers.GPT2Config(n_layer=layers, n_embd=768, n_head=12, vocab_size=50257, n_positions=512)
    llama = transformers.LlamaConfig(hidden_size=768, intermediate_size=2048, num_hidden_layers=layers,
                                     num_attention_heads=12, num_key_value_heads=4, vocab_size=32000,
                                     max_position_embeddings=512, tie_word_embeddings=True)
    return {"gpt2": transformers.GPT2LMHeadModel(gpt2).eval(), "llama": transformers.LlamaForCausalLM(llama).eval()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {benchmark.machine()}")
    config = slimtorch.CompressConfig(quantize="int8_dynamic", embeddings=True)
    for name, dense in _models(args.layers).items():
        vocab = dense.get_input_embeddings().num_embeddings
        for batch in (1, 8):
            ids = torch.randint(0, vocab, (batch, 128), generator=torch.Generator().manual_seed(batch))
            model = copy.deepcopy(dense)
            report = slimtorch.compress_(model, config, example_inputs=ids)
            with torch.inference_mode():
                timing = benchmark.compare({"dense": lambda: dense(ids), "compressed": lambda: model(ids)},
                                           baseline="dense", rounds=args.rounds, sample_seconds=0.0)
            formats = sorted(set(report.swapped.values()))
            print(f"{name} {args.layers} layers, {batch} x 128 tokens: {len(report.swapped)} of "
                  f"{len(report.layers)} layers compressed ({', '.join(formats)}); dense "
                  f"{timing.seconds['dense'] * 1e3:.1f} ms, compressed {timing.seconds['compressed'] * 1e3:.1f} ms, "
                  f"speed-up {timing.ratios['compressed']:.2f}x")


if __name__ == "__main__":
    main()
