#!/usr/bin/env bash
# Create .venv/ in the checkout and install the project with its test tools.
#
# PyTorch: set TORCH_SPEC to the build you want (for example TORCH_SPEC="torch==2.5.1" with
# --index-url for a CUDA build). The default, torch==2.13.0, is the CPU build this project is
# tested with; any torch>=2.2 works.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet "$TORCH_SPEC"
.venv/bin/python -m pip install --quiet -e ".[test]"
.venv/bin/python -c "import torch, sagemaker, serve, steps, train, evaluation, pipeline; print('ready: torch', torch.__version__)"
