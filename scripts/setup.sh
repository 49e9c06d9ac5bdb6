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
# Hold the torch just installed while the rest installs: without this, a package that needs
# another version of one of torch's own dependencies (cfn-lint's sympy against torch 2.5's)
# makes pip replace torch silently with another release than the one asked for.
TORCH_VERSION=$(.venv/bin/python -c "from importlib.metadata import version; print(version('torch'))")
HOLD=$(mktemp)
trap 'rm -f "$HOLD"' EXIT
echo "torch==$TORCH_VERSION" > "$HOLD"
if ! .venv/bin/python -m pip install --quiet -c "$HOLD" -e ".[test]"; then
    echo "setup: the project and its test tools do not install beside torch $TORCH_VERSION (TORCH_SPEC=$TORCH_SPEC);" \
         "pip's message above names the package that needs something else. Choose another TORCH_SPEC" \
         "(the default, torch==2.13.0, is the tested one) or install that package's other version by hand." >&2
    exit 1
fi
.venv/bin/python -c "import torch, sagemaker, serve, steps, train, evaluation, pipeline; print('ready: torch', torch.__version__)"
