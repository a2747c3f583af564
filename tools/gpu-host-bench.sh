#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# The GPU-host run behind docs/performance.md: build with the host's LibTorch (CUDA), check bf16 parity
# on the fixtures, run the CUDA kernel tests, and benchmark the engine at the issue's sizes.
#   tools/gpu-host-bench.sh FIXTURES_DIR OUT_DIR [SIZES] [BACKENDS]
# Environment: TORCH_VENV (default /opt/torch/.venv), BUILD (default build-gpu), GPU_ARCH (default 90a),
# GST (enabled | disabled, default disabled: set enabled after sourcing gpu-host-env.sh for the element run).
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
  meson setup "$build" --buildtype=release -Dgst="${GST:-disabled}" -Dexamples=disabled -Dtests=disabled \
    -Dgpu_kernels=enabled -Dgpu_arch="${GPU_ARCH:-90a}" >"$out/setup.log" 2>&1 || { tail -40 "$out/setup.log"; exit 1; }
fi
ninja -C "$build" >"$out/build.log" 2>&1 || { grep -B3 -A12 -E 'error|FAILED' "$out/build.log" | head -120; exit 1; }

echo "== parity bf16 (threshold 30 dB)"
"$build/tools/flashvsr-parity" --device cuda --dtype bf16 --threshold 30 "$fixtures" | tee "$out/parity-bf16.txt" || true
echo "== parity fp32 on CUDA"
"$build/tools/flashvsr-parity" --device cuda --dtype fp32 "$fixtures" | tee "$out/parity-fp32-cuda.txt" || true
echo "== engine benchmark (random full-size weights, bf16)"
"$build/tools/flashvsr-bench" --preset full --device cuda --precision bf16 --sizes "$sizes" --attention "$backends" \
  --frames 101 | tee "$out/bench.jsonl"

if [ -f "$build/gst/libgstflashvsr.so" ]; then
  echo "== element: videotestsrc 480x270 I420 ! flashvsr (x4 -> 1920x1080) ! fakesink sync=false"
  model=/tmp/flashvsr-random-full
  [ -f "$model/posi_prompt.pth" ] || "$build/tools/flashvsr-make-model" --out "$model" --preset full --dtype bf16
  export GST_PLUGIN_PATH="$PWD/$build/gst"
  for n in 25 249; do
    start=$(date +%s.%N)
    gst-launch-1.0 -q videotestsrc num-buffers=$n pattern=ball ! video/x-raw,format=I420,width=480,height=270,framerate=30/1 \
      ! flashvsr model-dir="$model" device=cuda ! video/x-raw,width=1920,height=1080 ! fakesink sync=false
    end=$(date +%s.%N)
    echo "frames=$n seconds=$(python3 -c "print(round($end - $start, 3))")" | tee -a "$out/element.txt"
  done
fi
