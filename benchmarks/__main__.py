"""``python -m benchmarks SUITE [SUITE ...] [--quick] [--threads N] [--results DIR] [-k EXPR] [PYTEST OPTIONS]``,
from the repository root: runs the suites under pytest-benchmark and writes
their results (see benchmarks/conftest.py). Other options go to pytest (e.g.
``--bert-layers 12`` for the api suite). ``all`` is every suite except
break_even, which rewrites the shipped data file python/slimtorch/data/break_even.json.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from slimtorch.benchmark import SUITES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("suites", nargs="+", choices=[*SUITES, "all"], metavar="SUITE",
                        help=f"one or more of {', '.join(SUITES)}, or all")
    parser.add_argument("--quick", action="store_true", help="a small subset of every grid")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (SLIMTORCH_BENCH_THREADS, default 2)")
    parser.add_argument("--results", default=None, help="results root (default benchmarks/results)")
    parser.add_argument("-k", dest="keyword", default=None, help="pytest -k expression: a subset of the cases")
    args, pytest_options = parser.parse_known_args(argv)
    suites = [s for s in SUITES if s != "break_even"] if "all" in args.suites else args.suites
    # The suites read these when pytest imports them.
    os.environ["SLIMTORCH_BENCH_QUICK"] = "1" if args.quick else "0"
    if args.threads is not None:
        os.environ["SLIMTORCH_BENCH_THREADS"] = str(args.threads)
    if args.results is not None:
        os.environ["SLIMTORCH_BENCH_RESULTS"] = args.results
    import pytest

    directory = Path(__file__).parent
    options = ["-p", "no:cacheprovider", "-q", "--benchmark-enable", "--benchmark-columns=median,rounds",
               "-o", "python_files=bench_*.py"]
    if args.keyword:
        options += ["-k", args.keyword]
    options += pytest_options
    return int(pytest.main([*(str(directory / f"bench_{s}.py") for s in suites), *options]))


if __name__ == "__main__":
    sys.exit(main())
