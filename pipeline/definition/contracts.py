"""What the definition promises the rest of the project: step names, the evaluation report's
shape, the container paths and script names the job scripts honour, and the limits every job runs
under. Plain values, no SDK: the local runtime, the registries and the CLI import them cheaply."""
from __future__ import annotations

# Step names: the definition's public interface (the local runtime, tests and docs use them).
PREPROCESS, TRAIN, EVALUATE, CHECK_ACCURACY, REGISTER, FAIL = (
    "Preprocess", "Train", "Evaluate", "CheckAccuracy", "Register", "Fail")
EVALUATION_REPORT = "EvaluationReport"
EVALUATION_OUTPUT = "evaluation"
ACCURACY_PATH = "binary_classification_metrics.accuracy.value"


def report_accuracy(report: object) -> float | None:
    """The number the CheckAccuracy gate reads (``ACCURACY_PATH``) from an evaluation.json report;
    None when the report has none (SageMaker's reports write undefined values as "NaN")."""
    for key in ACCURACY_PATH.split("."):
        report = report.get(key) if isinstance(report, dict) else None
    return float(report) if isinstance(report, (int, float)) and not isinstance(report, bool) else None


# Container paths: the contracts the job scripts honour (see README "Running on AWS").
PROCESSING = "/opt/ml/processing"
CODE_INPUT_DIR = f"{PROCESSING}/input/code"
RUNNER_INPUT_DIR = f"{PROCESSING}/input/entrypoint"
DATA_INPUT_DIR = f"{PROCESSING}/input/data"
PREPROCESS_OUTPUT_DIR = f"{PROCESSING}/output"
SPLITS = ("train", "validation", "test")
MODEL_INPUT_DIR = f"{PROCESSING}/model"
TEST_INPUT_DIR = f"{PROCESSING}/test"
EVALUATION_OUTPUT_DIR = f"{PROCESSING}/evaluation"
CHECKPOINT_DIR = "/opt/ml/checkpoints"

# Script paths inside the bundles (relative to the unpacked bundle's root).
PREPROCESS_SCRIPT = "steps/preprocess.py"
EVALUATE_SCRIPT = "evaluation/evaluate.py"
TRAIN_SCRIPT = "train/train.py"

# What a registered model accepts and answers.
CONTENT_TYPES = ["application/json", "text/plain", "text/csv"]
RESPONSE_TYPES = ["application/json", "text/plain"]

# Training: a spot job may wait for capacity; the wait budget includes the run time.
TRAINING_MAX_RUNTIME_S = 4 * 3600
TRAINING_MAX_WAIT_S = 8 * 3600
PROCESSING_MAX_RUNTIME_S = 2 * 3600
CACHE_EXPIRE_AFTER = "P30D"
