"""The model registry as the commands use it, whichever backend holds it: the local SQLite
registry (``pipeline.review.local_registry``) or SageMaker's (``pipeline.aws.registry``). Both
answer with ``ModelVersion`` (mlops_rules), so ``registry list|show|approve|reject`` are written
once and print the same fields for both.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from mlops_rules.model_versions import ModelVersion
from pipeline.definition import report_accuracy, report_accuracy_by_dataset


@dataclass(frozen=True)
class Decided:
    """A decision recorded: the version as read back, and what the backend did beside it (the
    local one delivers the approval event to the deploy handler at once and says how it went)."""

    version: ModelVersion
    extras: dict[str, Any] = field(default_factory=dict)


class RegistryStore(Protocol):
    """One model package group's versions."""

    def versions(self, status: str | None = None) -> list[ModelVersion]:
        """Newest first; only those with approval ``status`` when given."""
        ...

    def version(self, number: int) -> ModelVersion:
        """One version; an error that names the versions there are when it is not one of them."""
        ...

    def report(self, version: ModelVersion) -> Mapping[str, Any] | None:
        """The evaluation report the gate read; None when there is none to read."""
        ...

    def links(self, version: ModelVersion) -> list[dict[str, Any]]:
        """The evaluation's files the version links, each with where a person opens it."""
        ...

    def details(self, version: ModelVersion) -> dict[str, Any]:
        """What this backend knows of a version beyond the shared fields (``registry show``)."""
        ...

    def decide(self, number: int, verb: str, comment: str | None, *, deliver: bool = True) -> Decided:
        """Approve or reject (``verb`` of mlops_rules.approvals.VERBS), with a checked comment."""
        ...


def version_summary(version: ModelVersion, report: Mapping[str, Any] | None) -> dict[str, Any]:
    """The fields ``registry list --json`` prints for a version, the same for both backends."""
    return {"group": version.group, "version": version.version, "arn": version.arn, "status": version.status,
            "created": version.created, "artifact": version.artifact, "image": version.image,
            "metrics_uri": version.metrics_uri, "execution_id": version.execution_id,
            "approval_description": version.approval_description,
            "accuracy": report_accuracy(report), "accuracy_by_dataset": report_accuracy_by_dataset(report),
            "customer_metadata_properties": dict(version.customer_metadata_properties)}


def stop_serving_problem(store: RegistryStore, version: int, verb: str) -> str | None:
    """Why a decision needs the approver to confirm that serving stops, or None: rejecting the
    only Approved version leaves the deploy function nothing to roll back to, so it deletes the
    endpoint that serves it (lambda/deploy.py take_back)."""
    if verb != "reject":
        return None
    approved = [v.version for v in store.versions("Approved")]
    if approved != [version]:
        return None
    return (f"version {version} is the only Approved version: rejecting it stops the endpoint that serves it, and "
            "nothing serves until a version is approved")
