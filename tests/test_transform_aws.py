"""Batch Transform on SageMaker: the calls ``transform --backend sagemaker`` makes, checked with
botocore's Stubber on a real SageMaker client (exact requests, in order, against the service
model), and the request the local runtime takes is the one sent to AWS."""
from __future__ import annotations

from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import Stubber

from pipeline.aws.clients import AwsClients
from pipeline.aws.errors import BackendError
from pipeline.aws.transforms import follow_transform, start_transform
from pipeline.local.services.transform.spec import parse_request
from pipeline.settings import Settings
from pipeline.transforms import TransformError, TransformOptions, transform_request

REGION = "eu-west-1"
GROUP = "sentiment-mlops-imdb-lstm"
PACKAGE = f"arn:aws:sagemaker:{REGION}:123456789012:model-package/{GROUP}/3"
ROLE = "arn:aws:iam::123456789012:role/pipeline-role"
NOW = datetime(2026, 12, 7, tzinfo=UTC)


@pytest.fixture
def sagemaker():
    client = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


def _settings() -> Settings:
    return Settings(region=REGION, bucket="my-bucket", prefix="mlops", role_arn=ROLE, model_package_group=GROUP,
                    endpoint_name="sentiment-mlops")


def _versions(stub: Stubber) -> None:
    stub.add_response("list_model_packages", {"ModelPackageSummaryList": [{
        "ModelPackageGroupName": GROUP, "ModelPackageVersion": 3, "ModelPackageArn": PACKAGE, "CreationTime": NOW,
        "ModelPackageStatus": "Completed", "ModelApprovalStatus": "Approved"}]},
        {"ModelPackageGroupName": GROUP, "SortBy": "CreationTime", "SortOrder": "Descending"})


def test_a_transform_on_sagemaker_makes_the_versions_model_once_and_sends_the_local_request(sagemaker):
    client, stub = sagemaker
    options = TransformOptions(input_filter="$.review", join_source="Input", output_filter="$['id','SageMakerOutput']")
    expected = transform_request("job-1", "sentiment-mlops-v3-transform", "s3://my-bucket/in/", "s3://my-bucket/mlops/transforms/job-1/",
                                 options)
    _versions(stub)
    stub.add_client_error("describe_model", "ValidationException", 'Could not find model "sentiment-mlops-v3-transform".',
                          expected_params={"ModelName": "sentiment-mlops-v3-transform"})
    stub.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:{REGION}:123456789012:model/sentiment-mlops-v3-transform"}, {
        "ModelName": "sentiment-mlops-v3-transform", "ExecutionRoleArn": ROLE, "PrimaryContainer": {"ModelPackageName": PACKAGE},
        "Tags": [{"Key": "ModelPackageArn", "Value": PACKAGE}]})
    stub.add_response("create_transform_job", {"TransformJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:transform-job/job-1"}, expected)
    name = start_transform(AwsClients(s3=None, sagemaker=client, region=REGION), _settings(), 3, "s3://my-bucket/in/",
                           None, options, "job-1")
    assert name == "job-1"
    assert parse_request(expected).processing.join_input  # what AWS is sent, the local runtime runs


def test_a_model_made_for_another_package_is_not_reused(sagemaker):
    client, stub = sagemaker
    _versions(stub)
    stub.add_response("describe_model", {"ModelName": "sentiment-mlops-v3-transform", "ModelArn": f"arn:aws:sagemaker:{REGION}:123456789012:model/sentiment-mlops-v3-transform",
                                         "PrimaryContainer": {"ModelPackageName": PACKAGE.replace("/3", "/9")},
                                         "CreationTime": NOW}, {"ModelName": "sentiment-mlops-v3-transform"})
    with pytest.raises(TransformError, match="exists already for .*/9"):
        start_transform(AwsClients(s3=None, sagemaker=client, region=REGION), _settings(), 3, "s3://my-bucket/in/",
                        None, TransformOptions(), "job-2")


def test_a_local_input_is_refused_before_any_call(sagemaker):
    client, _ = sagemaker
    with pytest.raises(BackendError, match="upload it first"):
        start_transform(AwsClients(s3=None, sagemaker=client, region=REGION), _settings(), 3, "./reviews.jsonl",
                        None, TransformOptions())


def test_following_a_job_polls_until_it_ends_and_says_each_status(sagemaker):
    client, stub = sagemaker
    base = {"TransformJobName": "job-1", "TransformJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:transform-job/job-1", "ModelName": "m", "CreationTime": NOW,
            "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/in/"}}},
            "TransformOutput": {"S3OutputPath": "s3://b/out/"},
            "TransformResources": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1}}
    for status in ("InProgress", "InProgress", "Failed"):
        extra = {"FailureReason": "ClientError: the model answered 400"} if status == "Failed" else {}
        stub.add_response("describe_transform_job", {**base, "TransformJobStatus": status, **extra},
                          {"TransformJobName": "job-1"})
    seen: list[str] = []
    slept: list[float] = []
    described = follow_transform(AwsClients(s3=None, sagemaker=client, region=REGION), "job-1",
                                 lambda d: seen.append(d["TransformJobStatus"]), poll_s=5, sleep=slept.append)
    assert seen == ["InProgress", "InProgress", "Failed"] and slept == [5, 5]
    assert described["FailureReason"].startswith("ClientError")


def test_a_missing_job_is_named(sagemaker):
    client, stub = sagemaker
    stub.add_client_error("describe_transform_job", "ValidationException",
                          "Could not find requested job with name nope", expected_params={"TransformJobName": "nope"})
    with pytest.raises(BackendError, match="no transform job nope"):
        follow_transform(AwsClients(s3=None, sagemaker=client, region=REGION), "nope")
