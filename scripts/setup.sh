#!/usr/bin/env bash
# One set-up path for developers, the README and CI: a project-local .venv with
# CPU PyTorch (pinned: an unpinned torch pulls gigabytes of CUDA wheels), the
# ROS 2 Kilted Python wheels, and m2a installed editable with its test extras.
# Idempotent: a second run only checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${M2A_VENV:-.venv}
PY=${PYTHON:-python3}
TORCH_VERSION=2.13.0
ROS_WHEELS=(
  "ros-kilted-rclpy[fastrtps]"
  ros-kilted-sensor-msgs
  ros-kilted-std-msgs
  ros-kilted-visualization-msgs
  ros-kilted-diagnostic-msgs
  ros-kilted-geometry-msgs
  ros-kilted-builtin-interfaces
)

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
# This machine's pip configuration names local wheel folders that may not exist; drop that noise only.
pip_install() {
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

stamp="$VENV/.m2a-setup-stamp"
want="$(cat setup.py setup.cfg pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && "$VENV/bin/python" -c "import torch, rclpy, m2a_core" 2>/dev/null; then
  echo "[setup] $VENV is up to date"
  exit 0
fi

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "[setup] installing torch==$TORCH_VERSION (CPU)"
  pip_install "torch==$TORCH_VERSION"
fi
echo "[setup] installing ROS 2 Kilted wheels"
pip_install "${ROS_WHEELS[@]}"
echo "[setup] installing m2a (editable) with test extras"
# The installed torch satisfies the package's torch requirement, so pip resolves no other build.
pip_install -e ".[test]"
echo "$want" > "$stamp"
echo "[setup] done: $VENV"
