#!/usr/bin/env bash
# One entry point for developers and CI:
#   tools/dev.sh demo [INPUT]   set up (once), build, upscale a clip (the main job)
#   tools/dev.sh test [ARGS]    set up (once), build, run every test, print a summary (how many reference
#                               checks ran, on which fixtures; every SKIP and why), then fuzz the loaders for a
#                               short fixed time (what .ci/run runs); ARGS go to meson test and skip the fuzzing.
#                               The vendored fixture (tests/data) always runs; ../shared/fixtures are extras
#                               whose tests SKIP (exit status 77, shown as SKIP) when it is absent.
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

# build [MESON_OPTION...]: configures once, applies the options given (idempotent), builds.
build() {
  export PATH="$VENV/bin:$PATH"
  if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" --buildtype=release "$@"
  elif [ $# -gt 0 ]; then
    meson configure "$BUILD" "$@" > /dev/null
  fi
  ninja -C "$BUILD"
}

run_tests() {
  export PATH="$VENV/bin:$PATH"
  local rc=0
  meson test -C "$BUILD" --print-errorlogs --num-processes "$(nproc)" "$@" || rc=$?
  # The summary only reads the logs; the status stays meson test's.
  "$(command -v python3 || echo "$VENV/bin/python")" tools/test-summary.py "$BUILD" || true
  [ "$rc" -eq 0 ] || return "$rc"
  # The loader fuzz targets (docs/reliability.md), FLASHVSR_FUZZ_SECONDS per target (default 20).
  if [ $# -eq 0 ]; then
    bash tools/fuzz.sh "${FLASHVSR_FUZZ_SECONDS:-20}"
  fi
}

demo() { bash tools/demo.sh "$@"; }

cmd=${1:-}
shift || true
case "$cmd" in
  setup) setup ;;
  build) setup && build ;;
  # Tests are required, not auto: a missing test dependency is an error, never a silently smaller suite.
  test) setup && build -Dtests=enabled -Dgst=enabled -Dexamples=enabled && run_tests "$@" ;;
  demo) setup && build && demo "$@" ;;
  *) echo "usage: tools/dev.sh demo [INPUT] | test | setup | build" >&2; exit 2 ;;
esac
