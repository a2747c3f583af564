#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Runs examples/gst-launch.sh with a tiny model on the CPU and checks what it produces:
#   - file mode on a 30-frame 64x48 H.264 clip: exit 0, an MP4 that decodes to 30 frames of 256x192;
#   - file mode with --frames 12: 12 frames;
#   - testsrc mode with --sink fakesink --frames 30: exit 0 after EOS;
#   - print mode: the gst-launch-1.0 line with the element's settings;
#   - a missing model directory: non-zero exit with the element's error.
#   test_gst_launch.sh GST_LAUNCH_SH MODEL_DIR
set -uo pipefail
unset FLASHVSR_MODEL_DIR FLASHVSR_DEVICE FLASHVSR_PRECISION FLASHVSR_FRAMES FLASHVSR_SINK
script=$1
model=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
opts=(--model-dir "$model" --device cpu --precision fp32)

check() {
  local what=$1; shift
  if "$@"; then echo "ok: $what"; else echo "FAILED: $what"; failures=$((failures + 1)); fi
}

run() {  # run NAME ARGS...
  local name=$1; shift
  local start=$SECONDS
  timeout 240 bash "$script" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"
  echo $? >"$tmp/$name.rc"
  echo "--- $name ($((SECONDS - start)) s, exit $(cat "$tmp/$name.rc")): gst-launch.sh $*"
  sed 's/^/    out: /' "$tmp/$name.out"
  sed 's/^/    err: /' "$tmp/$name.err"
}

# Decodes an MP4 to GRAY8 frames; prints "WIDTHxHEIGHT FRAMES".
frames_of() {
  local file=$1 raw="$tmp/decoded.gray"
  rm -f "$raw"
  local caps
  caps=$(timeout 120 gst-launch-1.0 -v filesrc location="$file" ! qtdemux ! h264parse ! avdec_h264 \
    ! videoconvert ! video/x-raw,format=GRAY8 ! filesink location="$raw" 2>/dev/null \
    | grep -o 'GstFileSink:filesink0.GstPad:sink: caps = .*' | head -n1)
  local w h
  w=$(sed -n 's/.*width=(int)\([0-9]*\).*/\1/p' <<<"$caps")
  h=$(sed -n 's/.*height=(int)\([0-9]*\).*/\1/p' <<<"$caps")
  if [ -z "$w" ] || [ -z "$h" ] || [ ! -f "$raw" ]; then echo "undecodable 0"; return; fi
  local size
  size=$(stat -c %s "$raw")
  echo "${w}x${h} $((size / (w * h)))"
}

timeout 120 gst-launch-1.0 -q videotestsrc num-buffers=30 pattern=ball \
  ! video/x-raw,width=64,height=48,framerate=10/1 ! x264enc ! mp4mux ! filesink location="$tmp/in.mp4"
check "input clip made" test -s "$tmp/in.mp4"

run file "${opts[@]}" file "$tmp/in.mp4" "$tmp/out.mp4"
check "file: exit status 0" test "$(cat "$tmp/file.rc")" = 0
check "file: EOS reached" grep -q "Got EOS from element" "$tmp/file.out"
got=$(frames_of "$tmp/out.mp4")
echo "    decoded output: $got"
check "file: 30 frames of 256x192 (got $got)" test "$got" = "256x192 30"

run limited "${opts[@]}" --frames 12 file "$tmp/in.mp4" "$tmp/out12.mp4"
check "file --frames 12: exit status 0" test "$(cat "$tmp/limited.rc")" = 0
got=$(frames_of "$tmp/out12.mp4")
check "file --frames 12: 12 frames of 256x192 (got $got)" test "$got" = "256x192 12"

run testsrc "${opts[@]}" --sink fakesink --frames 30 --width 64 --height 48 testsrc
check "testsrc: exit status 0" test "$(cat "$tmp/testsrc.rc")" = 0
check "testsrc: live pipeline" grep -q "Pipeline is live" "$tmp/testsrc.out"
check "testsrc: EOS reached" grep -q "Got EOS from element" "$tmp/testsrc.out"

run print "${opts[@]}" print file "in put.mp4" out.mp4
check "print: exit status 0" test "$(cat "$tmp/print.rc")" = 0
check "print: element and settings" grep -q "flashvsr model-dir=.* device=cpu precision=fp32" "$tmp/print.out"
check "print: file name with a space kept as one argument" grep -qF "'location=in put.mp4'" "$tmp/print.out"

run missing --model-dir "$tmp/no-such-model" --device cpu file "$tmp/in.mp4" "$tmp/never.mp4"
check "missing model: non-zero exit" test "$(cat "$tmp/missing.rc")" != 0
check "missing model: the element's error" grep -q "ERROR: from element .*flashvsr" "$tmp/missing.out" "$tmp/missing.err"

run nomodel file "$tmp/in.mp4" "$tmp/never.mp4"
check "no model given: exit status 2" test "$(cat "$tmp/nomodel.rc")" = 2

if [ "$failures" -ne 0 ]; then echo "$failures check(s) failed"; exit 1; fi
echo "all checks passed"
