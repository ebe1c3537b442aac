"""The demo's int8 student, exported and run by edge_chain, must predict what
it predicts in Python on every one of the 360 digits test images.

    python examples/edge/check_digits.py --edge-chain build/edge-example/edge_chain \\
        [--demo-dir DIR] [--full] [--runner "qemu-aarch64 -L /usr/aarch64-linux-gnu"]

The student is loaded from DIR/student_int8.safetensors.xz (what
``slimtorch demo --out DIR`` writes). When that file is missing, it is made
first: with ``--full`` by the whole demo (slow: five seeds, distillation),
else by the demo's steps in short: the dense 64-300-100-10 student trained
20 epochs, pruned gradually to 97.5% sparsity over 30 epochs (hard labels),
int8 kernel layers with float16-precision biases, saved and loaded as the
demo does. ``--runner`` runs the binary through an emulator (a cross-built
edge_chain). Prints the file sizes (the export against
``slimtorch.save`` of the same model) and exits 1 if any prediction differs.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import slimtorch
from slimtorch.cli import main as slimtorch_main
from slimtorch.demo import load_digits_data, prune_student, student_lenet, to_kernel_layers, train_classifier

STUDENT_FILE = "student_int8.safetensors.xz"


def make_student(path: Path) -> None:
    """The demo's int8 student in short (see the module docstring), saved to ``path``."""
    data = load_digits_data(seed=0)
    torch.manual_seed(1)
    dense = train_classifier(student_lenet(), data.train_loader, epochs=20, seed=1)
    pruned, _ = prune_student(dense, None, data, final_sparsity=0.975, epochs=30, seed=0)
    slimtorch.save(to_kernel_layers(pruned, torch.int8, bias_dtype=torch.float16), path, compress=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edge-chain", required=True, help="the built edge_chain binary")
    parser.add_argument("--demo-dir", help=f"where `slimtorch demo` wrote {STUDENT_FILE} (default: a temporary directory)")
    parser.add_argument("--full", action="store_true", help="run the whole demo when the student is missing")
    parser.add_argument("--runner", default="", help="command prefix that runs the binary (an emulator)")
    parser.add_argument("--threads", type=int, default=2, help="threads for both sides (default: %(default)s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as scratch:
        demo_dir = Path(args.demo_dir or scratch)
        student_path = demo_dir / STUDENT_FILE
        if not student_path.exists():
            demo_dir.mkdir(parents=True, exist_ok=True)
            print(f"{student_path} not found: {'running slimtorch demo' if args.full else 'training it in short'}",
                  flush=True)
            if args.full:
                status = slimtorch_main(["demo", "--out", str(demo_dir), "--threads", str(args.threads)])
                if status != 0:
                    return status
            else:
                make_student(student_path)
        model = slimtorch.load_(student_lenet(), student_path).eval()

        work = Path(scratch)
        exported, saved = work / "student_int8.chain.safetensors", work / "student_int8.safetensors"
        slimtorch.export_chain(model, exported)
        slimtorch.save(model, saved)
        x = load_digits_data(seed=0).test.tensors[0].contiguous()
        inputs, logits_path = work / "test_images.f32", work / "logits.f32"
        x.numpy().astype("<f4").tofile(inputs)

        with torch.inference_mode():
            expected = model(x)
        command = [*shlex.split(args.runner), args.edge_chain, str(exported), str(inputs),
                   "--logits", str(logits_path), "--threads", str(args.threads)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            print(f"edge_chain failed ({result.returncode}):\n{result.stderr}", file=sys.stderr)
            return 1
        predictions = torch.tensor([int(line) for line in result.stdout.split()])
        logits = torch.from_numpy(np.fromfile(logits_path, dtype="<f4").copy()).reshape(expected.shape)

        sizes = {name: os.path.getsize(path) for name, path in (
            ("export_chain", exported), ("slimtorch.save", saved), (f"slimtorch.save(compress=True) ({STUDENT_FILE})", student_path))}
        for name, size in sizes.items():
            print(f"{name}: {size} bytes")
        same = int((predictions == expected.argmax(1)).sum()) if predictions.numel() == x.shape[0] else 0
        print(f"{x.shape[0]} test images: {same} predictions equal to Python's; "
              f"logits max |difference| {float((logits - expected).abs().max()):.3g}"
              f"{' (bit-identical)' if torch.equal(logits, expected) else ''}")
        accuracy = float((predictions == load_digits_data(seed=0).test.tensors[1]).float().mean())
        print(f"accuracy of edge_chain's predictions: {100 * accuracy:.2f}%")
        ok = same == x.shape[0] and sizes["export_chain"] <= sizes["slimtorch.save"]
        print("OK" if ok else "FAILED")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
