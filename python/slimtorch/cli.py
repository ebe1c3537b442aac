"""The ``slimtorch`` command: ``demo``, ``bench``, ``inspect``, ``info``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from slimtorch.benchmark import SUITES

# `slimtorch bench all`: every suite but break_even (which rewrites a shipped data file).
BENCH_SUITES = tuple(s for s in SUITES if s != "break_even")

class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


def _info(args: argparse.Namespace) -> int:
    from slimtorch._native import build_info
    from slimtorch.benchmark import cpu_has, cpu_model

    print(f"{'cpu':<20} {cpu_model()}{' (AMX int8/bf16 in its flags)' if cpu_has('amx_int8') else ''}")
    for key, value in build_info().items():
        print(f"{key:<20} {value}")
    return 0


DEMO_INSTALL = "pip install 'slimtorch[demo]'  (from a checkout: pip install \".[demo]\")"


def _demo(args: argparse.Namespace) -> int:
    import time

    import torch

    try:
        import matplotlib  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as error:
        raise CLIError(f"demo: needs scikit-learn and matplotlib ({error.name or error} is missing); "
                       f"install them with: {DEMO_INSTALL}") from None
    from slimtorch.demo import run_demo

    for name, ok in (("--sparsity", 0 <= args.sparsity <= 1), ("--alpha", 0 <= args.alpha <= 1),
                     ("--temperature", args.temperature > 0), ("--seeds", args.seeds >= 1),
                     ("--threads", args.threads >= 1)):
        if not ok:
            raise CLIError(f"demo: {name} is out of range (see slimtorch demo --help)")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.quick:
        settings = dict(seeds=1, teacher_epochs=2, student_epochs=2, prune_epochs=2, latency_repeats=3)
    else:
        settings = dict(seeds=args.seeds)
    result = run_demo(args.out, final_sparsity=args.sparsity, temperature=args.temperature, alpha=args.alpha,
                      **settings)
    print()
    print(result.table())
    print(f"\nwrote {', '.join(result.files.values())}")
    print(f"total time {time.perf_counter() - start:.0f} s on {torch.get_num_threads()} threads")
    return 0


def _bench(args: argparse.Namespace) -> int:
    import subprocess

    for module in ("pytest", "pytest_benchmark"):
        try:
            __import__(module)
        except ImportError:
            raise CLIError(f"bench: needs {module.replace('_', '-')} (pip install pytest pytest-benchmark, "
                           f"or pip install 'slimtorch[test]')") from None
    source = Path(args.source)
    if not (source / "benchmarks" / "__main__.py").is_file():
        raise CLIError(f"bench: the suites run from a slimtorch source checkout and {source.resolve()} is not one "
                       "(no benchmarks/ there): cd into the checkout or pass --source")
    suites = BENCH_SUITES if args.suite == "all" else (args.suite,)
    command = [sys.executable, "-m", "benchmarks", *suites]
    if args.quick:
        command.append("--quick")
    if args.out is not None:
        command += ["--results", str(Path(args.out).resolve())]
    print(" ".join(command), flush=True)
    if subprocess.run(command, cwd=source).returncode != 0:
        raise CLIError("bench: the benchmarks failed (pytest output above)")
    return 0


_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
                "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def read_header(path: str) -> tuple[dict, dict, int, int | None]:
    """The safetensors header of a slimtorch file (tensors, slimtorch
    metadata, safetensors size, and the size on disk when the file is xz
    compressed, else None), read as JSON only: no tensor data, no code, no pickle."""
    from slimtorch.api.serialization import data_length, read_file

    try:
        head, compressed = read_file(path, header_only=True)
    except ValueError as error:
        raise CLIError(f"inspect: {str(error).removeprefix('path: ')}") from None
    disk_size = os.path.getsize(path)
    if len(head) < 8:
        raise CLIError(f"inspect: {path} is not a slimtorch file (too short: {disk_size} bytes)")
    length = int.from_bytes(head[:8], "little")
    if length > len(head) - 8:
        raise CLIError(f"inspect: {path} is truncated or not a safetensors file")
    try:
        header = json.loads(head[8:8 + length])
    except (ValueError, UnicodeDecodeError):
        raise CLIError(f"inspect: {path} is corrupt or not a safetensors file (bad header)") from None
    try:
        meta = json.loads(header.pop("__metadata__")["slimtorch"])
        if meta.get("format") != "slimtorch" or not isinstance(meta.get("layers"), dict):
            raise KeyError
    except (KeyError, TypeError, ValueError, AttributeError):
        raise CLIError(f"inspect: {path} is a safetensors file but not one written by slimtorch.save") from None
    for key, entry in header.items():
        ok = isinstance(entry, dict) and isinstance(entry.get("shape"), list) and entry.get("dtype") in _DTYPE_BYTES
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not ok or not (isinstance(offsets, list) and len(offsets) == 2 and isinstance(offsets[0], int)
                          and isinstance(offsets[1], int) and 0 <= offsets[0] <= offsets[1]):
            raise CLIError(f"inspect: {path} is corrupt (tensor entry {key!r})")
    # The data an xz file holds is what its header says; a plain file's is what is on disk.
    size = 8 + length + data_length(header) if compressed else disk_size
    past = next((key for key, entry in header.items() if entry["data_offsets"][1] > size - 8 - length), None)
    if past is not None:
        raise CLIError(f"inspect: {path} is corrupt (tensor entry {past!r})")
    return header, meta, size, disk_size if compressed else None


def _inspect(args: argparse.Namespace) -> int:
    header, meta, size, compressed_size = read_header(args.file)
    layers, pruned = meta.get("layers", {}), meta.get("pruned", {})
    named = sorted(set(layers) | set(pruned), key=len, reverse=True)
    groups: dict[str, list[str]] = {}
    for key in header:
        owner = next((n for n in named if key.startswith(f"{n}.")), key.rpartition(".")[0])
        groups.setdefault(owner, []).append(key)
    print(f"{args.file}: slimtorch format version {meta.get('version')}, written by slimtorch "
          f"{meta.get('slimtorch', '?')} / torch {meta.get('torch', '?')}")
    print(f"{'module':<28} {'format':<14} {'shape':<12} {'sparsity':>8}  {'dtypes':<20} {'bytes':>10}")
    total = 0
    for owner in sorted(groups):
        keys = groups[owner]
        nbytes = sum(header[k]["data_offsets"][1] - header[k]["data_offsets"][0] for k in keys)
        total += nbytes
        layer = layers.get(owner)
        if isinstance(layer, dict):
            init = layer.get("init", {})
            fmt, sparsity = layer.get("format", "?"), layer.get("sparsity")
            shape = f"{init.get('out_features', '?')}x{init.get('in_features', '?')}"
        else:
            fmt = "pruned" if owner in pruned else "dense"
            sparsity = pruned.get(owner, {}).get("sparsity") if owner in pruned else None
            weight = header.get(f"{owner}.weight") or header.get(f"{owner}.parametrizations.weight.original")
            shape = "x".join(map(str, weight["shape"])) if weight else ""
        dtypes = ",".join(sorted({header[k]["dtype"].lower() for k in keys}))
        spars = f"{100 * sparsity:.1f}%" if isinstance(sparsity, (int, float)) else ""
        print(f"{owner or '(root)':<28} {fmt:<14} {shape:<12} {spars:>8}  {dtypes:<20} {nbytes:>10,d}")
    print(f"total: {len(header)} tensors, {total:,d} bytes of tensor data + {size - total:,d} bytes of "
          f"header and metadata = {size:,d} bytes" + (f", xz-compressed to {compressed_size:,d} bytes on disk"
                                                        if compressed_size is not None else " on disk"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slimtorch",
        description="Prune and quantize PyTorch models into layers that run faster.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo", help="prune, distil, quantize and save a LeNet-300-100 student on digits",
        description="Train a teacher on scikit-learn's handwritten digits; prune a LeNet-300-100-shaped "
        "student (64-300-100-10) gradually with distillation (and, for comparison, with hard labels "
        "only, over several seeds); quantize it to int8 kernel layers; save it; print accuracy, bytes on "
        "disk, compression ratio and latency against the dense student; plot accuracy vs sparsity.",
    )
    demo.add_argument("--out", default="slimtorch-demo", help="output directory (default: %(default)s)")
    demo.add_argument("--sparsity", type=float, default=0.975, help="final sparsity (default: %(default)s)")
    demo.add_argument("--seeds", type=int, default=5, help="seeds for the distillation comparison "
                      "(default: %(default)s)")
    demo.add_argument("--temperature", type=float, default=2.0, help="distillation temperature "
                      "(default: %(default)s)")
    demo.add_argument("--alpha", type=float, default=0.5, help="weight of the hard-label term in the "
                      "distillation loss (default: %(default)s)")
    demo.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    demo.add_argument("--quick", action="store_true", help="tiny settings (seconds; for testing the pipeline)")
    demo.set_defaults(run=_demo)

    bench = commands.add_parser(
        "bench", help="benchmark slimtorch against torch (from a source checkout; needs pytest-benchmark)",
        description="Run benchmark suites of a slimtorch source checkout (python -m benchmarks there): "
        "each case times slimtorch and torch baselines interleaved in one process; the tables and JSON go "
        "to benchmarks/results/<cpu>/ of the checkout, or under --out.",
    )
    bench.add_argument("suite", nargs="?", default="all", choices=[*SUITES, "all"],
                       help="which suite (default: %(default)s: every suite but break_even)")
    bench.add_argument("--quick", action="store_true", help="a small subset of every suite's cases")
    bench.add_argument("--source", default=".", help="the source checkout (default: the current directory)")
    bench.add_argument("--out", default=None, help="results root instead of the checkout's benchmarks/results")
    bench.set_defaults(run=_bench)

    inspect = commands.add_parser(
        "inspect", help="summarize a file written by slimtorch.save (reads only its header)",
        description="Print per-layer format, shape, sparsity, dtypes and bytes of a compressed model "
        "file, and totals. Reads the safetensors header and metadata only: no code is loaded or run.",
    )
    inspect.add_argument("file", help="a .safetensors file written by slimtorch.save")
    inspect.set_defaults(run=_inspect)

    info = commands.add_parser(
        "info", help="print version, build flags, ISA path, threads and CUDA status",
        description="Print version, build flags, the CPU ISA path in use, the thread "
        "count, and whether the CUDA kernels are built and usable.",
    )
    info.set_defaults(run=_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except CLIError as error:
        print(f"slimtorch: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
