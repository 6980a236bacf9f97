#!/usr/bin/env bash
# The README's test command: install everything the tests need into .venv, then lint and test.
# System packages (Mesa EGL, Chromium) are listed in the README; .ci/run installs them on CI.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test,models,audit,cluster]'
# MediaPipe's original .tflite models, for the ONNX parity test: fetched from PyPI at install
# time (never by a test), and only the wheel file is kept; mediapipe is not installed.
if ! ls .cache/wheels/mediapipe-0.10.21-*.whl >/dev/null 2>&1; then
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: -d .cache/wheels mediapipe==0.10.21
fi
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
