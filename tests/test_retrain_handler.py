"""The retrain trigger (``lambda/retrain.py``): the code that runs in AWS Lambda, against moto's
SageMaker pipelines, and botocore's Stubber (the real client, checked against the service model)
for what moto does not keep: the idempotency token and a pipeline that does not exist."""
from __future__ import annotations

import json

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sagemaker.models import sagemaker_backends

from pipeline.local.lambdas import load_lambda
from tests.test_aws_backend import REGION, aws_env  # noqa: F401  (aws_env is a fixture)

retrain = load_lambda("retrain")

PIPELINE = "sentiment-retrain-test"
BUCKET = "my-bucket"
CONFIG = retrain.RetrainConfig(PIPELINE, BUCKET, "sentiment-mlops/data/")
ROLE = "arn:aws:iam::123456789012:role/TestSageMakerRole"


def _scheduled(event_id: str = "5e5c0d42-0000-4000-8000-000000000001") -> dict:
    """The shape EventBridge gives a rule's schedule tick."""
    return {"version": "0", "id": event_id, "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "123456789012", "time": "2026-11-23T03:00:00Z", "region": REGION,
            "resources": [f"arn:aws:events:{REGION}:123456789012:rule/sentiment-mlops-retrain"], "detail": {}}


def _object_created(key: str, bucket: str = BUCKET, event_id: str = "17793124-05d4-b198-2fde-7ededc63b103") -> dict:
    """The shape of S3's documented EventBridge "Object Created" example."""
    return {"version": "0", "id": event_id, "detail-type": "Object Created", "source": "aws.s3",
            "account": "123456789012", "time": "2026-11-22T18:43:48Z", "region": REGION,
            "resources": [f"arn:aws:s3:::{bucket}"],
            "detail": {"version": "0", "bucket": {"name": bucket},
                       "object": {"key": key, "size": 84125825, "etag": "b1946ac92492d2347c6235b4d2611184",
                                  "sequencer": "00617F08299329D189"},
                       "request-id": "N4N7GDK58NMKJ12R", "requester": "123456789012", "reason": "PutObject"}}


@pytest.fixture
def sagemaker(aws_env):  # noqa: F811
    with mock_aws():
        client = boto3.client("sagemaker", region_name=REGION)
        client.create_pipeline(PipelineName=PIPELINE, RoleArn=ROLE,
                               PipelineDefinition=json.dumps({"Version": "2020-12-01", "Steps": []}))
        yield client


def _executions(client) -> list[dict]:
    return client.list_pipeline_executions(PipelineName=PIPELINE)["PipelineExecutionSummaries"]


@pytest.mark.parametrize("key, input_uri", [
    ("sentiment-mlops/data/aclImdb_v1.tar.gz", "s3://my-bucket/sentiment-mlops/data/aclImdb_v1.tar.gz"),
    ("sentiment-mlops/data/2026-11/IMDB Dataset.csv", "s3://my-bucket/sentiment-mlops/data/2026-11/IMDB Dataset.csv"),
    ("sentiment-mlops/data/imdb-v2/_SUCCESS", "s3://my-bucket/sentiment-mlops/data/imdb-v2/"),
])
def test_new_data_starts_an_execution_on_that_data(sagemaker, key, input_uri):
    result = retrain.handle(_object_created(key), CONFIG, sagemaker)
    assert result["status"] == "started" and result["parameters"] == {"InputDataUri": input_uri}
    (summary,) = _executions(sagemaker)
    assert summary["PipelineExecutionArn"] == result["execution_arn"]
    assert summary["PipelineExecutionDisplayName"] == "new-data-20261122T184348"
    assert f"s3://{BUCKET}/{key}" in summary["PipelineExecutionDescription"]
    parameters = sagemaker.list_pipeline_parameters_for_execution(PipelineExecutionArn=result["execution_arn"])
    assert parameters["PipelineParameters"] == [{"Name": "InputDataUri", "Value": input_uri}]


@pytest.mark.parametrize("key, reason", [
    ("sentiment-mlops/data/imdb-v2/train.jsonl", "does not complete a dataset"),  # one file of several
    ("sentiment-mlops/data/imdb-v2/.hidden.csv", "does not complete a dataset"),
    ("sentiment-mlops/data/_SUCCESS", "would train on every dataset at once"),
    ("sentiment-mlops/models/job/output/model.tar.gz", "is not under s3://my-bucket/sentiment-mlops/data/"),
    ("other/data/aclImdb_v1.tar.gz", "is not under"),
])
def test_objects_that_complete_no_dataset_start_nothing(sagemaker, key, reason):
    result = retrain.handle(_object_created(key), CONFIG, sagemaker)
    assert result["status"] == "ignored" and reason in result["reason"]
    assert _executions(sagemaker) == []


def test_another_buckets_object_starts_nothing(sagemaker):
    result = retrain.handle(_object_created("sentiment-mlops/data/a.tar.gz", bucket="elsewhere"), CONFIG, sagemaker)
    assert result["status"] == "ignored" and "s3://elsewhere/" in result["reason"]
    assert _executions(sagemaker) == []


def test_a_schedule_tick_starts_an_execution_with_the_pipelines_defaults(sagemaker):
    result = retrain.handle(_scheduled(), CONFIG, sagemaker)
    assert result["status"] == "started" and result["parameters"] == {}
    (summary,) = _executions(sagemaker)
    assert summary["PipelineExecutionDisplayName"] == "scheduled-20261123T030000"
    assert "rule/sentiment-mlops-retrain" in summary["PipelineExecutionDescription"]
    assert sagemaker.list_pipeline_parameters_for_execution(
        PipelineExecutionArn=result["execution_arn"])["PipelineParameters"] == []


def _mark_running(arn: str) -> None:
    """moto ends every execution Succeeded at once; a real one runs for a while."""
    pipeline = sagemaker_backends[DEFAULT_ACCOUNT_ID][REGION].pipelines[PIPELINE]
    pipeline.pipeline_executions[arn].pipeline_execution_status = "Executing"


def test_a_schedule_tick_while_an_execution_runs_is_skipped_but_new_data_is_not(sagemaker):
    first = retrain.handle(_scheduled("tick-1"), CONFIG, sagemaker)
    _mark_running(first["execution_arn"])
    skipped = retrain.handle(_scheduled("tick-2"), CONFIG, sagemaker)
    assert skipped["status"] == "skipped" and first["execution_arn"] in skipped["reason"]
    assert len(_executions(sagemaker)) == 1
    new_data = retrain.handle(_object_created("sentiment-mlops/data/new.tar.gz"), CONFIG, sagemaker)
    assert new_data["status"] == "started" and len(_executions(sagemaker)) == 2


@pytest.mark.parametrize("event, reason", [
    ("not an object", "not a JSON object"),
    ({"source": "aws.s3"}, "lacks id, source, detail-type or time"),
    ({**_scheduled(), "source": "aws.sagemaker", "detail-type": "SageMaker Model Package State Change"},
     "not a scheduled or S3 Object Created event"),
    ({**_object_created("sentiment-mlops/data/a.tar.gz"), "detail": "oops"}, "lacks bucket.name or object.key"),
    ({**_object_created("sentiment-mlops/data/a.tar.gz"), "detail": {"bucket": {"name": BUCKET}}},
     "lacks bucket.name or object.key"),
    ({**_object_created("sentiment-mlops/data/a.tar.gz"), "detail": {"bucket": BUCKET, "object": "a.tar.gz"}},
     "lacks bucket.name or object.key"),
])
def test_malformed_events_are_ignored_with_the_reason(sagemaker, event, reason):
    result = retrain.handle(event, CONFIG, sagemaker)
    assert result["status"] == "ignored" and reason in result["reason"]
    assert _executions(sagemaker) == []


def _stubbed_start(event: dict) -> dict:
    """The StartPipelineExecution request the handler makes for an event (Stubber checks it
    against the service model: the token's 32-128 characters, the display name's pattern)."""
    client = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    seen = {}
    with Stubber(client) as stubber:
        stubber.add_response("start_pipeline_execution", {"PipelineExecutionArn": "arn:x"},
                             {"PipelineName": PIPELINE, "PipelineExecutionDisplayName": ANY,
                              "PipelineExecutionDescription": ANY, "PipelineParameters": ANY,
                              "ClientRequestToken": ANY})
        original = client.start_pipeline_execution

        def record(**kwargs):
            seen.update(kwargs)
            return original(**kwargs)

        client.start_pipeline_execution = record
        retrain.handle(event, CONFIG, client)
        stubber.assert_no_pending_responses()
    return seen


def test_a_redelivered_event_carries_the_same_idempotency_token():
    event = _object_created("sentiment-mlops/data/a.tar.gz")
    first, again = _stubbed_start(event), _stubbed_start(json.loads(json.dumps(event)))
    assert first["ClientRequestToken"] == again["ClientRequestToken"]
    assert 32 <= len(first["ClientRequestToken"]) <= 128
    other = _stubbed_start(_object_created("sentiment-mlops/data/a.tar.gz", event_id="another-upload-of-it"))
    assert other["ClientRequestToken"] != first["ClientRequestToken"]


def test_a_pipeline_not_upserted_yet_raises_saying_so(aws_env):  # noqa: F811
    with mock_aws():
        client = boto3.client("sagemaker", region_name=REGION)
        with pytest.raises(retrain.RetrainError, match="sentiment-mlops aws upsert"):
            retrain.handle(_object_created("sentiment-mlops/data/a.tar.gz"), CONFIG, client)


def test_the_config_comes_from_the_functions_environment():
    config = retrain.RetrainConfig.from_env({"PIPELINE_NAME": "p", "DATA_BUCKET": "b", "DATA_PREFIX": "x/data"})
    assert config == retrain.RetrainConfig("p", "b", "x/data/")
    with pytest.raises(retrain.RetrainError, match="lacks PIPELINE_NAME"):
        retrain.RetrainConfig.from_env({"DATA_BUCKET": "b", "DATA_PREFIX": "x/data/"})
    with pytest.raises(retrain.RetrainError, match="is not a pipeline name"):
        retrain.RetrainConfig.from_env({"PIPELINE_NAME": "no spaces", "DATA_BUCKET": "b", "DATA_PREFIX": "d/"})
