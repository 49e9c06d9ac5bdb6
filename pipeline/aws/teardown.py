"""Back to nothing: what ``sentiment-mlops aws teardown`` removes, in an order that leaves no
endpoint billing and nothing behind that could bring it back.

1. The stack goes first (its website bucket emptied, since CloudFormation deletes only empty
   buckets): with it go the approval rule and the deploy function, so no late approval can
   create the endpoint again, and the schedule and new-data rule, so no run starts.
2. Then the endpoint, which the deploy function made outside the stack and which is the one
   thing that bills by the hour, and the models and endpoint configs made for it. They are
   listed again when they are deleted: an approval in flight may have made one meanwhile.
3. Then the pipeline, which ``aws upsert`` made, once its running executions are stopped
   (SageMaker deletes no pipeline that runs, and a running training job bills).

The artifact bucket (kept by the stack: ``DeletionPolicy: Retain``) and the model registry hold
the data and every registered version; they go only with ``delete_data``. Without ``yes``
nothing is deleted: the answer lists what would be.
"""
from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from mlops_rules.hosting import BUSY_STATUSES, made_for
from pipeline.aws.clients import AwsClients
from pipeline.aws.errors import BackendError, aws_errors, unless_missing
from pipeline.aws.stack import describe_stack
from pipeline.settings import Settings

log = logging.getLogger(__name__)

# What stays while idle, and what it costs then (us-east-1 list prices, November 2026; the
# docs/aws.md's teardown table says the same).
IDLE_COSTS = {
    "artifact bucket": "S3 storage, $0.023 per GB-month (replaced versions expire after 30 days)",
    "model registry": "nothing (model packages are free; their artifacts are in the bucket)",
    "log groups": "CloudWatch Logs storage, $0.03 per GB-month: delete /aws/sagemaker/{ProcessingJobs,TrainingJobs,"
                  "Endpoints/NAME} in the console or with `aws logs delete-log-group` if you want them gone",
}
RUNNING = ("Executing", "Stopping")
Step = tuple[str, Callable[[], None]]


def teardown(clients: AwsClients, settings: Settings, *, yes: bool, delete_data: bool,
             poll_s: float = 15.0, timeout_s: float = 1800.0) -> dict[str, Any]:
    """Delete what the project made on AWS (with ``yes``), or say what that would be."""
    stack = describe_stack(clients, settings.stack_name)
    names = _names(settings, stack)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in (stack or {}).get("Outputs") or []}
    steps: list[Step] = []
    if stack is not None:
        steps.append((f"stack {settings.stack_name} (functions, rules, queues, API, website, roles)",
                      lambda: _delete_stack(clients, settings.stack_name, outputs.get("WebsiteBucketName"), poll_s,
                                            timeout_s)))
    steps.append(_hosting_step(clients, names["EndpointName"], poll_s, timeout_s))
    steps += _pipeline_steps(clients, names["PipelineName"], poll_s, timeout_s)
    bucket = outputs.get("ArtifactBucketName") or (settings.bucket if settings.explicit_bucket else None)
    kept = {"log groups": IDLE_COSTS["log groups"]}
    if delete_data:
        steps += _data_steps(clients, bucket, names["ModelPackageGroupName"])
        if bucket is None:
            kept["artifact bucket (name unknown: the stack is gone)"] = (
                IDLE_COSTS["artifact bucket"] + "; set SENTIMENT_MLOPS_BUCKET to its name to delete it")
    else:
        kept[f"artifact bucket {bucket or '(name unknown: the stack is gone)'}"] = IDLE_COSTS["artifact bucket"]
        kept[f"model registry {names['ModelPackageGroupName']}"] = IDLE_COSTS["model registry"]
    for what, delete in steps if yes else ():  # a step with nothing to name yet still runs (see _hosting_step)
        log.info("deleting %s", what or "what an approval in flight may have made")
        with aws_errors(f"deleting {what or 'the endpoint'}"):
            delete()
    return {"teardown": "done" if yes else "planned", "deleted" if yes else "would_delete": [w for w, _ in steps if w],
            "kept": kept}


def _names(settings: Settings, stack: dict | None) -> dict[str, str]:
    """The names the stack was deployed with, else the settings' (the same when it came from ``stack-parameters``)."""
    given = {p["ParameterKey"]: p["ParameterValue"] for p in (stack or {}).get("Parameters") or []}
    return {"EndpointName": given.get("EndpointName", settings.endpoint_name),
            "PipelineName": given.get("PipelineName", settings.pipeline_name),
            "ModelPackageGroupName": given.get("ModelPackageGroupName", settings.model_package_group)}


def _delete_stack(clients: AwsClients, name: str, website_bucket: str | None, poll_s: float, timeout_s: float) -> None:
    if website_bucket:
        _empty_bucket(clients, website_bucket)
    clients.cloudformation.delete_stack(StackName=name)
    clients.cloudformation.get_waiter("stack_delete_complete").wait(
        StackName=name, WaiterConfig={"Delay": max(1, int(poll_s)), "MaxAttempts": max(1, int(timeout_s / max(poll_s, 1)))})


# --- the endpoint, and what the deploy function made for it --------------------------------------

def _hosting_step(clients: AwsClients, endpoint: str, poll_s: float, timeout_s: float) -> Step:
    """One step for the endpoint, its configs and models, described by what exists now. It runs
    whatever the plan found: the stack's deletion takes minutes, and an approval in flight may
    create one of them meanwhile."""
    with aws_errors("listing the endpoint, its configs and models"):
        found = _hosting_names(clients, endpoint)
    endpoint_found = unless_missing(clients.sagemaker.describe_endpoint, EndpointName=endpoint) is not None
    parts = ([f"endpoint {endpoint} (stops its billing)"] if endpoint_found else []) + found
    return ", ".join(parts), lambda: _delete_hosting(clients, endpoint, poll_s, timeout_s)


def _hosting_names(clients: AwsClients, endpoint: str) -> list[str]:
    sagemaker = clients.sagemaker
    configs = [c["EndpointConfigName"] for page in sagemaker.get_paginator("list_endpoint_configs").paginate(
        NameContains=endpoint) for c in page.get("EndpointConfigs", [])]
    models = [m["ModelName"] for page in sagemaker.get_paginator("list_models").paginate(
        NameContains=endpoint) for m in page.get("Models", [])]
    return ([f"endpoint config {c}" for c in configs if made_for(endpoint, c)]
            + [f"model {m}" for m in models if made_for(endpoint, m)])


def _delete_hosting(clients: AwsClients, endpoint: str, poll_s: float, timeout_s: float) -> None:
    """The endpoint (once a change under way has ended: one cannot be deleted mid-update), then
    the configs and models, listed afresh."""
    deadline = time.monotonic() + timeout_s
    while (found := unless_missing(clients.sagemaker.describe_endpoint, EndpointName=endpoint)) is not None:
        status = found["EndpointStatus"]
        if status not in BUSY_STATUSES:
            clients.sagemaker.delete_endpoint(EndpointName=endpoint)
        elif time.monotonic() > deadline:
            raise BackendError(f"endpoint {endpoint} is still {status} after {timeout_s:.0f} s: run teardown again later")
        time.sleep(poll_s)
    for what in _hosting_names(clients, endpoint):
        kind, name = what.rsplit(" ", 1)
        if kind == "endpoint config":
            clients.sagemaker.delete_endpoint_config(EndpointConfigName=name)
        else:
            clients.sagemaker.delete_model(ModelName=name)


# --- the pipeline ------------------------------------------------------------------------------

def _pipeline_steps(clients: AwsClients, name: str, poll_s: float, timeout_s: float) -> list[Step]:
    with aws_errors(f"reading pipeline {name}"):
        if unless_missing(clients.sagemaker.describe_pipeline, PipelineName=name) is None:
            return []
        running = _running_executions(clients, name)
    what = f"pipeline {name}" + (f" (its {len(running)} running execution(s) stopped first)" if running else "")
    return [(what, lambda: _delete_pipeline(clients, name, poll_s, timeout_s))]


def _running_executions(clients: AwsClients, name: str) -> list[str]:
    pages = clients.sagemaker.get_paginator("list_pipeline_executions").paginate(PipelineName=name)
    return [e["PipelineExecutionArn"] for page in pages for e in page.get("PipelineExecutionSummaries", [])
            if e.get("PipelineExecutionStatus") in RUNNING]


def _delete_pipeline(clients: AwsClients, name: str, poll_s: float, timeout_s: float) -> None:
    """Stop what runs (its jobs bill), wait for it to stop, then delete the pipeline."""
    deadline = time.monotonic() + timeout_s
    for arn in _running_executions(clients, name):
        status = clients.sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)["PipelineExecutionStatus"]
        if status == "Executing":
            clients.sagemaker.stop_pipeline_execution(PipelineExecutionArn=arn, ClientRequestToken=str(uuid.uuid4()))
    while still := _running_executions(clients, name):
        if time.monotonic() > deadline:
            raise BackendError(f"{len(still)} execution(s) of {name} still stopping after {timeout_s:.0f} s: "
                               "run teardown again later")
        time.sleep(poll_s)
    clients.sagemaker.delete_pipeline(PipelineName=name, ClientRequestToken=str(uuid.uuid4()))


# --- the data: only with delete_data -------------------------------------------------------------

def _data_steps(clients: AwsClients, bucket: str | None, group: str) -> list[Step]:
    steps: list[Step] = []
    if bucket:
        steps.append((f"artifact bucket {bucket} (every object version)", lambda: _delete_bucket(clients, bucket)))
    sagemaker = clients.sagemaker
    with aws_errors(f"listing model package group {group}"):
        if unless_missing(sagemaker.describe_model_package_group, ModelPackageGroupName=group) is None:
            return steps
        packages = [p["ModelPackageArn"] for page in sagemaker.get_paginator("list_model_packages").paginate(
            ModelPackageGroupName=group) for p in page.get("ModelPackageSummaryList", [])]
    for arn in packages:  # a group is deleted only once it is empty
        steps.append((f"model package {arn}", functools.partial(sagemaker.delete_model_package, ModelPackageName=arn)))
    steps.append((f"model package group {group}", lambda: sagemaker.delete_model_package_group(ModelPackageGroupName=group)))
    return steps


def _empty_bucket(clients: AwsClients, bucket: str) -> None:
    """Every object version and delete marker: a versioned bucket is empty only without them."""
    for page in clients.s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        doomed = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                  for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        if doomed:
            clients.s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})


def _delete_bucket(clients: AwsClients, bucket: str) -> None:
    _empty_bucket(clients, bucket)
    clients.s3.delete_bucket(Bucket=bucket)
