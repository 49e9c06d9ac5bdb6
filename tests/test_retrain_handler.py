"""The retrain trigger (``lambda/retrain.py``): the code that runs in AWS Lambda, against moto's
SageMaker pipelines and S3, and botocore's Stubber (the real client, checked against the service
model) for what moto does not keep: the idempotency token.

moto ends every execution Succeeded at once and keeps its parameters and definition
(ListPipelineParametersForExecution, DescribePipelineDefinitionForExecution), which is what a
schedule tick reads back to decide whether anything changed since."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sagemaker.models import sagemaker_backends

from pipeline.lambdas import load_lambda
from tests.test_aws_backend import REGION, aws_env  # noqa: F401  (aws_env is a fixture)

retrain = load_lambda("retrain")

PIPELINE = "sentiment-retrain-test"
BUCKET = "my-bucket"
CONFIG = retrain.RetrainConfig(PIPELINE, BUCKET, "sentiment-mlops/data/")
ROLE = "arn:aws:iam::123456789012:role/TestSageMakerRole"
DEFAULT_DATA = f"s3://{BUCKET}/sentiment-mlops/data/imdb/"
# The deployed definition's parameters, as `aws upsert` sends them (steps do not matter to the trigger).
DEFINITION = {"Version": "2020-12-01", "Steps": [], "Parameters": [
    {"Name": "InputDataUri", "Type": "String", "DefaultValue": DEFAULT_DATA},
    {"Name": "InputDataVersion", "Type": "String", "DefaultValue": ""},
    {"Name": "Epochs", "Type": "Integer", "DefaultValue": 8}]}


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
        client.create_pipeline(PipelineName=PIPELINE, RoleArn=ROLE, PipelineDefinition=json.dumps(DEFINITION))
        yield client


@pytest.fixture
def s3(sagemaker):
    """The data bucket (in the same moto account), with the default dataset in it."""
    client = boto3.client("s3", region_name=REGION)
    client.create_bucket(Bucket=BUCKET)
    _put(client, "sentiment-mlops/data/imdb/train.jsonl", b'{"text": "fine", "label": 1}\n')
    _put(client, "sentiment-mlops/data/imdb/test.jsonl", b'{"text": "dull", "label": 0}\n')
    return client


def _put(s3, key: str, body: bytes) -> None:
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)


def _executions(client) -> list[dict]:
    return client.list_pipeline_executions(PipelineName=PIPELINE)["PipelineExecutionSummaries"]


@pytest.mark.parametrize("key, input_uri", [
    ("sentiment-mlops/data/aclImdb_v1.tar.gz", "s3://my-bucket/sentiment-mlops/data/aclImdb_v1.tar.gz"),
    ("sentiment-mlops/data/2026-11/IMDB Dataset.csv", "s3://my-bucket/sentiment-mlops/data/2026-11/IMDB Dataset.csv"),
    ("sentiment-mlops/data/imdb-v2/_SUCCESS", "s3://my-bucket/sentiment-mlops/data/imdb-v2/"),
])
def test_new_data_starts_an_execution_on_that_data_and_its_version(sagemaker, s3, key, input_uri):
    _put(s3, key.replace("_SUCCESS", "train.jsonl"), b"reviews")
    _put(s3, key, b"")
    result = retrain.handle(_object_created(key), CONFIG, sagemaker, s3)
    version = retrain.data_version(s3, input_uri)
    assert result["status"] == "started"
    assert result["parameters"] == {"InputDataUri": input_uri, "InputDataVersion": version} and len(version) == 64
    (summary,) = _executions(sagemaker)
    assert summary["PipelineExecutionArn"] == result["execution_arn"]
    assert summary["PipelineExecutionDisplayName"] == "new-data-20261122T184348"
    assert f"s3://{BUCKET}/{key}" in summary["PipelineExecutionDescription"]
    parameters = sagemaker.list_pipeline_parameters_for_execution(PipelineExecutionArn=result["execution_arn"])
    assert parameters["PipelineParameters"] == [{"Name": "InputDataUri", "Value": input_uri},
                                                {"Name": "InputDataVersion", "Value": version}]


def test_data_replaced_under_the_same_name_gets_a_new_version(sagemaker, s3):
    """`aws s3 cp` over an archive keeps its URI: only the version tells SageMaker's cache that
    the bytes changed (an S3 Object Created event is sent for the replacement too)."""
    key = "sentiment-mlops/data/aclImdb_v1.tar.gz"
    _put(s3, key, b"first upload")
    first = retrain.handle(_object_created(key, event_id="upload-1"), CONFIG, sagemaker, s3)
    _put(s3, key, b"replaced in place")
    again = retrain.handle(_object_created(key, event_id="upload-2"), CONFIG, sagemaker, s3)
    assert first["parameters"]["InputDataUri"] == again["parameters"]["InputDataUri"]
    assert first["parameters"]["InputDataVersion"] != again["parameters"]["InputDataVersion"]


def test_new_data_identical_to_what_was_trained_on_starts_nothing(sagemaker, s3):
    """The same bytes copied over an archive (or its event delivered again once that run ended)
    would be answered from the cache and registered twice."""
    key = "sentiment-mlops/data/aclImdb_v1.tar.gz"
    _put(s3, key, b"archive")
    first = retrain.handle(_object_created(key, event_id="upload-1"), CONFIG, sagemaker, s3)
    _put(s3, key, b"archive")
    again = retrain.handle(_object_created(key, event_id="upload-2"), CONFIG, sagemaker, s3)
    assert again["status"] == "skipped" and first["execution_arn"] in again["reason"]
    assert len(_executions(sagemaker)) == 1


def test_the_data_version_is_the_listing_digest(s3):
    """Keys relative to the URI, ETag and size, over every page of the listing, in key order."""
    before = retrain.data_version(s3, DEFAULT_DATA)
    paged = retrain.data_version(_paging(s3, page_size=1), DEFAULT_DATA)
    assert before == paged  # the same objects over several pages
    _put(s3, "sentiment-mlops/data/imdb-2026-11/train.jsonl", b"beside it")
    assert retrain.data_version(s3, DEFAULT_DATA) == before  # "imdb/" is not a prefix of "imdb-2026-11/"
    _put(s3, "sentiment-mlops/data/imdb/test.jsonl", b'{"text": "dull", "label": 0}\n')
    assert retrain.data_version(s3, DEFAULT_DATA) == before  # the same bytes again: the same ETag
    _put(s3, "sentiment-mlops/data/imdb/test.jsonl", b'{"text": "awful", "label": 0}\n')
    assert retrain.data_version(s3, DEFAULT_DATA) != before
    assert retrain.data_version(s3, f"s3://{BUCKET}/sentiment-mlops/data/nothing-here/") is None
    with pytest.raises(ValueError, match="not an s3://"):
        retrain.data_version(s3, "/local/path")


def test_an_archive_and_the_folder_that_holds_only_it_have_one_version(s3):
    """Keys count relative to the URI's folder: the archive's own URI (its upload event's) and its
    dataset folder (the pipeline's default) name the same object, so the same data. Other bytes
    in another folder, or a URI that also reads the folder beside it, are other data."""
    data = f"s3://{BUCKET}/sentiment-mlops/data/"
    _put(s3, "sentiment-mlops/data/v3/aclImdb_v1.tar.gz", b"archive")
    folder = retrain.data_version(s3, data + "v3/")
    assert retrain.data_version(s3, data + "v3/aclImdb_v1.tar.gz") == folder
    assert retrain.data_version(s3, data + "v3") != folder  # "v3/aclImdb_v1.tar.gz" relative to data/
    _put(s3, "sentiment-mlops/data/v3-2026-11/aclImdb_v1.tar.gz", b"other archive")
    assert retrain.data_version(s3, data + "v3/") == folder  # "v3/" does not read "v3-2026-11/"
    assert retrain.data_version(s3, data + "v3-2026-11/") != folder
    assert retrain.data_version(s3, data + "v3-2026-11/aclImdb_v1.tar.gz") == retrain.data_version(
        s3, data + "v3-2026-11/")


def test_a_tick_after_new_data_uploaded_as_the_default_datasets_archive_starts_nothing(sagemaker, s3):
    """The walk in docs/aws.md: `aws upload-data aclImdb_v1.tar.gz --name imdb` stores the archive in the
    default dataset's folder, and its event starts a run with InputDataUri = the archive. The next
    tick reads the default folder: other URI, same object, same version. Training again would
    register a new version of a model trained on identical bytes."""
    for key in ("sentiment-mlops/data/imdb/train.jsonl", "sentiment-mlops/data/imdb/test.jsonl"):
        s3.delete_object(Bucket=BUCKET, Key=key)
    archive = "sentiment-mlops/data/imdb/aclImdb_v1.tar.gz"
    _put(s3, archive, b"the archive")
    uploaded = retrain.handle(_object_created(archive), CONFIG, sagemaker, s3)
    assert uploaded["status"] == "started" and uploaded["parameters"]["InputDataUri"] == f"s3://{BUCKET}/{archive}"
    _execution(uploaded["execution_arn"]).start_time = next(_CLOCK)
    tick = _tick(sagemaker, s3, "tick-1")
    assert tick["status"] == "skipped" and uploaded["execution_arn"] in tick["reason"]
    assert DEFAULT_DATA in tick["reason"] and len(_executions(sagemaker)) == 1


def _paging(s3, page_size: int):
    """``s3`` whose ListObjectsV2 answers at most ``page_size`` keys per page."""
    class Paging:
        def get_paginator(self, name):
            paginator = s3.get_paginator(name)

            class Pages:
                def paginate(self, **kwargs):
                    return paginator.paginate(**kwargs, PaginationConfig={"PageSize": page_size})
            return Pages()
    return Paging()


@pytest.mark.parametrize("key, reason", [
    ("sentiment-mlops/data/imdb-v2/train.jsonl", "does not complete a dataset"),  # one file of several
    ("sentiment-mlops/data/imdb-v2/.hidden.csv", "does not complete a dataset"),
    ("sentiment-mlops/data/_SUCCESS", "would train on every dataset at once"),
    ("sentiment-mlops/models/job/output/model.tar.gz", "is not under s3://my-bucket/sentiment-mlops/data/"),
    ("other/data/aclImdb_v1.tar.gz", "is not under"),
    ("sentiment-mlops/data/deleted-since.tar.gz", "no data under s3://my-bucket/sentiment-mlops/data/deleted-since"),
])
def test_objects_that_complete_no_dataset_start_nothing(sagemaker, s3, key, reason):
    result = retrain.handle(_object_created(key), CONFIG, sagemaker, s3)
    assert result["status"] == "ignored" and reason in result["reason"]
    assert _executions(sagemaker) == []


def test_another_buckets_object_starts_nothing(sagemaker, s3):
    result = retrain.handle(_object_created("sentiment-mlops/data/a.tar.gz", bucket="elsewhere"), CONFIG, sagemaker, s3)
    assert result["status"] == "ignored" and "s3://elsewhere/" in result["reason"]
    assert _executions(sagemaker) == []


def test_a_schedule_tick_starts_an_execution_on_the_default_data_and_its_version(sagemaker, s3):
    result = retrain.handle(_scheduled(), CONFIG, sagemaker, s3)
    version = retrain.data_version(s3, DEFAULT_DATA)
    assert result["status"] == "started"
    assert result["parameters"] == {"InputDataUri": DEFAULT_DATA, "InputDataVersion": version}
    (summary,) = _executions(sagemaker)
    assert summary["PipelineExecutionDisplayName"] == "scheduled-20261123T030000"
    assert "rule/sentiment-mlops-retrain" in summary["PipelineExecutionDescription"]
    assert sagemaker.list_pipeline_parameters_for_execution(
        PipelineExecutionArn=result["execution_arn"])["PipelineParameters"] == [
        {"Name": "InputDataUri", "Value": DEFAULT_DATA}, {"Name": "InputDataVersion", "Value": version}]


def test_violations_the_monitoring_function_found_start_a_run_on_the_default_data(sagemaker, s3):
    """With MonitorRetrain, the monitoring function's event reaches this function: a run on the
    default data, as a schedule tick (and, like one, not while another runs)."""
    from mlops_rules.monitoring import VIOLATIONS_DETAIL_TYPE, VIOLATIONS_SOURCE

    event = {**_scheduled("violations-1"), "source": VIOLATIONS_SOURCE, "detail-type": VIOLATIONS_DETAIL_TYPE,
             "detail": {"endpoint": "sentiment-mlops", "report": "s3://bucket/sentiment-mlops/monitoring/x"}}
    result = retrain.handle(event, CONFIG, sagemaker, s3)
    assert result["status"] == "started" and result["parameters"]["InputDataUri"] == DEFAULT_DATA
    (summary,) = _executions(sagemaker)
    assert summary["PipelineExecutionDisplayName"].startswith("monitoring-")
    assert "monitoring found violations (endpoint sentiment-mlops" in summary["PipelineExecutionDescription"]
    _mark_running(result["execution_arn"])
    again = retrain.handle({**event, "id": "violations-2"}, CONFIG, sagemaker, s3)
    assert again["status"] == "skipped" and "still running" in again["reason"]


def test_a_schedule_tick_with_no_default_data_is_ignored(sagemaker, s3):
    for key in ("sentiment-mlops/data/imdb/train.jsonl", "sentiment-mlops/data/imdb/test.jsonl"):
        s3.delete_object(Bucket=BUCKET, Key=key)
    result = retrain.handle(_scheduled(), CONFIG, sagemaker, s3)
    assert result == {"status": "ignored", "reason": result["reason"]}
    assert f"no data under {DEFAULT_DATA}" in result["reason"] and _executions(sagemaker) == []


def _execution(arn: str):
    return sagemaker_backends[DEFAULT_ACCOUNT_ID][REGION].pipelines[PIPELINE].pipeline_executions[arn]


def _mark_running(arn: str) -> None:
    """moto ends every execution Succeeded at once; a real one runs for a while."""
    _execution(arn).pipeline_execution_status = "Executing"


# Start times within the cache's lifetime of the real clock, which the handler measures against;
# an execution the handler starts without _tick keeps moto's start time (now: newer than these).
_CLOCK = iter(datetime.now(UTC) - timedelta(days=10) + timedelta(minutes=n) for n in range(1000))


def _tick(sagemaker, s3, event_id: str) -> dict:
    """A schedule tick; what it started is given its own, later start time (moto's clock may give
    two executions the same one) and, as moto does, ends Succeeded."""
    result = retrain.handle(_scheduled(event_id), CONFIG, sagemaker, s3)
    if result["status"] == "started":
        _execution(result["execution_arn"]).start_time = next(_CLOCK)
    return result


def test_a_schedule_tick_while_an_execution_runs_is_skipped_but_new_data_is_not(sagemaker, s3):
    first = _tick(sagemaker, s3, "tick-1")
    _mark_running(first["execution_arn"])
    skipped = _tick(sagemaker, s3, "tick-2")
    assert skipped["status"] == "skipped" and first["execution_arn"] in skipped["reason"]
    assert "still running" in skipped["reason"] and len(_executions(sagemaker)) == 1
    _put(s3, "sentiment-mlops/data/new.tar.gz", b"archive")
    new_data = retrain.handle(_object_created("sentiment-mlops/data/new.tar.gz"), CONFIG, sagemaker, s3)
    assert new_data["status"] == "started" and len(_executions(sagemaker)) == 2


def test_a_schedule_tick_after_a_run_on_unchanged_data_starts_nothing(sagemaker, s3):
    """The issue: each tick within ExpireAfter took every step from the cache and registered the
    same model.tar.gz again. A tick now starts only when the data (or the pipeline) changed."""
    first = _tick(sagemaker, s3, "tick-1")
    assert first["status"] == "started"
    assert _execution(first["execution_arn"]).pipeline_execution_status == "Succeeded"

    second = _tick(sagemaker, s3, "tick-2")
    assert second == {"status": "skipped", "reason": second["reason"]}
    assert f"no new data since execution {first['execution_arn']}" in second["reason"]
    assert len(_executions(sagemaker)) == 1

    _put(s3, "sentiment-mlops/data/imdb/train.jsonl", b'{"text": "replaced in place", "label": 1}\n')
    third = _tick(sagemaker, s3, "tick-3")
    assert third["status"] == "started" and len(_executions(sagemaker)) == 2
    assert third["parameters"]["InputDataVersion"] != first["parameters"]["InputDataVersion"]
    assert third["parameters"]["InputDataVersion"] == retrain.data_version(s3, DEFAULT_DATA)

    fourth = _tick(sagemaker, s3, "tick-4")
    assert fourth["status"] == "skipped" and third["execution_arn"] in fourth["reason"]


def test_a_run_on_other_data_in_between_does_not_make_a_tick_repeat_itself(sagemaker, s3):
    """New data under another name is trained on by its own event; the next tick on the default
    data compares with the newest run on the default data, not with the newest run of all."""
    first = _tick(sagemaker, s3, "tick-1")
    _put(s3, "sentiment-mlops/data/imdb-v2.tar.gz", b"other data")
    other = retrain.handle(_object_created("sentiment-mlops/data/imdb-v2.tar.gz"), CONFIG, sagemaker, s3)
    _execution(other["execution_arn"]).start_time = next(_CLOCK)
    second = _tick(sagemaker, s3, "tick-2")
    assert second["status"] == "skipped" and first["execution_arn"] in second["reason"]


CHANGED = {**DEFINITION, "Steps": [{"Name": "Preprocess", "Type": "Processing", "Arguments": {}}]}


def _upsert(sagemaker, definition: dict) -> None:
    sagemaker.update_pipeline(PipelineName=PIPELINE, PipelineDefinition=json.dumps(definition), RoleArn=ROLE)


def _start_by_hand(sagemaker, s3, **parameters: str) -> str:
    """`aws start --param ...` on the default data, at the next clock tick."""
    given = {"InputDataUri": DEFAULT_DATA, "InputDataVersion": retrain.data_version(s3, DEFAULT_DATA), **parameters}
    arn = sagemaker.start_pipeline_execution(PipelineName=PIPELINE, PipelineParameters=[
        {"Name": name, "Value": value} for name, value in given.items()])["PipelineExecutionArn"]
    _execution(arn).start_time = next(_CLOCK)
    return arn


def test_a_schedule_tick_runs_when_the_pipeline_changed(sagemaker, s3):
    """Same data, but new code (an upsert) since: no model was trained on what a tick would run,
    so the tick starts; the next one has nothing new."""
    _tick(sagemaker, s3, "tick-1")
    _upsert(sagemaker, CHANGED)
    assert _tick(sagemaker, s3, "tick-2")["status"] == "started"
    assert _tick(sagemaker, s3, "tick-3")["status"] == "skipped"


def test_a_run_by_hand_with_other_parameters_does_not_make_a_tick_repeat_the_run_before_it(sagemaker, s3):
    """The review's case: a default run on version V, then `aws start --param Epochs=1` on V. A
    tick would take Preprocess, Train and Evaluate from the first run's cache and register the
    same model.tar.gz again, so it compares with every run in the cache's lifetime, not the newest."""
    first = _tick(sagemaker, s3, "tick-1")
    _start_by_hand(sagemaker, s3, Epochs="1")
    second = _tick(sagemaker, s3, "tick-2")
    assert second["status"] == "skipped" and first["execution_arn"] in second["reason"]
    assert len(_executions(sagemaker)) == 2
    # A run by hand like one before it repeats nothing new either: the tick after still skips.
    assert _tick(sagemaker, s3, "tick-3")["status"] == "skipped"


def test_a_definition_changed_and_changed_back_repeats_nothing(sagemaker, s3):
    first = _tick(sagemaker, s3, "tick-1")
    _upsert(sagemaker, CHANGED)
    assert _tick(sagemaker, s3, "tick-2")["status"] == "started"
    _upsert(sagemaker, DEFINITION)
    third = _tick(sagemaker, s3, "tick-3")
    assert third["status"] == "skipped" and first["execution_arn"] in third["reason"]
    assert len(_executions(sagemaker)) == 2


def test_a_run_older_than_the_cache_lifetime_is_not_repeated(sagemaker, s3):
    """Past ExpireAfter SageMaker takes nothing from that run's cache: a tick trains afresh."""
    first = _tick(sagemaker, s3, "tick-1")
    _execution(first["execution_arn"]).start_time = (
        datetime.now(UTC) - retrain.CACHE_LIFETIME - timedelta(minutes=1))
    assert _tick(sagemaker, s3, "tick-2")["status"] == "started"


class _Listing:
    """ListPipelineExecutions over ``starts`` (newest first), in pages of ``page_size``, as
    SageMaker answers SortOrder=Descending; records each request."""

    def __init__(self, starts: list[datetime], page_size: int) -> None:
        self.summaries = [{"PipelineExecutionArn": f"arn:{n}", "StartTime": start,
                           "PipelineExecutionStatus": "Succeeded"} for n, start in enumerate(starts)]
        self.page_size = page_size
        self.requests: list[dict] = []

    def list_pipeline_executions(self, **request):
        self.requests.append(request)
        first = int(request.get("NextToken", 0))
        last = min(first + self.page_size, request["MaxResults"] + first, len(self.summaries))
        page = {"PipelineExecutionSummaries": self.summaries[first:last]}
        return {**page, "NextToken": str(last)} if last < len(self.summaries) else page


def test_executions_are_read_back_newest_first_until_the_cache_lifetime_or_the_cap():
    now = datetime.now(UTC)
    since = now - retrain.CACHE_LIFETIME
    hourly = _Listing([now - timedelta(hours=n) for n in range(30 * 24 + 100)], page_size=10)
    recent = retrain._recent_executions(hourly, PIPELINE, since)
    assert len(recent) == retrain.RECENT_EXECUTIONS == 50  # the cap: 5 pages of 10, then no more asked for
    assert [r["MaxResults"] for r in hourly.requests] == [50, 40, 30, 20, 10]
    assert all(r["SortOrder"] == "Descending" for r in hourly.requests)
    assert [r["StartTime"] for r in recent] == sorted((r["StartTime"] for r in recent), reverse=True)

    daily = _Listing([now - timedelta(days=n, minutes=1) for n in range(200)], page_size=10)
    recent = retrain._recent_executions(daily, PIPELINE, since)
    assert len(recent) == 30 and all(r["StartTime"] >= since for r in recent)
    assert len(daily.requests) == 4  # days 0-29 fill three pages; the fourth reaches back past day 30: the last


def test_a_pipeline_upserted_before_the_data_version_raises_saying_so(aws_env):  # noqa: F811
    with mock_aws():
        sagemaker = boto3.client("sagemaker", region_name=REGION)
        old = {**DEFINITION, "Parameters": DEFINITION["Parameters"][:1]}
        sagemaker.create_pipeline(PipelineName=PIPELINE, RoleArn=ROLE, PipelineDefinition=json.dumps(old))
        with pytest.raises(retrain.RetrainError, match="no InputDataVersion parameter.*aws upsert"):
            retrain.handle(_scheduled(), CONFIG, sagemaker, boto3.client("s3", region_name=REGION))


@pytest.mark.parametrize("event, reason", [
    ("not an object", "not a JSON object"),
    ({"source": "aws.s3"}, "lacks id, source, detail-type or time"),
    ({**_scheduled(), "source": "aws.sagemaker", "detail-type": "SageMaker Model Package State Change"},
     "not a scheduled, monitoring or S3 Object Created event"),
    ({**_object_created("sentiment-mlops/data/a.tar.gz"), "detail": "oops"}, "lacks bucket.name or object.key"),
    ({**_object_created("sentiment-mlops/data/a.tar.gz"), "detail": {"bucket": {"name": BUCKET}}},
     "lacks bucket.name or object.key"),
    ({**_object_created("sentiment-mlops/data/a.tar.gz"), "detail": {"bucket": BUCKET, "object": "a.tar.gz"}},
     "lacks bucket.name or object.key"),
])
def test_malformed_events_are_ignored_with_the_reason(sagemaker, s3, event, reason):
    result = retrain.handle(event, CONFIG, sagemaker, s3)
    assert result["status"] == "ignored" and reason in result["reason"]
    assert _executions(sagemaker) == []


def _stubbed_start(event: dict) -> dict:
    """The StartPipelineExecution request the handler makes for an event (Stubber checks it
    against the service model: the token's 32-128 characters, the display name's pattern)."""
    def client(service: str):
        return boto3.client(service, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")

    sagemaker, s3 = client("sagemaker"), client("s3")
    seen = {}
    with Stubber(sagemaker) as stubber, Stubber(s3) as s3_stubber:
        stubber.add_response("describe_pipeline", {"PipelineDefinition": json.dumps(DEFINITION)},
                             {"PipelineName": PIPELINE})
        s3_stubber.add_response("list_objects_v2", {"Contents": [{"Key": "sentiment-mlops/data/a.tar.gz",
                                                                  "ETag": '"abc"', "Size": 3}]},
                                {"Bucket": BUCKET, "Prefix": "sentiment-mlops/data/a.tar.gz"})
        stubber.add_response("list_pipeline_executions", {"PipelineExecutionSummaries": []},
                             {"PipelineName": PIPELINE, "SortBy": "CreationTime", "SortOrder": "Descending",
                              "MaxResults": retrain.RECENT_EXECUTIONS})
        stubber.add_response("start_pipeline_execution", {"PipelineExecutionArn": "arn:x"},
                             {"PipelineName": PIPELINE, "PipelineExecutionDisplayName": ANY,
                              "PipelineExecutionDescription": ANY, "PipelineParameters": ANY,
                              "ClientRequestToken": ANY})
        original = sagemaker.start_pipeline_execution

        def record(**kwargs):
            seen.update(kwargs)
            return original(**kwargs)

        sagemaker.start_pipeline_execution = record
        retrain.handle(event, CONFIG, sagemaker, s3)
        stubber.assert_no_pending_responses()
        s3_stubber.assert_no_pending_responses()
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
            retrain.handle(_object_created("sentiment-mlops/data/a.tar.gz"), CONFIG, client,
                           boto3.client("s3", region_name=REGION))


def test_aws_start_sends_the_same_data_version_as_a_schedule_tick(sagemaker, s3, monkeypatch):
    """`sentiment-mlops aws start` fills InputDataVersion with the Lambda's own digest (one home
    for it), unless the user gives one."""
    from pipeline.commands.aws import start
    from pipeline.settings import Settings

    monkeypatch.setenv("SENTIMENT_MLOPS_REGION", REGION)
    settings = Settings(pipeline_name=PIPELINE, bucket=BUCKET)
    started = start(settings, ["Epochs=2"], "by-hand", wait=False)
    assert started["parameters"] == {"Epochs": "2", "InputDataVersion": retrain.data_version(s3, DEFAULT_DATA)}
    other = f"s3://{BUCKET}/sentiment-mlops/data/imdb-v2/"
    _put(s3, "sentiment-mlops/data/imdb-v2/train.jsonl", b"other")
    started = start(settings, [f"InputDataUri={other}"], None, wait=False)
    assert started["parameters"]["InputDataVersion"] == retrain.data_version(s3, other)
    started = start(settings, ["InputDataVersion=my-label"], None, wait=False)
    assert started["parameters"] == {"InputDataVersion": "my-label"}


def test_the_config_comes_from_the_functions_environment():
    config = retrain.RetrainConfig.from_env({"PIPELINE_NAME": "p", "DATA_BUCKET": "b", "DATA_PREFIX": "x/data"})
    assert config == retrain.RetrainConfig("p", "b", "x/data/")
    with pytest.raises(retrain.RetrainError, match="lacks PIPELINE_NAME"):
        retrain.RetrainConfig.from_env({"DATA_BUCKET": "b", "DATA_PREFIX": "x/data/"})
    with pytest.raises(retrain.RetrainError, match="is not a pipeline name"):
        retrain.RetrainConfig.from_env({"PIPELINE_NAME": "no spaces", "DATA_BUCKET": "b", "DATA_PREFIX": "d/"})
