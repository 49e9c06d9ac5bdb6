"""``sentiment-mlops monitor run`` on the local runtime: find what the monitoring job needs for an
endpoint, the way a Model Monitor schedule finds it on AWS, and run the job (``monitor/job.py``,
the same code the Processing job runs) over a window of its captured traffic.

- the captured traffic: the endpoint config's ``DataCaptureConfig`` destination, under the
  endpoint's name and its production variant's;
- the baseline: the ``DriftCheckBaselines`` (``ModelDataQuality``) of the model package the
  production variant's Model was made from (the Register step attaches them);
- the model that answered: that package's artifact;
- web users' feedback: the ground-truth records under ``s3://BUCKET/PREFIX/groundtruth/``.

``export_feedback`` turns web users' verdicts into a dataset for the next run: each answer they
labelled, its text from the capture and its true label from the feedback, as JSON Lines in a
folder ``run --data`` takes.

Each report goes to ``s3://BUCKET/PREFIX/monitoring/<endpoint>/v<version>/<window end>/`` in the
local store (``statistics.json``, ``constraint_violations.json``), as a schedule's would; the
registry page shows the newest one on the version's page.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from mlops_rules.feedback import GROUND_TRUTH_FOLDER
from mlops_rules.hosting import VARIANT_NAME
from pipeline.errors import CommandError
from pipeline.settings import Settings

log = logging.getLogger(__name__)

MONITORING_FOLDER = "monitoring"  # under the project's prefix: one folder per endpoint, one per window


@dataclass(frozen=True)
class Monitored:
    """What a monitoring run reads for one endpoint, as local paths and the version they belong to."""

    endpoint: str
    version: int | None
    dataset_source: Path
    baseline_statistics: Path
    baseline_constraints: Path
    model_source: Path
    ground_truth_source: Path


def reports_uri(settings: Settings, endpoint: str, version: int | None) -> str:
    """Where the monitoring reports of one version on one endpoint go, a folder per window."""
    return settings.s3_uri(MONITORING_FOLDER, endpoint, f"v{version}")


def find_monitored(settings: Settings, hosting: Any, endpoint: str) -> Monitored:
    """The endpoint's capture, baseline, model and feedback; CommandError saying what is missing."""
    from pipeline.local.state.store import ArtifactStore

    try:
        described = hosting.describe_endpoint(endpoint)
        config = hosting.describe_endpoint_config(described["EndpointConfigName"])
        variant = config["ProductionVariants"][0]
        container = hosting.describe_model(variant["ModelName"])["PrimaryContainer"]
        package = hosting.describe_model_package(container["ModelPackageName"]) \
            if "ModelPackageName" in container else None
    except ClientError as error:
        raise CommandError(f"endpoint {endpoint} cannot be monitored: {error.response['Error']['Message']}; "
                           "approve a version to deploy one (sentiment-mlops endpoints list shows what serves)") from None
    capture = config.get("DataCaptureConfig")
    if not capture:
        raise CommandError(f"endpoint {endpoint} captures nothing (its config {described['EndpointConfigName']} has no "
                           "DataCaptureConfig): set SENTIMENT_MLOPS_CAPTURE_PERCENT above 0 and approve the version again")
    if package is None:
        raise CommandError(f"endpoint {endpoint} serves model {variant['ModelName']}, which was not made from a model "
                           "package: there is no registered baseline to compare with")
    quality = (package.get("DriftCheckBaselines") or {}).get("ModelDataQuality") or {}
    if not quality.get("Statistics") or not quality.get("Constraints"):
        raise CommandError(f"version {package['ModelPackageVersion']} was registered without a monitoring baseline "
                           "(DriftCheckBaselines): run the pipeline again and approve the new version")
    store = ArtifactStore(settings.home)
    destination = capture["DestinationS3Uri"].rstrip("/")
    return Monitored(
        endpoint, package.get("ModelPackageVersion"),
        store.path(f"{destination}/{endpoint}/{variant.get('VariantName', VARIANT_NAME)}/"),
        store.path(quality["Statistics"]["S3Uri"]), store.path(quality["Constraints"]["S3Uri"]),
        store.path(package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]),
        store.path(settings.s3_uri(GROUND_TRUTH_FOLDER) + "/"))


def window(hours: float | None, start: str | None, end: str | None, now: datetime | None = None) -> tuple[datetime, datetime]:
    """The window asked for: ``--start``/``--end`` (ISO 8601), or the last ``hours`` (default 1) up to now."""
    from monitor.job import MonitorError, parse_time

    now = now or datetime.now(UTC)
    try:
        if start or end:
            if hours is not None:
                raise CommandError("give --hours, or --start and --end, not both")
            found = parse_time(start) if start else now - timedelta(hours=1), parse_time(end) if end else now
        else:
            found = now - timedelta(hours=hours if hours is not None else 1), now
    except MonitorError as error:
        raise CommandError(str(error)) from None
    if found[1] <= found[0]:
        raise CommandError(f"the window ends ({found[1]:%Y-%m-%dT%H:%M:%SZ}) before it starts "
                           f"({found[0]:%Y-%m-%dT%H:%M:%SZ}): give --end after --start")
    return found


def monitor_run(settings: Settings, hosting: Any, endpoint: str, start: datetime, end: datetime) -> dict[str, Any]:
    """Run the monitoring job over [start, end) of the endpoint's traffic; its statistics, its
    violations and where its report lies."""
    from monitor.baseline import BaselineError
    from monitor.job import JobSettings, MonitorError, run
    from pipeline.local.state.store import ArtifactStore

    found = find_monitored(settings, hosting, endpoint)
    since = serving_since(hosting, endpoint)
    if since is not None and since >= end:
        raise CommandError(f"version {found.version} took endpoint {endpoint} at {since:%Y-%m-%dT%H:%M:%SZ}, after the "
                           "window's end: ask for a later window (the default is the last hour up to now)")
    clipped = since is not None and since > start
    start = since if since is not None and clipped else start
    report_uri = f"{reports_uri(settings, endpoint, found.version)}/{end:%Y-%m-%dT%H-%M-%S}"
    job = JobSettings(found.dataset_source, ArtifactStore(settings.home).path(report_uri + "/"), start, end,
                      found.baseline_statistics, found.baseline_constraints, found.model_source,
                      found.ground_truth_source, endpoint=endpoint)
    try:
        statistics, violations = run(job)
    except (MonitorError, BaselineError) as error:
        raise CommandError(str(error)) from None
    return {"endpoint": endpoint, "version": found.version, "report": report_uri, "statistics": statistics,
            "violations": violations, "serving_since": f"{since:%Y-%m-%dT%H:%M:%SZ}" if clipped and since else None}


# The endpoint changes after which its capture holds one version's answers only: a creation, an
# update's end, a rollback's end (during a canary, both versions answer under one variant).
SERVING_CHANGES = ("Created", "Updated", "RolledBack")


def serving_since(hosting: Any, endpoint: str) -> datetime | None:
    """When the endpoint last changed which version answers (its history), or None. A window is
    judged from then on: answers before it came from another version, or from two."""
    from pipeline.local.state.db import parse_iso

    changes = [row["time"] for row in hosting.endpoint_history(endpoint) if row["event"] in SERVING_CHANGES]
    # Floored to the second: a capture record's inferenceTime is to the second (truncated), so an
    # answer given later in the same second as the change must not fall before it.
    return parse_iso(changes[-1]).astimezone(UTC).replace(microsecond=0) if changes else None


def _capture_folder(settings: Settings, hosting: Any, endpoint: str) -> Path:
    """The local folder of the endpoint's production variant's capture; CommandError if it has none."""
    from pipeline.local.state.store import ArtifactStore

    try:
        config = hosting.describe_endpoint_config(hosting.describe_endpoint(endpoint)["EndpointConfigName"])
    except ClientError as error:
        raise CommandError(f"endpoint {endpoint}: {error.response['Error']['Message']}; approve a version to deploy "
                           "one (sentiment-mlops endpoints list shows what serves)") from None
    capture = config.get("DataCaptureConfig")
    if not capture:
        raise CommandError(f"endpoint {endpoint} captures nothing: set SENTIMENT_MLOPS_CAPTURE_PERCENT above 0 and "
                           "approve the version again")
    variant = config["ProductionVariants"][0].get("VariantName", VARIANT_NAME)
    return ArtifactStore(settings.home).path(f"{capture['DestinationS3Uri'].rstrip('/')}/{endpoint}/{variant}/")


def _labels(folder: Path) -> dict[str, int]:
    """Every answer's true label in the feedback under ``folder`` (the latest word on each wins)."""
    from mlops_rules.feedback import FeedbackError, read_ground_truth_line

    labels: dict[str, int] = {}
    for path in sorted(folder.rglob("*.jsonl")) if folder.is_dir() else []:
        for line in path.read_bytes().splitlines():
            try:
                event_id, label = read_ground_truth_line(line)
            except FeedbackError:
                continue  # the monitoring job counts these; a dataset just leaves them out
            labels[event_id] = label
    return labels


def _labelled_texts(capture: Path, labels: dict[str, int]) -> dict[str, tuple[str, int]]:
    """Each labelled answer's text (one-review requests only: a verdict is on one answer), by id."""
    from mlops_rules.capture import CaptureLineError, read_capture_line
    from serve.errors import InferenceError
    from serve.handlers import input_fn

    found: dict[str, tuple[str, int]] = {}
    for path in sorted(capture.rglob("*.jsonl")) if capture.is_dir() else []:
        for line in path.read_bytes().splitlines():
            try:
                record = read_capture_line(line)
                label = labels.get(record["inference_id"] or "")
                if label is None:
                    continue
                texts = input_fn(record["input"] or "", record["input_type"] or "application/json")
            except (CaptureLineError, InferenceError):  # not an invocation the model reads: no text to learn from
                continue
            if len(texts) == 1:
                found[record["inference_id"]] = (texts[0], label)
    return found


def export_feedback(settings: Settings, hosting: Any, endpoint: str, output: Path, kind: str,
                    test_fraction: float = 0.2) -> dict[str, Any]:
    """Write ``output``/train.jsonl, test.jsonl and dataset.json (name ``feedback``, ``kind``) from
    every labelled answer; the split is by a hash of the answer's id, so an answer stays in its
    split however often the export runs. The folder appears whole or not at all."""
    from mlops_rules.feedback import GROUND_TRUTH_FOLDER
    from pipeline.local.state.store import ArtifactStore

    if output.exists() and any(output.iterdir()):
        raise CommandError(f"{output} exists and is not empty: name a new folder")
    labels = _labels(ArtifactStore(settings.home).path(settings.s3_uri(GROUND_TRUTH_FOLDER) + "/"))
    found = _labelled_texts(_capture_folder(settings, hosting, endpoint), labels)
    splits: dict[str, list[str]] = {"train": [], "test": []}
    for inference_id, (text, label) in sorted(found.items()):
        share = int(hashlib.sha256(inference_id.encode()).hexdigest()[:8], 16) / 2**32
        splits["test" if share < test_fraction else "train"].append(json.dumps({"text": text, "label": label}))
    if not splits["train"] or not splits["test"]:
        raise CommandError(f"{len(found)} labelled answers ({len(labels)} verdicts, the rest on answers not captured): "
                           "too few for a train and a test split; wait for more feedback")
    output.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        for name, lines in splits.items():
            (scratch / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (scratch / "dataset.json").write_text(json.dumps({"name": "feedback", "kind": kind}), encoding="utf-8")
        if output.exists():
            output.rmdir()
        os.replace(scratch, output)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"endpoint": endpoint, "output": str(output), "train": len(splits["train"]), "test": len(splits["test"]),
            "verdicts": len(labels), "kind": kind}
