#!/usr/bin/env bash
# One entry point for developers and CI:
#   tools/dev.sh demo [INPUT]   set up (once), build, upscale a clip (the main job)
#   tools/dev.sh test           set up (once), build, run every test (what .ci/run runs)
#   tools/dev.sh setup | build  the steps on their own
# Environment: FLASHVSR_VENV (torch venv, default ~/.cache/gst-flashvsr/venv), FLASHVSR_BUILD (build dir,
# default build), FLASHVSR_MODEL_DIR (released weights for the demo), FLASHVSR_DEVICE (cpu | cuda...).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
VENV=${FLASHVSR_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/gst-flashvsr/venv}
BUILD=${FLASHVSR_BUILD:-build}
export FLASHVSR_VENV=$VENV

setup() { bash tools/setup.sh; }

build() {
  export PATH="$VENV/bin:$PATH"
  if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" --buildtype=release
  fi
  ninja -C "$BUILD"
}

run_tests() {
  export PATH="$VENV/bin:$PATH"
  meson test -C "$BUILD" --print-errorlogs --num-processes "$(nproc)" "$@"
}

demo() { bash tools/demo.sh "$@"; }

cmd=${1:-}
shift || true
case "$cmd" in
  setup) setup ;;
  build) setup && build ;;
  test) setup && build && run_tests "$@" ;;
  demo) setup && build && demo "$@" ;;
  *) echo "usage: tools/dev.sh demo [INPUT] | test | setup | build" >&2; exit 2 ;;
esac
