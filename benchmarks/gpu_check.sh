#!/usr/bin/env bash
# The one prepared script for a lent GPU machine (device tool, DEVELOPERS.md):
# build with CUDA for the machine's chip, run every CUDA test (kernels against
# the CPU reference), then the GPU ratios. Results go under $OUT.
# Usage there: OUT=... bash benchmarks/gpu_check.sh   (python3 there has torch + CUDA)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu-check}
mkdir -p "$OUT"
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
PYTHON=python3 SLIMTORCH_CUDA=ON BUILD_DIR=build/gpu scripts/dev_build.sh \
  -DCMAKE_CUDA_ARCHITECTURES=90 >"$OUT/build.txt" 2>&1 || { tail -40 "$OUT/build.txt"; exit 1; }
PYTHONPATH=python python3 -m slimtorch.cli info | tee "$OUT/info.txt"
PYTHONPATH=python timeout 300 python3 -m pytest tests/ops tests/nn -q -p no:cacheprovider \
  -k "cuda or gpu or device" -o addopts="" 2>&1 | tail -30 | tee "$OUT/cuda-tests.txt"
PYTHONPATH=python timeout 240 python3 benchmarks/gpu_bench.py "$OUT/gpu_bench.json" | tail -60
