"""The evaluation step: score the raw test reviews through the artifact's own ``code/inference.py``.

What is measured is what is deployed: the handlers, text normalization and network come from
inside ``model.tar.gz``, not from this repository.  Runs in a SageMaker processing container
or by hand::

    python evaluation/evaluate.py --model PATH --test DIR --output-dir DIR
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

if __package__ in (None, ""):  # run as a script: make the sibling packages (serve/, evaluation/) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.metrics import binary_classification_report
from evaluation.outputs import (
    ACCURACY_BY_LENGTH_FILE,
    BASELINE_FOLDER,
    CALIBRATION_FILE,
    CONFUSION_MATRIX_FILE,
    DATASETS_KEY,
    GATE_KEY,
    MISCLASSIFIED_FILE,
    PREDICTIONS_FILE,
    REPORT_FILE,
    ROC_PR_FILE,
    TRAINING_CURVES_FILE,
    TRANSFORM_OUTPUT_SUFFIX,
)
from evaluation.plots import plot_accuracy_by_length, plot_confusion_matrix, plot_reliability, plot_roc_and_pr
from evaluation.slices import accuracy_by_length, expected_calibration_error, short_texts
from monitor.baseline import make_baseline
from serve.artifact import TRAINING_CURVES_FILE as CURVES_IN_ARTIFACT
from serve.artifact import ArtifactError, load_model, resolve_model_dir
from serve.artifact_code import load_artifact_handlers
from serve.text import REVIEWS, TEXT_KINDS, has_words
from steps.arrays import REVIEWS_FILE
from steps.job_failure import PROCESSING_REASON_FILE, report_failures
from steps.sources import DEFAULT_NAME

log = logging.getLogger("evaluate")

BATCH_SIZE = 500
WORST_SHOWN = 20


class EvaluationError(ValueError):
    """Inputs the evaluation cannot use; the message says how to fix them."""


@dataclass
class TestSet:
    """The test texts Preprocess wrote, each with its label and the dataset (and kind) it came from."""

    texts: list[str]
    labels: np.ndarray
    datasets: list[str]
    kinds: dict[str, str]  # dataset name -> "reviews" or "sentences", in the order the datasets first appear

    def rows(self, dataset: str) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.datasets) == dataset)

    def kind_rows(self, kind: str) -> np.ndarray:
        return np.flatnonzero(np.asarray([self.kinds[d] for d in self.datasets]) == kind)


def read_test_reviews(test_dir: Path) -> TestSet:
    """The test split's ``reviews.jsonl``. A file written before several datasets were possible has
    no ``dataset``/``kind``: its texts are one dataset of reviews."""
    path = Path(test_dir) / REVIEWS_FILE
    if not path.is_file():
        raise EvaluationError(f"{test_dir} has no {REVIEWS_FILE}: --test must be the preprocessing step's test/ output")
    texts: list[str] = []
    labels: list[int] = []
    datasets: list[str] = []
    kinds: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                record = json.loads(line)
                texts.append(record["text"])
                labels.append(int(record["label"]))
                datasets.append(str(record.get("dataset", DEFAULT_NAME)))
                kind = kinds.setdefault(datasets[-1], str(record.get("kind", REVIEWS)))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise EvaluationError(f"{path} line {number} is not a {{text, label}} record: {exc}") from exc
            if kind not in TEXT_KINDS or record.get("kind", kind) != kind:
                raise EvaluationError(f"{path} line {number}: dataset {datasets[-1]!r} has kind {record.get('kind')!r}; "
                                      f"expected one of {', '.join(TEXT_KINDS)}, the same on every line")
    if not texts:
        raise EvaluationError(f"{path} holds no reviews")
    return TestSet(texts, np.asarray(labels, dtype=int), datasets, kinds)


def score(handlers, model, texts: list[str]) -> np.ndarray:
    """Positive-class probabilities, going through input_fn → predict_fn → output_fn like a request."""
    probabilities = np.empty(len(texts))
    with tqdm(total=len(texts), desc="evaluate", unit="review", mininterval=2.0, disable=None) as bar:
        for start in range(0, len(texts), BATCH_SIZE):
            batch = texts[start : start + BATCH_SIZE]
            parsed = handlers.input_fn(json.dumps({"reviews": batch}), "application/json")
            body, _ = handlers.output_fn(handlers.predict_fn(parsed, model), "application/json")
            probabilities[start : start + len(batch)] = [p["positive_probability"] for p in json.loads(body)["predictions"]]
            bar.update(len(batch))
    return probabilities


def read_transform_answers(predictions_dir: Path, test: TestSet) -> np.ndarray:
    """Positive-class probabilities from the Transform step's ``reviews.jsonl.out``: each line the
    test record joined to the serving container's answer (``SageMakerOutput``), checked to be the
    test set's records in their order, so that every figure is the container's answer to that text."""
    path = Path(predictions_dir) / f"{REVIEWS_FILE}{TRANSFORM_OUTPUT_SUFFIX}"
    if not path.is_file():
        raise EvaluationError(f"{predictions_dir} has no {path.name}: --predictions must be the Transform step's output")
    probabilities = np.empty(len(test.texts))
    count = 0
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if count == len(test.texts):
                raise EvaluationError(f"{path} has more answers than the {len(test.texts):,} test texts")
            try:
                record = json.loads(line)
                probability = float(record["SageMakerOutput"]["positive_probability"])
                same = record["text"] == test.texts[count] and int(record["label"]) == test.labels[count]
            except (ValueError, KeyError, TypeError) as exc:
                raise EvaluationError(f"{path} line {number} is not a test record joined to an answer: {exc}") from exc
            if not same:
                raise EvaluationError(f"{path} line {number} is not test text {count + 1}: the transform must join "
                                      "each answer to its record (JoinSource Input), in the test set's order")
            probabilities[count] = probability
            count += 1
    if count != len(test.texts):
        raise EvaluationError(f"{path} answers {count:,} of the {len(test.texts):,} test texts")
    return probabilities


def worst_misclassified(texts: list[str], labels: np.ndarray, probabilities: np.ndarray, count: int) -> str:
    """A page a person can read: the confident mistakes, which teach the most about the model."""
    wrong = np.flatnonzero((probabilities >= 0.5).astype(int) != labels)
    confidence = np.abs(probabilities[wrong] - 0.5)
    lines = [f"# The {min(count, len(wrong))} most confident mistakes ({len(wrong):,} of {len(labels):,} reviews misclassified)", ""]
    for rank, row in enumerate(wrong[np.argsort(-confidence, kind="stable")][:count], start=1):
        actual = "positive" if labels[row] else "negative"
        text = " ".join(texts[row].replace("<br />", " ").split())
        lines += [f"## {rank}. test review {row}: actually {actual}, scored {probabilities[row]:.3f} positive", "",
                  text[:1500] + (" …" if len(text) > 1500 else ""), ""]
    return "\n".join(lines)


def slice_report(handlers, model, test: TestSet, probabilities: np.ndarray) -> dict:
    """Accuracy by length, on short texts taken from the test reviews (scored like any request;
    sentence datasets are short texts already), and the calibration of the test set's
    probabilities (``evaluation.slices``)."""
    short = {}
    reviews = test.kind_rows(REVIEWS)
    review_texts = [test.texts[i] for i in reviews]
    for kind, (sentences, sentence_labels) in short_texts(review_texts, test.labels[reviews]).items():
        scorable = [has_words(sentence) for sentence in sentences]  # markup alone is refused, as a request would be
        sentences, sentence_labels = [s for s, keep in zip(sentences, scorable) if keep], sentence_labels[scorable]
        if sentences:
            right = (score(handlers, model, sentences) >= 0.5).astype(int) == sentence_labels
            short[kind] = {"texts": len(sentences), "accuracy": round(float(right.mean()), 4)}
    return {"by_length": accuracy_by_length(test.texts, test.labels, probabilities), "short_texts": short,
            "calibration": expected_calibration_error(test.labels, probabilities)}


def dataset_calibrations(test: TestSet, probabilities: np.ndarray) -> dict[str, dict]:
    """Each test set's calibration (its error and the bins of its reliability curve)."""
    return {name: expected_calibration_error(test.labels[test.rows(name)], probabilities[test.rows(name)])
            for name in test.kinds}


def dataset_reports(test: TestSet, probabilities: np.ndarray, calibrations: dict[str, dict]) -> dict[str, dict]:
    """Each test set's own model-quality report, its size and kind, and its calibration error: the
    pooled figures would let 25,000 reviews hide what 1,821 sentences say."""
    reports = {}
    for name, kind in test.kinds.items():
        rows = test.rows(name)
        reports[name] = {"kind": kind, "texts": int(len(rows)),
                         "calibration_error": calibrations[name]["expected_calibration_error"],
                         **binary_classification_report(test.labels[rows], probabilities[rows])}
    return reports


def gate_figures(test: TestSet, probabilities: np.ndarray) -> dict[str, dict]:
    """What CheckAccuracy holds against each threshold: the accuracy over every test text of a kind.

    The definition reads both kinds in every run, so a kind this run has no test set of is written
    too, with ``texts`` 0 (and accuracy 0.0, never read: the gate passes a kind with no texts).
    """
    figures = {}
    for kind in TEXT_KINDS:
        rows = test.kind_rows(kind)
        right = (probabilities[rows] >= 0.5).astype(int) == test.labels[rows]
        figures[kind] = {"texts": int(len(rows)), "accuracy": round(float(right.mean()), 6) if len(rows) else 0.0}
    return figures


def model_path(path: Path) -> Path:
    """A processing input mounts a folder holding model.tar.gz; accept that as well as the file itself."""
    path = Path(path)
    if path.is_dir() and not (path / "config.json").exists() and (path / "model.tar.gz").is_file():
        return path / "model.tar.gz"
    return path


def copy_training_curves(model_dir: Path, destination: Path) -> bool:
    """The training curves the artifact carries, beside the evaluation's plots, so that every plot
    of a version lies in one folder. An artifact made before it carried them has none: no curves."""
    curves = Path(model_dir) / CURVES_IN_ARTIFACT
    if not curves.is_file():
        log.info("the artifact carries no %s: the evaluation has no training curves", CURVES_IN_ARTIFACT)
        return False
    shutil.copyfile(curves, destination)
    return True


def run(model: Path, test_dir: Path, output_dir: Path, predictions_dir: Path | None = None) -> dict:
    """The report on the test texts: the transform's answers when ``predictions_dir`` is given
    (the pipeline's way), else each text scored here through the artifact's own handlers."""
    started = time.perf_counter()
    test = read_test_reviews(test_dir)
    texts, labels = test.texts, test.labels
    scratch = Path(tempfile.mkdtemp(prefix="sentiment-eval-"))
    try:
        model_dir = resolve_model_dir(model_path(model), scratch / "model")
        handlers = load_artifact_handlers(model_dir)
        try:
            loaded = handlers.model_fn(str(model_dir))
        except Exception as exc:  # the artifact's own error classes are not this module's
            raise EvaluationError(f"the artifact's model_fn cannot load {model_dir}: {exc}") from exc
        if predictions_dir is not None:
            probabilities = read_transform_answers(predictions_dir, test)
            log.info("the serving container's answers to %d test texts, from %s", len(texts), predictions_dir)
        else:
            probabilities = score(handlers, loaded, texts)
        report = binary_classification_report(labels, probabilities)
        report["slices"] = slice_report(handlers, loaded, test, probabilities)
        calibrations = dataset_calibrations(test, probabilities)
        report[DATASETS_KEY] = dataset_reports(test, probabilities, calibrations)
        report[GATE_KEY] = gate_figures(test, probabilities)
        metrics = report["binary_classification_metrics"]
        results = scratch / "results"
        results.mkdir()
        # What a monitoring job compares live traffic with (monitor/baseline.py), registered with the model.
        make_baseline(texts, probabilities, load_model(model_dir, device=torch.device("cpu")), results / BASELINE_FOLDER,
                      accuracy=metrics["accuracy"]["value"])
        (results / REPORT_FILE).write_text(json.dumps(report, indent=2), encoding="utf-8")
        with open(results / PREDICTIONS_FILE, "w", encoding="utf-8") as handle:
            for label, probability, dataset in zip(labels, probabilities, test.datasets):
                handle.write(json.dumps({"label": int(label), "positive_probability": round(float(probability), 6),
                                         "dataset": dataset}) + "\n")
        (results / MISCLASSIFIED_FILE).write_text(worst_misclassified(texts, labels, probabilities, WORST_SHOWN), encoding="utf-8")
        plot_confusion_matrix(metrics["confusion_matrix"], results / CONFUSION_MATRIX_FILE)
        if "receiver_operating_characteristic_curve" in metrics:
            plot_roc_and_pr(metrics, results / ROC_PR_FILE)
        plot_accuracy_by_length(report["slices"], results / ACCURACY_BY_LENGTH_FILE)
        plot_reliability(report["slices"]["calibration"], results / CALIBRATION_FILE, calibrations)
        copy_training_curves(model_dir, results / TRAINING_CURVES_FILE)
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        for item in results.iterdir():  # the report last, so a reader never sees it without its companions
            if item.name != REPORT_FILE:
                os.replace(item, output_dir / item.name)
        os.replace(results / REPORT_FILE, output_dir / REPORT_FILE)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    seconds = time.perf_counter() - started
    log.info("accuracy=%.4f auc=%s on %d test reviews in %.1fs (%.0f reviews/s)", metrics["accuracy"]["value"],
             metrics["auc"]["value"], len(labels), seconds, len(labels) / seconds)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--model", default="/opt/ml/processing/model", help="model.tar.gz, the folder holding it, or an unpacked model dir")
    parser.add_argument("--test", default="/opt/ml/processing/test", help="the preprocessing step's test/ output")
    parser.add_argument("--predictions", help="the Transform step's output (reviews.jsonl.out: each test record "
                                              "joined to the serving container's answer); without it, the texts are "
                                              "scored here through the artifact's own handlers")
    parser.add_argument("--output-dir", default="/opt/ml/processing/evaluation")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)

    def work() -> int:
        report = run(Path(args.model), Path(args.test), Path(args.output_dir),
                     Path(args.predictions) if args.predictions else None)
        print(json.dumps({"accuracy": report["binary_classification_metrics"]["accuracy"]["value"]}))
        return 0

    return report_failures(work, (EvaluationError, ArtifactError), PROCESSING_REASON_FILE, log)


if __name__ == "__main__":
    sys.exit(main())
