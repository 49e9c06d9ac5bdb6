"""Back to nothing: what ``sentiment-mlops aws teardown`` removes, in an order that leaves no
endpoint billing and nothing behind that could bring it back.

1. The stack goes first (its website bucket emptied, since CloudFormation deletes only empty
   buckets): with it go the approval rule and the deploy function, so no late approval can
   create the endpoint again, and the schedule, so no run starts.
2. Then the endpoint, which the deploy function made outside the stack and which is the one
   thing that bills by the hour, and the models and endpoint configs made for it.
3. Then the pipeline, which ``aws upsert`` made.

The artifact bucket (kept by the stack: ``DeletionPolicy: Retain``) and the model registry hold
the data and every registered version; they go only with ``delete_data``. Without ``yes``
nothing is deleted: the answer lists what would be.
"""
from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Callable

from pipeline.aws.clients import AwsClients
from pipeline.aws.errors import BackendError, aws_errors, is_not_found
from pipeline.aws.stack import describe_stack
from pipeline.settings import Settings

log = logging.getLogger(__name__)

# What stays while idle, and what it costs then (us-east-1 list prices, November 2026).
IDLE_COSTS = {
    "endpoint": "$0.115 an hour per ml.m5.large instance, about $83 a month",
    "artifact bucket": "S3 storage, $0.023 per GB-month (replaced versions expire after 30 days)",
    "model registry": "nothing (model packages are free; their artifacts are in the bucket)",
    "log groups": "CloudWatch Logs storage, $0.03 per GB-month: delete /aws/sagemaker/{ProcessingJobs,TrainingJobs,"
                  "Endpoints/NAME} in the console or with `aws logs delete-log-group` if you want them gone",
    "stack": "nothing while idle (Lambda, EventBridge, SQS, HTTP API and CloudFront bill per request)",
}
BUSY = ("Creating", "Updating", "SystemUpdating", "RollingBack")


def teardown(clients: AwsClients, settings: Settings, *, yes: bool, delete_data: bool,
             poll_s: float = 15.0, timeout_s: float = 1800.0) -> dict[str, Any]:
    """Delete what the project made on AWS (with ``yes``), or say what that would be."""
    stack = describe_stack(clients, settings.stack_name)
    names = _names(settings, stack)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in (stack or {}).get("Outputs") or []}
    steps: list[tuple[str, Callable[[], None]]] = []
    if stack is not None:
        steps.append((f"stack {settings.stack_name} (functions, rules, queues, API, website, roles)",
                      lambda: _delete_stack(clients, settings.stack_name, outputs.get("WebsiteBucketName"), poll_s,
                                            timeout_s)))
    steps += _hosting_steps(clients, names["EndpointName"], poll_s, timeout_s)
    if _pipeline_exists(clients, names["PipelineName"]):
        steps.append((f"pipeline {names['PipelineName']}", lambda: clients.sagemaker.delete_pipeline(
            PipelineName=names["PipelineName"], ClientRequestToken=str(uuid.uuid4()))))
    bucket = outputs.get("ArtifactBucketName")
    kept = {"log groups": IDLE_COSTS["log groups"]}
    if delete_data:
        steps += _data_steps(clients, bucket, names["ModelPackageGroupName"])
    else:
        if bucket:
            kept[f"artifact bucket {bucket}"] = IDLE_COSTS["artifact bucket"]
        kept[f"model registry {names['ModelPackageGroupName']}"] = IDLE_COSTS["model registry"]
    for what, delete in steps if yes else ():
        log.info("deleting %s", what)
        with aws_errors(f"deleting {what}"):
            delete()
    return {"teardown": "done" if yes else "planned", "deleted" if yes else "would_delete": [w for w, _ in steps],
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


def _hosting_steps(clients: AwsClients, endpoint: str, poll_s: float, timeout_s: float) -> list[tuple[str, Callable]]:
    sagemaker, steps = clients.sagemaker, []
    with aws_errors("listing the endpoint, its configs and models"):
        if _endpoint_status(clients, endpoint) is not None:
            steps.append((f"endpoint {endpoint} (stops its billing)",
                          lambda: _delete_endpoint(clients, endpoint, poll_s, timeout_s)))
        ours = f"{endpoint}-v"  # deploy.py's names: <endpoint>-v<version>[-<settings hash>]
        for config in _names_listed(sagemaker.get_paginator("list_endpoint_configs"), "EndpointConfigs",
                                    "EndpointConfigName", endpoint):
            if config.startswith(ours):
                steps.append((f"endpoint config {config}",
                              lambda c=config: sagemaker.delete_endpoint_config(EndpointConfigName=c)))
        for model in _names_listed(sagemaker.get_paginator("list_models"), "Models", "ModelName", endpoint):
            if model.startswith(ours):
                steps.append((f"model {model}", lambda m=model: sagemaker.delete_model(ModelName=m)))
    return steps


def _names_listed(paginator, key: str, field: str, contains: str) -> list[str]:
    return [item[field] for page in paginator.paginate(NameContains=contains) for item in page.get(key, [])]


def _endpoint_status(clients: AwsClients, endpoint: str) -> str | None:
    from botocore.exceptions import ClientError

    try:
        return clients.sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointStatus"]
    except ClientError as error:
        if is_not_found(error):
            return None
        raise


def _delete_endpoint(clients: AwsClients, endpoint: str, poll_s: float, timeout_s: float) -> None:
    """Wait out a change under way (an endpoint cannot be deleted mid-update), then delete it."""
    deadline = time.monotonic() + timeout_s
    while (status := _endpoint_status(clients, endpoint)) in BUSY:
        if time.monotonic() > deadline:
            raise BackendError(f"endpoint {endpoint} is still {status} after {timeout_s:.0f} s: run teardown again later")
        time.sleep(poll_s)
    if status is not None:
        clients.sagemaker.delete_endpoint(EndpointName=endpoint)


def _pipeline_exists(clients: AwsClients, name: str) -> bool:
    from botocore.exceptions import ClientError

    with aws_errors(f"reading pipeline {name}"):
        try:
            clients.sagemaker.describe_pipeline(PipelineName=name)
            return True
        except ClientError as error:
            if is_not_found(error):
                return False
            raise


def _data_steps(clients: AwsClients, bucket: str | None, group: str) -> list[tuple[str, Callable]]:
    steps: list[tuple[str, Callable]] = []
    if bucket:
        steps.append((f"artifact bucket {bucket} (every object version)", lambda: _delete_bucket(clients, bucket)))
    sagemaker = clients.sagemaker
    with aws_errors(f"listing model package group {group}"):
        if not _group_exists(clients, group):
            return steps
        packages = [p["ModelPackageArn"] for page in sagemaker.get_paginator("list_model_packages").paginate(
            ModelPackageGroupName=group) for p in page.get("ModelPackageSummaryList", [])]
    for arn in packages:  # a group is deleted only once it is empty
        steps.append((f"model package {arn}", lambda a=arn: sagemaker.delete_model_package(ModelPackageName=a)))
    steps.append((f"model package group {group}", lambda: sagemaker.delete_model_package_group(ModelPackageGroupName=group)))
    return steps


def _group_exists(clients: AwsClients, group: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        clients.sagemaker.describe_model_package_group(ModelPackageGroupName=group)
        return True
    except ClientError as error:
        if is_not_found(error):
            return False
        raise


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
