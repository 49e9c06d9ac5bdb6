"""The stack (``lambda/template.yaml``): the parameters it is deployed with, the outputs the
other ``aws`` commands read.

The stack is where the bucket and the pipeline's role come from, so a user never copies an
ARN by hand: ``stack_parameters`` derives every parameter from the same settings the pipeline
definition is built from (the names, the prefix, the images' ECR repositories), and
``stack_settings`` fills in the bucket and the role from the stack's outputs where the
environment does not name them.
"""
from __future__ import annotations

import re
from typing import Any

from botocore.exceptions import ClientError

from pipeline.aws.clients import AwsClients
from pipeline.aws.errors import BackendError, aws_errors, error_code, error_message
from pipeline.settings import Settings

# An ECR image URI: ACCOUNT.dkr.ecr.REGION.amazonaws.com[.cn]/REPOSITORY[:TAG | @DIGEST]
_IMAGE_URI = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.(?P<domain>amazonaws\.com(\.cn)?)"
                        r"/(?P<repository>[a-z0-9._/-]+?)(:[\w.-]+|@sha256:[0-9a-f]{64})?$")


def image_repository_arn(image_uri: str) -> str:
    """The ECR repository an image is pulled from, as the ARN an IAM grant names: its account
    and region are the image's own (the PyTorch images live in other accounts in several
    regions, and a pinned image may live anywhere)."""
    match = _IMAGE_URI.match(image_uri)
    if match is None:
        raise BackendError(f"{image_uri!r} is not an ECR image URI (ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME:TAG): "
                           "the stack can grant pulls only from ECR")
    region = match["region"]
    partition = "aws-cn" if match["domain"].endswith(".cn") else "aws-us-gov" if region.startswith("us-gov-") else "aws"
    return f"arn:{partition}:ecr:{region}:{match['account']}:repository/{match['repository']}"


def stack_parameters(settings: Settings) -> dict[str, str]:
    """The template's parameters for these settings (offline: the images come from the SDK's table)."""
    from pipeline.definition import resolve_images

    images = resolve_images(settings)
    # The test set's transform runs the inference image under the pipeline role too.
    jobs = sorted({image_repository_arn(images.training), image_repository_arn(images.processing),
                   image_repository_arn(images.inference)})
    return {"EndpointName": settings.endpoint_name, "ModelPackageGroupName": settings.model_package_group,
            "PipelineName": settings.pipeline_name, "ArtifactPrefix": settings.prefix,
            "EndpointInstanceType": settings.endpoint_instance_type,
            "InferenceImageRepository": image_repository_arn(images.inference),
            "JobImageRepositories": ",".join(jobs)}


def describe_stack(clients: AwsClients, stack_name: str) -> dict[str, Any] | None:
    """The stack's description, or None when there is no such stack."""
    with aws_errors(f"reading stack {stack_name}"):
        try:
            return clients.cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
        except ClientError as error:  # CloudFormation says ValidationError, "Stack with id X does not exist"
            if error_code(error) == "ValidationError" and "does not exist" in error_message(error):
                return None
            raise


def stack_outputs(clients: AwsClients, stack_name: str) -> dict[str, str]:
    """The stack's outputs by key; a missing stack says how to deploy it."""
    stack = describe_stack(clients, stack_name)
    if stack is None:
        raise BackendError(f"no stack {stack_name!r} in {clients.region}: deploy lambda/template.yaml first (docs/aws.md"
                           "), or set SENTIMENT_MLOPS_STACK_NAME, or set SENTIMENT_MLOPS_BUCKET and "
                           "SENTIMENT_MLOPS_ROLE_ARN")
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs") or []}


def stack_settings(settings: Settings, clients: AwsClients) -> Settings:
    """The settings with the stack's bucket and role filled in where the environment names none."""
    if not settings.needs_stack():
        return settings
    outputs = stack_outputs(clients, settings.stack_name)
    missing = {"ArtifactBucketName", "PipelineRoleArn"} - set(outputs)
    if missing:
        raise BackendError(f"stack {settings.stack_name!r} has no {', '.join(sorted(missing))} output: update it with "
                           "this version's lambda/template.yaml")
    return settings.from_stack(outputs)
