"""What the definition promises the rest of the project: step names, the evaluation report's
shape, the container paths and script names the job scripts honour, and the limits every job runs
under. Plain values, no SDK: the local runtime, the registries and the CLI import them cheaply."""
from __future__ import annotations

import unicodedata
from collections.abc import Mapping

from evaluation.outputs import DATASETS_KEY, GATE_KEY

# Step names: the definition's public interface (the local runtime, tests and docs use them).
PREPROCESS, TRAIN, EVALUATE, CHECK_ACCURACY, REGISTER, FAIL = (
    "Preprocess", "Train", "Evaluate", "CheckAccuracy", "Register", "Fail")
# The second gate, on sentences (SST-2), between CheckAccuracy and Register, and its Fail step.
CHECK_SENTENCE_ACCURACY, FAIL_SENTENCES = "CheckSentenceAccuracy", "FailSentences"
# The model in the inference image, and the Batch Transform of the test texts through it.
CREATE_MODEL, TRANSFORM = "CreateModel", "Transform"
TRANSFORM_OUTPUT = "predictions"
EVALUATION_REPORT = "EvaluationReport"
EVALUATION_OUTPUT = "evaluation"
# The pooled accuracy over every test text, in SageMaker's model-quality format.
ACCURACY_PATH = "binary_classification_metrics.accuracy.value"


def gate_path(kind: str, figure: str) -> str:
    """The JSON path in evaluation.json of a gate's figure (``texts`` or ``accuracy``) for a kind of text."""
    return f"{GATE_KEY}.{kind}.{figure}"


def report_accuracy_by_dataset(report: object) -> dict[str, float]:
    """``{dataset name: test accuracy}`` from an evaluation.json report; empty for a report written
    before Evaluate reported each dataset."""
    datasets = report.get(DATASETS_KEY) if isinstance(report, dict) else None
    if not isinstance(datasets, dict):
        return {}
    return {name: accuracy for name, entry in datasets.items() if (accuracy := report_accuracy(entry)) is not None}


def report_accuracy(report: object) -> float | None:
    """The accuracy over every test text (``ACCURACY_PATH``) of an evaluation.json report (the gates
    read each kind's own, ``gate_path``); None when the report has none (SageMaker's reports write undefined values as "NaN")."""
    for key in ACCURACY_PATH.split("."):
        report = report.get(key) if isinstance(report, dict) else None
    return float(report) if isinstance(report, (int, float)) and not isinstance(report, bool) else None


# Container paths: the contracts the job scripts honour (see README "Running on AWS").
PROCESSING = "/opt/ml/processing"
CODE_INPUT_DIR = f"{PROCESSING}/input/code"
RUNNER_INPUT_DIR = f"{PROCESSING}/input/entrypoint"
DATA_INPUT_DIR = f"{PROCESSING}/input/data"
# How an S3 input reaches a job's instances: every object to each, or each its share of the objects.
FULLY_REPLICATED, SHARDED_BY_S3_KEY = "FullyReplicated", "ShardedByS3Key"
# Which instance a processing container is and which others run the job (SageMaker writes it).
PROCESSING_RESOURCE_CONFIG = "/opt/ml/config/resourceconfig.json"
PREPROCESS_OUTPUT_DIR = f"{PROCESSING}/output"
SPLITS = ("train", "validation", "test")
MODEL_INPUT_DIR = f"{PROCESSING}/model"
TEST_INPUT_DIR = f"{PROCESSING}/test"
EVALUATION_OUTPUT_DIR = f"{PROCESSING}/evaluation"
PREDICTIONS_INPUT_DIR = f"{PROCESSING}/predictions"
# The test set's Batch Transform: JSON Lines in and out, each record's text (steps/preprocess.py
# writes {"text", "label", "dataset", "kind"} a line) sent, 4 MB a request
# (under the model server's 5 MiB body limit, whichever megabyte SageMaker means).
TRANSFORM_CONTENT_TYPE = "application/jsonlines"
TRANSFORM_INPUT_FILTER = "$.text"
TRANSFORM_MAX_PAYLOAD_MB = 4
CHECKPOINT_DIR = "/opt/ml/checkpoints"

# Script paths inside the bundles (relative to the unpacked bundle's root).
PREPROCESS_SCRIPT = "steps/preprocess.py"
EVALUATE_SCRIPT = "evaluation/evaluate.py"
TRAIN_SCRIPT = "train/train.py"
# The PyTorch training toolkit's switch for its torchrun launcher (the local runtime honours it too).
TORCH_DISTRIBUTED = "sagemaker_torch_distributed_enabled"

# What a registered model accepts and answers.
CONTENT_TYPES = ["application/json", "text/plain", "text/csv"]
RESPONSE_TYPES = ["application/json", "text/plain"]

# Training: a spot job may wait for capacity; the wait budget includes the run time.
TRAINING_MAX_RUNTIME_S = 4 * 3600
TRAINING_MAX_WAIT_S = 8 * 3600
PROCESSING_MAX_RUNTIME_S = 2 * 3600

# SageMaker's pipeline execution ids are 12 lowercase letters and digits; an output URI that holds
# one (``executions/<id>/<step>/<output>``) is that long once resolved.
EXECUTION_ID_LENGTH = 12

# CustomerMetadataProperties of a model package: botocore's SageMaker service model
# (CustomerMetadataMap, CustomerMetadataKey, CustomerMetadataValue) allows 1 to 50 entries, keys of
# 1 to 128 and values of 1 to 256 characters, each a letter, space, digit or one of _.:/=+-@.
CUSTOMER_METADATA_MAX_ENTRIES = 50
CUSTOMER_METADATA_MAX_KEY = 128
CUSTOMER_METADATA_MAX_VALUE = 256
_CUSTOMER_METADATA_PUNCTUATION = "_.:/=+-@"


def _customer_metadata_character(c: str) -> bool:
    """The service model's pattern: \\p{L}, \\p{Z}, \\p{N} and the punctuation above."""
    return unicodedata.category(c)[0] in "LZN" or c in _CUSTOMER_METADATA_PUNCTUATION


def customer_metadata_problem(properties: Mapping[str, str]) -> str | None:
    """Why SageMaker would refuse these CustomerMetadataProperties, in words; None if it would not."""
    if len(properties) > CUSTOMER_METADATA_MAX_ENTRIES:
        return f"{len(properties)} customer metadata properties: a model package holds at most {CUSTOMER_METADATA_MAX_ENTRIES}"
    for key, value in properties.items():
        for what, text, limit in (("key", key, CUSTOMER_METADATA_MAX_KEY), ("value", value, CUSTOMER_METADATA_MAX_VALUE)):
            name = f"the {what} of customer metadata property {str(key)[:60]!r}"
            if not isinstance(text, str):
                return f"{name} is a {type(text).__name__}: SageMaker takes only strings"
            if not 1 <= len(text) <= limit:
                return f"{name} has {len(text)} characters: SageMaker takes 1 to {limit}"
            bad = "".join(sorted({c for c in text if not _customer_metadata_character(c)}))
            if bad:
                return f"{name} holds {bad!r}: SageMaker takes only letters, digits, spaces and {_CUSTOMER_METADATA_PUNCTUATION}"
    return None
