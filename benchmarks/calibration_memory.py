"""Peak memory of wanda calibration: one block at a time against one whole-model pass.

    PYTHONPATH=python python -m benchmarks.calibration_memory [--layers 12] [--batches 4]

A BERT-base-shaped encoder (``transformers.BertModel`` from its default
config: hidden 768, 12 layers; random weights, nothing downloaded) is pruned
to 50% per row at every ``nn.Linear`` with ``--batches`` calibration batches
of 8 x 128 tokens, each method in a fresh process. Memory is the process's
resident set: its high-water mark (``VmHWM``) is reset through
``/proc/self/clear_refs`` once the model is built, so the peak is that of
pruning alone; torch's CPU allocations are not seen by ``tracemalloc``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def _status(field: str) -> int:
    """A ``/proc/self/status`` field in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _child(method: str, layers: int, batches: int) -> None:
    import torch
    import transformers
    from torch import nn

    import slimtorch
    from slimtorch.api import pruning

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(num_hidden_layers=layers)).eval()
    g = torch.Generator().manual_seed(1)
    calibration = [{"input_ids": torch.randint(0, 30522, (8, 128), generator=g)} for _ in range(batches)]

    def linears(module: nn.Module, name: str) -> bool:
        return isinstance(module, nn.Linear)

    model_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    rss = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    start = time.perf_counter()
    if method == "block":
        slimtorch.prune_(model, 0.5, method="wanda", calibration=calibration, filter_fn=linears)
    elif method == "whole":
        targets = pruning._targets(model, linears)
        pruning._apply_masks(targets, 0.5, "row", pruning.input_norms(model, targets, calibration))
    else:
        slimtorch.prune_(model, 0.5, scope="row", filter_fn=linears)
    seconds = time.perf_counter() - start
    print(json.dumps({"model": model_bytes, "rss": rss, "peak": _status("VmHWM"), "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.layers, args.batches)
        return
    mib = 1 << 20
    print(f"BertModel, {args.layers} layers, {args.batches} calibration batches of 8 x 128 tokens, "
          "50% per row, peak RSS during pruning (MiB)")
    names = {"whole": "wanda, whole-model calibration", "block": "wanda, block at a time",
             "magnitude": "magnitude (no calibration)"}
    for method, name in names.items():
        out = subprocess.run([sys.executable, "-m", "benchmarks.calibration_memory", "--child", method,
                              "--layers", str(args.layers), "--batches", str(args.batches)],
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{name:<32} peak {r['peak'] / mib:7.0f}  (before: {r['rss'] / mib:.0f}, "
              f"tensors of the model {r['model'] / mib:.0f}; +{(r['peak'] - r['rss']) / mib:.0f}) "
              f"{r['seconds']:.1f} s", flush=True)


if __name__ == "__main__":
    main()
