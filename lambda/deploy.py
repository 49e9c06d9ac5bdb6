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
An event this handler should not act on (another group, a malformed event, a rejection of a
version that does not serve) is answered ``ignored`` with the reason and is not raised, since a
retry could not change it.

Rejecting the version that serves takes it back: the endpoint is updated to the newest other
Approved version (the latest approval, by the package's ``LastModifiedTime``; the higher version
for a tie), as an approval given at the moment of the rejection, so that the tags order it after
the rejected one. With no other Approved version, the endpoint is deleted: nothing serves rather
than a rejected model (the CLI and the page ask for confirmation before such a rejection).

The newest approval ends up serving. An endpoint update takes 5 to 15 minutes, far longer than
Lambda's two asynchronous retries (about 1 and 2 minutes), and approving a version that is
already Approved may emit no new event, so an approval that meets a busy endpoint (Creating,
Updating, ...) is not retried by raising: it is put on the retry queue (``RETRY_QUEUE_URL``)
with a delay (1, 2, 4, 8 minutes, then every 15, for about two hours), and the queue hands it
back to this function. Because requeued approvals may come back in any order, the endpoint is
tagged with the approval it follows (``APPROVED_AT_TAG``, ``APPROVED_PACKAGE_TAG``), and an
approval that is not newer is answered ``ignored``: it was superseded. Newer means a later
approval time, to the finest precision there is (the package's ``LastModifiedTime`` from
DescribeModelPackage, read anyway; the event's ``time`` is to the second), then, for two
approvals at the same instant, the higher version: an order with no ties, so two approvals
given at once end with the newer version serving whichever delivery comes last. Only after
``MAX_ATTEMPTS`` does it raise (``EndpointBusy``), which lands it in the failures queue.

Runs in AWS Lambda with the standard library, boto3 (the runtime provides it) and
``mlops_rules``, packaged beside it: the event's names, the package ARN's version and the
names of the resources it makes, which the local registry and a teardown follow too.
Settings come from the function's environment: ``ENDPOINT_NAME``, ``MODEL_PACKAGE_GROUP``,
``EXECUTION_ROLE_ARN`` (the role the endpoint's model runs as), ``INSTANCE_TYPE``
(default ``ml.m5.large``), ``INSTANCE_COUNT`` (default 1), ``RETRY_QUEUE_URL``, and the rollout
(``mlops_rules.rollouts``): ``DEPLOYMENT_MODE``, ``TRAFFIC_STEP_PERCENT``, ``BAKE_SECONDS``,
``TERMINATION_WAIT_SECONDS``, ``MAX_DEPLOYMENT_SECONDS``, ``ROLLBACK_ALARMS``, ``NEW_FLEET_ALARM``;
and data capture: ``CAPTURE_PERCENT`` (0, the default: none) of the invocations, requests and
answers, written by SageMaker under ``CAPTURE_DESTINATION`` (``mlops_rules.capture``).

A shadow challenger (``SHADOW_PERCENT`` above 0): a newly registered version (the rule delivers
PendingManualApproval too) runs beside the serving one as the endpoint config's shadow variant
(``<endpoint>-s<version>-<hash>``, the production variant unchanged; a Model made from the
package's container, ``<endpoint>-v<version>-shadow``). SageMaker copies it the share of requests
its weight gives and captures its answers with the endpoint's; web users never see them. Approving
it deploys it as usual (the new config has no shadow); rejecting it puts the endpoint back on its
production config; a newer registration takes the shadow's place.

An update of the endpoint follows the rollout: UpdateEndpoint's ``DeploymentConfig`` (blue/green,
all at once, a canary or linear steps, a baking period after each, automatic rollback on the
stack's alarms), with the new-fleet alarm first pointed at the new endpoint config. A creation
has nothing to protect and takes none; neither does the rollback a rejection makes, which must
be quick. SageMaker's limits are checked when the settings are read (a canary needs two
instances), so a bad stack parameter fails on the first approval with the reason.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from mlops_rules.approvals import EVENT_DETAIL_TYPE, EVENT_SOURCE, package_version
from mlops_rules.capture import capture_config
from mlops_rules.hosting import (
    BUSY_STATUSES,
    DEFAULT_ENDPOINT_INSTANCE_TYPE,
    SHADOW_VARIANT_NAME,
    VARIANT_NAME,
    model_name,
    model_version,
    shadow_config_name,
    shadow_model_name,
    shadow_version,
    shadow_weight,
)
from mlops_rules.rollouts import NEW_FLEET_DIMENSION, RolloutPolicy

log = logging.getLogger("deploy")
log.setLevel(logging.INFO)

_NAME = re.compile(r"^[A-Za-z0-9](-*[A-Za-z0-9]){0,62}$")
NAME_LIMIT = 63
# The endpoint's record of the approval it follows (tag keys may hold ":"; "aws:" is reserved).
APPROVED_AT_TAG = "sentiment-mlops:approved-at"
APPROVED_PACKAGE_TAG = "sentiment-mlops:model-package-arn"
# How long a requeued approval waits, by attempt; the last repeats. SQS delays at most 900 s.
RETRY_DELAYS_S = (60, 120, 240, 480, 900)
MAX_ATTEMPTS = 12  # 1 + 11 waits: about two hours and a quarter, past any endpoint update


class EventError(ValueError):
    """An event the handler cannot read; the message says what is wrong with it."""


class DeployError(RuntimeError):
    """A deployment that cannot go on without someone's action; the message says which."""


class EndpointBusy(DeployError):
    """The endpoint is changing already: the approval is requeued, or raised once it has waited enough."""


class Requeue(Protocol):
    """Hands an approval back to the function later: the retry queue on AWS, a file locally."""

    def later(self, event: Mapping[str, Any], attempt: int, delay_s: int) -> None: ...


class SqsRequeue:
    """The retry queue: a message ``{"event", "attempt"}`` that becomes visible after the delay."""

    def __init__(self, sqs, queue_url: str) -> None:
        self.sqs, self.queue_url = sqs, queue_url

    def later(self, event: Mapping[str, Any], attempt: int, delay_s: int) -> None:
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps({"event": event, "attempt": attempt}),
                              DelaySeconds=delay_s)


@dataclass(frozen=True)
class DeployConfig:
    endpoint_name: str
    model_package_group: str
    execution_role_arn: str
    instance_type: str = DEFAULT_ENDPOINT_INSTANCE_TYPE
    instance_count: int = 1
    retry_queue_url: str = ""  # empty: a busy endpoint raises at once
    retry_delays_s: tuple[int, ...] = RETRY_DELAYS_S
    rollout: RolloutPolicy = RolloutPolicy()  # how an update shifts traffic, and what rolls it back
    capture_percent: int = 0  # the share of invocations the endpoint captures (0: none)
    capture_destination: str = ""  # where, an s3:// prefix
    shadow_percent: int = 0  # the share of requests a newly registered version gets a copy of (0: no shadow)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> DeployConfig:
        missing = [n for n in ("ENDPOINT_NAME", "MODEL_PACKAGE_GROUP", "EXECUTION_ROLE_ARN") if not environ.get(n)]
        if missing:
            raise DeployError(f"the function's environment lacks {', '.join(missing)}: set them in the template")
        try:
            count = int(environ.get("INSTANCE_COUNT", "1"))
        except ValueError:
            raise DeployError(f"INSTANCE_COUNT {environ['INSTANCE_COUNT']!r} is not a whole number") from None
        try:
            rollout = RolloutPolicy.from_env(environ)
        except ValueError as error:
            raise DeployError(f"{error}: fix the stack's rollout parameters") from None
        capture, shadow = _percent(environ, "CAPTURE_PERCENT"), _percent(environ, "SHADOW_PERCENT")
        config = cls(environ["ENDPOINT_NAME"], environ["MODEL_PACKAGE_GROUP"], environ["EXECUTION_ROLE_ARN"],
                     environ.get("INSTANCE_TYPE") or DEFAULT_ENDPOINT_INSTANCE_TYPE, count, environ.get("RETRY_QUEUE_URL") or "",
                     rollout=rollout, capture_percent=capture,
                     capture_destination=(environ.get("CAPTURE_DESTINATION") or "").rstrip("/"), shadow_percent=shadow)
        if capture and not config.capture_destination.startswith("s3://"):
            raise DeployError(f"CAPTURE_PERCENT is {capture}, but CAPTURE_DESTINATION "
                              f"{config.capture_destination!r} is not an s3:// prefix")
        if not _NAME.match(config.endpoint_name) or len(config.endpoint_name) > NAME_LIMIT - 20:
            raise DeployError(f"ENDPOINT_NAME {config.endpoint_name!r} must be letters, digits and hyphens, "
                              f"at most {NAME_LIMIT - 20} characters (room for the version suffixes)")
        if count < 1:
            raise DeployError("INSTANCE_COUNT must be at least 1")
        problems = rollout.problems(count)
        if problems:
            raise DeployError(f"SageMaker would refuse this rollout: {'; '.join(problems)} (fix the stack's parameters)")
        return config

    def variant_hash(self) -> str:
        """What the endpoint config holds besides the model: a change makes a new config."""
        held = f"{self.instance_type}|{self.instance_count}"
        if self.capture_percent:  # (without capture, the hash configs made before capture existed had)
            held += f"|capture {self.capture_percent} {self.capture_destination}"
        return hashlib.sha256(held.encode()).hexdigest()[:8]

    def retry_delay(self, attempt: int) -> int:
        """How long the ``attempt``-th try waits before the next (1-based)."""
        return self.retry_delays_s[min(attempt, len(self.retry_delays_s)) - 1]


def _percent(environ: Mapping[str, str], name: str) -> int:
    """A whole percentage from the environment (unset: 0); DeployError naming the setting otherwise."""
    text = (environ.get(name) or "0").strip()
    if not text.isdigit() or int(text) > 100:
        raise DeployError(f"{name} {text!r} is not a whole number from 0 to 100")
    return int(text)


@dataclass(frozen=True)
class Approval:
    package_arn: str
    group: str
    version: int
    status: str
    time: datetime  # when the package changed: which of two approvals is the newer

    @property
    def order(self) -> tuple[datetime, int]:
        """What "newer" means between approvals: the time, then the version for a tie."""
        return self.time, self.version


def _parse_time(value: Any) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return parsed if parsed is not None and parsed.tzinfo is not None else None


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
    version = package_version(arn)
    if version is None or not isinstance(arn, str):
        raise EventError(f"detail.ModelPackageArn {arn!r} is not a model package version ARN")
    if not isinstance(status, str) or not isinstance(group, str):
        raise EventError("detail lacks ModelApprovalStatus or ModelPackageGroupName")
    time = _parse_time(event.get("time"))
    if time is None:
        raise EventError(f"the event's time {event.get('time')!r} is not an ISO 8601 time with a zone")
    return Approval(arn, group, version, status, time)


def deliveries(event: Any) -> list[tuple[Any, int]]:
    """The approval events one invocation carries, each with its attempt number: EventBridge
    invokes with one event (attempt 1); the retry queue with SQS records whose bodies are
    ``{"event", "attempt"}`` (a requeued approval), or what lands in the failures queue and is
    moved back for a replay: the same, or Lambda's failure record (``requestPayload``). A record
    that cannot be read is passed on as None (answered "ignored")."""
    records = event.get("Records") if isinstance(event, Mapping) else None
    if not isinstance(records, list):
        return [(event, 1)]
    return [message_delivery(record.get("body") if isinstance(record, Mapping) else None) for record in records]


def message_delivery(text: Any) -> tuple[Any, int]:
    """The event and attempt a queued message's body holds (None when it holds none)."""
    try:
        body = json.loads(text)
    except (TypeError, ValueError):
        return None, 1
    if isinstance(body, Mapping) and "requestPayload" in body:  # Lambda's on-failure destination record
        return body["requestPayload"], 1
    if isinstance(body, Mapping) and "event" in body:
        attempt = body.get("attempt")
        return body["event"], attempt if isinstance(attempt, int) and attempt >= 1 else 1
    return body, 1  # an EventBridge event as it is


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
    capture = {"DataCaptureConfig": capture_config(config.capture_destination, config.capture_percent)} \
        if config.capture_percent else {}
    sagemaker.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": VARIANT_NAME, "ModelName": model, "InstanceType": config.instance_type,
        "InitialInstanceCount": config.instance_count, "InitialVariantWeight": 1.0}], **capture)
    return True


def _followed_approval(sagemaker, endpoint: Mapping[str, Any]) -> tuple[tuple[datetime, int] | None, str | None]:
    """The order (``Approval.order``) and package of the approval the endpoint follows, from its tags."""
    tags = {t["Key"]: t["Value"] for t in sagemaker.list_tags(ResourceArn=endpoint["EndpointArn"]).get("Tags", [])}
    at, package = _parse_time(tags.get(APPROVED_AT_TAG)), tags.get(APPROVED_PACKAGE_TAG)
    if at is None:
        return None, package
    return (at, package_version(package) or 0), package


def _record_approval(sagemaker, endpoint: Mapping[str, Any], approval: Approval) -> None:
    """Tag the endpoint with this approval, unless a newer one was recorded since it was read:
    deliveries may run at once (no reserved concurrency), and the tag must not go backwards."""
    followed, _ = _followed_approval(sagemaker, endpoint)
    if followed is None or followed <= approval.order:
        sagemaker.add_tags(ResourceArn=endpoint["EndpointArn"], Tags=_approval_tags(approval))


def _at_package_time(approval: Approval, package: Mapping[str, Any]) -> Approval:
    """The approval timed by the package's ``LastModifiedTime`` where DescribeModelPackage gives one
    (a datetime through boto3, to the millisecond), since the event's time is to the second."""
    changed = package.get("LastModifiedTime")
    if isinstance(changed, datetime) and changed.tzinfo is not None:
        return replace(approval, time=changed)
    return approval


@contextlib.contextmanager
def _busy_if_changing(endpoint: str, approval: Approval) -> Iterator[None]:
    """SageMaker's refusal to create an endpoint that now exists, or to update one that is
    changing, means another delivery got there first: wait and look again, like any busy endpoint."""
    try:
        yield
    except Exception as error:  # botocore's ClientError
        message = str(error).lower()
        if getattr(error, "response", {}).get("Error", {}).get("Code") == "ValidationException" and (
                "already existing" in message or "in-progress" in message or "in progress" in message):
            raise EndpointBusy(f"endpoint {endpoint} is changing under another deployment; deploying version "
                               f"{approval.version} waits until it settles") from error
        raise


def _approval_tags(approval: Approval) -> list[dict[str, str]]:
    return [{"Key": APPROVED_AT_TAG, "Value": approval.time.isoformat()},
            {"Key": APPROVED_PACKAGE_TAG, "Value": approval.package_arn}]


def _watch_new_fleet(cloudwatch, alarm_name: str, endpoint_config: str) -> None:
    """Point the new-fleet alarm at the config about to be deployed: SageMaker publishes the new
    fleet's metrics with its ``EndpointConfigName`` as a dimension, a name only known now. The
    alarm keeps every other setting the stack gave it (PutMetricAlarm replaces the whole alarm)."""
    if cloudwatch is None:
        raise DeployError(f"NEW_FLEET_ALARM {alarm_name} is set, but no CloudWatch client was given")
    found = cloudwatch.describe_alarms(AlarmNames=[alarm_name], AlarmTypes=["MetricAlarm"]).get("MetricAlarms") or []
    if not found:
        raise DeployError(f"the alarm {alarm_name} (NEW_FLEET_ALARM) does not exist: deploy the stack again")
    alarm = found[0]
    dimensions = [d for d in alarm.get("Dimensions", []) if d["Name"] != NEW_FLEET_DIMENSION]
    kept = {key: alarm[key] for key in ("AlarmDescription", "ActionsEnabled", "OKActions", "AlarmActions",
                                        "InsufficientDataActions", "Statistic", "ExtendedStatistic", "Unit",
                                        "DatapointsToAlarm", "TreatMissingData") if key in alarm}
    cloudwatch.put_metric_alarm(AlarmName=alarm_name, Namespace=alarm["Namespace"], MetricName=alarm["MetricName"],
                                Dimensions=[*dimensions, {"Name": NEW_FLEET_DIMENSION, "Value": endpoint_config}],
                                Period=alarm["Period"], EvaluationPeriods=alarm["EvaluationPeriods"],
                                Threshold=alarm["Threshold"], ComparisonOperator=alarm["ComparisonOperator"], **kept)


def deploy(approval: Approval, config: DeployConfig, sagemaker, cloudwatch=None, guarded: bool = True) -> dict[str, Any]:
    """Make the endpoint run the approved version, unless it follows a later approval already;
    returns what was done. An update follows the rollout policy (``guarded``), its new-fleet
    alarm first pointed at the new config through ``cloudwatch``."""
    model = model_name(config.endpoint_name, approval.version)
    endpoint_config = f"{model}-{config.variant_hash()}"
    current = _exists(sagemaker.describe_endpoint, EndpointName=config.endpoint_name)
    if current is not None:
        followed, package = _followed_approval(sagemaker, current)
        if followed is not None and followed > approval.order:
            return {"status": "ignored", "reason": f"version {approval.version} was approved at "
                    f"{approval.time.isoformat()}, not after {package or 'the version the endpoint runs'} "
                    f"(approved at {followed[0].isoformat()}; at the same instant the higher version wins): superseded"}
        if current.get("EndpointStatus") in BUSY_STATUSES:
            raise EndpointBusy(f"endpoint {config.endpoint_name} is {current['EndpointStatus']}; deploying version "
                               f"{approval.version} waits until it settles")
    created_model = _ensure_model(sagemaker, model, approval, config)
    created_config = _ensure_endpoint_config(sagemaker, endpoint_config, model, config)
    if current is None:
        with _busy_if_changing(config.endpoint_name, approval):  # another delivery created it a moment ago
            sagemaker.create_endpoint(EndpointName=config.endpoint_name, EndpointConfigName=endpoint_config,
                                      Tags=_approval_tags(approval))
        action = "created"
    elif current.get("EndpointStatus") != "Failed" and _runs_already(sagemaker, current, endpoint_config, model, config):
        action = "unchanged"
    elif current.get("EndpointStatus") == "Failed":
        raise DeployError(f"endpoint {config.endpoint_name} is Failed ({current.get('FailureReason', 'no reason given')}): "
                          "delete it, then approve the version again")
    else:
        deployment = config.rollout.deployment_config() if guarded else None
        if deployment and config.rollout.new_fleet_alarm:
            _watch_new_fleet(cloudwatch, config.rollout.new_fleet_alarm, endpoint_config)
        with _busy_if_changing(config.endpoint_name, approval):  # another delivery started an update a moment ago
            sagemaker.update_endpoint(EndpointName=config.endpoint_name, EndpointConfigName=endpoint_config,
                                      **({"DeploymentConfig": deployment} if deployment else {}))
        action = "updated"
    if current is not None:  # the endpoint now follows this approval, even when it already ran this version
        _record_approval(sagemaker, current, approval)
    return {"status": action, "endpoint": config.endpoint_name, "endpoint_config": endpoint_config, "model": model,
            "model_package_arn": approval.package_arn, "version": approval.version,
            "previous_endpoint_config": current.get("EndpointConfigName") if current else None,
            "created_model": created_model, "created_endpoint_config": created_config,
            "traffic": _traffic_line(config.rollout if guarded and action == "updated" else None)}


def _runs_already(sagemaker, current: Mapping[str, Any], endpoint_config: str, model: str,
                  config: DeployConfig) -> bool:
    """Whether the endpoint serves this version already: on its config, or on a shadow config whose
    production variant is this version's Model. A redelivered approval of the serving version
    must not end a shadow that runs beside it."""
    name = current.get("EndpointConfigName")
    if name == endpoint_config:
        return True
    if shadow_version(config.endpoint_name, name) is None:
        return False
    variants = sagemaker.describe_endpoint_config(EndpointConfigName=name).get("ProductionVariants") or [{}]
    return variants[0].get("ModelName") == model


def _traffic_line(policy: RolloutPolicy | None) -> str:
    """How the new version takes the traffic, in words (the approval's answer shows it)."""
    if policy is None or not policy.guarded:
        return "all at once"
    steps = {"ALL_AT_ONCE": "all at once", "CANARY": f"a {policy.step_percent} % canary, then the rest",
             "LINEAR": f"steps of {policy.step_percent} %"}[policy.mode]
    watch = f", rolled back if {' or '.join(policy.alarms)} goes off" if policy.alarms else ""
    return f"{steps}, {policy.bake_s} s of baking after each step{watch}"


def _newest_other_approved(sagemaker, config: DeployConfig, rejected_arn: str) -> Approval | None:
    """The group's Approved version approved last (not ``rejected_arn``), or None."""
    found: list[Approval] = []
    request: dict[str, Any] = {"ModelPackageGroupName": config.model_package_group, "ModelApprovalStatus": "Approved",
                               "SortBy": "CreationTime", "SortOrder": "Descending", "MaxResults": 100}
    while True:
        page = sagemaker.list_model_packages(**request)
        for summary in page.get("ModelPackageSummaryList", []):
            arn = summary["ModelPackageArn"]
            package = sagemaker.describe_model_package(ModelPackageName=arn)
            changed, version = package.get("LastModifiedTime"), package_version(arn)
            if arn != rejected_arn and package.get("ModelApprovalStatus") == "Approved" and version is not None \
                    and isinstance(changed, datetime):
                found.append(Approval(arn, config.model_package_group, version, "Approved", changed))
        if not page.get("NextToken"):
            break
        request["NextToken"] = page["NextToken"]
    return max(found, key=lambda a: a.order) if found else None


def take_back(rejection: Approval, config: DeployConfig, sagemaker) -> dict[str, Any]:
    """A rejected version that serves is replaced by the newest other Approved one (deployed as
    if approved at the rejection's time), or, with none, the endpoint is deleted."""
    current = _exists(sagemaker.describe_endpoint, EndpointName=config.endpoint_name)
    _, serving = _followed_approval(sagemaker, current) if current is not None else (None, None)
    if current is not None and serving != rejection.package_arn and \
            shadow_version(config.endpoint_name, current.get("EndpointConfigName")) == rejection.version:
        return end_shadow(rejection, current, config, sagemaker)
    if current is None or serving != rejection.package_arn:
        return {"status": "ignored", "reason": f"version {rejection.version} was rejected, but the endpoint "
                                               f"{config.endpoint_name} does not serve it: nothing to take back"}
    if current.get("EndpointStatus") in BUSY_STATUSES:
        raise EndpointBusy(f"endpoint {config.endpoint_name} is {current['EndpointStatus']}; taking back version "
                           f"{rejection.version} waits until it settles")
    fallback = _newest_other_approved(sagemaker, config, rejection.package_arn)
    if fallback is None:
        sagemaker.delete_endpoint(EndpointName=config.endpoint_name)
        return {"status": "stopped", "endpoint": config.endpoint_name, "version": rejection.version,
                "reason": f"version {rejection.version} was rejected and no other version is Approved: endpoint "
                          f"{config.endpoint_name} was deleted; approve a version to serve again"}
    # No canary for a rollback: the version that serves was rejected, so it leaves at once.
    result = deploy(replace(fallback, time=rejection.time), config, sagemaker, guarded=False)
    return {**result, "rolled_back_from": rejection.version}


def _ensure_shadow_model(sagemaker, name: str, package: Mapping[str, Any], config: DeployConfig) -> bool:
    """The pending version's Model, made from its package's container (image, artifact,
    environment) rather than from the package: a shadow runs before anyone approves it."""
    if _exists(sagemaker.describe_model, ModelName=name) is not None:
        return False
    containers = (package.get("InferenceSpecification") or {}).get("Containers") or []
    if not containers or not containers[0].get("ModelDataUrl"):
        raise DeployError(f"model package {package.get('ModelPackageArn')} has no container with a ModelDataUrl to shadow")
    container = {key: containers[0][key] for key in ("Image", "ModelDataUrl", "Environment") if key in containers[0]}
    sagemaker.create_model(ModelName=name, ExecutionRoleArn=config.execution_role_arn, PrimaryContainer=container,
                           Tags=[{"Key": "ModelPackageArn", "Value": package["ModelPackageArn"]}])
    return True


def start_shadow(pending: Approval, package: Mapping[str, Any], config: DeployConfig, sagemaker) -> dict[str, Any]:
    """Run a newly registered version as the endpoint's shadow variant: the production variant as it
    is, and beside it the pending version, copied ``shadow_percent`` of the requests, its answers
    captured with the endpoint's and never returned. Approving or rejecting it ends the shadow."""
    current = _exists(sagemaker.describe_endpoint, EndpointName=config.endpoint_name)
    if current is None:
        return {"status": "ignored", "reason": f"version {pending.version} is PendingManualApproval, but endpoint "
                                               f"{config.endpoint_name} does not exist: no traffic to shadow"}
    if current.get("EndpointStatus") in BUSY_STATUSES:
        raise EndpointBusy(f"endpoint {config.endpoint_name} is {current['EndpointStatus']}; shadowing version "
                           f"{pending.version} waits until it settles")
    if current.get("EndpointStatus") == "Failed":
        return {"status": "ignored", "reason": f"version {pending.version} is PendingManualApproval, but endpoint "
                                               f"{config.endpoint_name} is Failed: no traffic to shadow"}
    running = shadow_version(config.endpoint_name, current.get("EndpointConfigName"))
    if running is not None and running >= pending.version:
        return {"status": "ignored", "reason": f"version {running} runs as the shadow already, not older than "
                                               f"{pending.version}"}
    production = sagemaker.describe_endpoint_config(EndpointConfigName=current["EndpointConfigName"])["ProductionVariants"][0]
    if model_version(config.endpoint_name, production.get("ModelName")) == pending.version:
        return {"status": "ignored", "reason": f"version {pending.version} serves already: no shadow of itself"}
    shadow_model = shadow_model_name(config.endpoint_name, pending.version)
    created_model = _ensure_shadow_model(sagemaker, shadow_model, package, config)
    held = f"{production['ModelName']}|{config.variant_hash()}|shadow {config.shadow_percent}"
    name = shadow_config_name(config.endpoint_name, pending.version, hashlib.sha256(held.encode()).hexdigest()[:8])
    if _exists(sagemaker.describe_endpoint_config, EndpointConfigName=name) is None:
        kept = {key: production[key] for key in ("VariantName", "ModelName", "InstanceType", "InitialInstanceCount",
                                                 "InitialVariantWeight") if key in production}
        capture = {"DataCaptureConfig": capture_config(config.capture_destination, config.capture_percent)} \
            if config.capture_percent else {}
        sagemaker.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[kept], ShadowProductionVariants=[{
            "VariantName": SHADOW_VARIANT_NAME, "ModelName": shadow_model, "InstanceType": config.instance_type,
            "InitialInstanceCount": 1, "InitialVariantWeight": shadow_weight(config.shadow_percent)}], **capture)
    with _busy_if_changing(config.endpoint_name, pending):
        sagemaker.update_endpoint(EndpointName=config.endpoint_name, EndpointConfigName=name)
    return {"status": "shadowing", "endpoint": config.endpoint_name, "endpoint_config": name, "model": shadow_model,
            "model_package_arn": pending.package_arn, "version": pending.version, "created_model": created_model,
            "previous_endpoint_config": current["EndpointConfigName"],
            "traffic": f"a copy of {config.shadow_percent} % of the requests; its answers are captured, never returned"}


def end_shadow(rejection: Approval, current: Mapping[str, Any], config: DeployConfig, sagemaker) -> dict[str, Any]:
    """The endpoint back on its production variant alone, when the version it shadows is rejected."""
    if current.get("EndpointStatus") in BUSY_STATUSES:
        raise EndpointBusy(f"endpoint {config.endpoint_name} is {current['EndpointStatus']}; ending the shadow of "
                           f"version {rejection.version} waits until it settles")
    production = sagemaker.describe_endpoint_config(EndpointConfigName=current["EndpointConfigName"])["ProductionVariants"][0]
    name = f"{production['ModelName']}-{config.variant_hash()}"
    _ensure_endpoint_config(sagemaker, name, production["ModelName"], config)
    with _busy_if_changing(config.endpoint_name, rejection):
        sagemaker.update_endpoint(EndpointName=config.endpoint_name, EndpointConfigName=name)
    return {"status": "shadow ended", "endpoint": config.endpoint_name, "endpoint_config": name,
            "version": rejection.version, "reason": f"version {rejection.version} was rejected: it no longer shadows "
                                                    f"endpoint {config.endpoint_name}"}


def handle(event: Any, config: DeployConfig, sagemaker, requeue: Requeue | None = None,
           attempt: int = 1, cloudwatch=None) -> dict[str, Any]:
    """The handler's decision, with its dependencies given (what the tests and the local runtime
    call). A busy endpoint requeues the event through ``requeue``; without one, or once
    ``MAX_ATTEMPTS`` are spent, ``EndpointBusy`` is raised. ``cloudwatch`` is needed when the
    rollout policy names a new-fleet alarm."""
    try:
        approval = parse_event(event)
    except EventError as error:
        return {"status": "ignored", "reason": str(error)}
    if approval.group != config.model_package_group:
        return {"status": "ignored", "reason": f"model package group {approval.group!r} is not "
                                               f"{config.model_package_group!r}"}
    if approval.status not in ("Approved", "Rejected", "PendingManualApproval"):
        return {"status": "ignored", "reason": f"version {approval.version} is {approval.status}, not Approved"}
    if approval.status == "PendingManualApproval" and not config.shadow_percent:
        return {"status": "ignored", "reason": f"version {approval.version} is PendingManualApproval, not Approved, "
                                               "and no shadow is asked for (SHADOW_PERCENT 0)"}
    # The event may be old (a retry, a late delivery): act on the package's status now.
    package = sagemaker.describe_model_package(ModelPackageName=approval.package_arn)
    now = package.get("ModelApprovalStatus")
    if now != approval.status:
        verb = {"Approved": "approved", "Rejected": "rejected"}.get(approval.status, "registered")
        return {"status": "ignored", "reason": f"version {approval.version} was {verb}, but is {now} now"}
    approval = _at_package_time(approval, package)
    try:
        if approval.status == "PendingManualApproval":
            return start_shadow(approval, package, config, sagemaker)
        if approval.status == "Rejected":
            return take_back(approval, config, sagemaker)
        return deploy(approval, config, sagemaker, cloudwatch)
    except EndpointBusy as busy:
        if requeue is None or attempt >= MAX_ATTEMPTS:
            raise EndpointBusy(f"{busy} (attempt {attempt} of {MAX_ATTEMPTS}): once the endpoint is InService, "
                               "move this event from the failures queue to the retry queue (docs/aws.md, What the stack holds)") from None
        delay = config.retry_delay(attempt)
        requeue.later(event, attempt + 1, delay)
        return {"status": "requeued", "reason": str(busy), "version": approval.version, "attempt": attempt + 1,
                "retry_in_s": delay}


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """AWS Lambda's entry point (``deploy.handler``): an EventBridge event, or the retry queue's records."""
    import boto3

    config = DeployConfig.from_env()
    sagemaker = boto3.client("sagemaker")
    requeue = SqsRequeue(boto3.client("sqs"), config.retry_queue_url) if config.retry_queue_url else None
    cloudwatch = boto3.client("cloudwatch") if config.rollout.new_fleet_alarm else None
    results = [handle(one, config, sagemaker, requeue, attempt, cloudwatch) for one, attempt in deliveries(event)]
    for result in results:
        log.info("%s", json.dumps(result))
    return results[0] if len(results) == 1 else {"status": "batch", "results": results}
