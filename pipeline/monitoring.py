"""``sentiment-mlops monitor run`` on the local runtime: find what the monitoring job needs for an
endpoint, the way a Model Monitor schedule finds it on AWS, and run the job (``monitor/job.py``,
the same code the Processing job runs) over a window of its captured traffic.

- the captured traffic: the endpoint config's ``DataCaptureConfig`` destination, under the
  endpoint's name and its production variant's;
- the baseline: the ``DriftCheckBaselines`` (``ModelDataQuality``) of the model package the
  production variant's Model was made from (the Register step attaches them);
- the model that answered: that package's artifact;
- web users' feedback: the ground-truth records under ``s3://BUCKET/PREFIX/groundtruth/``.

Each report goes to ``s3://BUCKET/PREFIX/monitoring/<endpoint>/v<version>/<window end>/`` in the
local store (``statistics.json``, ``constraint_violations.json``), as a schedule's would; the
registry page shows the newest one on the version's page.
"""
from __future__ import annotations

import logging
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
    report_uri = f"{reports_uri(settings, endpoint, found.version)}/{end:%Y-%m-%dT%H-%M-%S}"
    job = JobSettings(found.dataset_source, ArtifactStore(settings.home).path(report_uri + "/"), start, end,
                      found.baseline_statistics, found.baseline_constraints, found.model_source,
                      found.ground_truth_source, endpoint=endpoint)
    try:
        statistics, violations = run(job)
    except (MonitorError, BaselineError) as error:
        raise CommandError(str(error)) from None
    return {"endpoint": endpoint, "version": found.version, "report": report_uri, "statistics": statistics,
            "violations": violations}
