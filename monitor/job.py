"""The monitoring job: one window of captured traffic (and the feedback that came back about it)
against the baseline registered with the model that served it.

It follows SageMaker's bring-your-own-container monitoring contract, so that the same script runs
as a Processing job on a schedule on AWS and as ``sentiment-mlops monitor run`` locally. It reads
its settings from the environment:

- ``dataset_source``: the endpoint variant's captured data, ``yyyy/mm/dd/hh/*.jsonl`` below it;
- ``output_path``: where ``statistics.json`` and ``constraint_violations.json`` go;
- ``start_time``, ``end_time``: the window (ISO 8601, UTC), end excluded;
- ``baseline_statistics``, ``baseline_constraints``: the baseline's two JSON files (its
  ``reference.npz`` lies beside the statistics);
- ``publish_cloudwatch_metrics`` (``Enabled``), ``sagemaker_endpoint_name``,
  ``sagemaker_monitoring_schedule_name``: the figures as CloudWatch metrics, written where the
  contract says (``/opt/ml/output/metrics/cloudwatch/``);

and two of its own: ``model_source`` (the model that served: ``model.tar.gz``, its folder or an
unpacked model) and ``ground_truth_source`` (web users' feedback, ``yyyy/mm/dd/hh/*.jsonl``, Model
Monitor's ground-truth records; optional).

What it checks, each against the baseline: the texts' length in tokens (Kolmogorov-Smirnov), the
out-of-vocabulary rate (a rise past the constraint), the model's scores (Kolmogorov-Smirnov), the
model's own representation of the texts (maximum mean discrepancy, permutation p-value), and, once
``min_labels`` answers have feedback, live accuracy, precision and recall with 95 % Wilson
intervals, a violation when accuracy's interval lies wholly ``max_accuracy_drop`` below the
evaluation's. Texts are sampled as they stream by (a seeded reservoir) and labels are joined as
captures stream by, so memory stays flat however large the window. A line that is not a captured
invocation, a feedback for an id never captured, an empty window: each is counted and reported,
never a crash. A failure writes its reason to ``/opt/ml/output/message`` and exits 1.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlops_rules.capture import CaptureLineError, read_capture_line
from mlops_rules.feedback import FeedbackError, read_ground_truth_line
from monitor.baseline import BaselineError, oov_rate, read_baseline, summary
from monitor.contract import MESSAGE_PATH, METRICS_FOLDER, STATISTICS_FILE, VIOLATIONS_FILE
from monitor.features import describe
from monitor.statistics import Reservoir, TestResult, ks_test, mmd_test, wilson_interval
from serve.artifact import ArtifactError, LoadedModel, load_model, resolve_model_dir
from serve.handlers import input_fn

log = logging.getLogger("monitor")

SAMPLE_SIZE = 500  # texts measured per window: the current side of the two-sample tests
PERMUTATIONS = 500
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class MonitorError(ValueError):
    """A job that cannot run as asked; the message says what to fix."""


@dataclass(frozen=True)
class JobSettings:
    dataset_source: Path
    output_path: Path
    start: datetime
    end: datetime
    baseline_statistics: Path
    baseline_constraints: Path
    model_source: Path
    ground_truth_source: Path | None = None
    publish_metrics: bool = False
    endpoint: str = ""
    schedule: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> JobSettings:
        missing = [n for n in ("dataset_source", "output_path", "start_time", "end_time", "baseline_statistics",
                               "baseline_constraints", "model_source") if not environ.get(n)]
        if missing:
            raise MonitorError(f"the job's environment lacks {', '.join(missing)}")
        start, end = parse_time(environ["start_time"]), parse_time(environ["end_time"])
        if end <= start:
            raise MonitorError(f"end_time {environ['end_time']} is not after start_time {environ['start_time']}")
        truth = environ.get("ground_truth_source")
        return cls(Path(environ["dataset_source"]), Path(environ["output_path"]), start, end,
                   Path(environ["baseline_statistics"]), Path(environ["baseline_constraints"]),
                   Path(environ["model_source"]), Path(truth) if truth else None,
                   environ.get("publish_cloudwatch_metrics") == "Enabled", environ.get("sagemaker_endpoint_name", ""),
                   environ.get("sagemaker_monitoring_schedule_name", ""))


def parse_time(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise MonitorError(f"{text!r} is not an ISO 8601 time such as 2026-12-07T20:00:00Z") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def hour_files(folder: Path, start: datetime, end: datetime) -> Iterator[Path]:
    """The ``yyyy/mm/dd/hh/*.jsonl`` files under ``folder`` for the hours the window touches, in order."""
    hour = start.replace(minute=0, second=0, microsecond=0)
    while hour < end:
        yield from sorted((folder / f"{hour:%Y/%m/%d/%H}").glob("*.jsonl"))
        hour += timedelta(hours=1)


@dataclass
class Window:
    """What one pass over the window's capture collected, within flat memory."""

    invocations: int = 0
    texts: int = 0
    unreadable: int = 0
    first_unreadable: str | None = None
    sample: Reservoir = field(default_factory=lambda: Reservoir(SAMPLE_SIZE))
    labelled: list[tuple[int, int]] = field(default_factory=list)  # (true label, predicted label) per joined answer

    def skip(self, where: str, why: str) -> None:
        self.unreadable += 1
        if self.first_unreadable is None:
            self.first_unreadable = f"{where}: {why}"
        log.warning("%s: skipped: %s", where, why)


def read_ground_truth(folder: Path | None, start: datetime, until: datetime) -> tuple[dict[str, int], int]:
    """Each answer's label (the latest word on it wins) from the feedback filed in [start, until), and
    how many lines could not be read."""
    labels: dict[str, int] = {}
    bad = 0
    if folder is None or not folder.is_dir():
        return labels, bad
    for path in hour_files(folder, start, until):
        for number, line in enumerate(path.read_bytes().splitlines(), 1):
            if not line.strip():
                continue
            try:
                event_id, label = read_ground_truth_line(line)
            except FeedbackError as error:
                bad += 1
                log.warning("%s:%d: skipped: %s", path, number, error)
                continue
            labels[event_id] = label
    return labels, bad


def _predictions(output: str | None) -> list[dict] | None:
    try:
        found = json.loads(output or "").get("predictions")
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, list) and all(isinstance(p, dict) for p in found) else None


def _record_time(value: Any) -> datetime | None:
    """A captured record's inferenceTime as a UTC time (SageMaker's ``…T20:15:03Z``; any ISO 8601 form
    is read, a time without a zone taken as UTC), or None."""
    try:
        return parse_time(value) if isinstance(value, str) and value else None
    except MonitorError:
        return None


def _score(prediction: Mapping[str, Any]) -> float | None:
    """The answer's positive probability, or None when it is not a number from 0 to 1."""
    value = prediction.get("positive_probability")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        return None
    return float(value)


def read_window(settings: JobSettings, truth: Mapping[str, int]) -> Window:
    """Stream the window's captured invocations: count them, sample their texts with the scores the
    model gave, and join the labelled ones to their answers."""
    window = Window()
    for path in hour_files(settings.dataset_source, settings.start, settings.end):
        with open(path, "rb") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = read_capture_line(line)
                except CaptureLineError as error:
                    window.skip(f"{path}:{number}", str(error))
                    continue
                when = _record_time(record["time"])
                if when is None:
                    window.skip(f"{path}:{number}", f"inferenceTime {record['time']!r} is not an ISO 8601 time")
                    continue
                if not settings.start <= when < settings.end:
                    continue
                try:
                    texts = input_fn(record["input"] or "", record["input_type"] or "application/json")
                except Exception as error:  # noqa: BLE001 (the model's own refusal classes: a record it would refuse)
                    window.skip(f"{path}:{number}", f"the captured request is not one the model reads: {error}")
                    continue
                predictions = _predictions(record["output"])
                if predictions is None or len(predictions) != len(texts):
                    window.skip(f"{path}:{number}", "the captured answer holds no prediction for each text")
                    continue
                scores = [_score(prediction) for prediction in predictions]
                if None in scores:
                    window.skip(f"{path}:{number}", "a prediction's positive_probability is not a number from 0 to 1")
                    continue
                window.invocations += 1
                for text, score in zip(texts, scores):
                    window.texts += 1
                    window.sample.add((text, score))
                label = truth.get(record["inference_id"] or "")
                if label is not None and len(predictions) == 1:
                    window.labelled.append((label, int(predictions[0].get("label") == "positive")))
    return window


def live_quality(labelled: list[tuple[int, int]], baseline_accuracy: float | None, constraints: Mapping[str, Any]) -> dict[str, Any]:
    """Accuracy, precision and recall on the answers web users labelled, each with its 95 % interval."""
    n = len(labelled)
    truth = np.array([t for t, _ in labelled], dtype=int)
    predicted = np.array([p for _, p in labelled], dtype=int)
    right = int((truth == predicted).sum())
    true_positive = int(((truth == 1) & (predicted == 1)).sum())
    said_positive, are_positive = int((predicted == 1).sum()), int((truth == 1).sum())

    def figure(successes: int, trials: int) -> dict[str, Any]:
        return {"value": round(successes / trials, 6) if trials else None, "count": trials,
                "interval": wilson_interval(successes, trials)}

    quality = {"labels": n, "enough": n >= constraints["min_labels"], "min_labels": constraints["min_labels"],
               "accuracy": figure(right, n), "precision": figure(true_positive, said_positive),
               "recall": figure(true_positive, are_positive), "evaluation_accuracy": baseline_accuracy}
    interval = quality["accuracy"]["interval"]
    quality["violated"] = bool(quality["enough"] and baseline_accuracy is not None and interval is not None
                               and interval[1] < baseline_accuracy - constraints["max_accuracy_drop"])
    return quality


def _check(result: TestResult, what: str, p_value: float) -> dict[str, Any]:
    return {"name": what, "test": result.name, "statistic": round(result.statistic, 6), "p_value": round(result.p_value, 6),
            "reference": result.reference_size, "current": result.current_size, "violated": result.p_value < p_value}


def evaluate_window(settings: JobSettings) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The window's statistics and its violations."""
    statistics, constraints, reference = read_baseline(settings.baseline_statistics.parent)
    if settings.baseline_constraints.is_file():
        try:
            constraints = {**constraints, **json.loads(settings.baseline_constraints.read_text(encoding="utf-8"))}
        except (OSError, ValueError) as error:
            raise BaselineError(f"the constraints {settings.baseline_constraints} cannot be read: {error}") from None
    truth, bad_truth = read_ground_truth(settings.ground_truth_source, settings.start, datetime.now(UTC) + timedelta(hours=1))
    window = read_window(settings, truth)
    found: dict[str, Any] = {"window": {"start": settings.start.strftime(TIME_FORMAT), "end": settings.end.strftime(TIME_FORMAT)},
                             "invocations": window.invocations, "texts": window.texts, "unreadable_lines": window.unreadable,
                             "first_unreadable": window.first_unreadable, "unreadable_feedback": bad_truth,
                             "feedback_in_window": len(window.labelled), "checks": []}
    violations: list[dict[str, str]] = []
    p_value = float(constraints["p_value"])
    if window.texts:
        model = _load(settings.model_source)
        texts = [text for text, _ in window.sample.items]
        features = describe(texts, model)
        worded = features.tokens > 0
        scores = np.array([score for _, score in window.sample.items])[worded]
        found.update(sample=len(texts), no_words=int((~worded).sum()), tokens=summary(features.tokens[worded]),
                     oov_rate=round(oov_rate(features), 6), scores=summary(scores))
        if worded.sum() >= 2:
            found["checks"] = [
                _check(ks_test(reference["tokens"], features.tokens[worded]), "input_length", p_value),
                _check(ks_test(reference["probabilities"], scores), "score_distribution", p_value),
                _check(mmd_test(reference["representation"], features.representation[worded], PERMUTATIONS), "representation", p_value)]
        rise = found["oov_rate"] - float(statistics["oov_rate"])
        found["checks"].append({"name": "oov_rate", "test": "rise", "statistic": round(rise, 6), "baseline": statistics["oov_rate"],
                                "current": found["oov_rate"], "violated": rise > constraints["max_oov_rate_increase"]})
        for check in found["checks"]:
            if check["violated"]:
                violations.append({"feature_name": check["name"], "constraint_check_type": "drift_check",
                                   "description": _describe(check, p_value, constraints)})
    quality = live_quality(window.labelled, statistics.get("accuracy"), constraints)
    found["live_quality"] = quality
    if quality["violated"]:
        low, high = quality["accuracy"]["interval"]
        violations.append({"feature_name": "live_accuracy", "constraint_check_type": "model_quality_check",
                           "description": f"live accuracy {quality['accuracy']['value']:.3f} (95 % interval {low:.3f} to "
                                          f"{high:.3f}, {quality['labels']} labels) is more than "
                                          f"{constraints['max_accuracy_drop']} below the evaluation's {quality['evaluation_accuracy']:.3f}"})
    return found, violations


def _describe(check: Mapping[str, Any], p_value: float, constraints: Mapping[str, Any]) -> str:
    if check["name"] == "oov_rate":
        return (f"the out-of-vocabulary rate is {check['current']:.3f}, {check['statistic']:+.3f} from the baseline's "
                f"{check['baseline']:.3f} (allowed: +{constraints['max_oov_rate_increase']})")
    words = {"input_length": "the texts' length in tokens", "score_distribution": "the model's scores",
             "representation": "the model's representation of the texts"}[check["name"]]
    return (f"{words} moved from the baseline: {check['test']} p = {check['p_value']:.4f} < {p_value} "
            f"({check['current']} live texts against {check['reference']})")


def _load(source: Path) -> LoadedModel:
    """The model from ``model.tar.gz``, the folder holding it, or an unpacked model (held in memory once loaded)."""
    with tempfile.TemporaryDirectory(prefix="monitor-model-") as scratch:
        path = source / "model.tar.gz" if source.is_dir() and (source / "model.tar.gz").is_file() else source
        try:
            return load_model(resolve_model_dir(path, Path(scratch)), device=torch.device("cpu"))
        except (ArtifactError, OSError) as error:
            raise MonitorError(f"the model at {source} cannot be loaded: {error}") from None


def _write_whole(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def _metrics(found: Mapping[str, Any], violations: list, settings: JobSettings) -> list[dict[str, Any]]:
    """The figures as the contract's CloudWatch metric lines."""
    dimensions = [{"Name": "Endpoint", "Value": settings.endpoint}, {"Name": "MonitoringSchedule", "Value": settings.schedule}]
    now = time.time()
    values = {"Invocations": found["invocations"], "Violations": len(violations), "UnreadableLines": found["unreadable_lines"]}
    for check in found["checks"]:
        values[f"{check['name']}_{'p_value' if 'p_value' in check else 'statistic'}"] = check.get("p_value", check["statistic"])
    accuracy = found["live_quality"]["accuracy"]["value"]
    if accuracy is not None:
        values["live_accuracy"] = accuracy
    return [{"MetricName": name, "Timestamp": now, "Dimensions": dimensions, "Value": float(value)} for name, value in values.items()]


def run(settings: JobSettings, metrics_folder: Path = METRICS_FOLDER) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Evaluate the window and write ``statistics.json`` and ``constraint_violations.json`` (each whole)."""
    found, violations = evaluate_window(settings)
    _write_whole(settings.output_path / STATISTICS_FILE, json.dumps(found, indent=2))
    _write_whole(settings.output_path / VIOLATIONS_FILE, json.dumps({"violations": violations}, indent=2))
    if settings.publish_metrics:
        lines = "".join(json.dumps(metric) + "\n" for metric in _metrics(found, violations, settings))
        _write_whole(metrics_folder / "metrics.jsonl", lines)
    log.info("%d invocations, %d texts, %d violations", found["invocations"], found["texts"], len(violations))
    return found, violations


def main(environ: Mapping[str, str] = os.environ, message_path: Path = MESSAGE_PATH) -> int:
    """The container's entry point: 0 when the job ran (with or without violations), 1 when it could not."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        found, violations = run(JobSettings.from_env(environ))
    except (MonitorError, BaselineError) as error:
        log.error("%s", error)
        try:
            _write_whole(message_path, str(error))
        except OSError:
            pass
        return 1
    print(json.dumps({"invocations": found["invocations"], "violations": len(violations)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
