"""Approval events, delivered to the deploy handler: the local stand-in for EventBridge → Lambda.

An approval in the local registry writes its "SageMaker Model Package State Change" event to
``<home>/events/`` (one JSON file per event, named so that they sort by time). Delivery hands
each pending event, oldest first, to ``lambda/deploy.py``'s ``handle`` (the code that runs in
Lambda) with a ``LocalHosting`` client in place of boto3's SageMaker client, then moves the
event to ``events/delivered/`` together with the handler's answer.

An approval that meets a busy endpoint (another process is changing it) is requeued as on
AWS: the handler hands it back with a delay, and here that is a file in ``events/`` named by
the time it is due, which this same delivery waits for. The delays are shorter than AWS's,
since a local endpoint changes in seconds. A delivery that raises stays pending, and so do the
events after it. ``sentiment-mlops events deliver`` tries again.
"""
from __future__ import annotations

import fcntl
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

from mlops_rules.capture import CAPTURE_FOLDER
from mlops_rules.hosting import VARIANT_NAME
from mlops_rules.rollouts import (
    ERRORS_METRIC,
    LATENCY_METRIC,
    NAMESPACE,
    NEW_FLEET_DIMENSION,
    RolloutPolicy,
    errors_alarm_name,
    latency_alarm_name,
)
from pipeline.lambdas import load_lambda
from pipeline.settings import Settings

log = logging.getLogger(__name__)

EVENTS_DIR = "events"
DELIVERED_DIR = "delivered"


def deploy_module() -> ModuleType:
    """``lambda/deploy.py``, the deploy function's code."""
    return load_lambda("deploy")


def events_dir(settings: Settings) -> Path:
    return Path(settings.home) / EVENTS_DIR


# A local endpoint changes in seconds; SageMaker's take minutes (deploy.RETRY_DELAYS_S).
LOCAL_RETRY_DELAYS_S = (1, 2, 4, 8, 15)


def record_event(settings: Settings, event: dict, *, attempt: int = 1, delay_s: float = 0) -> Path:
    """Keep an approval event until it is delivered; written whole or not at all. A requeued
    one (``attempt`` > 1) is kept as the retry queue's message, ``{"event", "attempt"}``."""
    folder = events_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    # Named by the nanosecond it is due: approvals within one second keep their order.
    path = folder / f"{time.time_ns() + int(delay_s * 1e9):020d}-{event.get('id', 'event')}.json"
    partial = path.with_suffix(".partial")
    body = event if attempt == 1 else {"event": event, "attempt": attempt}
    partial.write_text(json.dumps(body, indent=2), encoding="utf-8")
    partial.replace(path)
    return path


def pending_events(settings: Settings) -> list[Path]:
    folder = events_dir(settings)
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def _due_ns(path: Path) -> int:
    """When a pending file is due, from its name; a name not written here is due now."""
    stamp = path.name.split("-", 1)[0]
    return int(stamp) if stamp.isdigit() else 0


def _read_event(path: Path) -> tuple[Any, int]:
    """The event in a pending file and its attempt, read as the retry queue's messages are (None
    when the file holds none: the handler answers "ignored" with the reason, and it is set aside)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None, 1
    return deploy_module().message_delivery(text)


class LocalRequeue:
    """The retry queue's stand-in: the event goes back into ``events/``, due after the delay."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def later(self, event: dict, attempt: int, delay_s: int) -> None:
        record_event(self.settings, event, attempt=attempt, delay_s=delay_s)


def deploy_config(settings: Settings):
    """The deploy function's settings as the stack would give them, read by its own ``from_env``
    (so a rollout SageMaker would refuse is refused here, with the same words)."""
    deploy = deploy_module()
    environ = {"ENDPOINT_NAME": settings.endpoint_name, "MODEL_PACKAGE_GROUP": settings.model_package_group,
               "EXECUTION_ROLE_ARN": settings.role_arn, "INSTANCE_TYPE": settings.endpoint_instance_type,
               "INSTANCE_COUNT": str(settings.endpoint_instance_count), **settings.rollout_env,
               "CAPTURE_PERCENT": str(settings.capture_percent), "SHADOW_PERCENT": str(settings.shadow_percent),
               "CAPTURE_DESTINATION": f"s3://{settings.bucket}/{settings.prefix}/{CAPTURE_FOLDER}"}
    alarms = [alarm["AlarmName"] for alarm in local_alarms(settings)]
    try:
        guarded = RolloutPolicy.from_env(environ).guarded
    except ValueError:
        guarded = False  # DeployConfig.from_env says what is wrong
    if guarded:  # the stack's alarms watch every guarded update
        environ.update(ROLLBACK_ALARMS=",".join(alarms), NEW_FLEET_ALARM=alarms[1])
    return replace(deploy.DeployConfig.from_env(environ), retry_delays_s=LOCAL_RETRY_DELAYS_S)


def local_alarms(settings: Settings) -> list[dict[str, Any]]:
    """The stack's two rollback alarms (lambda/template.yaml), for the local endpoint: the same
    metrics, dimensions, statistics and comparisons, judged over ``alarm_period_s``."""
    endpoint = settings.endpoint_name
    dimensions = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": VARIANT_NAME}]
    common = {"Namespace": NAMESPACE, "Period": settings.alarm_period_s, "EvaluationPeriods": 1,
              "TreatMissingData": "notBreaching"}
    return [
        {**common, "AlarmName": errors_alarm_name(endpoint), "MetricName": ERRORS_METRIC, "Dimensions": dimensions,
         "Statistic": "Sum", "Threshold": settings.error_alarm_threshold,
         "ComparisonOperator": "GreaterThanOrEqualToThreshold"},
        {**common, "AlarmName": latency_alarm_name(endpoint), "MetricName": LATENCY_METRIC,
         "Dimensions": [*dimensions, {"Name": NEW_FLEET_DIMENSION, "Value": f"{endpoint}-no-update-yet"}],
         "Statistic": "Average", "Threshold": settings.latency_alarm_us, "ComparisonOperator": "GreaterThanThreshold"},
    ]


def ensure_local_alarms(settings: Settings, cloudwatch) -> None:
    """What the stack does on AWS: the rollback alarms exist before a guarded update names them.
    The new-fleet alarm's config is left as the deploy handler last set it."""
    existing = {a["AlarmName"] for a in cloudwatch.describe_alarms()["MetricAlarms"]}
    for alarm in local_alarms(settings):
        if alarm["AlarmName"] not in existing or alarm["MetricName"] != LATENCY_METRIC:
            cloudwatch.put_metric_alarm(**alarm)


def _next_due(settings: Settings) -> Path | None:
    """The oldest pending event, once it is due (waiting for it if it is a requeued one)."""
    pending = pending_events(settings)
    if not pending:
        return None
    wait_s = (_due_ns(pending[0]) - time.time_ns()) / 1e9
    if wait_s > 0:
        log.info("waiting %.0f s to deliver a requeued approval", wait_s)
        time.sleep(wait_s)
    return pending[0]


def deliver_pending(settings: Settings) -> list[dict[str, Any]]:
    """Deliver every pending event in order; returns the handler's answer for each one delivered.
    Raises the first failure (its event and the later ones stay pending)."""
    from pipeline.local.services.cloudwatch import LocalCloudWatch
    from pipeline.local.services.hosting import LocalHosting
    from pipeline.local.state.db import open_state

    deploy = deploy_module()
    results = []
    events_dir(settings).mkdir(parents=True, exist_ok=True)
    conn = open_state(settings.home)
    # One deliverer at a time, so that events are handed over in the order they are due.
    lock = open(events_dir(settings) / ".deliver.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        hosting, config = LocalHosting(settings.home, conn, runtime_port=settings.runtime_port), deploy_config(settings)
        cloudwatch = LocalCloudWatch(conn)
        if config.rollout.alarms:
            ensure_local_alarms(settings, cloudwatch)
        requeue = LocalRequeue(settings)
        while (path := _next_due(settings)) is not None:
            event, attempt = _read_event(path)
            result = deploy.handle(event, config, hosting, requeue, attempt, cloudwatch)
            _check_deployed(hosting, result)
            _set_aside(path, event, result)
            log.info("event %s: %s", path.name, result.get("reason") or result["status"])
            results.append({"event": path.name, **result})
    finally:
        conn.close()
        lock.close()  # releases the lock
    return results


def announce_registration(settings: Settings, version: int) -> dict[str, Any] | None:
    """What EventBridge does when a version is registered: its state-change event (status
    PendingManualApproval) goes to the deploy function, which runs it as the endpoint's shadow
    when ``shadow_percent`` is above 0; the handler's answer. Nothing when shadows are off."""
    if not settings.shadow_percent:
        return None
    from pipeline.local.state.db import open_state
    from pipeline.local.state.registry import ModelRegistry

    conn = open_state(settings.home)
    try:
        registry = ModelRegistry(conn)
        path = record_event(settings, registry.event(registry.get(settings.model_package_group, version)))
    finally:
        conn.close()
    delivered = {result["event"]: result for result in deliver_pending(settings)}
    return delivered.get(path.name)


class DeploymentFailed(RuntimeError):
    """The handler asked for the version, but the endpoint did not take it (the reason says why)."""


def _check_deployed(hosting, result: dict) -> None:
    """What CloudWatch would show on AWS, checked here at once: an endpoint that was created or
    updated must run the config the handler asked for."""
    if result["status"] not in ("created", "updated"):
        return
    endpoint = hosting.describe_endpoint(EndpointName=result["endpoint"])
    pending = endpoint.get("PendingDeploymentSummary", {}).get("EndpointConfigName")
    if endpoint["EndpointStatus"] in ("Updating", "RollingBack") and pending == result["endpoint_config"]:
        return  # a guarded rollout under way: its outcome is the endpoint's to show
    if hosting.rolled_back(result["endpoint"], result["endpoint_config"]):
        return  # a guarded rollout that has ended already, rolled back by an alarm: the deployment was done
    if endpoint["EndpointStatus"] != "InService" or endpoint["EndpointConfigName"] != result["endpoint_config"]:
        raise DeploymentFailed(f"endpoint {result['endpoint']} did not take version {result['version']}: "
                               f"{endpoint.get('FailureReason', endpoint['EndpointStatus'])}")


def _set_aside(path: Path, event: Any, result: dict) -> None:
    delivered = path.parent / DELIVERED_DIR
    delivered.mkdir(exist_ok=True)
    partial = delivered / (path.name + ".partial")
    partial.write_text(json.dumps({"event": event, "result": result}, indent=2, default=str), encoding="utf-8")
    partial.replace(delivered / path.name)
    path.unlink()


def delivered_result(settings: Settings, event_file: str) -> dict[str, Any] | None:
    """The handler's answer to an event already delivered (by this process or another), by the
    name its pending file had; None while it is still pending or if it never was one."""
    path = events_dir(settings) / DELIVERED_DIR / Path(event_file).name
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    result = record.get("result") if isinstance(record, dict) else None
    return result if isinstance(result, dict) else None
