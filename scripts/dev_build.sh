#!/usr/bin/env bash
# Incremental developer build: compiles the native modules with CMake into
# build/dev (or $BUILD_DIR) and copies them next to the Python sources, so
# `PYTHONPATH=python pytest` runs the tree as it is. Users run `pip install .`.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build/dev}
python=${PYTHON:-python}
cmake -S . -B "$build_dir" -G Ninja \
  -DPython_EXECUTABLE="$(command -v "$python")" \
  -Dpybind11_DIR="$("$python" -m pybind11 --cmakedir)" \
  -DSLIMTORCH_CUDA="${SLIMTORCH_CUDA:-OFF}" "$@" >/dev/null
cmake --build "$build_dir"
cp "$build_dir"/_C*.so python/slimtorch/
