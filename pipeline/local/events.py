"""Approval events, delivered to the deploy handler: the local stand-in for EventBridge → Lambda.

An approval in the local registry writes its "SageMaker Model Package State Change" event to
``<home>/events/`` (one JSON file per event, named so that they sort by time). Delivery hands
each pending event, oldest first, to ``lambda/deploy.py``'s ``handle`` (the code that runs in
Lambda) with a ``LocalHosting`` client in place of boto3's SageMaker client, then moves the
event to ``events/delivered/`` together with the handler's answer.

A delivery that raises stays pending, and so do the events after it: delivering them out of
order could leave an older version serving. ``sentiment-mlops events deliver`` tries again.
"""
from __future__ import annotations

import fcntl
import json
import logging
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from pipeline.local.lambdas import lambda_path, load_lambda
from pipeline.settings import Settings

log = logging.getLogger(__name__)

EVENTS_DIR = "events"
DELIVERED_DIR = "delivered"
DEPLOY_HANDLER = lambda_path("deploy")


def deploy_module() -> ModuleType:
    """``lambda/deploy.py``, the deploy function's code."""
    return load_lambda("deploy")


def events_dir(settings: Settings) -> Path:
    return Path(settings.home) / EVENTS_DIR


def record_event(settings: Settings, event: dict) -> Path:
    """Keep an approval event until it is delivered; written whole or not at all."""
    folder = events_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    # Named by the nanosecond it was recorded: approvals within one second keep their order.
    path = folder / f"{time.time_ns():020d}-{event['id']}.json"
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(event, indent=2), encoding="utf-8")
    partial.replace(path)
    return path


def pending_events(settings: Settings) -> list[Path]:
    folder = events_dir(settings)
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def deploy_config(settings: Settings):
    return deploy_module().DeployConfig(settings.endpoint_name, settings.model_package_group, settings.role_arn,
                                        settings.endpoint_instance_type, 1)


def deliver_pending(settings: Settings) -> list[dict[str, Any]]:
    """Deliver every pending event in order; returns the handler's answer for each one delivered.
    Raises the first failure (its event and the later ones stay pending)."""
    from pipeline.local.db import open_state
    from pipeline.local.hosting import LocalHosting

    deploy = deploy_module()
    results = []
    events_dir(settings).mkdir(parents=True, exist_ok=True)
    conn = open_state(settings.home)
    # One deliverer at a time, as the deploy function's reserved concurrency of 1 does on AWS.
    lock = open(events_dir(settings) / ".deliver.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        hosting, config = LocalHosting(settings.home, conn, runtime_port=settings.runtime_port), deploy_config(settings)
        for path in pending_events(settings):
            try:
                event = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                event = None  # the handler answers "ignored" with the reason, and the file is set aside
            result = deploy.handle(event, config, hosting)
            _check_deployed(hosting, result)
            _set_aside(path, event, result)
            log.info("event %s: %s", path.name, result.get("reason") or result["status"])
            results.append({"event": path.name, **result})
    finally:
        conn.close()
        lock.close()  # releases the lock
    return results


class DeploymentFailed(RuntimeError):
    """The handler asked for the version, but the endpoint did not take it (the reason says why)."""


def _check_deployed(hosting, result: dict) -> None:
    """What CloudWatch would show on AWS, checked here at once: an endpoint that was created or
    updated must run the config the handler asked for."""
    if result["status"] not in ("created", "updated"):
        return
    endpoint = hosting.describe_endpoint(EndpointName=result["endpoint"])
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
