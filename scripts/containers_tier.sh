#!/usr/bin/env bash
# The containers' tier: the training, evaluation and serving tests and one local run of the
# pipeline, on what the SageMaker images run rather than on the project's own torch:
#  - torch of the images' framework version (Settings.framework_version, through the SDK's image
#    table: pipeline/definition/images.py container_torch_version, the source of the image URIs too);
#  - the Python of their tag (py311 -> python3.11);
#  - the pins the jobs and the endpoint install on top (serve/constraints.txt).
# In .venv-containers/, beside .venv/ (which scripts/setup.sh makes first and this reads the
# versions with). No cfn-lint, selenium or moto here: their needs may conflict with that torch,
# and none of the tests run here uses them.
set -euo pipefail
cd "$(dirname "$0")/.."
ENV=.venv-containers

VERSIONS=$(.venv/bin/python -c '
from pipeline.definition.images import container_torch_version
from pipeline.settings import Settings
settings = Settings()
digits = settings.py_version.removeprefix("py")
print(container_torch_version(settings), f"{digits[0]}.{digits[1:]}")') || {
    echo "containers' tier: cannot tell the images' torch and Python (above); run scripts/setup.sh first" >&2; exit 1; }
read -r TORCH PY <<<"$VERSIONS"
PYTHON=${PYTHON:-python$PY}
echo "containers' tier: torch $TORCH on Python $PY ($PYTHON), pins of serve/constraints.txt, in $ENV/"

if [ ! -x "$ENV/bin/python" ] || ! "$ENV/bin/python" -c "import sys; assert sys.version.startswith('$PY.')" 2>/dev/null; then
    rm -rf "$ENV"
    "$PYTHON" -m venv "$ENV"
fi
HOLD=$(mktemp)
trap 'rm -f "$HOLD"' EXIT
echo "torch==$TORCH" > "$HOLD"
"$ENV/bin/python" -m pip install --quiet -c "$HOLD" "torch==$TORCH"
"$ENV/bin/python" -m pip install --quiet -c "$HOLD" -c serve/constraints.txt -e . \
    "pytest>=8" "pytest-timeout>=2.3,<3" "psutil>=5.9"
"$ENV/bin/python" - "$TORCH" <<'EOF'
import sys
from importlib.metadata import version

import torch

assert torch.__version__.split("+")[0] == sys.argv[1], f"torch {torch.__version__} installed, {sys.argv[1]} asked for"
pins = dict(line.split("==") for line in open("serve/constraints.txt") if "==" in line and not line.startswith("#"))
wrong = {name: version(name) for name, pin in pins.items() if version(name) != pin.strip()}
assert not wrong, f"not the pinned versions: {wrong}"
print("containers' tier: torch", torch.__version__, "and the pins of serve/constraints.txt installed")
EOF

# The tests of the code that runs in the containers, and one local run through the installed
# command (first on PATH, so the end-to-end test and the jobs it starts use this environment).
PATH="$PWD/$ENV/bin:$PATH" "$ENV/bin/python" -m pytest -q --all -p no:cacheprovider \
    tests/test_train.py tests/test_network.py tests/test_nbsvm.py tests/test_embeddings.py tests/test_crops.py \
    tests/test_calibration_and_slices.py tests/test_evaluate.py tests/test_preprocess.py \
    tests/test_handlers.py tests/test_artifact.py tests/test_server.py tests/test_batching.py tests/test_monitor.py \
    tests/test_sharded_preprocess.py tests/test_exchange.py \
    tests/test_local_hosts.py::test_training_on_two_hosts_under_torchrun_matches_one_process \
    --deselect tests/test_monitor.py::test_web_users_feedback_and_the_drift_checks_reach_the_versions_page \
    "tests/test_end_to_end.py::test_the_main_job_registers_a_pending_version_when_the_gate_passes"
