#!/usr/bin/env bash
# The Python test suite on the AMX path, on a CPU without AMX: the native
# module built with the tile instructions emulated in software
# (SLIMTORCH_AMX_EMULATION, csrc/cpu/amx_emulation.h), the tests run against
# it with AMX active, and the edge example built the same way (its tests
# compare it bit for bit with Python). It checks results, never speed.
#
# SANITIZE=1: the module built with AddressSanitizer + UBSan, their runtimes
# preloaded into Python, so every kernel call of the suite is checked too.
#
# Needs a CPU with AVX512_BF16 (the rest of the AMX path runs natively; else
# it says so and exits 0) and a Python with the test dependencies installed
# (pip install ".[test]"), given as $PYTHON (default: python).
# Usage: [SANITIZE=1] scripts/amx_emulated_tests.sh [pytest arguments]   (default: tests)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
sanitize=${SANITIZE:-0}
build=${BUILD_DIR:-build/amx-emulation}
sanitizer_flags=()
if [ "$sanitize" = 1 ]; then
  build=${BUILD_DIR:-build/amx-emulation-sanitize}
  sanitizer_flags=(-DSLIMTORCH_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo)
fi
if ! grep -qw avx512_bf16 /proc/cpuinfo; then
  echo "skipped: emulated AMX needs a CPU with AVX512_BF16"
  exit 0
fi
cmake -S . -B "$build" -G Ninja -DSLIMTORCH_CUDA=OFF -DSLIMTORCH_TESTS=OFF -DSLIMTORCH_AMX_EMULATION=ON \
  "${sanitizer_flags[@]}" \
  -DPython_EXECUTABLE="$(command -v "$python")" -Dpybind11_DIR="$("$python" -m pybind11 --cmakedir)" >/dev/null
cmake --build "$build"
# The package as it is in the tree, with the emulating module in place of its own.
rm -rf "$build/python" && mkdir -p "$build/python"
cp -r python/slimtorch "$build/python/"
rm -f "$build"/python/slimtorch/_C*.so && cp "$build"/_C*.so "$build/python/slimtorch/"
cmake -S examples/edge -B "$build/edge" -G Ninja -DSLIMTORCH_AMX_EMULATION=ON >/dev/null
cmake --build "$build/edge"
export PYTHONPATH="$PWD/$build/python" SLIMTORCH_EDGE_CHAIN="$PWD/$build/edge/edge_chain"
if [ "$sanitize" = 1 ]; then
  # Python itself is not instrumented: the runtimes go in first; leaks are
  # the interpreter's business (torch keeps caches alive at exit).
  LD_PRELOAD="$(c++ -print-file-name=libasan.so) $(c++ -print-file-name=libubsan.so)"
  export LD_PRELOAD ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi
echo "amx: $("$python" -c 'from slimtorch import _native; print(_native.cpu.amx_status())')"
"$python" -m pytest -q -p no:cacheprovider "${@:-tests}"
