"""Batch Transform on SageMaker: the same request as the local runtime's, sent with boto3, and
followed to its end.

The job's model is the version's Model (``pipeline.transforms.ensure_model``: the deploy
function's name and container), run by the stack's pipeline role, which reads the model package's
artifact and the bucket's objects and writes the output under it. The input must already be in
S3 (``aws upload-data``, or any prefix the role may read).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pipeline.aws.clients import AwsClients
from pipeline.aws.errors import BackendError, aws_errors
from pipeline.aws.registry import version_arn
from pipeline.settings import Settings
from pipeline.transforms import TransformOptions, default_output, ensure_model, job_name, transform_request

TERMINAL = ("Completed", "Failed", "Stopped")
DEFAULT_POLL_S = 30.0
DEFAULT_TIMEOUT_S = 24 * 3600.0


def start_transform(clients: AwsClients, settings: Settings, version: int, input_uri: str, output_uri: str | None,
                    options: TransformOptions, name: str | None = None) -> str:
    """CreateTransformJob for the version on ``input_uri``; returns the job's name."""
    if not input_uri.startswith("s3://"):
        raise BackendError(f"{input_uri} is not in S3: upload it first (sentiment-mlops aws upload-data, or aws s3 cp) "
                           "and give its s3:// prefix")
    name = name or job_name(version)
    with aws_errors(f"starting transform job {name}"):
        package_arn = version_arn(clients, settings.model_package_group, version)
        model = ensure_model(clients.sagemaker, settings, version, package_arn)
        clients.sagemaker.create_transform_job(**transform_request(
            name, model, input_uri, output_uri or default_output(settings, name), options))
    return name


def describe_transform(clients: AwsClients, name: str) -> dict[str, Any]:
    with aws_errors(f"reading transform job {name}", not_found=f"no transform job {name}: transforms list "
                                                               "--backend sagemaker shows the jobs"):
        return clients.sagemaker.describe_transform_job(TransformJobName=name)


def follow_transform(clients: AwsClients, name: str, on_status: Callable[[dict[str, Any]], None] = lambda d: None,
                     poll_s: float = DEFAULT_POLL_S, timeout_s: float = DEFAULT_TIMEOUT_S,
                     sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Describe the job every ``poll_s`` until it ends (SageMaker gives a status, not a record
    count); BackendError if it has not ended within ``timeout_s`` (the job goes on)."""
    waited = 0.0
    while True:
        described = describe_transform(clients, name)
        on_status(described)
        if described["TransformJobStatus"] in TERMINAL:
            return described
        if waited >= timeout_s:
            raise BackendError(f"transform job {name} is still {described['TransformJobStatus']} after "
                               f"{timeout_s:g} s; it goes on: transforms show {name} --backend sagemaker")
        sleep(poll_s)
        waited += poll_s


def list_transforms(clients: AwsClients, limit: int) -> list[dict[str, Any]]:
    with aws_errors("listing transform jobs"):
        return clients.sagemaker.list_transform_jobs(SortBy="CreationTime", SortOrder="Descending",
                                                     MaxResults=min(max(limit, 1), 100))["TransformJobSummaries"]


def stop_transform(clients: AwsClients, name: str) -> dict[str, Any]:
    with aws_errors(f"stopping transform job {name}", not_found=f"no transform job {name}"):
        clients.sagemaker.stop_transform_job(TransformJobName=name)
    return describe_transform(clients, name)
