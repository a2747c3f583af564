#!/usr/bin/env bash
# The main job: upscale a video file with the flashvsr GStreamer element.
#   tools/demo.sh [INPUT]      (called by tools/dev.sh demo after set-up and build)
# INPUT defaults to ../shared/samples/example4.mp4 when present, else a clip made with videotestsrc.
# Environment:
#   FLASHVSR_MODEL_DIR  released weights (a directory in the release layout, see docs/weights.md);
#                       without it a random-weight tiny model is generated and the output is NOT meaningful
#   FLASHVSR_DEVICE     auto (default: cuda when available) | cpu | cuda | cuda:N
#   FLASHVSR_OUTPUT     output file (default BUILD/demo/flashvsr-demo.mp4)
#   FLASHVSR_FRAMES     frames to process (default: all with released weights, 40 with the random model)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
BUILD=${FLASHVSR_BUILD:-build}
VENV=${FLASHVSR_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/gst-flashvsr/venv}
export PATH="$VENV/bin:$PATH"
export GST_PLUGIN_PATH="$here/$BUILD/gst${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
mkdir -p "$BUILD/demo"

input=${1:-}
if [ -z "$input" ] && [ -f ../shared/samples/example4.mp4 ]; then input=../shared/samples/example4.mp4; fi
out=${FLASHVSR_OUTPUT:-$BUILD/demo/flashvsr-demo.mp4}
device=${FLASHVSR_DEVICE:-auto}
model=${FLASHVSR_MODEL_DIR:-}
prescale=""
frames=${FLASHVSR_FRAMES:-}
if [ -z "$model" ]; then
  model="$BUILD/demo/random-tiny-model"
  [ -f "$model/posi_prompt.pth" ] || "$BUILD/tools/flashvsr-make-model" --out "$model" --preset tiny >/dev/null
  cat <<'NOTE'
-----------------------------------------------------------------------------------------------------
NOTE: FLASHVSR_MODEL_DIR is not set, so this demo uses a GENERATED RANDOM-WEIGHT model: it shows the
pipeline working end to end (decode, upscale x4 with the real algorithm, encode), but the pictures it
produces are NOT meaningful. Point FLASHVSR_MODEL_DIR at the released FlashVSR weights (docs/weights.md).
To keep it quick on a CPU, the input is first reduced to 192 px wide and 40 frames are processed.
-----------------------------------------------------------------------------------------------------
NOTE
  prescale="videoscale ! video/x-raw,width=192,pixel-aspect-ratio=1/1 !"
  frames=${frames:-40}
fi
limit=""
# identity posts EOS on its eos-after-th buffer without passing it on (and a decoder linked straight to it can
# overshoot): a queue in front and N + 1 give exactly N frames.
if [ -n "$frames" ]; then limit="queue ! identity eos-after=$((frames + 1)) !"; fi

if [ -z "$input" ]; then
  input="$BUILD/demo/testsrc.mp4"
  echo "demo: no input given and no ../shared/samples clip: making $input with videotestsrc"
  gst-launch-1.0 -q videotestsrc num-buffers=60 pattern=smpte ! video/x-raw,width=320,height=180,framerate=30/1 \
    ! x264enc ! mp4mux ! filesink location="$input"
fi
[ -f "$input" ] || { echo "demo: input '$input' does not exist" >&2; exit 1; }

echo "demo: $input -> $out (model $model, device $device)"
# shellcheck disable=SC2086
gst-launch-1.0 -e filesrc location="$input" ! decodebin ! videoconvert ! $prescale $limit \
  flashvsr model-dir="$model" device="$device" \
  ! progressreport update-freq=2 ! videoconvert ! x264enc speed-preset=veryfast ! mp4mux ! filesink location="$out"
echo "demo: wrote $out"
