#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# The GPU-host run behind docs/performance.md: build with the host's LibTorch (CUDA), check bf16 parity
# on the fixtures, run the CUDA kernel tests, and benchmark the engine at the sizes.
#   tools/gpu-host-bench.sh FIXTURES_DIR OUT_DIR [SIZES] [BACKENDS]
# Environment: TORCH_VENV (default /opt/torch/.venv), BUILD (default build-gpu), GPU_ARCH (default 90a).
set -eu
fixtures=$1
out=$2
sizes=${3:-1408x768,1920x1080,3840x2160}
backends=${4:-cuda}
venv=${TORCH_VENV:-/opt/torch/.venv}
build=${BUILD:-build-gpu}
export PATH="$venv/bin:$PATH"
mkdir -p "$out"

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader | tee "$out/gpu.txt"
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" --buildtype=release -Dgst=disabled -Dexamples=disabled -Dtests=auto \
    -Dgpu_kernels=enabled -Dgpu_arch="${GPU_ARCH:-90a}" >"$out/setup.log" 2>&1 || { tail -40 "$out/setup.log"; exit 1; }
fi
ninja -C "$build" >"$out/build.log" 2>&1 || { grep -B3 -A12 -E 'error|FAILED' "$out/build.log" | head -120; exit 1; }

echo "== parity bf16 (threshold 30 dB)"
"$build/tools/flashvsr-parity" --device cuda --dtype bf16 --threshold 30 "$fixtures" | tee "$out/parity-bf16.txt" || true
echo "== parity fp32 on CUDA"
"$build/tools/flashvsr-parity" --device cuda --dtype fp32 "$fixtures" | tee "$out/parity-fp32-cuda.txt" || true
if [ -x "$build/tests/test_cuda_attention" ]; then
  echo "== CUDA attention tests"
  "$build/tests/test_cuda_attention" 2>&1 | tail -4 | tee "$out/test-cuda-attention.txt" || true
fi
echo "== engine benchmark (random full-size weights, bf16)"
"$build/tools/flashvsr-bench" --preset full --device cuda --precision bf16 --sizes "$sizes" --attention "$backends" \
  --frames 101 | tee "$out/bench.jsonl"
