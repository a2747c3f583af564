#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Runs examples/appsrc_appsink with a tiny model on the CPU:
#   - 30 frames of 64x48: exit 0, the summary says 30 frames of 256x192 came back with their timestamps;
#   - a single frame of an odd size (37x21 -> 148x84): exit 0 (N in, N out also for N = 1);
#   - a model directory that does not exist: exit 1 with the element's error on stderr;
#   - a bad command line: exit 2.
#   test_appsrc_appsink.sh APP MODEL_DIR
set -uo pipefail
app=$1
model=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0

check() {  # check DESCRIPTION CONDITION...
  local what=$1; shift
  if "$@"; then echo "ok: $what"; else echo "FAILED: $what"; failures=$((failures + 1)); fi
}

run() {  # run NAME ARGS...: runs the app with a time limit, keeps stdout/stderr and the exit status
  local name=$1; shift
  local start=$SECONDS
  timeout 240 "$app" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"
  echo $? >"$tmp/$name.rc"
  echo "--- $name ($((SECONDS - start)) s, exit $(cat "$tmp/$name.rc")): $app $*"
  sed 's/^/    out: /' "$tmp/$name.out"
  sed 's/^/    err: /' "$tmp/$name.err"
}

run main --model-dir "$model" --frames 30 --width 64 --height 48 --device cpu --precision fp32
check "30 frames: exit status 0" test "$(cat "$tmp/main.rc")" = 0
check "30 frames: summary counts and sizes" \
  grep -q "pushed 30 frames 64x48, received 30 frames 256x192 RGB; PTS 0:00:00.000000000 .. 0:00:01.160000000" "$tmp/main.out"
check "30 frames: element counters" grep -q "frames-in 30, frames-out 30, chunks [1-9]" "$tmp/main.out"
check "30 frames: OK line" grep -qx "appsrc_appsink: OK" "$tmp/main.out"

run odd --model-dir "$model" --frames 1 --width 37 --height 21 --fps 30 --device cpu --precision fp32
check "1 frame 37x21: exit status 0" test "$(cat "$tmp/odd.rc")" = 0
check "1 frame 37x21: one frame of 148x84" grep -q "received 1 frames 148x84 RGB" "$tmp/odd.out"

run missing --model-dir "$tmp/no-such-model" --frames 5 --device cpu
check "missing model: exit status 1" test "$(cat "$tmp/missing.rc")" = 1
check "missing model: error from the element on stderr" grep -q "ERROR from upscaler" "$tmp/missing.err"
check "missing model: the error names the directory" grep -q "no-such-model" "$tmp/missing.err"

run usage --model-dir "$model" --frames 0
check "--frames 0: exit status 2" test "$(cat "$tmp/usage.rc")" = 2
run usage2 --frames 3
check "no --model-dir: exit status 2" test "$(cat "$tmp/usage2.rc")" = 2

if [ "$failures" -ne 0 ]; then echo "$failures check(s) failed"; exit 1; fi
echo "all checks passed"
