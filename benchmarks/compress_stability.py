"""Does ``compress_`` choose the same layers every time it runs?

    PYTHONPATH=python python -m benchmarks.compress_stability [--runs 10] [--busy]

Compresses the same small Llama-style model (built from its config: 2 layers,
hidden 128, MLP 256; input 1 x 16 tokens, the size where every layer takes
microseconds) ``--runs`` times with ``CompressConfig(sparsity=0.5,
quantize="int8_dynamic")`` and the speed check on, and counts how many runs
made the most common set of choices, and how long ``compress_`` took.
``--busy`` runs a second process doing dense matrix products on one thread
for the whole time, the "another user on the machine" case.
"""

from __future__ import annotations

import argparse
import collections
import copy
import multiprocessing
import multiprocessing.synchronize
import os
import statistics
import time

import torch

import slimtorch
from slimtorch import benchmark


def _busy(stop: multiprocessing.synchronize.Event) -> None:
    torch.set_num_threads(1)
    a = torch.randn(512, 512)
    while not stop.is_set():
        a = torch.tanh(a @ a)


def _model() -> torch.nn.Module:
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=1000,
                                      max_position_embeddings=64)
    return transformers.LlamaForCausalLM(config).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--busy", action="store_true", help="a second process busy on one core")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dense = _model()
    ids = torch.randint(0, 1000, (1, 16), generator=torch.Generator().manual_seed(1))
    config = slimtorch.CompressConfig(sparsity=0.5, quantize="int8_dynamic")
    stop = multiprocessing.Event()
    busy = multiprocessing.Process(target=_busy, args=(stop,), daemon=True) if args.busy else None
    if busy is not None:
        busy.start()
        time.sleep(1.0)
    choices, reports, seconds = [], [], []
    load_before = os.getloadavg()[0]  # other work on the machine, besides --busy
    try:
        for _ in range(args.runs):
            model = copy.deepcopy(dense)
            start = time.perf_counter()
            report = slimtorch.compress_(model, config, example_inputs=ids)
            seconds.append(time.perf_counter() - start)
            choices.append(tuple(sorted(report.swapped.items())))
            reports.append(report)
    finally:
        stop.set()
        if busy is not None:
            busy.join()
    counts = collections.Counter(choices)
    majority, agreeing = counts.most_common(1)[0]
    print(f"machine: {benchmark.machine()}")
    print(f"busy second process: {'yes' if args.busy else 'no'}; 1-minute load average "
          f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"{agreeing} of {args.runs} runs made the most common choice ({len(counts)} distinct choice sets)")
    print(f"most common: {len(majority)} of {len(reports[0].layers)} layers compressed")
    print(f"compress_ took {statistics.median(seconds):.1f} s (median; {min(seconds):.1f} to {max(seconds):.1f} s)")
    print("layers whose choice changed between runs:")
    for decision in reports[0].layers:
        seen = collections.Counter(dict(choice).get(decision.name, "dense") for choice in choices)
        if len(seen) > 1:
            print(f"  {decision.name}: " + ", ".join(f"{fmt} {n}x" for fmt, n in seen.most_common()))
    print(reports[choices.index(majority)])


if __name__ == "__main__":
    main()
