#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# On the GPU host, from the repository root, after `meson setup build-gpu && ninja -C build-gpu`:
# runs the CUDA attention tests and the attention benchmark, and prints a short summary last.
#   tools/gpu-attention-check.sh [BUILD_DIR]   (default build-gpu)
# Env: REPS (benchmark repetitions, default 30), OUT (directory for the full logs, default BUILD_DIR).
set -u
build=${1:-build-gpu}
out=${OUT:-$build}
reps=${REPS:-30}
test_bin=$build/tests/test_cuda_attention
bench_bin=$build/tools/flashvsr-bench-attention
if [ ! -x "$bench_bin" ]; then
  echo "missing $bench_bin: build first (meson setup $build && ninja -C $build)" >&2
  exit 2
fi
mkdir -p "$out"

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader 2>/dev/null || true
if command -v cuobjdump >/dev/null 2>&1 && [ -f "$build/model/libflashvsr-model.a" ]; then
  echo "== kernel resources (cuobjdump -res-usage)"
  cuobjdump -res-usage "$build/model/libflashvsr-model.a" 2>/dev/null | grep -A1 'attn_' | grep -v '^--' || true
fi

echo "== tests"
if [ -x "$test_bin" ]; then
  "$test_bin" --gtest_color=no 2>&1 | tee "$out/test_cuda_attention.log"
  # tee hides the exit status of the test binary in plain sh: take it from the log.
  test_rc=0
  if grep -q '^\[  FAILED  \]' "$out/test_cuda_attention.log"; then test_rc=1; fi
  if ! grep -q '^\[  PASSED  \]' "$out/test_cuda_attention.log"; then test_rc=1; fi
else
  echo "missing $test_bin (tests need GoogleTest at configure time)" | tee "$out/test_cuda_attention.log"
  test_rc=1
fi

echo "== benchmark"
"$bench_bin" --reps "$reps" 2>&1 | tee "$out/bench_attention.jsonl"
bench_rc=0
if grep -q '"error"' "$out/bench_attention.jsonl" || ! grep -q '"impl": "cuda-auto"' "$out/bench_attention.jsonl"; then
  bench_rc=1
fi

echo "== summary"
grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$out/test_cuda_attention.log" || true
python3 - "$out/bench_attention.jsonl" <<'PY' 2>/dev/null || grep '"ms"' "$out/bench_attention.jsonl"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
for r in rows:
    if 'device' in r:
        print('device:', r['device'], 'sm', r['sm'], 'auto kernel:', r['auto_kernel'])
print('%-16s %-13s %6s %9s %8s %8s %9s' % ('shape', 'impl', 'dens', 'ms', 'TFLOP/s', 'speedup', 'err'))
for r in rows:
    if 'ms' in r:
        print('%-16s %-13s %6.3f %9.3f %8.1f %8.2f %9s' % (r['shape'], r['impl'], r['density'], r['ms'], r['tflops'],
              r['speedup_vs_sdpa'], ('%.2g' % r['max_abs_err_vs_reference']) if 'max_abs_err_vs_reference' in r else '-'))
PY
echo "tests: $([ $test_rc -eq 0 ] && echo PASS || echo FAIL)  benchmark: $([ $bench_rc -eq 0 ] && echo OK || echo FAIL)"
[ $test_rc -eq 0 ] && [ $bench_rc -eq 0 ]
