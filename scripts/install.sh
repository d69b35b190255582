#!/usr/bin/env bash
# Installs the system packages (Debian/Ubuntu, when run as root or with sudo) and the Python package with all
# CPU extras. Safe to re-run. GPU users: see README "GPU install" afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="libportaudio2 libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 ffmpeg espeak-ng xvfb xauth \
pulseaudio pulseaudio-utils libasound2-plugins chromium sox"

if command -v apt-get >/dev/null 2>&1 && [ "${SKIP_APT:-0}" != "1" ]; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
      echo "install.sh: not root and no sudo: skipping system packages ($APT_PACKAGES)" >&2; SUDO="skip"; fi
  fi
  if [ "$SUDO" != "skip" ]; then
    echo "== system packages (apt): $APT_PACKAGES"
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $APT_PACKAGES >/dev/null
  fi
else
  echo "install.sh: no apt-get (or SKIP_APT=1): install PortAudio, EGL/Mesa, ffmpeg, espeak-ng, xvfb yourself" >&2
fi

echo "== python packages (CPU build of torch, pinned)"
python3 -m pip install -q --upgrade pip >/dev/null
# torch==2.13.0 is pinned in pyproject.toml: the CPU wheel. An unpinned torch would pull the multi-GB CUDA build.
python3 -m pip install -q -e ".[all]"
python3 -c "import torch, models.rig; print('torch', torch.__version__, '| cuda:', torch.cuda.is_available())"
echo "== ONNX export of the shipped demo checkpoint (the runtime's fast path; ~5 s)"
python3 -m exporters.onnx --generator >/dev/null
