"""The model registry on SageMaker: list the versions a pipeline registered, read their
measured accuracy, approve or reject them.

Approving a version is what deploys it: SageMaker emits a "SageMaker Model Package State
Change" event that the deploy handler acts on. The accuracy shown is the one the Evaluate step
wrote (``evaluation.json``, SageMaker's model-quality format) and that the Register step linked
as the package's ``ModelMetrics.ModelQuality.Statistics``: the number that passed the gate.

The Register step also links every file of the evaluation (the report, the plots, the worst
mistakes, the predictions) as the package's ``CustomerMetadataProperties``; ``file_links``
turns each into an HTTPS link a person can open for an hour (a presigned GET: made here, with the
caller's credentials, without a call to AWS).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from evaluation.outputs import linked_files
from mlops_rules.approvals import APPROVAL_STATUSES, DEFAULT_APPROVAL_STATUS, MAX_COMMENT_CHARS, VERBS
from mlops_rules.model_versions import ModelVersion
from pipeline.aws.clients import AwsClients
from pipeline.aws.errors import BackendError, aws_errors
from pipeline.aws.upload import head_object, split_object_uri
from pipeline.registries import Decided

log = logging.getLogger(__name__)

# What an approver may set: every status but the one a new version starts in.
DECISIONS = tuple(status for status in APPROVAL_STATUSES if status != DEFAULT_APPROVAL_STATUS)
LINK_EXPIRES_S = 3600
# How a browser should show what a link opens (S3 keeps whatever type the job's upload gave):
# plots and the report in the page, the markdown and JSON Lines as text rather than a download.
INLINE_CONTENT_TYPES = {".png": "image/png", ".json": "application/json", ".md": "text/plain; charset=utf-8",
                        ".jsonl": "text/plain; charset=utf-8"}


def _missing_group(group: str, region: str) -> str:
    return (f"model package group {group} does not exist in {region}: check SENTIMENT_MLOPS_MODEL_PACKAGE_GROUP, "
            f"or run the pipeline until it registers a model")


def _check_status(status: str | None, allowed: tuple[str, ...]) -> None:
    if status is not None and status not in allowed:
        raise BackendError(f"unknown approval status {status!r}: use one of {', '.join(allowed)}")


def _summaries(clients: AwsClients, group: str, status: str | None = None) -> list[dict[str, Any]]:
    """The group's package summaries (highest version first); a missing group is an error."""
    request: dict[str, Any] = {"ModelPackageGroupName": group, "SortBy": "CreationTime", "SortOrder": "Descending"}
    if status:
        request["ModelApprovalStatus"] = status
    summaries: list[dict[str, Any]] = []
    with aws_errors(f"listing model packages of {group}", not_found=_missing_group(group, clients.region)):
        for page in clients.sagemaker.get_paginator("list_model_packages").paginate(**request):
            summaries.extend(page.get("ModelPackageSummaryList", []))
        if not summaries:  # an empty group, or no group at all: only the second is an error
            clients.sagemaker.describe_model_package_group(ModelPackageGroupName=group)
    summaries.sort(key=lambda s: s.get("ModelPackageVersion") or 0, reverse=True)
    return summaries


def read_report(clients: AwsClients, metrics_uri: str | None) -> Any:
    """The evaluation report at ``metrics_uri``; ``None`` when there is none or it cannot be read
    (a listing should not fail because one old report was deleted)."""
    if not metrics_uri:
        return None
    try:
        bucket, key = split_object_uri(metrics_uri)
        return json.loads(clients.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except (BackendError, ClientError, BotoCoreError, ValueError) as error:
        log.warning("cannot read the evaluation report %s: %s", metrics_uri, error)
        return None


def file_links(clients: AwsClients, properties: Mapping[str, str], expires_s: int = LINK_EXPIRES_S) -> list[dict[str, Any]]:
    """Each property that links a file in S3 (``evaluation.outputs.linked_files``) as ``name``,
    ``uri`` (s3://), ``url`` (an HTTPS GET presigned for ``expires_s`` seconds, to open in a browser;
    it lasts no longer than the credentials that signed it) and ``exists`` (False when S3 says the
    object is not there, as for the training curves of a model trained before the artifact carried
    them; None when it cannot tell)."""
    links = []
    for name, uri in linked_files(properties):
        link: dict[str, Any] = {"name": name, "uri": uri, "url": None, "exists": None}
        try:
            bucket, key = split_object_uri(uri)
        except BackendError:
            links.append(link)
            continue
        params = {"Bucket": bucket, "Key": key, "ResponseContentDisposition": "inline"}
        kind = next((kind for suffix, kind in INLINE_CONTENT_TYPES.items() if key.endswith(suffix)), None)
        if kind:
            params["ResponseContentType"] = kind
        link["url"] = clients.s3.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s)
        try:
            link["exists"] = head_object(clients, bucket, key) is not None
        except BackendError as error:  # no permission to look, say: the link may still work
            log.warning("cannot tell whether %s exists: %s", uri, error)
        links.append(link)
    return links


def _describe(clients: AwsClients, arn: str) -> ModelVersion:
    with aws_errors(f"reading model package {arn}", not_found=f"no model package {arn}"):
        return ModelVersion.from_description(clients.sagemaker.describe_model_package(ModelPackageName=arn))


def version_arn(clients: AwsClients, group: str, version: int) -> str:
    summaries = _summaries(clients, group)
    for summary in summaries:
        if summary.get("ModelPackageVersion") == version:
            return summary["ModelPackageArn"]
    known = ", ".join(str(s.get("ModelPackageVersion")) for s in reversed(summaries)) or "none yet"
    raise BackendError(f"model package group {group} has no version {version}: its versions are {known}")


@dataclass(frozen=True)
class SageMakerRegistry:
    """SageMaker's model registry for one group, as ``pipeline.registries.RegistryStore``. A
    listing costs one DescribeModelPackage per version (and the caller's one S3 read per report)."""

    clients: AwsClients
    group: str

    def versions(self, status: str | None = None) -> list[ModelVersion]:
        _check_status(status, APPROVAL_STATUSES)
        return [_describe(self.clients, s["ModelPackageArn"]) for s in _summaries(self.clients, self.group, status)]

    def version(self, number: int) -> ModelVersion:
        return _describe(self.clients, version_arn(self.clients, self.group, int(number)))

    def report(self, version: ModelVersion) -> Any:
        return read_report(self.clients, version.metrics_uri)

    def links(self, version: ModelVersion) -> list[dict[str, Any]]:
        """Each with an HTTPS ``url`` presigned for an hour (``file_links``)."""
        return file_links(self.clients, version.customer_metadata_properties)

    def details(self, version: ModelVersion) -> dict[str, Any]:
        return {"links_expire_s": LINK_EXPIRES_S}

    def decide(self, number: int, verb: str, comment: str | None, *, deliver: bool = True) -> Decided:
        """UpdateModelPackage; an approval reaches the deploy function through EventBridge."""
        return Decided(set_approval(self.clients, self.group, number, VERBS[verb], comment or ""))


def set_approval(clients: AwsClients, group: str, version: int, status: str, comment: str = "") -> ModelVersion:
    """Approve or reject one version (``Approved`` deploys it through the approval event);
    ``comment`` becomes the ApprovalDescription. Returns the version as read back."""
    _check_status(status, DECISIONS)
    if status is None:
        raise BackendError(f"no approval status: use one of {', '.join(DECISIONS)}")
    if len(comment) > MAX_COMMENT_CHARS:
        raise BackendError(f"the approval comment has {len(comment)} characters: SageMaker keeps at most "
                           f"{MAX_COMMENT_CHARS}")
    arn = version_arn(clients, group, int(version))
    request: dict[str, Any] = {"ModelPackageArn": arn, "ModelApprovalStatus": status}
    if comment:
        request["ApprovalDescription"] = comment
    with aws_errors(f"setting {group} version {version} to {status}", not_found=f"no model package {arn}"):
        clients.sagemaker.update_model_package(**request)
    log.info("%s version %s is now %s", group, version, status)
    return _describe(clients, arn)
