"""The ``slimtorch`` command: ``demo``, ``bench``, ``inspect``, ``info``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

# `slimtorch bench SUITE` -> (benchmark files, baseline impl of the ratio table).
BENCH_SUITES: dict[str, tuple[tuple[str, ...], str]] = {
    "ops": (("bench_threshold.py", "bench_select.py", "bench_quantize.py"), "torch"),
    "sparse": (("bench_spmm.py",), "dense"),
    "int8": (("bench_qgemm.py",), "dense"),
}


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


def _info(args: argparse.Namespace) -> int:
    from slimtorch.ops import build_info

    for key, value in build_info().items():
        print(f"{key:<20} {value}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    import time

    import torch

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


def benchmarks_dir() -> Path:
    """The benchmark files: installed with the wheel (slimtorch/_benchmarks),
    or the source tree's benchmarks/ when running from a checkout."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "_benchmarks", package.parent.parent / "benchmarks"):
        if (candidate / "report.py").is_file():
            return candidate
    raise CLIError("bench: benchmark files not found (expected slimtorch/_benchmarks or ./benchmarks)")


def _load_report(directory: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("slimtorch_bench_report", directory / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench(args: argparse.Namespace) -> int:
    import subprocess

    for module in ("pytest", "pytest_benchmark"):
        try:
            __import__(module)
        except ImportError:
            raise CLIError(f"bench: needs {module.replace('_', '-')} (pip install pytest pytest-benchmark, "
                           f"or pip install 'slimtorch[test]')") from None
    directory = benchmarks_dir()
    report = _load_report(directory)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SLIMTORCH_BENCH_QUICK="1" if args.quick else "0")
    suites = list(BENCH_SUITES) if args.suite == "all" else [args.suite]
    for suite in suites:
        files, baseline = BENCH_SUITES[suite]
        json_path = out / f"bench_{suite}.json"
        command = [sys.executable, "-m", "pytest", *(str(directory / f) for f in files), "-c", os.devnull,
                   f"--rootdir={directory}", "-p", "no:cacheprovider", "-q", "--benchmark-enable",
                   f"--benchmark-json={json_path}", "--benchmark-columns=median,rounds"]
        if args.quick:
            command += ["--benchmark-max-time=0.05", "--benchmark-min-rounds=3"]
        print(f"running {suite} benchmarks: {', '.join(files)}", flush=True)
        if subprocess.run(command, env=env).returncode != 0:
            raise CLIError(f"bench: the {suite} benchmarks failed (pytest output above)")
        groups = report.load(json_path)
        if not groups:
            raise CLIError(f"bench: the {suite} benchmarks produced no results")
        markdown = report.table(groups, baseline, [])
        (out / f"bench_{suite}.md").write_text(markdown)
        png = out / f"bench_{suite}.png"
        plotted = (report.plot(groups, baseline, png) or report.plot_by_batch(groups, baseline, png)
                   or report.plot_ratios(groups, baseline, png))
        print(f"\n{suite}: ratios against {baseline!r} (x > 1: slimtorch faster)\n")
        print(markdown)
        print(f"wrote {out / f'bench_{suite}.md'}" + (f" and {png}" if plotted else ""))
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
        "bench", help="benchmark slimtorch kernels against torch (needs pytest-benchmark)",
        description="Run the benchmark suites (ops: threshold/select/quantize; sparse: SparseLinear; "
        "int8: Int8Linear; all) with pytest-benchmark, print the ratio tables against the torch "
        "baselines measured in the same process, and write markdown + JSON + PNG into --out.",
    )
    bench.add_argument("suite", nargs="?", default="all", choices=[*BENCH_SUITES, "all"],
                       help="which suite (default: %(default)s)")
    bench.add_argument("--quick", action="store_true", help="a small subset of sizes (a few minutes for all)")
    bench.add_argument("--out", default="slimtorch-bench", help="output directory (default: %(default)s)")
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
