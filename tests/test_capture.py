"""Endpoint data capture in SageMaker's format: the DataCaptureConfig the deploy function sends
(the SDK's own builder and botocore's model as the judges), the record each captured invocation
becomes, the local writer that never blocks or tears a record, and a real endpoint capturing what
a real boto3 client sends, InferenceId included."""
from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from mlops_rules.capture import (
    CAPTURE_FOLDER,
    CaptureLineError,
    CaptureRules,
    capture_config,
    capture_prefix,
    config_problems,
    read_capture_line,
)
from pipeline.local.services.capture import CaptureWriter
from pipeline.local.services.events import deploy_module
from pipeline.local.state.store import ArtifactStore
from tests.test_aws_backend import REGION

deploy = deploy_module()
DESTINATION = "s3://bucket/prefix/datacapture"


def test_the_config_is_the_one_the_sagemaker_sdk_builds():
    from sagemaker.core.model_monitor.data_capture_config import DataCaptureConfig

    class Offline:  # what DataCaptureConfig reads of a session when a destination is given
        sagemaker_config = None

    sdk = DataCaptureConfig(True, 100, DESTINATION, csv_content_types=["text/csv"],
                            json_content_types=["application/json", "application/jsonlines"],
                            sagemaker_session=Offline())._to_request_dict()
    assert capture_config(DESTINATION, 100) == sdk
    assert config_problems(sdk) == []


@pytest.mark.parametrize("change, problem", [
    ({"InitialSamplingPercentage": 101}, "between 0 and 100"),
    ({"DestinationS3Uri": "/tmp/capture"}, "not an s3:// URI"),
    ({"CaptureOptions": [{"CaptureMode": "Everything"}]}, "Input, Output or both"),
])
def test_a_config_sagemaker_would_refuse_is_refused(change, problem):
    assert any(problem in p for p in config_problems({**capture_config(DESTINATION, 50), **change}))


def test_the_deploy_function_sends_the_config_in_create_endpoint_config():
    config = deploy.DeployConfig("sentiment-test", "g", "arn:aws:iam::123456789012:role/r", "ml.m5.large", 1,
                                 capture_percent=100, capture_destination=DESTINATION)
    assert config.variant_hash() != deploy.DeployConfig("sentiment-test", "g", "r").variant_hash()
    client = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    stub = Stubber(client)  # validates the request against botocore's model of the API
    stub.add_client_error("describe_endpoint_config", "ValidationException", "Could not find endpoint configuration")
    stub.add_response("create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:1:endpoint-config/x"}, {
        "EndpointConfigName": "c", "ProductionVariants": [
            {"VariantName": "AllTraffic", "ModelName": "m", "InstanceType": "ml.m5.large", "InitialInstanceCount": 1,
             "InitialVariantWeight": 1.0}],
        "DataCaptureConfig": capture_config(DESTINATION, 100)})
    with stub:
        assert deploy._ensure_endpoint_config(client, "c", "m", config)
    stub.assert_no_pending_responses()


def test_no_capture_keeps_the_endpoint_configs_names_of_before():
    """Capture off: the settings hash is the one configs had before capture existed (no new config)."""
    import hashlib

    config = deploy.DeployConfig("e", "g", "r", "ml.m5.large", 1)
    assert config.variant_hash() == hashlib.sha256(b"ml.m5.large|1").hexdigest()[:8]


# --- the record ------------------------------------------------------------------------------------

def test_a_record_has_sagemakers_shape_and_reads_back():
    from datetime import UTC, datetime

    rules = CaptureRules.of(capture_config(DESTINATION, 100))
    assert rules is not None
    when = datetime(2026, 12, 7, 19, 50, 49, 123000, tzinfo=UTC)
    record = rules.record(("application/json", b'{"review": "fine \xc3\xa9"}'),
                          ("application/json", b'{"predictions": []}'), "e-1", when, "inference-7")
    assert record == {
        "captureData": {
            "endpointInput": {"observedContentType": "application/json", "mode": "INPUT",
                              "data": '{"review": "fine é"}', "encoding": "JSON"},
            "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                               "data": '{"predictions": []}', "encoding": "JSON"}},
        "eventMetadata": {"eventId": "e-1", "inferenceId": "inference-7", "inferenceTime": "2026-12-07T19:50:49Z"},
        "eventVersion": "0"}
    read = read_capture_line(json.dumps(record))
    assert (read["input"], read["inference_id"], read["event_id"]) == ('{"review": "fine é"}', "inference-7", "e-1")
    plain = rules.record(("text/plain", b"a fine film"), ("application/json", b"{}"), "e-2", when)
    assert plain["captureData"]["endpointInput"]["encoding"] == "BASE64"
    assert "inferenceId" not in plain["eventMetadata"]
    assert read_capture_line(json.dumps(plain))["input"] == "a fine film"
    assert capture_prefix(DESTINATION, "ep", "AllTraffic", when) == f"{DESTINATION}/ep/AllTraffic/2026/12/07/19"


@pytest.mark.parametrize("line, says", [
    ("{not json", "not JSON"),
    ('{"captureData": {}}', "captureData and eventMetadata are missing"),
    ('{"captureData": {"endpointInput": {"encoding": "BASE64", "data": "!!"}}, "eventMetadata": {}}', "does not decode"),
    ('{"captureData": {"endpointInput": {"mode": "INPUT"}}, "eventMetadata": {}}', "has no data"),
])
def test_a_line_that_is_not_a_capture_record_is_named(line, says):
    with pytest.raises(CaptureLineError, match=says):
        read_capture_line(line)


# --- the local writer ------------------------------------------------------------------------------

def test_the_writer_drops_and_counts_what_its_buffer_cannot_hold_and_writes_whole_files(tmp_path):
    writer = CaptureWriter(ArtifactStore(tmp_path), max_pending=3)
    for n in range(5):
        writer.add(f"{DESTINATION}/ep/AllTraffic/2026/12/07/19", {"n": n})
    assert writer.stats == {"written": 0, "dropped": 2, "failed": 0, "pending": 3}
    assert writer.flush() == 3
    files = list((tmp_path / "s3" / "bucket" / "prefix" / CAPTURE_FOLDER).rglob("*.jsonl"))
    assert len(files) == 1 and [json.loads(line)["n"] for line in files[0].read_text().splitlines()] == [0, 1, 2]
    assert not list(tmp_path.rglob("*.partial"))


def test_a_write_that_fails_is_counted_and_the_writer_goes_on(tmp_path):
    writer = CaptureWriter(ArtifactStore(tmp_path))
    writer.add("s3://bucket/../escape", {"n": 1})  # a URI the store refuses
    writer.add(f"{DESTINATION}/ep/AllTraffic/2026/12/07/19", {"n": 2})
    assert writer.flush() == 1
    assert writer.stats["failed"] == 1 and writer.stats["written"] == 1


# --- a real endpoint ---------------------------------------------------------------------------------

@pytest.mark.server
@pytest.mark.parametrize("percent, captured", [(100, 30), (20, 6)])
def test_a_local_endpoint_captures_what_a_boto3_client_sends(trained, tmp_path, monkeypatch, percent, captured):
    from pipeline.cli import main
    from pipeline.local.services.api import runtime_client
    from pipeline.local.services.runtime import read_record, stop_runtime
    from pipeline.settings import Settings
    from tests.conftest import delete_endpoints, register_versions

    monkeypatch.setenv("SENTIMENT_MLOPS_CAPTURE_PERCENT", str(percent))
    register_versions(tmp_path, trained, versions=1)
    try:
        assert main(["--home", str(tmp_path), "registry", "approve", "1"]) == 0
        record = read_record(tmp_path)
        assert record is not None
        client = runtime_client(record["url"])
        endpoint = Settings().endpoint_name
        bodies = [json.dumps({"review": f"review number {n}, a fine film"}) for n in range(30)]
        for n, body in enumerate(bodies):
            client.invoke_endpoint(EndpointName=endpoint, ContentType="application/json", Body=body,
                                   InferenceId=f"web-{n}")
        stop_runtime(tmp_path)  # a graceful stop writes what is buffered
    finally:
        delete_endpoints(tmp_path)
    settings = Settings(home=tmp_path)
    folder = Path(ArtifactStore(tmp_path).path(f"s3://{settings.bucket}/{settings.prefix}/{CAPTURE_FOLDER}/{endpoint}"))
    files = sorted(folder.rglob("*.jsonl"))
    assert files and all(f.relative_to(folder).parts[0] == "AllTraffic" and len(f.relative_to(folder).parts) == 6
                         for f in files)  # AllTraffic/yyyy/mm/dd/hh/file
    lines = [read_capture_line(line) for f in files for line in f.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == captured
    by_id = {line["inference_id"]: line for line in lines}
    assert len(by_id) == captured and all(by_id[f"web-{n}"]["input"] == bodies[n] for n in range(30) if f"web-{n}" in by_id)
    assert all(json.loads(line["output"])["predictions"] for line in lines)
    assert not list(folder.rglob("*.partial"))  # every file whole
