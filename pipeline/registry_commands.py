"""``sentiment-mlops registry ...``: list, show, approve and reject model versions.

The same commands work on the local registry (SQLite under the home folder, the default) and
on SageMaker's model registry (``--backend sagemaker``), and print the same fields, so a script
written against one works against the other.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.definition import report_accuracy
from pipeline.settings import Settings

APPROVAL_VERBS = {"approve": "Approved", "reject": "Rejected"}


def _local_summary(package) -> dict[str, Any]:
    return {"version": package.version, "status": package.approval_status, "accuracy": report_accuracy(package.metrics),
            "arn": package.arn, "created": package.creation_time, "artifact": package.artifact_uri,
            "execution_id": package.execution_id, "approval_description": package.approval_description}


def _local_registry(settings: Settings):
    from pipeline.local.db import open_state
    from pipeline.local.registry import ModelRegistry

    return ModelRegistry(open_state(settings.home))


def list_versions(settings: Settings, backend: str, status: str | None) -> list[dict[str, Any]]:
    if backend == "sagemaker":
        from pipeline.aws import list_model_packages, make_clients

        return list_model_packages(make_clients(settings), settings.model_package_group, status)
    registry = _local_registry(settings)
    return [_local_summary(p) for p in registry.list_packages(settings.model_package_group, status)]


def show_version(settings: Settings, backend: str, version: int) -> dict[str, Any]:
    if backend == "sagemaker":
        from pipeline.aws import describe_model_package, make_clients

        return describe_model_package(make_clients(settings), settings.model_package_group, version)
    registry = _local_registry(settings)
    package = registry.get(settings.model_package_group, version)
    history = [{"when": h.changed_at, "who": h.approver, "from": h.from_status, "to": h.to_status, "comment": h.comment}
               for h in registry.history(settings.model_package_group, version)]
    return {**_local_summary(package), "metrics": package.metrics, "inference_specification": package.inference_specification,
            "history": history}


def set_status(settings: Settings, backend: str, version: int, verb: str, comment: str | None,
               deliver: bool = True) -> dict[str, Any]:
    """Approve or reject. On SageMaker, EventBridge takes the event from there. Locally the
    event is recorded and (unless ``deliver`` is False) handed to the deploy handler at once;
    a deployment that fails leaves the approval in place and says why in ``deployment_error``."""
    from pipeline.local.events import deliver_pending, record_event

    status = APPROVAL_VERBS[verb]
    if backend == "sagemaker":
        from pipeline.aws import make_clients, set_approval

        return set_approval(make_clients(settings), settings.model_package_group, version, status, comment or "")
    change = _local_registry(settings).update_approval(settings.model_package_group, version, status, comment=comment)
    result = _local_summary(change.package)
    result["event"] = str(record_event(settings, change.event)) if change.event else None
    result["deployment"], result["deployment_error"] = [], None
    if deliver:
        try:
            result["deployment"] = deliver_pending(settings)
        except Exception as error:  # the deploy handler's or the hosting's own message, kept to one line
            result["deployment_error"] = f"{type(error).__name__}: {error}".splitlines()[0]
    return result


def artifact_path(settings: Settings, version: int) -> Path:
    """Where a locally registered version's ``model.tar.gz`` lies in the local artifact store."""
    from pipeline.local.store import ArtifactStore

    package = _local_registry(settings).get(settings.model_package_group, version)
    return ArtifactStore(settings.home).path(package.artifact_uri)
