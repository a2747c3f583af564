#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The flashvsr element from the command line: gst-launch-1.0 pipelines, ready to run.
#
#   examples/gst-launch.sh [options] file INPUT OUTPUT   upscale a video file into an H.264 MP4 file (its audio
#                                                        track, if any, re-encoded as AAC alongside)
#   examples/gst-launch.sh [options] testsrc             live test pattern, upscaled, on the screen
#   examples/gst-launch.sh [options] print ...           only print the gst-launch-1.0 line of file/testsrc
#
# Options (each also read from the environment variable in brackets):
#   --model-dir DIR     [FLASHVSR_MODEL_DIR]  model in the release layout (docs/weights.md), required.
#                       For a quick try, a random-weight model: build/tools/flashvsr-make-model --out DIR
#                       --preset tiny (the pictures it makes are not meaningful).
#   --device DEV        [FLASHVSR_DEVICE]     auto (default: cuda when available, else cpu) | cpu | cuda | cuda:N
#   --precision P       [FLASHVSR_PRECISION]  auto (default: bf16 on CUDA, fp32 on the CPU) | bf16 | fp16 | fp32
#   --frames N          [FLASHVSR_FRAMES]     stop after N frames (default: whole file / testsrc runs until ^C)
#   --width W --height H                      testsrc picture size (default 320x180; 64x48 is quick on a CPU)
#   --sink ELEMENT      [FLASHVSR_SINK]       testsrc display (default autovideosink; fakesink for no display)
#   --audio MODE        [FLASHVSR_AUDIO]      file mode: auto (default: keep the audio track when the input
#                                             has one; none with --frames) | keep | none
#
# The plugin must be found: GST_PLUGIN_PATH=<build>/gst (set here to ./build/gst when unset and present).
#
# What gst-launch-1.0 prints (file mode, -e):
#   Setting pipeline to PAUSED ...
#   Pipeline is PREROLLING ...        the model is loaded (at NULL->READY); the pipeline waits for its first
#                                     output frame, which needs 25 input frames (the look-ahead) and the
#                                     first chunk: a few seconds on a GPU, longer on a CPU
#   Redistribute latency...           (several) the element announced a new latency: 24 frames of the
#                                     negotiated frame rate + its measured chunk time
#   Pipeline is PREROLLED ...
#   Setting pipeline to PLAYING ...
#   New clock: GstSystemClock
#   progressreport0 (00:00:05): 2 / 10 seconds (20.0 %)   every 5 s: position in the input
#   Got EOS from element "pipeline0".  the input ended and the element drained the frames it held
#   EOS received - stopping pipeline...
#   Execution ended after 0:00:12.345678901
#   Setting pipeline to NULL ...
#   Freeing pipeline ...
# In testsrc mode the source is live: "Pipeline is live and does not need PREROLL ..." instead of the
# PREROLLING lines, and the picture appears about 24 frames + one chunk after the start (the latency the
# element reports, which the sink waits for). Ctrl-C ends both modes; with -e (used here) gst-launch-1.0
# sends EOS first ("handling interrupt." / "EOS on shutdown enabled -- Forcing EOS on the pipeline"), so
# the frames still inside the element are finished and the MP4 file gets its index.
# An error names the element and the reason and ends with a non-zero status, e.g.:
#   ERROR: from element /GstPipeline:pipeline0/GstFlashVsr:flashvsr0: Could not load the FlashVSR model:
#   model directory '/nope' does not exist
#   ERROR: pipeline doesn't want to preroll.
set -euo pipefail

usage() { sed -n '4,23p' "$0" | sed 's/^# \{0,1\}//'; }

model_dir=${FLASHVSR_MODEL_DIR:-}
device=${FLASHVSR_DEVICE:-auto}
precision=${FLASHVSR_PRECISION:-auto}
frames=${FLASHVSR_FRAMES:-}
sink=${FLASHVSR_SINK:-autovideosink}
audio=${FLASHVSR_AUDIO:-auto}
width=320
height=180

while [ $# -gt 0 ]; do
  case "$1" in
    --model-dir) model_dir=${2:?--model-dir needs a value}; shift 2 ;;
    --device) device=${2:?--device needs a value}; shift 2 ;;
    --precision) precision=${2:?--precision needs a value}; shift 2 ;;
    --frames) frames=${2:?--frames needs a value}; shift 2 ;;
    --width) width=${2:?--width needs a value}; shift 2 ;;
    --height) height=${2:?--height needs a value}; shift 2 ;;
    --sink) sink=${2:?--sink needs a value}; shift 2 ;;
    --audio) audio=${2:?--audio needs a value}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) echo "gst-launch.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) break ;;
  esac
done

dry_run=0
if [ "${1:-}" = print ]; then dry_run=1; shift; fi
mode=${1:-}
[ -n "$mode" ] || { usage >&2; exit 2; }
shift

if [ -z "$model_dir" ]; then
  echo "gst-launch.sh: no model: pass --model-dir DIR or set FLASHVSR_MODEL_DIR" >&2
  exit 2
fi
if [ -n "$frames" ] && ! [[ "$frames" =~ ^[1-9][0-9]*$ ]]; then
  echo "gst-launch.sh: --frames must be a positive integer" >&2
  exit 2
fi
case "$audio" in
  auto|keep|none) ;;
  *) echo "gst-launch.sh: --audio must be auto, keep or none" >&2; exit 2 ;;
esac
if ! [[ "$width" =~ ^[1-9][0-9]*$ && "$height" =~ ^[1-9][0-9]*$ ]]; then
  echo "gst-launch.sh: --width and --height must be positive integers" >&2
  exit 2
fi

# The plugin of this checkout's default build, unless the caller chose one.
if [ -z "${GST_PLUGIN_PATH:-}" ]; then
  repo=$(cd "$(dirname "$0")/.." && pwd)
  if [ -f "$repo/build/gst/libgstflashvsr.so" ]; then export GST_PLUGIN_PATH="$repo/build/gst"; fi
fi

# One array per pipeline, so that file names with spaces stay one argument.
upscaler=(flashvsr "model-dir=$model_dir" "device=$device" "precision=$precision")
case "$mode" in
  file)
    [ $# -eq 2 ] || { echo "gst-launch.sh: file needs INPUT and OUTPUT" >&2; exit 2; }
    input=$1 output=$2
    [ "$dry_run" = 1 ] || [ -f "$input" ] || { echo "gst-launch.sh: no such file: $input" >&2; exit 1; }
    limit=()
    # identity eos-after=K answers its K-th buffer with EOS without passing it on: K = N + 1 lets exactly N
    # frames through, then upstream stops and the EOS reaches the element, which drains what it holds.
    # The queue in front matters: a decoder linked to identity directly may push a few more frames after
    # the EOS answer.
    if [ -n "$frames" ]; then limit=(queue ! identity "eos-after=$((frames + 1))" !); fi
    # auto: does the input have an audio track? A short probe: decodebin's first raw audio buffer ends it
    # (identity eos-after=1, exit 0); decodebin exposes only raw audio (caps=audio/x-raw
    # expose-all-streams=false: an exposed but unlinked video pad made the probe hang now and then, 2 in
    # 12 on a loaded machine), so without audio nothing links and it fails at once (non-zero exit). A branch to the muxer for a track that does not exist would never end.
    # With --frames the video stops early while the audio would run to the end: auto drops the audio then.
    if [ "$audio" = auto ]; then
      audio=none
      if [ -n "$frames" ]; then :
      elif [ "$dry_run" = 1 ] && [ ! -f "$input" ]; then audio=keep
      elif [ -f "$input" ] && timeout 30 gst-launch-1.0 -q filesrc "location=$input" \
          ! decodebin caps=audio/x-raw expose-all-streams=false ! audio/x-raw \
          ! identity eos-after=1 ! fakesink >/dev/null 2>&1; then audio=keep
      fi
    fi
    # decodebin picks each stream's decoder; videoconvert gives the element a format it takes (RGB, RGBx,
    # BGRx, RGBA, BGRA, I420, NV12, I420_10LE, P010_10LE, Y444_16LE: decoders' output passes through
    # unconverted); the second videoconvert feeds the encoder; progressreport prints the position every
    # 5 seconds. The audio (keep) is decoded and re-encoded as AAC into the same MP4: its queue holds up
    # to 60 s so that the demuxer is never blocked on audio while the video waits for the element's
    # look-ahead and the encoder's (a bounded audio queue there stalls both branches).
    audio_branch=()
    if [ "$audio" = keep ]; then
      audio_branch=(d. ! queue max-size-time=60000000000 max-size-bytes=0 max-size-buffers=0
        ! audioconvert ! audioresample ! avenc_aac ! queue ! m.)
    fi
    cmd=(gst-launch-1.0 -e
      filesrc "location=$input" ! decodebin name=d
      d. ! queue ! videoconvert ! "${limit[@]}"
      "${upscaler[@]}" ! progressreport update-freq=5 ! videoconvert
      ! x264enc speed-preset=veryfast ! queue ! mp4mux name=m ! filesink "location=$output"
      "${audio_branch[@]}")
    ;;
  testsrc)
    [ $# -eq 0 ] || { echo "gst-launch.sh: testsrc takes no arguments" >&2; exit 2; }
    count=()
    if [ -n "$frames" ]; then count=("num-buffers=$frames"); fi
    # is-live=true: a source that produces frames in real time, like a camera. The element's reported
    # latency (24 frames + chunk time) makes the sink show each frame that much later, smoothly.
    cmd=(gst-launch-1.0 -e
      videotestsrc is-live=true pattern=ball "${count[@]}"
      ! "video/x-raw,width=$width,height=$height,framerate=25/1"
      ! videoconvert ! "${upscaler[@]}" ! videoconvert ! "$sink")
    ;;
  *)
    echo "gst-launch.sh: unknown mode '$mode' (file, testsrc or print)" >&2; exit 2 ;;
esac

if [ "$dry_run" = 1 ]; then
  # Quote only the arguments that need it, so the line can be pasted into a shell.
  line=""
  for a in "${cmd[@]}"; do
    if [[ "$a" =~ ^[][A-Za-z0-9_./:=,!+@%-]+$ ]]; then line+="$a "; else line+="'${a//\'/\'\\\'\'}' "; fi
  done
  echo "${line% }"
  exit 0
fi
exec "${cmd[@]}"
