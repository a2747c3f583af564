#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine (or re-run on a prepared one):
#  - Debian packages: compiler, meson/ninja/pkg-config, GStreamer 1.22 runtime + dev + check, plugins used
#    by the examples and tests (x264, mp4, RTSP server), Python venv support, clang with libFuzzer and the
#    sanitizer runtimes (the loader fuzzing in tools/fuzz.sh).
#  - A Python virtual environment OUTSIDE the checkout with torch==2.11.0 (its wheel carries LibTorch).
# Environment: FLASHVSR_VENV (default ~/.cache/gst-flashvsr/venv), FLASHVSR_SKIP_APT=1 to skip apt.
set -euo pipefail

VENV=${FLASHVSR_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/gst-flashvsr/venv}
TORCH_VERSION=2.11.0

apt_packages=(
  build-essential pkg-config meson ninja-build python3 python3-venv python3-pip
  libglib2.0-dev libgtest-dev nlohmann-json3-dev
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-rtsp
  clang-14 libclang-rt-14-dev llvm-14
)

missing=()
if [ "${FLASHVSR_SKIP_APT:-0}" != 1 ]; then
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Python: prefer Debian's python3 so that venv support is guaranteed to be present.
PY=${FLASHVSR_PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=$(command -v python3); fi
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating virtual environment $VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PY" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
  echo "setup: installing torch==$TORCH_VERSION into $VENV (large download, once)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION"
fi
echo "setup: ok (venv $VENV, torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'))"
