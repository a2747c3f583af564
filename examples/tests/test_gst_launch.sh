#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Runs examples/gst-launch.sh with a tiny model on the CPU and checks what it produces:
#   - file mode on a 30-frame 64x48 H.264 clip: exit 0, an MP4 that decodes to 30 frames of 256x192;
#   - file mode on the same clip with a 3 s audio track: 30 frames and the audio track kept (about 3 s);
#     without audio in the input, none in the output;
#   - file mode with --frames 12: 12 frames;
#   - testsrc mode with --sink fakesink --frames 30: exit 0 after EOS;
#   - print mode: the gst-launch-1.0 line with the element's settings;
#   - a missing model directory: non-zero exit with the element's error.
#   test_gst_launch.sh GST_LAUNCH_SH MODEL_DIR
set -uo pipefail
unset FLASHVSR_MODEL_DIR FLASHVSR_DEVICE FLASHVSR_PRECISION FLASHVSR_FRAMES FLASHVSR_SINK FLASHVSR_AUDIO
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

# Seconds of audio in a file, decoded to 44.1 kHz stereo 16-bit; "none" when it has no audio track (the
# probe of gst-launch.sh: decodebin exposes raw audio only, and with none nothing links).
audio_seconds_of() {
  local file=$1 raw="$tmp/decoded.pcm"
  rm -f "$raw"
  if ! timeout 60 gst-launch-1.0 -q filesrc location="$file" ! decodebin caps=audio/x-raw expose-all-streams=false \
      ! audio/x-raw ! audioconvert \
      ! audioresample ! audio/x-raw,format=S16LE,rate=44100,channels=2 ! filesink location="$raw" >/dev/null 2>&1; then
    echo none; return
  fi
  awk -v b="$(stat -c %s "$raw")" 'BEGIN { printf "%.2f\n", b / (44100 * 4) }'
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

check "file: no audio in, no audio out" test "$(audio_seconds_of "$tmp/out.mp4")" = none

# The same video with a 3 s sine tone muxed in (AAC), as a camera or a download has.
timeout 120 gst-launch-1.0 -q -e videotestsrc num-buffers=30 pattern=ball \
  ! video/x-raw,width=64,height=48,framerate=10/1 ! x264enc ! queue ! mp4mux name=m ! filesink location="$tmp/av.mp4" \
  audiotestsrc num-buffers=30 samplesperbuffer=4410 ! audio/x-raw,rate=44100,channels=2 ! avenc_aac ! queue ! m.
in_audio=$(audio_seconds_of "$tmp/av.mp4")
echo "    input audio: $in_audio s"
check "audio clip made" test "$in_audio" != none
run audio "${opts[@]}" file "$tmp/av.mp4" "$tmp/av-out.mp4"
check "file with audio: exit status 0" test "$(cat "$tmp/audio.rc")" = 0
got=$(frames_of "$tmp/av-out.mp4")
check "file with audio: 30 frames of 256x192 (got $got)" test "$got" = "256x192 30"
out_audio=$(audio_seconds_of "$tmp/av-out.mp4")
echo "    output audio: $out_audio s"
check "file with audio: the audio track is kept, 2.9..3.2 s (got $out_audio)" \
  awk -v s="$out_audio" 'BEGIN { exit !(s != "none" && s >= 2.9 && s <= 3.2) }'
run noaudio "${opts[@]}" --audio none file "$tmp/av.mp4" "$tmp/av-none.mp4"
check "--audio none: exit status 0" test "$(cat "$tmp/noaudio.rc")" = 0
check "--audio none: no audio out" test "$(audio_seconds_of "$tmp/av-none.mp4")" = none

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
check "print: the audio branch into the muxer" grep -qF "d. ! queue max-size-time=60000000000" "$tmp/print.out"

run missing --model-dir "$tmp/no-such-model" --device cpu file "$tmp/in.mp4" "$tmp/never.mp4"
check "missing model: non-zero exit" test "$(cat "$tmp/missing.rc")" != 0
check "missing model: the element's error" grep -q "ERROR: from element .*flashvsr" "$tmp/missing.out" "$tmp/missing.err"

run nomodel file "$tmp/in.mp4" "$tmp/never.mp4"
check "no model given: exit status 2" test "$(cat "$tmp/nomodel.rc")" = 2

if [ "$failures" -ne 0 ]; then echo "$failures check(s) failed"; exit 1; fi
echo "all checks passed"
