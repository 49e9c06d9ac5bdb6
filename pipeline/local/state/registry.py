"""The local model registry: model package groups and versions, as SageMaker's registry keeps
them, in the local state database.

Versions are 1, 2, … per group, allocated under the write lock so that two executions
registering at once get consecutive versions. Every approval change is kept in a history table
and comes back with the EventBridge "SageMaker Model Package State Change" event that AWS would
send, so that the local deployment runs the very handler that runs in Lambda.
"""
from __future__ import annotations

import getpass
import json
import re
import sqlite3
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mlops_rules.approvals import APPROVAL_STATUSES, DEFAULT_APPROVAL_STATUS, EVENT_DETAIL_TYPE, EVENT_SOURCE
from mlops_rules.model_versions import ModelVersion
from pipeline.definition import report_accuracy
from pipeline.definition.contracts import customer_metadata_problem
from pipeline.local.aws_identity import ACCOUNT, REGION, model_package_arn, sagemaker_arn
from pipeline.local.state.db import Clock, StateError, iso, parse_iso, to_json, utc_now, write_transaction

GROUP_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # SageMaker's ModelPackageGroupName pattern
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class RegistryError(StateError):
    """A registry request that cannot be done; the message says what to do instead."""


@dataclass(frozen=True)
class ModelPackage:
    group_name: str
    version: int
    arn: str
    artifact_uri: str
    artifact_sha256: str
    metrics: dict[str, Any]
    metrics_uri: str | None
    inference_specification: dict[str, Any]
    approval_status: str
    approval_description: str | None
    execution_id: str | None
    execution_arn: str | None
    description: str | None
    creation_time: str
    last_modified_time: str
    # CustomerMetadataProperties as registered (the Register step's links to the evaluation's files).
    customer_metadata_properties: dict[str, str] = field(default_factory=dict)
    # DriftCheckBaselines as registered: where the monitoring job's baseline lies.
    drift_check_baselines: dict[str, Any] = field(default_factory=dict)

    def model_version(self) -> ModelVersion:
        """The version in the shape both registries answer with (mlops_rules.model_versions)."""
        containers = self.inference_specification.get("Containers") or [{}]
        return ModelVersion(self.group_name, self.version, self.arn, self.approval_status, self.creation_time,
                            self.artifact_uri, containers[0].get("Image"), self.metrics_uri, self.approval_description,
                            self.execution_arn, dict(self.customer_metadata_properties))


@dataclass(frozen=True)
class Approval:
    """One row of a package's approval history; ``from_status`` is None for the registration."""

    group_name: str
    version: int
    changed_at: str
    approver: str
    from_status: str | None
    to_status: str
    comment: str | None


@dataclass(frozen=True)
class ApprovalChange:
    """What ``update_approval`` did: the package as it now is, and the event to deliver
    (None when nothing changed, so nothing is delivered twice)."""

    package: ModelPackage
    event: dict[str, Any] | None

    @property
    def changed(self) -> bool:
        return self.event is not None


def _package(row: sqlite3.Row) -> ModelPackage:
    return ModelPackage(
        row["group_name"], row["version"], row["arn"], row["artifact_uri"], row["artifact_sha256"],
        json.loads(row["metrics"]), row["metrics_uri"], json.loads(row["inference_specification"]),
        row["approval_status"], row["approval_description"], row["execution_id"], row["execution_arn"],
        row["description"], row["creation_time"], row["last_modified_time"], json.loads(row["customer_metadata_properties"]),
        json.loads(row["drift_check_baselines"]))


_SELECT_PACKAGE = ("SELECT p.*, e.arn AS execution_arn FROM model_packages p "
                   "LEFT JOIN executions e ON e.execution_id = p.execution_id")


def _check_status(status: str) -> None:
    if status not in APPROVAL_STATUSES:
        raise RegistryError(f"{status!r} is not a model approval status; use one of {', '.join(APPROVAL_STATUSES)}")


def _check_group(group_name: str) -> None:
    if not GROUP_NAME.match(group_name):
        raise RegistryError(f"{group_name!r} is not a valid model package group name; use 1-63 letters, "
                            "digits and single hyphens, starting and ending with a letter or digit")


class ModelRegistry:
    """Model packages in one connection's database (one registry per thread or process)."""

    def __init__(self, conn: sqlite3.Connection, *, clock: Clock = utc_now, region: str = REGION,
                 event_id: Callable[[], str] = lambda: str(uuid.uuid4())) -> None:
        self.conn, self.clock, self.region, self.event_id = conn, clock, region, event_id

    def register(self, group_name: str, artifact_uri: str, artifact_sha256: str, metrics: Mapping[str, Any], *,
                 approval_status: str = DEFAULT_APPROVAL_STATUS, inference_specification: Mapping[str, Any],
                 execution_id: str | None = None, description: str | None = None, metrics_uri: str | None = None,
                 customer_metadata_properties: Mapping[str, str] | None = None,
                 drift_check_baselines: Mapping[str, Any] | None = None,
                 registered_by: str = "pipeline") -> ModelPackage:
        """A new version in the group (created on first use), all in one transaction: the group,
        the package and its first history row land together or not at all.

        ``customer_metadata_properties`` are refused as CreateModelPackage refuses them (too many,
        too long, characters it does not take), so a local run fails where the AWS one would."""
        _check_group(group_name)
        _check_status(approval_status)
        if not SHA256.match(artifact_sha256):
            raise RegistryError(f"artifact sha256 {artifact_sha256!r} is not 64 lowercase hex digits; pass the "
                                "sha256 of model.tar.gz")
        properties = dict(customer_metadata_properties or {})
        problem = customer_metadata_problem(properties)
        if problem:
            raise RegistryError(f"cannot register in {group_name!r}: {problem}")
        now = iso(self.clock())
        with write_transaction(self.conn):
            self.conn.execute("INSERT OR IGNORE INTO model_package_groups VALUES (?,?,?)",
                              (group_name, sagemaker_arn("model-package-group", group_name, region=self.region), now))
            version = self._next_version(group_name)
            try:
                self.conn.execute(
                    "INSERT INTO model_packages (group_name, version, arn, artifact_uri, artifact_sha256, metrics, "
                    "metrics_uri, inference_specification, approval_status, execution_id, description, creation_time, "
                    "last_modified_time, customer_metadata_properties, drift_check_baselines) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (group_name, version, model_package_arn(group_name, version, region=self.region), artifact_uri,
                     artifact_sha256, to_json(dict(metrics)), metrics_uri, to_json(dict(inference_specification)),
                     approval_status, execution_id, description, now, now, to_json(properties),
                     to_json(dict(drift_check_baselines or {}))))
            except sqlite3.IntegrityError as error:
                raise RegistryError(f"cannot register in {group_name!r}: {error}; pass the id of an existing "
                                    "execution, or none") from error
            _insert_history(self.conn, group_name, version, now, registered_by, None, approval_status, description)
        return self.get(group_name, version)

    def _next_version(self, group_name: str) -> int:
        """The next version of the group; only correct inside a write transaction."""
        row = self.conn.execute("SELECT max(version) FROM model_packages WHERE group_name = ?", (group_name,)).fetchone()
        return int(row[0] or 0) + 1

    def get(self, group_name: str, version: int) -> ModelPackage:
        row = self.conn.execute(_SELECT_PACKAGE + " WHERE p.group_name = ? AND p.version = ?",
                                (group_name, version)).fetchone()
        if row is None:
            raise RegistryError(self._missing(group_name, version))
        return _package(row)

    def get_by_arn(self, arn: str) -> ModelPackage:
        """A version by its ARN, as CreateModel's ``ModelPackageName`` names it."""
        row = self.conn.execute(_SELECT_PACKAGE + " WHERE p.arn = ?", (arn,)).fetchone()
        if row is None:
            raise RegistryError(f"no model package {arn!r} in the local registry; list the versions to see their ARNs")
        return _package(row)

    def _missing(self, group_name: str, version: int) -> str:
        row = self.conn.execute("SELECT min(version), max(version) FROM model_packages WHERE group_name = ?",
                                (group_name,)).fetchone()
        if row[0] is None:
            return f"model package group {group_name!r} has no versions; register a model first"
        return f"no version {version} in model package group {group_name!r}; it has versions {row[0]} to {row[1]}"

    def groups(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM model_package_groups ORDER BY name")]

    def latest(self, group_name: str, status: str | None = "Approved") -> ModelPackage | None:
        """The newest version with this status (Approved by default: what a deployment wants)."""
        found = self.list_packages(group_name, status)
        return found[0] if found else None

    def list_packages(self, group_name: str, status: str | None = None) -> list[ModelPackage]:
        """Versions newest first, optionally only those with one approval status."""
        if status is not None:
            _check_status(status)
        sql = _SELECT_PACKAGE + " WHERE p.group_name = ?" + (" AND p.approval_status = ?" if status else "")
        rows = self.conn.execute(sql + " ORDER BY p.version DESC", [a for a in (group_name, status) if a])
        return [_package(r) for r in rows]

    def history(self, group_name: str, version: int | None = None) -> list[Approval]:
        """Approval changes, oldest first, for one version or the whole group."""
        sql = "SELECT * FROM approval_history WHERE group_name = ?" + (" AND version = ?" if version else "")
        rows = self.conn.execute(sql + " ORDER BY seq", [a for a in (group_name, version) if a])
        return [Approval(r["group_name"], r["version"], r["changed_at"], r["approver"], r["from_status"],
                         r["to_status"], r["comment"]) for r in rows]

    def update_approval(self, group_name: str, version: int, status: str, *, approver: str | None = None,
                        comment: str | None = None) -> ApprovalChange:
        """Set a version's approval status, record who did it, and return the state-change event.
        Setting the status it already has changes nothing and returns no event."""
        _check_status(status)
        now = iso(self.clock())
        with write_transaction(self.conn):
            current = self.get(group_name, version)
            if current.approval_status == status:
                return ApprovalChange(current, None)
            self.conn.execute("UPDATE model_packages SET approval_status = ?, approval_description = ?, "
                              "last_modified_time = ? WHERE group_name = ? AND version = ?",
                              (status, comment, now, group_name, version))
            _insert_history(self.conn, group_name, version, now, approver or _user(), current.approval_status,
                            status, comment)
        package = self.get(group_name, version)
        fields = ["ModelApprovalStatus"] + (["ApprovalDescription"] if comment else [])
        return ApprovalChange(package, self.event(package, updated_fields=fields))

    def event(self, package: ModelPackage, *, updated_fields: list[str] | None = None) -> dict[str, Any]:
        """The EventBridge event for this package's current state (call it after ``register``
        too: SageMaker sends one when a version is created)."""
        return state_change_event(package, event_id=self.event_id(), region=self.region, updated_fields=updated_fields)

    list = list_packages  # registry.list(group, status=...); defined last so that the annotations above mean the builtin


def _insert_history(conn: sqlite3.Connection, group_name: str, version: int, when: str, approver: str,
                    from_status: str | None, to_status: str, comment: str | None) -> None:
    conn.execute("INSERT INTO approval_history (group_name, version, changed_at, approver, from_status, to_status, "
                 "comment) VALUES (?,?,?,?,?,?,?)", (group_name, version, when, approver, from_status, to_status, comment))


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (some containers)
        return "unknown"


def _event_time(stamp: str) -> str:
    """EventBridge writes times to the second: 2021-02-24T17:00:14Z."""
    return parse_iso(stamp).strftime("%Y-%m-%dT%H:%M:%SZ")


def _customer_metadata(package: ModelPackage) -> dict[str, str]:
    """String-to-string properties (SageMaker's CustomerMetadataProperties): those the package was
    registered with (on AWS the event carries only these: the links to the evaluation's files),
    and what the local registry adds, which a deploy handler could check without fetching
    evaluation.json. The registry's own facts win a clash of keys."""
    properties = {**package.customer_metadata_properties, "ArtifactSha256": package.artifact_sha256}
    accuracy = report_accuracy(package.metrics)
    if accuracy is not None:
        properties["Accuracy"] = str(accuracy)
    if package.execution_id:
        properties["PipelineExecutionId"] = package.execution_id
    return properties


def state_change_event(package: ModelPackage, *, event_id: str, region: str = REGION,
                       updated_fields: list[str] | None = None) -> dict[str, Any]:
    """The "SageMaker Model Package State Change" event, in the shape of the example in
    SageMaker's EventBridge reference (versioned package: its name is the group's name)."""
    detail: dict[str, Any] = {
        "ModelPackageGroupName": package.group_name,
        "ModelPackageVersion": package.version,
        "ModelPackageArn": package.arn,
        "ModelPackageName": package.group_name,
        "CreationTime": _event_time(package.creation_time),
        "InferenceSpecification": package.inference_specification,
        "ModelPackageStatus": "Completed",
        "ModelPackageStatusDetails": {"ValidationStatuses": [], "ImageScanStatuses": []},
        "CertifyForMarketplace": False,
        "ModelApprovalStatus": package.approval_status,
        "CustomerMetadataProperties": _customer_metadata(package),
        "LastModifiedTime": _event_time(package.last_modified_time),
    }
    if package.description:
        detail["ModelPackageDescription"] = package.description
    if package.approval_description:
        detail["ApprovalDescription"] = package.approval_description
    if package.execution_arn:
        detail["MetadataProperties"] = {"GeneratedBy": package.execution_arn}
    if package.metrics_uri:
        detail["ModelMetrics"] = {"ModelQuality": {"Statistics": {"ContentType": "application/json",
                                                                  "S3Uri": package.metrics_uri}}}
    if updated_fields:
        detail["UpdatedModelPackageFields"] = list(updated_fields)
    return {"version": "0", "id": event_id, "detail-type": EVENT_DETAIL_TYPE, "source": EVENT_SOURCE,
            "account": ACCOUNT, "time": _event_time(package.last_modified_time), "region": region,
            "resources": [package.arn], "detail": detail}
