"""The deploy handler (``lambda/deploy.py``): the code that runs in AWS Lambda, against moto for
what moto implements and botocore's Stubber (the real client, checked against the service
model) for UpdateEndpoint and endpoint states moto cannot produce."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from pipeline.local.services.events import deploy_module
from tests.test_aws_backend import REGION, aws_env  # noqa: F401  (aws_env is a fixture)

deploy = deploy_module()  # lambda/deploy.py, loaded as Lambda loads it

GROUP = "sentiment-deploy-test"
ROLE = "arn:aws:iam::123456789012:role/TestSageMakerRole"
CONFIG = deploy.DeployConfig("sentiment-test", GROUP, ROLE, "ml.m5.large", 1)
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.5-cpu-py311"


def _event(arn: str, status: str = "Approved", group: str = GROUP) -> dict:
    """The shape of SageMaker's documented "Model Package State Change" example."""
    return {"version": "0", "id": "b1f4c6d2-0000-4000-8000-000000000000", "source": "aws.sagemaker",
            "detail-type": "SageMaker Model Package State Change", "account": "123456789012",
            "time": "2026-11-22T06:00:00Z", "region": REGION, "resources": [arn],
            "detail": {"ModelPackageGroupName": group, "ModelPackageArn": arn, "ModelApprovalStatus": status,
                       "ModelPackageVersion": int(arn.rsplit("/", 1)[1]), "ModelPackageStatus": "Completed"}}


@pytest.fixture
def sagemaker(aws_env):  # noqa: F811
    with mock_aws():
        client = boto3.client("sagemaker", region_name=REGION)
        client.create_model_package_group(ModelPackageGroupName=GROUP)
        yield client


def _register(client) -> str:
    arn = client.create_model_package(
        ModelPackageGroupName=GROUP, ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={"Containers": [{"Image": IMAGE, "ModelDataUrl": "s3://b/model.tar.gz"}],
                                "SupportedContentTypes": ["application/json"],
                                "SupportedResponseMIMETypes": ["application/json"]})["ModelPackageArn"]
    client.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
    return arn


def test_an_approval_creates_the_endpoint_from_the_package(sagemaker):
    arn = _register(sagemaker)
    result = deploy.handle(_event(arn), CONFIG, sagemaker)
    assert result["status"] == "created" and result["version"] == 1
    model = sagemaker.describe_model(ModelName="sentiment-test-v1")
    assert model["PrimaryContainer"]["ModelPackageName"] == arn and model["ExecutionRoleArn"] == ROLE
    variant = sagemaker.describe_endpoint_config(EndpointConfigName=result["endpoint_config"])["ProductionVariants"][0]
    assert (variant["ModelName"], variant["InstanceType"], variant["InitialInstanceCount"]) == (
        "sentiment-test-v1", "ml.m5.large", 1)
    endpoint = sagemaker.describe_endpoint(EndpointName="sentiment-test")
    assert endpoint["EndpointConfigName"] == result["endpoint_config"]


def test_a_repeated_delivery_changes_nothing(sagemaker):
    arn = _register(sagemaker)
    deploy.handle(_event(arn), CONFIG, sagemaker)
    again = deploy.handle(_event(arn), CONFIG, sagemaker)
    assert again["status"] == "unchanged" and not again["created_model"] and not again["created_endpoint_config"]
    assert len(sagemaker.list_models()["Models"]) == 1
    assert len(sagemaker.list_endpoint_configs()["EndpointConfigs"]) == 1


@pytest.mark.parametrize("event, reason", [
    ("not an object", "not a JSON object"),
    ({"source": "aws.s3", "detail-type": "Object Created", "detail": {}}, "not a 'SageMaker Model Package State Change'"),
    ({"source": "aws.sagemaker", "detail-type": "SageMaker Model Package State Change"}, "no detail"),
    (_event("arn:aws:sagemaker:us-east-1:123456789012:model-package/g/1") | {"detail": {"ModelPackageArn": "nope"}},
     "not a model package version ARN"),
])
def test_a_malformed_event_is_ignored_with_the_reason_and_no_call(event, reason):
    client = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client):  # no responses queued: any AWS call would fail the test
        result = deploy.handle(event, CONFIG, client)
    assert result["status"] == "ignored" and reason in result["reason"]


@pytest.mark.parametrize("status, group, reason", [("PendingManualApproval", GROUP, "PendingManualApproval, not Approved"),
                                                   ("Approved", "another-group", "is not")])
def test_other_decisions_and_groups_are_ignored(status, group, reason):
    client = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    arn = f"arn:aws:sagemaker:{REGION}:123456789012:model-package/{group}/3"
    with Stubber(client):
        result = deploy.handle(_event(arn, status, group), CONFIG, client)
    assert result["status"] == "ignored" and reason in result["reason"]


def test_a_version_rejected_since_its_approval_is_not_deployed(sagemaker):
    arn = _register(sagemaker)
    sagemaker.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Rejected")
    result = deploy.handle(_event(arn), CONFIG, sagemaker)  # the Approved event arrives late
    assert result["status"] == "ignored" and "is Rejected now" in result["reason"]
    assert sagemaker.list_models()["Models"] == []


def test_a_model_name_taken_by_another_package_is_not_reused(sagemaker):
    arn = _register(sagemaker)
    sagemaker.create_model(ModelName="sentiment-test-v1", ExecutionRoleArn=ROLE,
                           PrimaryContainer={"Image": IMAGE, "ModelDataUrl": "s3://b/other/model.tar.gz"})
    with pytest.raises(deploy.DeployError, match="exists already"):
        deploy.handle(_event(arn), CONFIG, sagemaker)


# --- states moto cannot produce: the real client with botocore's Stubber ------------------------

ENDPOINT_ARN = f"arn:aws:sagemaker:{REGION}:123456789012:endpoint/sentiment-test"
V2 = f"arn:aws:sagemaker:{REGION}:123456789012:model-package/{GROUP}/2"


def _stubbed(endpoint_status: str, current_config: str, followed_at: str | None = None, *,
             changed_at: datetime | None = None, followed_version: int = 3, superseded: bool | None = None) -> tuple:
    """The calls up to the decision: the package's status (and ``changed_at``, its LastModifiedTime,
    when given), the endpoint, the approval it follows (``followed_version`` at ``followed_at``);
    then, unless the endpoint is busy or the approval superseded, the model and its config."""
    client = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    stub = Stubber(client)
    stub.add_response("describe_model_package", {
        "ModelPackageName": GROUP, "ModelPackageArn": V2,
        "CreationTime": "2026-11-22T06:00:00Z", "ModelPackageStatus": "Completed",
        "ModelPackageStatusDetails": {"ValidationStatuses": []}, "ModelApprovalStatus": "Approved",
        **({"LastModifiedTime": changed_at} if changed_at else {})})
    stub.add_response("describe_endpoint", {
        "EndpointName": "sentiment-test", "EndpointArn": ENDPOINT_ARN,
        "EndpointConfigName": current_config, "EndpointStatus": endpoint_status,
        "CreationTime": "2026-11-22T06:00:00Z", "LastModifiedTime": "2026-11-22T06:00:00Z"})
    tags = [{"Key": deploy.APPROVED_AT_TAG, "Value": followed_at},
            {"Key": deploy.APPROVED_PACKAGE_TAG, "Value": V2.replace("/2", f"/{followed_version}")}] if followed_at else []
    stub.add_response("list_tags", {"Tags": tags}, {"ResourceArn": ENDPOINT_ARN})
    if superseded is None:
        superseded = bool(followed_at and followed_at > "2026-11-22T06:00:00")
    if endpoint_status in deploy.BUSY_STATUSES or superseded:
        return client, stub
    stub.add_client_error("describe_model", "ValidationException", "Could not find model \"sentiment-test-v2\".")
    stub.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:{REGION}:123456789012:model/sentiment-test-v2"})
    stub.add_client_error("describe_endpoint_config", "ValidationException", "Could not find endpoint configuration")
    stub.add_response("create_endpoint_config", {"EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:123456789012:"
                                                                      "endpoint-config/x"})
    return client, stub


def test_a_newer_approval_updates_the_running_endpoint_and_tags_it_with_its_time():
    client, stub = _stubbed("InService", "sentiment-test-v1-aaaaaaaa", followed_at="2026-11-21T06:00:00+00:00")
    expected_config = f"sentiment-test-v2-{CONFIG.variant_hash()}"
    stub.add_response("update_endpoint", {"EndpointArn": ENDPOINT_ARN},
                      {"EndpointName": "sentiment-test", "EndpointConfigName": expected_config})
    stub.add_response("list_tags", {"Tags": []}, {"ResourceArn": ENDPOINT_ARN})
    stub.add_response("add_tags", {}, {"ResourceArn": ENDPOINT_ARN, "Tags": [
        {"Key": deploy.APPROVED_AT_TAG, "Value": "2026-11-22T06:00:00+00:00"},
        {"Key": deploy.APPROVED_PACKAGE_TAG, "Value": V2}]})
    with stub:
        result = deploy.handle(_event(V2), CONFIG, client)
    stub.assert_no_pending_responses()
    assert result["status"] == "updated" and result["previous_endpoint_config"] == "sentiment-test-v1-aaaaaaaa"


def test_an_approval_older_than_the_one_the_endpoint_follows_is_superseded():
    """A requeued approval may come back after a later one has been deployed: it must not undo it."""
    client, stub = _stubbed("InService", "sentiment-test-v3-aaaaaaaa", followed_at="2026-11-22T07:00:00+00:00")
    with stub:  # no model, config, update or tag call: the stub would refuse them
        result = deploy.handle(_event(V2), CONFIG, client)
    stub.assert_no_pending_responses()
    assert result["status"] == "ignored" and "superseded" in result["reason"] and "/3" in result["reason"]


INSTANT = datetime(2026, 11, 22, 6, 0, 0, 663000, tzinfo=UTC)  # two approvals recorded at once (issue 23)


@pytest.mark.parametrize("followed_version, superseded", [(3, True), (1, False)], ids=["v3-serves", "v1-serves"])
def test_two_approvals_at_the_same_instant_end_with_the_higher_version_whichever_comes_last(followed_version,
                                                                                          superseded):
    """Version 2 approved at the very instant the endpoint's approval was: it replaces version 1 and
    leaves version 3 alone, whichever delivery comes last, so `approve 1 & approve 2` ends on 2."""
    client, stub = _stubbed("InService", f"sentiment-test-v{followed_version}-aaaaaaaa", INSTANT.isoformat(),
                            changed_at=INSTANT, followed_version=followed_version, superseded=superseded)
    if not superseded:
        stub.add_response("update_endpoint", {"EndpointArn": ENDPOINT_ARN})
        stub.add_response("list_tags", {"Tags": []}, {"ResourceArn": ENDPOINT_ARN})
        stub.add_response("add_tags", {}, {"ResourceArn": ENDPOINT_ARN, "Tags": [
            {"Key": deploy.APPROVED_AT_TAG, "Value": INSTANT.isoformat()}, {"Key": deploy.APPROVED_PACKAGE_TAG, "Value": V2}]})
    with stub:
        result = deploy.handle(_event(V2), CONFIG, client)
    stub.assert_no_pending_responses()
    if superseded:
        assert result["status"] == "ignored" and "the higher version wins" in result["reason"]
    else:
        assert result["status"] == "updated"


def test_the_packages_time_orders_approvals_within_the_events_second():
    """The event says 06:00:00; the package changed at 06:00:00.900, after the endpoint's approval
    at 06:00:00.663 of a higher version: version 2 is the newer approval and is deployed."""
    client, stub = _stubbed("InService", "sentiment-test-v3-aaaaaaaa", INSTANT.isoformat(),
                            changed_at=INSTANT + timedelta(milliseconds=237), superseded=False)
    stub.add_response("update_endpoint", {"EndpointArn": ENDPOINT_ARN})
    stub.add_response("list_tags", {"Tags": []}, {"ResourceArn": ENDPOINT_ARN})
    stub.add_response("add_tags", {}, {"ResourceArn": ENDPOINT_ARN, "Tags": [
        {"Key": deploy.APPROVED_AT_TAG, "Value": (INSTANT + timedelta(milliseconds=237)).isoformat()},
        {"Key": deploy.APPROVED_PACKAGE_TAG, "Value": V2}]})
    with stub:
        result = deploy.handle(_event(V2), CONFIG, client)
    stub.assert_no_pending_responses()
    assert result["status"] == "updated"


def test_a_late_retry_of_an_older_approval_is_superseded():
    """Version 2's approval, delivered again an hour later (a retry), after version 3's: ignored."""
    client, stub = _stubbed("InService", "sentiment-test-v3-aaaaaaaa", (INSTANT + timedelta(minutes=5)).isoformat(),
                            changed_at=INSTANT, superseded=True)
    with stub:
        result = deploy.handle(_event(V2) | {"time": "2026-11-22T07:00:00Z"}, CONFIG, client)
    stub.assert_no_pending_responses()
    assert result["status"] == "ignored" and "superseded" in result["reason"]


def test_a_later_approval_recorded_meanwhile_is_not_tagged_over():
    """Deliveries may run at once: the one that read the tags first must not write an older time back."""
    client, stub = _stubbed("InService", "sentiment-test-v1-aaaaaaaa", followed_at="2026-11-21T06:00:00+00:00")
    stub.add_response("update_endpoint", {"EndpointArn": ENDPOINT_ARN})
    later = [{"Key": deploy.APPROVED_AT_TAG, "Value": "2026-11-22T07:00:00+00:00"}]
    stub.add_response("list_tags", {"Tags": later}, {"ResourceArn": ENDPOINT_ARN})
    with stub:  # no add_tags stubbed: a call would fail the test
        result = deploy.handle(_event(V2), CONFIG, client)
    stub.assert_no_pending_responses()
    assert result["status"] == "updated"


def test_an_update_refused_because_another_delivery_started_one_is_requeued():
    client, stub = _stubbed("InService", "sentiment-test-v1-aaaaaaaa")
    stub.add_client_error("update_endpoint", "ValidationException",
                          "Cannot update in-progress endpoint \"arn:aws:sagemaker:us-east-1:123456789012:endpoint/x\".")
    requeue = RecordingRequeue()
    with stub:
        result = deploy.handle(_event(V2), CONFIG, client, requeue)
    assert result["status"] == "requeued" and "another deployment" in result["reason"] and len(requeue.calls) == 1


class RecordingRequeue:
    def __init__(self) -> None:
        self.calls: list[tuple[dict, int, int]] = []

    def later(self, event, attempt, delay_s) -> None:
        self.calls.append((event, attempt, delay_s))


@pytest.mark.parametrize("attempt, delay", [(1, 60), (2, 120), (4, 480), (5, 900), (11, 900)])
def test_a_busy_endpoint_requeues_the_approval_with_a_growing_delay(attempt, delay):
    client, stub = _stubbed("Updating", "sentiment-test-v1-aaaaaaaa")
    requeue = RecordingRequeue()
    with stub:
        result = deploy.handle(_event(V2), CONFIG, client, requeue, attempt=attempt)
    assert result["status"] == "requeued" and result["retry_in_s"] == delay
    assert requeue.calls == [(_event(V2), attempt + 1, delay)]


def test_a_busy_endpoint_raises_once_the_attempts_are_spent_or_without_a_queue():
    for requeue, attempt in ((RecordingRequeue(), deploy.MAX_ATTEMPTS), (None, 1)):
        client, stub = _stubbed("Updating", "sentiment-test-v1-aaaaaaaa")
        with stub, pytest.raises(deploy.EndpointBusy, match="is Updating.*failures queue"):
            deploy.handle(_event(V2), CONFIG, client, requeue, attempt=attempt)
        assert not getattr(requeue, "calls", [])


def test_the_retry_queue_gives_back_what_was_requeued(aws_env):  # noqa: F811
    """SqsRequeue's message, read back from (moto's) SQS as Lambda's event source hands it over."""
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        url = sqs.create_queue(QueueName="deploy-retries")["QueueUrl"]
        deploy.SqsRequeue(sqs, url).later(_event(V2), 3, 0)
        (message,) = sqs.receive_message(QueueUrl=url)["Messages"]
    records = {"Records": [{"messageId": message["MessageId"], "eventSource": "aws:sqs", "body": message["Body"]},
                           {"messageId": "2", "eventSource": "aws:sqs", "body": "not json"}]}
    assert deploy.deliveries(records) == [(_event(V2), 3), (None, 1)]
    assert deploy.deliveries(_event(V2)) == [(_event(V2), 1)]


def test_what_lands_in_the_failures_queue_can_be_moved_back_and_replayed():
    """The failures queue holds Lambda's failure records and the retry queue's dead letters; an
    SQS message move (README) hands either back to the function, which reads both."""
    failure_record = {"version": "1.0", "requestContext": {"condition": "RetriesExhausted"},
                      "requestPayload": _event(V2), "responsePayload": {"errorType": "EndpointBusy"}}
    records = {"Records": [{"eventSource": "aws:sqs", "body": json.dumps(failure_record)},
                           {"eventSource": "aws:sqs", "body": json.dumps({"event": _event(V2), "attempt": 12})},
                           {"eventSource": "aws:sqs", "body": json.dumps(_event(V2))}]}
    assert deploy.deliveries(records) == [(_event(V2), 1), (_event(V2), 12), (_event(V2), 1)]


def test_an_event_without_a_time_is_ignored():
    event = {k: v for k, v in _event(V2).items() if k != "time"}
    assert "time" in deploy.handle(event, CONFIG, None)["reason"]


def test_a_failed_endpoint_says_what_to_do():
    client, stub = _stubbed("Failed", "sentiment-test-v1-aaaaaaaa")
    with stub, pytest.raises(deploy.DeployError, match="delete it, then approve the version again"):
        deploy.handle(_event(V2), CONFIG, client)


# --- settings and the local registry's events ---------------------------------------------------

@pytest.mark.parametrize("environ, message", [
    ({}, "ENDPOINT_NAME, MODEL_PACKAGE_GROUP, EXECUTION_ROLE_ARN"),
    ({"ENDPOINT_NAME": "e", "MODEL_PACKAGE_GROUP": "g", "EXECUTION_ROLE_ARN": ROLE, "INSTANCE_COUNT": "two"}, "whole number"),
    ({"ENDPOINT_NAME": "bad_name!", "MODEL_PACKAGE_GROUP": "g", "EXECUTION_ROLE_ARN": ROLE}, "letters, digits"),
])
def test_bad_settings_are_refused(environ, message):
    with pytest.raises(deploy.DeployError, match=message):
        deploy.DeployConfig.from_env(environ)


def test_the_local_registrys_approval_event_is_understood(tmp_path):
    """The local runtime hands its events to this same handler: they must parse the same."""
    from pipeline.local.state.db import connect
    from pipeline.local.state.registry import ModelRegistry

    registry = ModelRegistry(connect(tmp_path / "state.db"))
    registry.register(GROUP, "s3://b/model.tar.gz", "0" * 64, {}, inference_specification={"Containers": []})
    change = registry.update_approval(GROUP, 1, "Approved", comment="looks good")
    approval = deploy.parse_event(change.event)
    assert (approval.group, approval.version, approval.status) == (GROUP, 1, "Approved")


def test_the_lambda_entry_point_reads_its_settings_from_the_environment(sagemaker, monkeypatch, caplog):
    for name, value in {"ENDPOINT_NAME": "sentiment-env", "MODEL_PACKAGE_GROUP": GROUP, "EXECUTION_ROLE_ARN": ROLE,
                        "INSTANCE_TYPE": "ml.m5.xlarge", "INSTANCE_COUNT": "2"}.items():
        monkeypatch.setenv(name, value)
    caplog.set_level("INFO", logger="deploy")
    result = deploy.handler(_event(_register(sagemaker)), None)
    assert result["status"] == "created" and result["endpoint"] == "sentiment-env"
    variant = sagemaker.describe_endpoint_config(EndpointConfigName=result["endpoint_config"])["ProductionVariants"][0]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.m5.xlarge", 2)
    assert '"status": "created"' in caplog.text  # one JSON line per decision in CloudWatch


# --- rejecting the version that serves takes it back ---------------------------------------------

def _serve(client) -> str:
    """One approved version, deployed (moto creates endpoints; it does not update them: the
    rollback itself is tested on the local runtime, tests/test_local_hosting.py)."""
    arn = _register(client)
    assert deploy.handle(_event(arn), CONFIG, client)["status"] == "created"
    return arn


def _reject(client, arn: str) -> dict:
    client.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Rejected")
    return deploy.handle(_event(arn, "Rejected"), CONFIG, client)


def test_rejecting_a_version_that_does_not_serve_changes_nothing(sagemaker):
    serving = _serve(sagemaker)
    other = _register(sagemaker)  # approved, not deployed
    result = _reject(sagemaker, other)
    assert result["status"] == "ignored" and "does not serve it" in result["reason"]
    assert "-v1-" in sagemaker.describe_endpoint(EndpointName="sentiment-test")["EndpointConfigName"]
    assert serving != other


def test_rejecting_the_only_approved_version_deletes_the_endpoint(sagemaker):
    only = _serve(sagemaker)
    result = _reject(sagemaker, only)
    assert result["status"] == "stopped" and "no other version is Approved" in result["reason"]
    assert sagemaker.list_endpoints()["Endpoints"] == []


def test_a_rejection_that_was_undone_since_takes_nothing_back(sagemaker):
    only = _serve(sagemaker)
    sagemaker.update_model_package(ModelPackageArn=only, ModelApprovalStatus="Rejected")
    sagemaker.update_model_package(ModelPackageArn=only, ModelApprovalStatus="Approved")
    result = deploy.handle(_event(only, "Rejected"), CONFIG, sagemaker)  # the Rejected event arrives late
    assert result["status"] == "ignored" and "was rejected, but is Approved now" in result["reason"]
    assert len(sagemaker.list_endpoints()["Endpoints"]) == 1
