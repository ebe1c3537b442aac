"""The ``slimtorch`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _info(args: argparse.Namespace) -> int:
    from slimtorch._native import build_info

    for key, value in build_info().items():
        print(f"{key:<20} {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slimtorch",
        description="Prune and quantize PyTorch models into layers that run faster.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    info = commands.add_parser(
        "info", help="print version, build flags, ISA path, threads and CUDA status",
        description="Print version, build flags, the CPU ISA path in use, the thread "
        "count, and whether the CUDA kernels are built and usable.",
    )
    info.set_defaults(run=_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
