"""The ``slimtorch`` command: ``demo``, ``bench``, ``inspect``, ``info``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from slimtorch.benchmark import SUITES

# `slimtorch bench all`: every suite but break_even (which rewrites a shipped data file).
BENCH_SUITES = tuple(s for s in SUITES if s != "break_even")

class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


def _info(args: argparse.Namespace) -> int:
    from slimtorch.benchmark import cpu_has, cpu_model
    from slimtorch.ops import build_info

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


def _inspect(args: argparse.Namespace) -> int:
    from slimtorch.api.serialization import read_header

    try:
        file = read_header(args.file)
    except ValueError as error:
        raise CLIError(f"inspect: {str(error).removeprefix('path: ')}") from None
    entries, meta = file.entries, file.meta
    layers, pruned = meta["layers"], meta["pruned"]
    named = sorted(set(layers) | set(pruned), key=len, reverse=True)
    groups: dict[str, list[str]] = {}
    for key in entries:
        owner = next((n for n in named if key.startswith(f"{n}.")), key.rpartition(".")[0])
        groups.setdefault(owner, []).append(key)
    print(f"{args.file}: slimtorch format version {meta['version']}, written by slimtorch "
          f"{_short(meta.get('slimtorch', '?'))} / torch {_short(meta.get('torch', '?'))}")
    print(f"{'module':<28} {'format':<14} {'shape':<12} {'sparsity':>8}  {'dtypes':<20} {'bytes':>10}")
    total = 0
    for owner in sorted(groups):
        keys = groups[owner]
        nbytes = sum(entries[k].end - entries[k].start for k in keys)
        total += nbytes
        layer = layers.get(owner)
        if layer is not None:
            init = layer["init"]
            fmt, sparsity = _short(layer.get("format", "?")), layer.get("sparsity")
            shape = f"{_short(init.get('out_features', '?'))}x{_short(init.get('in_features', '?'))}"
        else:
            fmt = "pruned" if owner in pruned else "dense"
            sparsity = pruned[owner].get("sparsity") if owner in pruned else None
            weight = entries.get(f"{owner}.weight") or entries.get(f"{owner}.parametrizations.weight.original")
            shape = "x".join(map(str, weight.shape)) if weight else ""
        dtypes = ",".join(sorted({entries[k].dtype_name.lower() for k in keys}))
        spars = f"{100 * sparsity:.1f}%" if isinstance(sparsity, (int, float)) and abs(sparsity) <= 1 else ""
        print(f"{_short(owner) or '(root)':<28} {fmt:<14} {shape:<12} {spars:>8}  {dtypes:<20} {nbytes:>10,d}")
    size = file.header_bytes + file.data_bytes
    print(f"total: {len(entries)} tensors, {total:,d} bytes of tensor data + {size - total:,d} bytes of "
          f"header and metadata = {size:,d} bytes" + (f", xz-compressed to {file.disk_bytes:,d} bytes on disk"
                                                        if file.compressed else " on disk"))
    return 0


def _short(value: object) -> str:
    """A value from the file, printed on one short line whatever it holds."""
    text = str(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


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
