"""The deploy handler: an approved model package becomes the endpoint, or updates it.

EventBridge delivers "SageMaker Model Package State Change" events (rule: source
``aws.sagemaker``, that detail-type, ``ModelApprovalStatus`` ``Approved``, the project's model
package group) to ``handler``. For an approved version it makes sure that:

1. a SageMaker Model exists for the package (``<endpoint>-v<version>``, from the package ARN, so
   the image, the artifact and ``SAGEMAKER_PROGRAM`` come from the registry, not from here);
2. an endpoint config exists for that model and the configured instance type and count
   (``<endpoint>-v<version>-<settings hash>``);
3. the endpoint exists and runs that config: it is created, or updated in place (SageMaker
   keeps the old variant serving until the new one is healthy), or left alone when it already
   runs it.

Every step checks before it creates, so a repeated delivery (EventBridge delivers at least
once) changes nothing. The package's status is read again before acting, so a late or retried
event for a version rejected since deploys nothing. Approving an older version deploys it:
approval is the rollback path.
An event this handler should not act on (another group, a rejection, a malformed event) is
answered ``ignored`` with the reason and is not raised, since a retry could not change it. An
endpoint that is busy (Creating, Updating, ...) raises ``EndpointBusy`` so that Lambda's retry
of the asynchronous invocation tries again later.

Runs in AWS Lambda with only the standard library and boto3 (the runtime provides it).
Settings come from the function's environment: ``ENDPOINT_NAME``, ``MODEL_PACKAGE_GROUP``,
``EXECUTION_ROLE_ARN`` (the role the endpoint's model runs as), ``INSTANCE_TYPE``
(default ``ml.m5.large``) and ``INSTANCE_COUNT`` (default 1).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

log = logging.getLogger("deploy")
log.setLevel(logging.INFO)

EVENT_SOURCE = "aws.sagemaker"
EVENT_DETAIL_TYPE = "SageMaker Model Package State Change"
BUSY_STATUSES = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")
_ARN = re.compile(r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:model-package/[A-Za-z0-9-]{1,63}/(\d+)$")
_NAME = re.compile(r"^[A-Za-z0-9](-*[A-Za-z0-9]){0,62}$")
NAME_LIMIT = 63


class EventError(ValueError):
    """An event the handler cannot read; the message says what is wrong with it."""


class DeployError(RuntimeError):
    """A deployment that cannot go on without someone's action; the message says which."""


class EndpointBusy(DeployError):
    """The endpoint is changing already: retried later by Lambda's asynchronous retries."""


@dataclass(frozen=True)
class DeployConfig:
    endpoint_name: str
    model_package_group: str
    execution_role_arn: str
    instance_type: str = "ml.m5.large"
    instance_count: int = 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "DeployConfig":
        missing = [n for n in ("ENDPOINT_NAME", "MODEL_PACKAGE_GROUP", "EXECUTION_ROLE_ARN") if not environ.get(n)]
        if missing:
            raise DeployError(f"the function's environment lacks {', '.join(missing)}: set them in the template")
        try:
            count = int(environ.get("INSTANCE_COUNT", "1"))
        except ValueError:
            raise DeployError(f"INSTANCE_COUNT {environ['INSTANCE_COUNT']!r} is not a whole number") from None
        config = cls(environ["ENDPOINT_NAME"], environ["MODEL_PACKAGE_GROUP"], environ["EXECUTION_ROLE_ARN"],
                     environ.get("INSTANCE_TYPE") or "ml.m5.large", count)
        if not _NAME.match(config.endpoint_name) or len(config.endpoint_name) > NAME_LIMIT - 20:
            raise DeployError(f"ENDPOINT_NAME {config.endpoint_name!r} must be letters, digits and hyphens, "
                              f"at most {NAME_LIMIT - 20} characters (room for the version suffixes)")
        if count < 1:
            raise DeployError("INSTANCE_COUNT must be at least 1")
        return config

    def variant_hash(self) -> str:
        """What the endpoint config holds besides the model: a change makes a new config."""
        return hashlib.sha256(f"{self.instance_type}|{self.instance_count}".encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Approval:
    package_arn: str
    group: str
    version: int
    status: str


def parse_event(event: Any) -> Approval:
    """The model package and its new status, from an EventBridge event; EventError otherwise."""
    if not isinstance(event, Mapping):
        raise EventError(f"the event is a {type(event).__name__}, not a JSON object")
    if event.get("source") != EVENT_SOURCE or event.get("detail-type") != EVENT_DETAIL_TYPE:
        raise EventError(f"not a {EVENT_DETAIL_TYPE!r} event from {EVENT_SOURCE} "
                         f"(source {event.get('source')!r}, detail-type {event.get('detail-type')!r})")
    detail = event.get("detail")
    if not isinstance(detail, Mapping):
        raise EventError("the event has no detail object")
    arn, status, group = detail.get("ModelPackageArn"), detail.get("ModelApprovalStatus"), detail.get("ModelPackageGroupName")
    match = _ARN.match(arn) if isinstance(arn, str) else None
    if match is None:
        raise EventError(f"detail.ModelPackageArn {arn!r} is not a model package version ARN")
    if not isinstance(status, str) or not isinstance(group, str):
        raise EventError("detail lacks ModelApprovalStatus or ModelPackageGroupName")
    return Approval(arn, group, int(match.group(1)), status)


def _exists(call, **kwargs) -> dict | None:
    """The description, or None when SageMaker says there is no such resource."""
    try:
        return call(**kwargs)
    except Exception as error:  # botocore's ClientError; its class lives on each client
        message = str(error)
        if getattr(error, "response", {}).get("Error", {}).get("Code") == "ValidationException" and (
                "Could not find" in message or "does not exist" in message or "not found" in message.lower()):
            return None
        raise


def _ensure_model(sagemaker, name: str, approval: Approval, config: DeployConfig) -> bool:
    existing = _exists(sagemaker.describe_model, ModelName=name)
    if existing is not None:
        made_from = (existing.get("PrimaryContainer") or {}).get("ModelPackageName")
        if made_from != approval.package_arn:  # same version number, another group's package
            raise DeployError(f"model {name} exists already for {made_from or 'something else'}, not "
                              f"{approval.package_arn}: delete that model, or deploy under another ENDPOINT_NAME")
        return False
    sagemaker.create_model(ModelName=name, ExecutionRoleArn=config.execution_role_arn,
                           PrimaryContainer={"ModelPackageName": approval.package_arn},
                           Tags=[{"Key": "ModelPackageArn", "Value": approval.package_arn}])
    return True


def _ensure_endpoint_config(sagemaker, name: str, model: str, config: DeployConfig) -> bool:
    if _exists(sagemaker.describe_endpoint_config, EndpointConfigName=name) is not None:
        return False
    sagemaker.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": model, "InstanceType": config.instance_type,
        "InitialInstanceCount": config.instance_count, "InitialVariantWeight": 1.0}])
    return True


def deploy(approval: Approval, config: DeployConfig, sagemaker) -> dict[str, Any]:
    """Make the endpoint run the approved version; returns what was done."""
    model = f"{config.endpoint_name}-v{approval.version}"
    endpoint_config = f"{model}-{config.variant_hash()}"
    created_model = _ensure_model(sagemaker, model, approval, config)
    created_config = _ensure_endpoint_config(sagemaker, endpoint_config, model, config)
    current = _exists(sagemaker.describe_endpoint, EndpointName=config.endpoint_name)
    if current is None:
        sagemaker.create_endpoint(EndpointName=config.endpoint_name, EndpointConfigName=endpoint_config)
        action = "created"
    elif current.get("EndpointConfigName") == endpoint_config and current.get("EndpointStatus") != "Failed":
        action = "unchanged"
    elif current.get("EndpointStatus") in BUSY_STATUSES:
        raise EndpointBusy(f"endpoint {config.endpoint_name} is {current['EndpointStatus']}; deploying version "
                           f"{approval.version} is retried when it settles")
    elif current.get("EndpointStatus") == "Failed":
        raise DeployError(f"endpoint {config.endpoint_name} is Failed ({current.get('FailureReason', 'no reason given')}): "
                          "delete it, then approve the version again")
    else:
        sagemaker.update_endpoint(EndpointName=config.endpoint_name, EndpointConfigName=endpoint_config)
        action = "updated"
    return {"status": action, "endpoint": config.endpoint_name, "endpoint_config": endpoint_config, "model": model,
            "model_package_arn": approval.package_arn, "version": approval.version,
            "previous_endpoint_config": current.get("EndpointConfigName") if current else None,
            "created_model": created_model, "created_endpoint_config": created_config}


def handle(event: Any, config: DeployConfig, sagemaker) -> dict[str, Any]:
    """The handler's decision, with its dependencies given (what the tests and the local runtime call)."""
    try:
        approval = parse_event(event)
    except EventError as error:
        return {"status": "ignored", "reason": str(error)}
    if approval.group != config.model_package_group:
        return {"status": "ignored", "reason": f"model package group {approval.group!r} is not "
                                               f"{config.model_package_group!r}"}
    if approval.status != "Approved":
        return {"status": "ignored", "reason": f"version {approval.version} is {approval.status}, not Approved"}
    # The event may be old (a retry, a late delivery): act on the package's status now.
    now = sagemaker.describe_model_package(ModelPackageName=approval.package_arn).get("ModelApprovalStatus")
    if now != "Approved":
        return {"status": "ignored", "reason": f"version {approval.version} was approved, but is {now} now"}
    return deploy(approval, config, sagemaker)


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """AWS Lambda's entry point (``deploy.handler``)."""
    import boto3

    result = handle(event, DeployConfig.from_env(), boto3.client("sagemaker"))
    log.info("%s", json.dumps(result))
    return result
