"""slimtorch's benchmark suites, run from the source tree (not installed).

One suite per file, ``bench_<suite>.py``, named like the op families in
csrc/, slimtorch.ops and tests/ (threshold, select, quantize, spmm, qgemm)
plus api (BERT-shaped encoder end to end), structured, distill and
break_even. The one entry point, from the repository root::

    python -m benchmarks SUITE [SUITE ...] [--quick] [--threads N]

Every case is timed by :mod:`slimtorch.benchmark` (interleaved rounds,
median of per-round ratios against a baseline in the same process) with
pytest-benchmark driving the rounds; results go to
``benchmarks/results/<cpu>/<suite>.json`` and ``.md``.
"""
