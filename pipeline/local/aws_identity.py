"""The AWS account and region the local runtime stands in for, and the ARNs of its resources.

Every local resource (executions, jobs, model packages, models, endpoints) has the ARN that
SageMaker would give it in this account and region, built here and nowhere else.

Casing follows SageMaker: it lower-cases the resource name in most ARNs (pipeline ``My-Pipeline``
has the ARN ``…:pipeline/my-pipeline``; jobs, models, endpoint configs and endpoints likewise),
but a model package group's ARN and its versions' ARNs keep the group name's case
(``…:model-package/MyGroup/3``).
"""
from __future__ import annotations

ACCOUNT = "000000000000"
REGION = "local"

_CASE_KEPT = ("model-package-group", "model-package")


def sagemaker_arn(kind: str, name: str, *, region: str = REGION, account: str = ACCOUNT) -> str:
    """``arn:aws:sagemaker:REGION:ACCOUNT:KIND/NAME`` with NAME cased as SageMaker cases it;
    ``kind`` is the ARN's resource type (``pipeline``, ``training-job``, ``model-package``, …)."""
    resource = name if kind in _CASE_KEPT else name.lower()
    return f"arn:aws:sagemaker:{region}:{account}:{kind}/{resource}"


def pipeline_arn(pipeline_name: str, *, region: str = REGION, account: str = ACCOUNT) -> str:
    return sagemaker_arn("pipeline", pipeline_name, region=region, account=account)


def execution_arn(pipeline_name: str, execution_id: str, *, region: str = REGION, account: str = ACCOUNT) -> str:
    """A pipeline execution's ARN: its pipeline's, then ``/execution/<id>``."""
    return f"{pipeline_arn(pipeline_name, region=region, account=account)}/execution/{execution_id}"


def model_package_arn(group_name: str, version: int, *, region: str = REGION) -> str:
    """A versioned model package's ARN: the group's name (case kept), then the version."""
    return sagemaker_arn("model-package", f"{group_name}/{version}", region=region)


def alarm_arn(alarm_name: str) -> str:
    """A CloudWatch metric alarm's ARN (CloudWatch keeps the name's case)."""
    return f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{alarm_name}"


def endpoint_log_group_arn(endpoint_name: str) -> str:
    """The CloudWatch log group SageMaker writes an endpoint's container output to."""
    return f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker/Endpoints/{endpoint_name}"
