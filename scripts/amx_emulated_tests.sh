#!/usr/bin/env bash
# The Python test suite on the AMX path, on a CPU without AMX: the native
# module built with the tile instructions emulated in software
# (SLIMTORCH_AMX_EMULATION, csrc/cpu/amx_emulation.h), the tests run against
# it with AMX active, and the edge example built the same way (its tests
# compare it bit for bit with Python). It checks results, never speed.
#
# Needs a CPU with AVX512_BF16 (the rest of the AMX path runs natively; else
# it says so and exits 0) and a Python with the test dependencies installed
# (pip install ".[test]"), given as $PYTHON (default: python).
# Usage: scripts/amx_emulated_tests.sh [pytest arguments]   (default: tests)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
build=${BUILD_DIR:-build/amx-emulation}
if ! grep -qw avx512_bf16 /proc/cpuinfo; then
  echo "skipped: emulated AMX needs a CPU with AVX512_BF16"
  exit 0
fi
cmake -S . -B "$build" -G Ninja -DSLIMTORCH_CUDA=OFF -DSLIMTORCH_TESTS=OFF -DSLIMTORCH_AMX_EMULATION=ON \
  -DPython_EXECUTABLE="$(command -v "$python")" -Dpybind11_DIR="$("$python" -m pybind11 --cmakedir)" >/dev/null
cmake --build "$build"
# The package as it is in the tree, with the emulating module in place of its own.
rm -rf "$build/python" && mkdir -p "$build/python"
cp -r python/slimtorch "$build/python/"
rm -f "$build"/python/slimtorch/_C*.so && cp "$build"/_C*.so "$build/python/slimtorch/"
cmake -S examples/edge -B "$build/edge" -G Ninja -DSLIMTORCH_AMX_EMULATION=ON >/dev/null
cmake --build "$build/edge"
export PYTHONPATH="$PWD/$build/python" SLIMTORCH_EDGE_CHAIN="$PWD/$build/edge/edge_chain"
echo "amx: $("$python" -c 'from slimtorch import _native; print(_native.cpu.amx_status())')"
"$python" -m pytest -q -p no:cacheprovider "${@:-tests}"
