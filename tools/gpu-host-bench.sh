#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# The GPU-host run behind docs/performance.md: build with the host's LibTorch (CUDA), run the tests that
# need a GPU, check parity on the fixtures in bf16 and fp16, benchmark the engine at the issue's sizes (and
# two tuning variants), trace device memory along a 10,000-frame stream, and time the element at 1080p.
#   tools/gpu-host-bench.sh FIXTURES_DIR OUT_DIR
# Environment: TORCH_VENV (default /opt/torch/.venv), BUILD (default build-gpu), GPU_ARCH (default 90a),
# GST (enabled | disabled, default disabled: set enabled after sourcing gpu-host-env.sh for the element run),
# SIZES (default 1408x768,1920x1080,3840x2160), BASELINE_SRC (a source tree of the version to compare with,
# e.g. `git archive` of the previous commit: its benchmark runs first, in the same call on the same card, and
# every figure of this tree's run is printed as a ratio to it, flashvsr-bench --compare), SKIP (space-separated
# sections to leave out: tests parity full variants memory element).
set -eu
fixtures=$1
out=$2
sizes=${SIZES:-1408x768,1920x1080,3840x2160}
venv=${TORCH_VENV:-/opt/torch/.venv}
build=${BUILD:-build-gpu}
export PATH="$venv/bin:$PATH"
mkdir -p "$out"

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader | tee "$out/gpu.txt"
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" --buildtype=release -Dgst="${GST:-disabled}" -Dexamples=disabled -Dtests=auto \
    -Dgpu_kernels=enabled -Dgpu_arch="${GPU_ARCH:-90a}" >"$out/setup.log" 2>&1 || { tail -40 "$out/setup.log"; exit 1; }
fi
ninja -C "$build" >"$out/build.log" 2>&1 || { grep -B3 -A12 -E 'error|FAILED' "$out/build.log" | head -120; exit 1; }
skip() { case " ${SKIP:-} " in *" $1 "*) return 0 ;; esac; return 1; }

# The tests that need a GPU (when GoogleTest is there: carry libgtest-dev's .deb with the GStreamer ones).
run_test() {
  name=$1; shift
  if [ -x "$1" ]; then
    "$@" --gtest_color=no >"$out/$name.log" 2>&1 && echo "$name: ok" || { echo "$name: FAILED"; grep -E '^\[  FAILED|Failure' "$out/$name.log" | head -20; }
    grep -E '^\[ *(OK|FAILED|SKIPPED) *\]' "$out/$name.log" | sed 's/^/  /'
  else
    echo "$name: not built (no GoogleTest)"
  fi
}
if ! skip tests; then
echo "== CUDA tests"
run_test cuda-attention "$build/tests/test_cuda_attention"
run_test cuda-engine "$build/tests/test_engine" --gtest_filter='Cuda*:*Attention*'
run_test cuda-colour "$build/tests/test_colour" --gtest_filter='*Cuda*'
run_test cuda-dit "$build/tests/test_dit" --gtest_filter='*.Cuda*'
run_test cuda-decoder "$build/tests/test_tc_decoder" --gtest_filter='*.Cuda*'
run_test cuda-vae-decoder "$build/tests/test_vae_decoder" --gtest_filter='*.Cuda*'
run_test cuda-preprocess "$build/tests/test_preprocess" --gtest_filter='*Cuda*'
if [ -f "$build/gst/libgstflashvsr.so" ]; then
  export FLASHVSR_BUILD_ROOT="$PWD/$build" FLASHVSR_SOURCE_ROOT="$PWD" FLASHVSR_FIXTURES="$fixtures" FLASHVSR_CHECK_GROUP=cuda
  GST_PLUGIN_PATH="$PWD/$build/gst" run_test element-cuda "$build/tests/check/check_flashvsr" --gtest_filter='Cuda*'
  GST_PLUGIN_PATH="$PWD/$build/gst" run_test element-cuda-failures "$build/tests/check/check_reliability" --gtest_filter='Failure.Cuda*'
fi
fi

skip parity || for dtype in bf16 fp16; do
  echo "== parity $dtype (threshold 30 dB)"
  "$build/tools/flashvsr-parity" --device cuda --dtype $dtype --threshold 30 "$fixtures" | tee "$out/parity-$dtype.txt" || true
done

model=/tmp/flashvsr-random-full
[ -f "$model/posi_prompt.pth" ] || "$build/tools/flashvsr-make-model" --out "$model" --preset full --dtype bf16
bench() { "$build/tools/flashvsr-bench" --model "$model" --device cuda --precision bf16 "$@"; }
compare=""
if [ -n "${BASELINE_SRC:-}" ]; then
  echo "== baseline benchmark ($BASELINE_SRC, same card, same call)"
  if [ ! -f build-base/build.ninja ]; then
    (cd "$BASELINE_SRC" && meson setup "$OLDPWD/build-base" --buildtype=release -Dgst=disabled -Dexamples=disabled \
      -Dtests=disabled -Dgpu_kernels=enabled -Dgpu_arch="${GPU_ARCH:-90a}") >"$out/setup-base.log" 2>&1 || { tail -20 "$out/setup-base.log"; exit 1; }
  fi
  ninja -C build-base tools/flashvsr-bench >"$out/build-base.log" 2>&1 || { grep -A12 -E 'error|FAILED' "$out/build-base.log" | head -60; exit 1; }
  build-base/tools/flashvsr-bench --model "$model" --device cuda --precision bf16 --sizes "$sizes" --frames 101 | tee "$out/bench-base.jsonl"
  compare="--compare $out/bench-base.jsonl"
fi
echo "== engine benchmark (random full-size weights, bf16)"
bench --sizes "$sizes" --frames 101 $compare | tee "$out/bench.jsonl"
if ! skip full; then
echo "== Tiny and Full side by side (random full-size weights, bf16, one process; VAE decoder FLOPs in chunk_tflop)"
"$build/tools/flashvsr-bench" --preset full --variant tiny,full --device cuda --precision bf16 --sizes "$sizes" \
  --frames "${FULL_FRAMES:-61}" | tee "$out/bench-full.jsonl"
fi
if ! skip variants; then
echo "== tuning variants"
bench --sizes 1408x768,1920x1080 --frames 101 --cudnn-benchmark 1 | tee -a "$out/bench-variants.jsonl"
bench --sizes 1408x768,1920x1080 --frames 101 --cudnn-benchmark 1 --decoder-group 2 | tee -a "$out/bench-variants.jsonl"
fi
if ! skip memory; then
echo "== device memory along 10,000 frames (512x256 output: the cost is per chunk, the question is growth)"
bench --sizes 512x256 --frames 10000 --memory-every 1000 | tee "$out/memory.jsonl"
fi

if ! skip element && [ -f "$build/gst/libgstflashvsr.so" ]; then
  echo "== element: videotestsrc 480x270 I420 ! flashvsr (x4 -> 1920x1080) ! fakesink sync=false"
  export GST_PLUGIN_PATH="$PWD/$build/gst"
  for n in 25 249; do
    start=$(date +%s.%N)
    gst-launch-1.0 -q videotestsrc num-buffers=$n pattern=ball ! video/x-raw,format=I420,width=480,height=270,framerate=30/1 \
      ! flashvsr model-dir="$model" device=cuda ! video/x-raw,width=1920,height=1080 ! fakesink sync=false
    end=$(date +%s.%N)
    echo "frames=$n seconds=$(python3 -c "print(round($end - $start, 3))")" | tee -a "$out/element.txt"
  done
fi
