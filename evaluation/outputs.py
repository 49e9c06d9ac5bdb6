"""What the Evaluate step writes into its output folder: the one home of the file names.

``evaluation/evaluate.py`` writes these files, and the pipeline definition
(``pipeline/definition/gate_step.py``) links them from the registered model package, so an
approver finds them from the registry. Both import this module: the evaluation job runs in a
container from the processing bundle, which carries ``evaluation/`` but not ``pipeline/``, so the
names live here, next to the script. Plain values and no imports, so the definition and the
registries read them cheaply.
"""
from __future__ import annotations

from collections.abc import Mapping

REPORT_FILE = "evaluation.json"              # SageMaker's model-quality report; the gate reads it
PREDICTIONS_FILE = "predictions.jsonl"       # one {label, positive_probability} per test review
MISCLASSIFIED_FILE = "worst_misclassified.md"  # the most confident mistakes, for a person to read
CONFUSION_MATRIX_FILE = "confusion_matrix.png"
ROC_PR_FILE = "roc_pr_curves.png"            # only when the test split holds both classes
TRAINING_CURVES_FILE = "training_curves.png"  # copied from the artifact, when it carries one
ACCURACY_BY_LENGTH_FILE = "accuracy_by_length.png"  # test reviews by words, and sentences taken from them
CALIBRATION_FILE = "calibration.png"          # "NN % sure" against how often it is right
# A folder: the baseline a monitoring job compares live traffic with (monitor/baseline.py writes it);
# the Register step attaches its statistics and constraints as the package's DriftCheckBaselines.
BASELINE_FOLDER = "baseline"
BASELINE_STATISTICS_FILE = "statistics.json"  # in BASELINE_FOLDER: the package's DriftCheckBaselines statistics
BASELINE_CONSTRAINTS_FILE = "constraints.json"  # ... and its constraints
BASELINE_REFERENCE_FILE = "reference.npz"  # ... and the reference sample, beside the statistics

# evaluation.json's section that CheckAccuracy reads: per kind of test text (serve.text.TEXT_KINDS),
# ``texts`` and ``accuracy`` (``gate.<kind>.accuracy``). Each kind has its own threshold, and every
# run writes every kind.
GATE_KEY = "gate"
# evaluation.json's section with each dataset's own report, by dataset name.
DATASETS_KEY = "datasets"

# The links the Register step puts on the model package (CustomerMetadataProperties), in the order
# a person reads them: property key → file in the Evaluate step's output folder.
LINKS: dict[str, str] = {
    "EvaluationReport": REPORT_FILE,
    "ConfusionMatrix": CONFUSION_MATRIX_FILE,
    "RocPrCurves": ROC_PR_FILE,
    "TrainingCurves": TRAINING_CURVES_FILE,
    "WorstMistakes": MISCLASSIFIED_FILE,
    "Predictions": PREDICTIONS_FILE,
    "AccuracyByLength": ACCURACY_BY_LENGTH_FILE,
    "Calibration": CALIBRATION_FILE,
}

# What Evaluate reads: a Batch Transform writes the answers to each input object under the
# object's name plus this suffix (reviews.jsonl -> reviews.jsonl.out); the local runtime's
# transform writes by it too.
TRANSFORM_OUTPUT_SUFFIX = ".out"


def linked_files(properties: Mapping[str, str]) -> list[tuple[str, str]]:
    """The properties of a model package that link to files in S3, as ``(key, s3 URI)``: the
    evaluation's links in ``LINKS`` order first, then any other ``s3://`` value by key."""
    links = [(key, properties[key]) for key in LINKS if str(properties.get(key, "")).startswith("s3://")]
    others = sorted((key, value) for key, value in properties.items()
                    if key not in LINKS and str(value).startswith("s3://"))
    return links + others
