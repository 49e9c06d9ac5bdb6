"""The SageMaker backend (``pipeline.aws``) against moto's in-process AWS: no account, no network.

moto accepts the pipeline calls without running anything (an execution is ``Succeeded`` at
once) and has no ListPipelineExecutionSteps; the step-status path is tested with a stand-in
client. The definition is built once for the module (the SDK costs seconds) from fixed bundles.
"""
from __future__ import annotations

import json
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from pipeline.aws import (
    AwsClients,
    BackendError,
    ExecutionTimeout,
    SageMakerRegistry,
    describe_execution,
    list_executions,
    make_clients,
    set_approval,
    start_execution,
    upload_bundles,
    upsert_pipeline,
    validate_parameters,
    wait_for_execution,
)
from pipeline.bundles import CodeBundles, build_bundles, content_addressed
from pipeline.commands.registry import list_versions, show_version
from pipeline.definition import canonical_json, definition_json
from pipeline.settings import PLACEHOLDER_ROLE_ARN, Settings

pytestmark = pytest.mark.slow

REGION = "us-east-1"
SETTINGS = Settings(region=REGION, bucket="sentiment-test-bucket", prefix="sentiment-mlops",
                    role_arn="arn:aws:iam::123456789012:role/TestSageMakerRole", pipeline_name="sentiment-mlops-test",
                    model_package_group="sentiment-test-group", framework_version="2.5", py_version="py311",
                    training_image_uri=None, processing_image_uri=None, inference_image_uri=None)
VALID = {"Epochs": 2, "AccuracyThreshold": 0.5, "TrainingProfile": "cpu", "MaxLen": "300",
         "InputDataUri": "s3://sentiment-test-bucket/data/other"}


def fixed_bundles(settings: Settings) -> CodeBundles:
    return CodeBundles(processing=content_addressed("sourcedir.tar.gz", b"processing code", settings),
                       training=content_addressed("sourcedir.tar.gz", b"training code", settings),
                       runner=content_addressed("runproc.sh", b"#!/bin/bash\n", settings))


@pytest.fixture(scope="module")
def definition() -> str:
    with warnings.catch_warnings():  # the SDK's own deprecation notices, as in test_definition
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="Running within a PipelineSession")
        return definition_json(SETTINGS, fixed_bundles(SETTINGS))


def _forbid_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto answers in-process; any real connection attempt is a test failure."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")
    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials and region only; no profile or config file of the machine is read."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SECURITY_TOKEN", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    _forbid_network(monkeypatch)


@pytest.fixture(scope="module")
def shared_session() -> boto3.Session:
    """One session for the module: it caches the parsed service models (the SageMaker one is
    large), which makes each test's clients cheap. Credentials are read when a client is made."""
    return boto3.Session(region_name=REGION)


@pytest.fixture
def aws(aws_env, shared_session) -> Iterator[AwsClients]:
    with mock_aws():
        clients = make_clients(SETTINGS, session=shared_session)
        clients.s3.create_bucket(Bucket=SETTINGS.bucket)
        yield clients


class Calls:
    """Counts the API calls that reach botocore's send path, per operation name."""

    def __init__(self, *clients):
        self.names: list[str] = []
        for client in clients:
            client.meta.events.register("before-call.*.*", self._record)

    def _record(self, model, **kwargs):
        self.names.append(model.name)

    def count(self, name: str) -> int:
        return self.names.count(name)


# --- clients and credentials ----------------------------------------------------------------

def test_clients_use_the_settings_region(aws_env):
    clients = make_clients(Settings(region="eu-west-1"), session=boto3.Session(region_name="us-west-2"))
    assert clients.region == "eu-west-1"
    assert clients.s3.meta.region_name == clients.sagemaker.meta.region_name == "eu-west-1"


def test_no_credentials_is_one_line_that_says_what_to_do(aws_env, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    clients = make_clients(SETTINGS)  # no mock: botocore must fail before sending anything
    with pytest.raises(BackendError, match="no AWS credentials found: set AWS_PROFILE") as raised:
        upload_bundles(clients, SETTINGS, fixed_bundles(SETTINGS))
    assert "\n" not in str(raised.value)
    with pytest.raises(BackendError, match="no AWS credentials"):
        list_executions(clients, SETTINGS)


# --- bundles --------------------------------------------------------------------------------

def test_upload_puts_each_bundle_with_its_sha256_and_a_rerun_uploads_nothing(aws):
    bundles = build_bundles(SETTINGS)
    calls = Calls(aws.s3)
    report = upload_bundles(aws, SETTINGS, bundles)
    assert report.uploaded == [b.s3_uri for b in bundles.all()] and report.skipped == []
    assert calls.count("PutObject") == 3
    for bundle in bundles.all():
        head = aws.s3.head_object(Bucket=SETTINGS.bucket, Key=bundle.key)
        assert head["Metadata"] == {"sha256": bundle.sha256}
        assert aws.s3.get_object(Bucket=SETTINGS.bucket, Key=bundle.key)["Body"].read() == bundle.data
    assert bundles.processing.key.startswith(f"sentiment-mlops/code/{bundles.processing.sha256}/")

    again = upload_bundles(aws, SETTINGS, bundles)
    assert again.uploaded == [] and again.skipped == report.uploaded
    assert calls.count("PutObject") == 3


def test_upload_replaces_an_object_without_the_matching_sha256(aws):
    bundle = fixed_bundles(SETTINGS).runner
    aws.s3.put_object(Bucket=SETTINGS.bucket, Key=bundle.key, Body=b"something else")
    report = upload_bundles(aws, SETTINGS, [bundle])
    assert report.uploaded == [bundle.s3_uri]
    assert aws.s3.get_object(Bucket=SETTINGS.bucket, Key=bundle.key)["Body"].read() == bundle.data


def test_upload_to_a_missing_bucket_says_to_create_it(aws):
    other = Settings(**{**SETTINGS.__dict__, "bucket": "no-such-bucket-here"})
    calls = Calls(aws.s3)
    with pytest.raises(BackendError, match=r"bucket no-such-bucket-here does not exist: create it \(aws s3 mb"):
        upload_bundles(aws, other, fixed_bundles(other))
    assert calls.count("PutObject") == 0


# --- pipeline -------------------------------------------------------------------------------

def test_upsert_creates_then_updates_and_sagemaker_holds_the_definition_byte_for_byte(aws, definition):
    calls = Calls(aws.sagemaker)
    arn = upsert_pipeline(aws, SETTINGS, definition)
    assert arn.startswith("arn:aws:sagemaker:us-east-1:") and arn.endswith(":pipeline/sentiment-mlops-test")
    held = aws.sagemaker.describe_pipeline(PipelineName=SETTINGS.pipeline_name)
    assert held["PipelineDefinition"] == definition
    assert held["RoleArn"] == SETTINGS.role_arn
    assert calls.count("CreatePipeline") == 1

    assert upsert_pipeline(aws, SETTINGS, definition) == arn  # unchanged: no new version
    assert calls.count("CreatePipeline") == 1 and calls.count("UpdatePipeline") == 0

    changed = json.loads(definition)
    changed["Parameters"][1]["DefaultValue"] = 0.9
    changed = canonical_json(changed)
    assert upsert_pipeline(aws, SETTINGS, changed) == arn
    assert calls.count("CreatePipeline") == 1 and calls.count("UpdatePipeline") == 1
    assert aws.sagemaker.describe_pipeline(PipelineName=SETTINGS.pipeline_name)["PipelineDefinition"] == changed


def test_upsert_refuses_the_placeholder_role_before_any_call(aws, definition):
    calls = Calls(aws.sagemaker)
    placeholder = Settings(**{**SETTINGS.__dict__, "role_arn": PLACEHOLDER_ROLE_ARN})
    with pytest.raises(BackendError, match="set SENTIMENT_MLOPS_ROLE_ARN"):
        upsert_pipeline(aws, placeholder, definition)
    with pytest.raises(BackendError, match="not JSON"):
        upsert_pipeline(aws, SETTINGS, "{not json")
    assert calls.names == []


def test_start_sends_the_parameters_as_strings_and_returns_the_execution_arn(aws, definition):
    upsert_pipeline(aws, SETTINGS, definition)
    arn = start_execution(aws, SETTINGS, VALID, definition=definition, display_name="first-run")
    assert arn.startswith("arn:aws:sagemaker:us-east-1:") and "pipeline/sentiment-mlops-test/execution/" in arn
    sent = aws.sagemaker.list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)["PipelineParameters"]
    assert {p["Name"]: p["Value"] for p in sent} == {
        "Epochs": "2", "AccuracyThreshold": "0.5", "TrainingProfile": "cpu", "MaxLen": "300",
        "InputDataUri": "s3://sentiment-test-bucket/data/other"}
    # Without a definition at hand, the one SageMaker holds is the reference.
    assert start_execution(aws, SETTINGS, {"Epochs": 1}) != arn


def test_unknown_parameter_name_is_refused_before_any_call_with_the_valid_names(aws, definition):
    calls = Calls(aws.sagemaker, aws.s3)
    with pytest.raises(BackendError) as raised:
        start_execution(aws, SETTINGS, {"Epoch": 3, **VALID}, definition=definition)
    message = str(raised.value)
    assert message.startswith("unknown pipeline parameter Epoch: valid names are InputDataUri, InputDataVersion, AccuracyThreshold,")
    assert "Epochs" in message and "\n" not in message
    assert calls.names == []


@pytest.mark.parametrize("name, value, expected", [
    ("Epochs", "many", r"Epochs \(Integer\) needs a whole number, got 'many'"),
    ("Epochs", 2.5, r"Epochs \(Integer\) needs a whole number"),
    ("Epochs", True, r"Epochs \(Integer\) needs a whole number"),
    ("AccuracyThreshold", "high", r"AccuracyThreshold \(Float\) needs a number"),
    ("AccuracyThreshold", float("nan"), r"needs a finite number"),
    ("InputDataUri", 5, r"InputDataUri \(String\) needs a string, got 5"),
    ("TrainingProfile", "tpu", r"TrainingProfile \(String\) needs one of cpu, gpu"),
    ("ModelApprovalStatus", "Maybe", r"needs one of PendingManualApproval, Approved, Rejected"),
])
def test_wrong_value_type_is_refused_before_any_call(aws, definition, name, value, expected):
    calls = Calls(aws.sagemaker, aws.s3)
    with pytest.raises(BackendError, match=expected):
        start_execution(aws, SETTINGS, {name: value}, definition=definition)
    assert calls.names == []


def test_parameter_values_take_their_command_line_spelling(definition):
    assert validate_parameters(definition, {"Epochs": " 8", "AccuracyThreshold": "0.9", "VocabSize": 100,
                                            "ModelApprovalStatus": "Approved"}) == [
        {"Name": "Epochs", "Value": "8"}, {"Name": "AccuracyThreshold", "Value": "0.9"},
        {"Name": "VocabSize", "Value": "100"}, {"Name": "ModelApprovalStatus", "Value": "Approved"}]
    assert validate_parameters(definition, {"AccuracyThreshold": 1}) == [{"Name": "AccuracyThreshold", "Value": "1.0"}]
    assert validate_parameters({"Parameters": [{"Name": "Flag", "Type": "Boolean"}]}, {"Flag": "True"}) == [
        {"Name": "Flag", "Value": "true"}]
    assert validate_parameters(definition, None) == []


def test_starting_a_pipeline_that_was_never_created_says_to_upsert(aws, definition):
    with pytest.raises(BackendError, match="pipeline sentiment-mlops-test does not exist in us-east-1: create it with upsert"):
        start_execution(aws, SETTINGS, {"Epochs": 1}, definition=definition)
    with pytest.raises(BackendError, match="create it with upsert"):
        start_execution(aws, SETTINGS, {"Epochs": 1})
    with pytest.raises(BackendError, match="create it with upsert"):
        list_executions(aws, SETTINGS)


def test_executions_are_listed_newest_first_and_described(aws, definition):
    upsert_pipeline(aws, SETTINGS, definition)
    first = start_execution(aws, SETTINGS, {"Epochs": 1}, definition=definition)
    second = start_execution(aws, SETTINGS, {"Epochs": 2}, definition=definition)
    listed = list_executions(aws, SETTINGS)
    assert [e.arn for e in listed] == [second, first]
    assert all(e.status == "Succeeded" for e in listed)  # moto finishes executions at once
    assert listed[0].execution_id == second.rsplit("/", 1)[-1]
    assert len(list_executions(aws, SETTINGS, max_results=1)) == 1

    described = describe_execution(aws, first)
    assert described["arn"] == first and described["status"] == "Succeeded"
    assert described["parameters"] == {"Epochs": "1"}
    assert described["pipeline_arn"].endswith(":pipeline/sentiment-mlops-test")


def test_unknown_execution_says_where_to_find_one(aws, definition):
    arn = upsert_pipeline(aws, SETTINGS, definition) + "/execution/nosuchexec"
    with pytest.raises(BackendError, match=r"no pipeline execution .*nosuchexec: list the executions"):
        describe_execution(aws, arn)
    with pytest.raises(BackendError, match="no pipeline execution"):
        wait_for_execution(aws, arn, sleep=lambda s: None)


def test_wait_returns_the_final_status_and_says_when_steps_are_unavailable(aws, definition):
    upsert_pipeline(aws, SETTINGS, definition)
    arn = start_execution(aws, SETTINGS, {"Epochs": 1}, definition=definition)
    seen = []
    done = wait_for_execution(aws, arn, on_progress=seen.append, sleep=lambda s: pytest.fail("no sleep needed"))
    assert done["status"] == "Succeeded" and done["steps"] is None
    assert "ListPipelineExecutionSteps" in done["steps_note"]
    assert seen == [done]


class _RunningPipeline:
    """A stand-in SageMaker client: an execution that runs Preprocess then Train and then fails,
    with ListPipelineExecutionSteps (which moto lacks)."""

    def __init__(self, polls_until_failed: int):
        self.polls, self.until = 0, polls_until_failed

    def describe_pipeline_execution(self, PipelineExecutionArn):
        self.polls += 1
        failed = self.polls >= self.until
        return {"PipelineExecutionArn": PipelineExecutionArn, "PipelineArn": "arn:p",
                "PipelineExecutionStatus": "Failed" if failed else "Executing",
                "FailureReason": "Step failure: One or more steps failed." if failed else ""}

    def get_paginator(self, name):
        polls = self.polls

        class Pages:
            def paginate(self, **kwargs):
                if name == "list_pipeline_parameters_for_execution":
                    return [{"PipelineParameters": [{"Name": "Epochs", "Value": "1"}]}]
                steps = [{"StepName": "Preprocess", "StepStatus": "Succeeded",
                          "Metadata": {"ProcessingJob": {"Arn": "arn:job/pre"}}}]
                if polls >= 2:
                    steps.append({"StepName": "Train", "StepStatus": "Failed" if polls >= 3 else "Executing",
                                  "Metadata": {"TrainingJob": {"Arn": "arn:job/train"}}})
                return [{"PipelineExecutionSteps": steps}]
        return Pages()


def test_wait_reports_step_statuses_as_they_change():
    clients = AwsClients(s3=None, sagemaker=_RunningPipeline(polls_until_failed=3), region=REGION)
    seen, slept = [], []
    done = wait_for_execution(clients, "arn:exec", poll_s=5, on_progress=seen.append, sleep=slept.append,
                              clock=lambda: 0.0)
    assert done["status"] == "Failed" and done["failure_reason"].startswith("Step failure")
    assert [[(s["name"], s["status"]) for s in report["steps"]] for report in seen] == [
        [("Preprocess", "Succeeded")],
        [("Preprocess", "Succeeded"), ("Train", "Executing")],
        [("Preprocess", "Succeeded"), ("Train", "Failed")]]
    assert done["steps"][1]["job_arn"] == "arn:job/train" and done["steps_note"] is None
    assert slept == [5, 5]


def test_wait_gives_up_after_the_timeout_and_keeps_the_last_status():
    clients = AwsClients(s3=None, sagemaker=_RunningPipeline(polls_until_failed=100), region=REGION)
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    with pytest.raises(ExecutionTimeout, match=r"still Executing after 60 s: wait again") as raised:
        wait_for_execution(clients, "arn:exec", timeout_s=60, poll_s=25, sleep=sleep, clock=lambda: now[0])
    assert raised.value.description["status"] == "Executing"
    assert now[0] == 60


# --- registry -------------------------------------------------------------------------------

def _evaluation(accuracy: float) -> bytes:
    return json.dumps({"binary_classification_metrics": {"accuracy": {"value": accuracy, "standard_deviation": "NaN"}}}).encode()


def _register(aws: AwsClients, accuracy: float | None, report_key: str | None = None) -> str:
    request = {
        "ModelPackageGroupName": SETTINGS.model_package_group, "ModelApprovalStatus": "PendingManualApproval",
        "InferenceSpecification": {
            "Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.5",
                            "ModelDataUrl": f"s3://{SETTINGS.bucket}/models/job/output/model.tar.gz"}],
            "SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"]},
    }
    if report_key is not None:
        if accuracy is not None:
            aws.s3.put_object(Bucket=SETTINGS.bucket, Key=report_key, Body=_evaluation(accuracy))
        request["ModelMetrics"] = {"ModelQuality": {"Statistics": {
            "ContentType": "application/json", "S3Uri": f"s3://{SETTINGS.bucket}/{report_key}"}}}
    return aws.sagemaker.create_model_package(**request)["ModelPackageArn"]


def list_model_packages(clients: AwsClients, group: str, status: str | None = None) -> list[dict]:
    """What `registry --backend sagemaker list --json` prints."""
    return list_versions(SageMakerRegistry(clients, group), status)


def describe_model_package(clients: AwsClients, group: str, version: int) -> dict:
    """What `registry --backend sagemaker show --json` prints."""
    return show_version(SageMakerRegistry(clients, group), version)

@pytest.fixture
def registry(aws) -> AwsClients:
    aws.sagemaker.create_model_package_group(ModelPackageGroupName=SETTINGS.model_package_group)
    _register(aws, 0.91, "sentiment-mlops/executions/a/Evaluate/evaluation/evaluation.json")
    _register(aws, 0.87, "sentiment-mlops/executions/b/Evaluate/evaluation/evaluation.json")
    return aws


def test_list_model_packages_gives_versions_with_their_accuracy(registry):
    packages = list_model_packages(registry, SETTINGS.model_package_group)
    assert [(p["version"], p["status"], p["accuracy"]) for p in packages] == [
        (2, "PendingManualApproval", 0.87), (1, "PendingManualApproval", 0.91)]
    first = packages[1]
    assert first["arn"].endswith(f":model-package/{SETTINGS.model_package_group}/1")
    assert first["created"] is not None and first["group"] == SETTINGS.model_package_group
    assert first["metrics_uri"].endswith("/a/Evaluate/evaluation/evaluation.json")
    assert first["artifact"].endswith("/model.tar.gz")


def test_accuracy_is_none_without_metrics_or_without_a_readable_report(registry):
    _register(registry, None)  # no ModelMetrics at all
    _register(registry, None, "sentiment-mlops/executions/gone/evaluation.json")  # report deleted
    packages = list_model_packages(registry, SETTINGS.model_package_group)
    assert [(p["version"], p["accuracy"]) for p in packages] == [(4, None), (3, None), (2, 0.87), (1, 0.91)]


def test_approve_one_reject_another_and_filter_by_status(registry):
    group = SETTINGS.model_package_group
    approved = set_approval(registry, group, 1, "Approved", "accuracy 0.91 on the test split")
    assert approved.status == "Approved" and approved.approval_description == "accuracy 0.91 on the test split"
    assert set_approval(registry, group, 2, "Rejected", "below the last approved").status == "Rejected"
    assert [p["version"] for p in list_model_packages(registry, group, status="Approved")] == [1]
    assert [p["version"] for p in list_model_packages(registry, group, status="Rejected")] == [2]
    assert list_model_packages(registry, group, status="PendingManualApproval") == []
    described = describe_model_package(registry, group, 2)
    assert described["status"] == "Rejected" and described["accuracy"] == 0.87


def test_both_registries_answer_with_the_same_fields_and_values(registry, tmp_path):
    """One entity (ModelVersion), one summary: a script reads `registry list --json` the same way
    whichever backend it asks."""
    import dataclasses

    from pipeline.local.state.db import open_state
    from pipeline.local.state.registry import ModelRegistry
    from pipeline.review.local_registry import LocalRegistry

    (remote,) = [s for s in list_model_packages(registry, SETTINGS.model_package_group) if s["version"] == 1]
    described = registry.sagemaker.describe_model_package(ModelPackageName=remote["arn"])
    report_uri = remote["metrics_uri"]
    ModelRegistry(open_state(tmp_path)).register(
        SETTINGS.model_package_group, remote["artifact"], "0" * 64, json.loads(_evaluation(0.91)),
        metrics_uri=report_uri, inference_specification=described["InferenceSpecification"])
    local_store = LocalRegistry(dataclasses.replace(SETTINGS, home=tmp_path))
    (local,) = list_versions(local_store, None)
    assert local.keys() == remote.keys()
    shared = ("group", "version", "status", "artifact", "image", "metrics_uri", "accuracy", "accuracy_by_dataset",
              "customer_metadata_properties")
    assert {k: local[k] for k in shared} == {k: remote[k] for k in shared}


def test_registry_errors_say_what_to_do(registry):
    group = SETTINGS.model_package_group
    with pytest.raises(BackendError, match=f"model package group {group} has no version 7: its versions are 1, 2"):
        describe_model_package(registry, group, 7)
    with pytest.raises(BackendError, match="has no version 9"):
        set_approval(registry, group, 9, "Approved", "")
    with pytest.raises(BackendError, match=r"unknown approval status 'Maybe': use one of Approved, Rejected"):
        set_approval(registry, group, 1, "Maybe", "")
    with pytest.raises(BackendError, match="unknown approval status 'approved'"):
        list_model_packages(registry, group, status="approved")
    with pytest.raises(BackendError, match="model package group nope does not exist in us-east-1: check "
                                           "SENTIMENT_MLOPS_MODEL_PACKAGE_GROUP"):
        list_model_packages(registry, "nope")


# --- the evaluation's files, linked from the package (CustomerMetadataProperties) ------------

EVALUATION_FOLDER = "sentiment-mlops/executions/abcdef123456/Evaluate/evaluation"


def _register_with_links(aws: AwsClients, written: tuple[str, ...]) -> dict[str, str]:
    """A package registered as the Register step registers it: its metrics and its links to the
    Evaluate step's files, of which only ``written`` are in S3."""
    from evaluation.outputs import LINKS

    links = {key: f"s3://{SETTINGS.bucket}/{EVALUATION_FOLDER}/{name}" for key, name in LINKS.items()}
    for name in written:
        body = _evaluation(0.9) if name == "evaluation.json" else b"\x89PNG fake" if name.endswith(".png") else b"text"
        aws.s3.put_object(Bucket=SETTINGS.bucket, Key=f"{EVALUATION_FOLDER}/{name}", Body=body)
    aws.sagemaker.create_model_package_group(ModelPackageGroupName=SETTINGS.model_package_group)
    aws.sagemaker.create_model_package(
        ModelPackageGroupName=SETTINGS.model_package_group, ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={"Containers": [{"Image": "pytorch-inference:2.5",
                                                "ModelDataUrl": f"s3://{SETTINGS.bucket}/models/job/output/model.tar.gz"}],
                                "SupportedContentTypes": ["application/json"],
                                "SupportedResponseMIMETypes": ["application/json"]},
        ModelMetrics={"ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": links["EvaluationReport"]}}},
        CustomerMetadataProperties=links)
    return links


OLD_ARTIFACT = ("evaluation.json", "confusion_matrix.png", "roc_pr_curves.png", "worst_misclassified.md", "predictions.jsonl")


def test_show_links_every_evaluation_file_with_a_presigned_https_url(aws):
    """DescribeModelPackage returns the CustomerMetadataProperties; each link gets a GET URL a
    browser opens for an hour (presigned: no call to AWS), shown inline, and says whether the file
    is there (a model trained before the artifact carried its curves has none)."""
    from urllib.parse import parse_qs, urlsplit

    import requests

    links = _register_with_links(aws, OLD_ARTIFACT)
    calls = Calls(aws.s3)
    shown = describe_model_package(aws, SETTINGS.model_package_group, 1)
    assert shown["customer_metadata_properties"] == links and shown["accuracy"] == 0.9
    assert [link["name"] for link in shown["links"]] == ["EvaluationReport", "ConfusionMatrix", "RocPrCurves",
                                                         "TrainingCurves", "WorstMistakes", "Predictions", "AccuracyByLength", "Calibration"]
    assert {link["name"]: link["uri"] for link in shown["links"]} == links
    assert {link["name"]: link["exists"] for link in shown["links"]} == {  # files an older evaluation did not write
        name: name not in ("TrainingCurves", "AccuracyByLength", "Calibration") for name in links}
    assert calls.count("GetObject") == 1 and calls.count("HeadObject") == len(links)  # the report, and one look per file
    by_name = {link["name"]: link for link in shown["links"]}
    for name, link in by_name.items():
        url = urlsplit(link["url"])
        query = parse_qs(url.query)
        assert url.scheme == "https" and url.path.endswith(links[name].rsplit("/", 1)[1])
        assert query["X-Amz-Expires"] == ["3600"] and query["response-content-disposition"] == ["inline"]
    assert parse_qs(urlsplit(by_name["ConfusionMatrix"]["url"]).query)["response-content-type"] == ["image/png"]
    assert parse_qs(urlsplit(by_name["WorstMistakes"]["url"]).query)["response-content-type"] == [
        "text/plain; charset=utf-8"]
    assert shown["links_expire_s"] == 3600
    # The link is what a browser fetches: here moto answers it, as S3 would.
    answer = requests.get(by_name["ConfusionMatrix"]["url"], timeout=5)
    assert answer.status_code == 200 and answer.content == b"\x89PNG fake"
    assert answer.headers["Content-Type"] == "image/png"
    # The listing carries the properties too (same field name as the local registry), without links.
    (listed,) = list_model_packages(aws, SETTINGS.model_package_group)
    assert listed["customer_metadata_properties"] == links and "links" not in listed


def test_a_package_without_links_shows_none(registry):
    shown = describe_model_package(registry, SETTINGS.model_package_group, 1)
    assert shown["customer_metadata_properties"] == {} and shown["links"] == []


def test_registry_show_on_sagemaker_prints_each_link_and_its_uri(aws, capsys, monkeypatch):
    """``registry --backend sagemaker show``: the https link to click and the s3:// URI, and the
    same in ``--json``."""
    from pipeline.cli import main

    for name, value in (("REGION", REGION), ("BUCKET", SETTINGS.bucket),
                        ("MODEL_PACKAGE_GROUP", SETTINGS.model_package_group)):
        monkeypatch.setenv(f"SENTIMENT_MLOPS_{name}", value)
    links = _register_with_links(aws, (*OLD_ARTIFACT, "training_curves.png", "accuracy_by_length.png", "calibration.png"))
    assert main(["registry", "--backend", "sagemaker", "show", "1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [(link["name"], link["uri"], link["exists"]) for link in shown["links"]] == [
        (name, links[name], True) for name in ("EvaluationReport", "ConfusionMatrix", "RocPrCurves", "TrainingCurves",
                                               "WorstMistakes", "Predictions", "AccuracyByLength", "Calibration")]
    assert all(link["url"].startswith(f"https://{SETTINGS.bucket}.s3.amazonaws.com/") for link in shown["links"])
    assert main(["registry", "--backend", "sagemaker", "show", "1"]) == 0
    out = capsys.readouterr().out
    assert "the evaluation's files (the https links work for 60 minutes):" in out
    lines = out.splitlines()
    for name, uri in links.items():
        (at,) = [i for i, line in enumerate(lines) if line.split()[:1] == [name]]
        assert lines[at].split()[1].startswith("https://") and lines[at + 1].split() == [uri]
    assert "not there" not in out and "registry page" not in out
