"""A shadow challenger: a newly registered version runs beside the serving one as the endpoint's
shadow variant, gets a copy of a share of the requests, and its answers are captured, never
returned. The deploy function's calls against botocore's Stubber (each request checked against
SageMaker's service model), the stack's rule and role, and the same on this machine: real model
servers, the real router, boto3's runtime client, the capture files and the comparison they feed."""
from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from mlops_rules.capture import CAPTURE_FOLDER, capture_config, read_capture_line
from mlops_rules.hosting import (
    SHADOW_VARIANT_NAME,
    VARIANT_NAME,
    made_for,
    shadow_config_name,
    shadow_share,
    shadow_version,
    shadow_weight,
)
from pipeline.local.services.events import deploy_module
from tests.test_aws_backend import REGION, aws_env  # noqa: F401  (aws_env is a fixture)
from tests.test_deploy_handler import (
    CONFIG,
    ENDPOINT_ARN,
    GROUP,
    ROLE,
    _event,
    _register,
    sagemaker,  # noqa: F401  (a fixture: moto's SageMaker)
)
from tests.test_deploy_template import RESOURCES, _role_actions
from tests.test_registry_page import browser  # noqa: F401  (a fixture: Chromium, or a skip outside CI)

deploy = deploy_module()
V2 = f"arn:aws:sagemaker:{REGION}:123456789012:model-package/{GROUP}/2"
V3 = f"arn:aws:sagemaker:{REGION}:123456789012:model-package/{GROUP}/3"
CONTAINER = {"Image": "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-inference:2.6-cpu-py312",
             "ModelDataUrl": "s3://bucket/sentiment/models/v3/model.tar.gz",
             "Environment": {"SAGEMAKER_PROGRAM": "inference.py"}}
SHADOWING = deploy.DeployConfig("sentiment-test", GROUP, ROLE, "ml.m5.large", 1, capture_percent=100,
                                capture_destination="s3://bucket/sentiment/datacapture", shadow_percent=20)
PRODUCTION = {"VariantName": VARIANT_NAME, "ModelName": "sentiment-test-v2", "InstanceType": "ml.m5.large",
              "InitialInstanceCount": 1, "InitialVariantWeight": 1.0}


# --- the rules ------------------------------------------------------------------------------------

def test_a_shadows_names_fit_sagemakers_limit_and_a_teardown_finds_them():
    endpoint = "e" * (deploy.NAME_LIMIT - 20)  # the longest endpoint name the function accepts
    config = f"{endpoint}-s99999-0123abcd"
    assert len(config) <= deploy.NAME_LIMIT and len(f"{endpoint}-v99999-shadow") <= deploy.NAME_LIMIT
    assert shadow_version(endpoint, config) == 99999 and shadow_version(endpoint, f"{endpoint}-v3-0123abcd") is None
    assert made_for(endpoint, config) and made_for(endpoint, f"{endpoint}-v3-shadow")
    assert not made_for(endpoint, f"{endpoint}-s3") and not made_for("other", config)


@pytest.mark.parametrize("percent, share", [(20, 0.2), (100, 1.0), (1, 0.01)])
def test_the_shadows_weight_is_its_share_of_the_requests(percent, share):
    assert shadow_share({"InitialVariantWeight": shadow_weight(percent)}, PRODUCTION) == pytest.approx(share)


@pytest.mark.parametrize("value", ["-1", "101", "half", "2.5"])
def test_a_shadow_share_that_is_not_a_percentage_is_refused_by_name(value):
    environ = {"ENDPOINT_NAME": "e", "MODEL_PACKAGE_GROUP": GROUP, "EXECUTION_ROLE_ARN": ROLE, "SHADOW_PERCENT": value}
    with pytest.raises(deploy.DeployError, match="SHADOW_PERCENT"):
        deploy.DeployConfig.from_env(environ)


# --- the deploy function's calls ------------------------------------------------------------------

def _client() -> tuple:
    client = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    return client, Stubber(client)


def _package(stub: Stubber, arn: str, status: str) -> None:
    stub.add_response("describe_model_package", {
        "ModelPackageName": GROUP, "ModelPackageArn": arn, "CreationTime": "2026-11-22T06:00:00Z",
        "ModelPackageStatus": "Completed", "ModelPackageStatusDetails": {"ValidationStatuses": []},
        "ModelApprovalStatus": status, "InferenceSpecification": {
            "Containers": [CONTAINER], "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"]}}, {"ModelPackageName": arn})


def _endpoint(stub: Stubber, config: str, status: str = "InService") -> None:
    stub.add_response("describe_endpoint", {
        "EndpointName": "sentiment-test", "EndpointArn": ENDPOINT_ARN, "EndpointConfigName": config,
        "EndpointStatus": status, "CreationTime": "2026-11-22T06:00:00Z", "LastModifiedTime": "2026-11-22T06:00:00Z"},
        {"EndpointName": "sentiment-test"})


def _config(stub: Stubber, name: str, **shadow) -> None:
    stub.add_response("describe_endpoint_config", {
        "EndpointConfigName": name, "EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:123456789012:endpoint-config/{name}",
        "ProductionVariants": [PRODUCTION], "CreationTime": "2026-11-22T06:00:00Z", **shadow},
        {"EndpointConfigName": name})


def _shadow_config_name() -> str:
    production_config = f"sentiment-test-v2-{SHADOWING.variant_hash()}"
    client, stub = _client()
    _package(stub, V3, "PendingManualApproval")
    _endpoint(stub, production_config)
    _config(stub, production_config)
    stub.add_client_error("describe_model", "ValidationException", 'Could not find model "sentiment-test-v3-shadow".')
    stub.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:{REGION}:123456789012:model/sentiment-test-v3-shadow"})
    stub.add_client_error("describe_endpoint_config", "ValidationException", "Could not find endpoint configuration")
    stub.add_response("create_endpoint_config", {"EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:123456789012:endpoint-config/x"})
    stub.add_response("update_endpoint", {"EndpointArn": ENDPOINT_ARN})
    with stub:
        return deploy.handle(_event(V3, "PendingManualApproval"), SHADOWING, client)["endpoint_config"]


def test_a_registered_version_becomes_the_shadow_with_the_requests_sagemaker_validates():
    production_config = f"sentiment-test-v2-{SHADOWING.variant_hash()}"
    name = _shadow_config_name()
    assert shadow_version("sentiment-test", name) == 3
    client, stub = _client()
    _package(stub, V3, "PendingManualApproval")
    _endpoint(stub, production_config)
    _config(stub, production_config)
    stub.add_client_error("describe_model", "ValidationException", 'Could not find model "sentiment-test-v3-shadow".',
                          expected_params={"ModelName": "sentiment-test-v3-shadow"})
    # From the package's container, not the package: nobody has approved it.
    stub.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:{REGION}:123456789012:model/sentiment-test-v3-shadow"},
                      {"ModelName": "sentiment-test-v3-shadow", "ExecutionRoleArn": ROLE, "PrimaryContainer": CONTAINER,
                       "Tags": [{"Key": "ModelPackageArn", "Value": V3}]})
    stub.add_client_error("describe_endpoint_config", "ValidationException", "Could not find endpoint configuration",
                          expected_params={"EndpointConfigName": name})
    stub.add_response("create_endpoint_config", {"EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:123456789012:endpoint-config/x"}, {
        "EndpointConfigName": name, "ProductionVariants": [PRODUCTION],
        "ShadowProductionVariants": [{"VariantName": SHADOW_VARIANT_NAME, "ModelName": "sentiment-test-v3-shadow",
                                      "InstanceType": "ml.m5.large", "InitialInstanceCount": 1,
                                      "InitialVariantWeight": 0.2}],
        "DataCaptureConfig": capture_config("s3://bucket/sentiment/datacapture", 100)})
    # No DeploymentConfig: the production variant does not change, so there is nothing to bake.
    stub.add_response("update_endpoint", {"EndpointArn": ENDPOINT_ARN},
                      {"EndpointName": "sentiment-test", "EndpointConfigName": name})
    with stub:
        result = deploy.handle(_event(V3, "PendingManualApproval"), SHADOWING, client)
    stub.assert_no_pending_responses()
    assert result["status"] == "shadowing" and result["version"] == 3 and "20 %" in result["traffic"]


def test_rejecting_the_shadowed_version_puts_the_endpoint_back_on_its_production_variant():
    shadow_config = _shadow_config_name()
    production_config = f"sentiment-test-v2-{SHADOWING.variant_hash()}"
    client, stub = _client()
    _package(stub, V3, "Rejected")
    _endpoint(stub, shadow_config)
    stub.add_response("list_tags", {"Tags": [{"Key": deploy.APPROVED_AT_TAG, "Value": "2026-11-21T06:00:00+00:00"},
                                             {"Key": deploy.APPROVED_PACKAGE_TAG, "Value": V2}]}, {"ResourceArn": ENDPOINT_ARN})
    _config(stub, shadow_config, ShadowProductionVariants=[{"VariantName": SHADOW_VARIANT_NAME,
                                                            "ModelName": "sentiment-test-v3-shadow"}])
    _config(stub, production_config)  # exists already: not made again
    stub.add_response("update_endpoint", {"EndpointArn": ENDPOINT_ARN},
                      {"EndpointName": "sentiment-test", "EndpointConfigName": production_config})
    with stub:
        result = deploy.handle(_event(V3, "Rejected"), SHADOWING, client)
    stub.assert_no_pending_responses()
    assert result["status"] == "shadow ended" and "no longer shadows" in result["reason"]


@pytest.mark.parametrize("current, reason", [
    (None, "does not exist"),
    ("sentiment-test-s4-0123abcd", "version 4 runs as the shadow already"),
])
def test_a_registered_version_with_nothing_to_shadow_is_ignored_with_the_reason(current, reason):
    client, stub = _client()
    _package(stub, V3, "PendingManualApproval")
    if current is None:
        stub.add_client_error("describe_endpoint", "ValidationException", 'Could not find endpoint "sentiment-test".')
    else:
        _endpoint(stub, current)
    with stub:
        result = deploy.handle(_event(V3, "PendingManualApproval"), SHADOWING, client)
    stub.assert_no_pending_responses()
    assert result["status"] == "ignored" and reason in result["reason"]


def test_an_approval_delivered_again_for_the_serving_version_leaves_its_shadow_running(sagemaker):
    """EventBridge delivers at least once: the serving version's Approved event, delivered again
    while a newer registration shadows it, changes nothing (the shadow stays)."""
    arn = _register(sagemaker)  # version 1, Approved: it serves, with version 2 as its shadow
    sagemaker.create_model(ModelName="sentiment-test-v1", ExecutionRoleArn=ROLE,
                           PrimaryContainer={"ModelPackageName": arn})
    shadow = shadow_config_name("sentiment-test", 2, "0123abcd")
    sagemaker.create_endpoint_config(EndpointConfigName=shadow, ProductionVariants=[
        {"VariantName": VARIANT_NAME, "ModelName": "sentiment-test-v1", "InstanceType": "ml.m5.large",
         "InitialInstanceCount": 1}])
    sagemaker.create_endpoint(EndpointName="sentiment-test", EndpointConfigName=shadow)
    again = deploy.handle(_event(arn), SHADOWING, sagemaker)
    assert again["status"] == "unchanged"
    assert sagemaker.describe_endpoint(EndpointName="sentiment-test")["EndpointConfigName"] == shadow


def test_a_failed_endpoint_gets_no_shadow():
    client, stub = _client()
    _package(stub, V3, "PendingManualApproval")
    _endpoint(stub, f"sentiment-test-v2-{SHADOWING.variant_hash()}", status="Failed")
    with stub:
        result = deploy.handle(_event(V3, "PendingManualApproval"), SHADOWING, client)
    stub.assert_no_pending_responses()
    assert result["status"] == "ignored" and "is Failed" in result["reason"]


def test_without_a_shadow_share_a_registration_makes_no_call():
    client, stub = _client()
    with stub:  # nothing queued: any call fails the test
        result = deploy.handle(_event(V3, "PendingManualApproval"), CONFIG, client)
    assert result["status"] == "ignored" and "SHADOW_PERCENT 0" in result["reason"]


def test_the_stack_delivers_registrations_and_may_make_only_the_shadows_resources():
    pattern = RESOURCES["DeployFunction"]["Properties"]["Events"]["Approved"]["Properties"]["Pattern"]
    assert "PendingManualApproval" in pattern["detail"]["ModelApprovalStatus"]
    assert RESOURCES["DeployFunction"]["Properties"]["Environment"]["Variables"]["SHADOW_PERCENT"] == {"Ref": "ShadowPercent"}
    actions = _role_actions("DeployFunctionRole")
    shadow_configs = {"Fn::Sub": "arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}:"
                                 "endpoint-config/${EndpointName}-s*"}
    for action in ("sagemaker:CreateEndpointConfig", "sagemaker:DescribeEndpointConfig", "sagemaker:UpdateEndpoint"):
        assert shadow_configs in actions[action]
    assert actions["sagemaker:CreateModel"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}:model/${EndpointName}-v*"}]


# --- on this machine --------------------------------------------------------------------------------

@pytest.fixture
def home(trained, tmp_path, monkeypatch):
    from tests.conftest import delete_endpoints, register_versions

    monkeypatch.setenv("SENTIMENT_MLOPS_SHADOW_PERCENT", "50")
    register_versions(tmp_path, trained)
    yield tmp_path
    delete_endpoints(tmp_path)


def _cli(capsys, home: Path, *args: str) -> tuple[int, dict | list]:
    from pipeline.cli import main

    code = main(["--home", str(home), *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def _runtime_client(url: str):
    return boto3.client("sagemaker-runtime", endpoint_url=url.split("/endpoints/")[0], region_name=REGION,
                        aws_access_key_id="x", aws_secret_access_key="x")


def _captured(home: Path, variant: str) -> list[dict]:
    from pipeline.local.state.store import ArtifactStore
    from pipeline.settings import Settings

    folder = ArtifactStore(home).path(Settings(home=home).s3_uri(CAPTURE_FOLDER))
    lines = [line for path in sorted(folder.rglob("*.jsonl")) if f"/{variant}/" in path.as_posix()
             for line in path.read_bytes().splitlines()]
    return [read_capture_line(line) for line in lines]


def _wait_for(condition, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _break(home: Path, trained: Path, version: int) -> None:
    from serve.artifact import pack_model_dir

    model = home / "broken-model"
    shutil.copytree(trained / "model", model)
    with open(model / "code" / "inference.py", "a", encoding="utf-8") as code:
        code.write("\n\ndef predict_fn(reviews, model):\n    raise RuntimeError('this version is broken')\n")
    pack_model_dir(model, home / "s3" / "bucket" / "models" / f"v{version}" / "model.tar.gz")


@pytest.mark.server
def test_a_registered_version_shadows_live_traffic_and_approval_ends_it(home, capsys, browser):
    from selenium.webdriver.common.by import By

    from pipeline.local.services.api import api_app
    from pipeline.local.services.events import announce_registration
    from pipeline.local.services.hosting import LocalHosting, _alive
    from pipeline.local.state.db import open_state
    from pipeline.review.compare import compare
    from pipeline.review.evidence import Evidence
    from pipeline.review.web import registry_mount
    from pipeline.settings import Settings
    from serve.server.run import BackgroundServer
    from tests.test_local_api import _request

    assert _cli(capsys, home, "registry", "approve", "1")[0] == 0
    settings = Settings(home=home)
    result = announce_registration(settings, 2)
    assert result is not None and result["status"] == "shadowing", result
    hosting = LocalHosting(home, open_state(home))
    endpoint = hosting.describe_endpoint(settings.endpoint_name)
    assert endpoint["ShadowProductionVariants"][0]["CurrentInstanceCount"] == 1
    runtime = _runtime_client(endpoint["Url"])
    ids = [str(uuid.uuid4()) for _ in range(40)]
    for inference_id in ids:
        answer = runtime.invoke_endpoint(EndpointName=settings.endpoint_name, ContentType="application/json",
                                         Body=json.dumps({"review": "a warm, funny and moving film"}),
                                         InferenceId=inference_id)
        assert answer["InvokedProductionVariant"] == VARIANT_NAME  # the shadow never answers a client
        json.loads(answer["Body"].read())
    _wait_for(lambda: len(_captured(home, SHADOW_VARIANT_NAME)) == 20)  # every second request, dealt evenly
    production, shadow = _captured(home, VARIANT_NAME), _captured(home, SHADOW_VARIANT_NAME)
    assert [r["inference_id"] for r in production] == ids
    assert {r["inference_id"] for r in shadow} == set(ids[1::2])
    assert all(json.loads(r["output"])["predictions"][0]["label"] for r in shadow)

    comparison = compare(Evidence(settings, open_state(home)), None, 2)
    live = comparison.live
    assert live is not None and (live.pairs, live.agreeing, live.unpaired) == (20, 20, 0)  # the same model twice
    assert live.interval is not None and live.interval[0] > 0.8 and live.shadow_latency_ms is not None

    # What a web user and an approver see: the API gives each answer its InferenceId (the pairs'
    # key), and the comparison page shows the agreement on live traffic, in a real browser.
    with BackgroundServer(lambda url: api_app(settings, url, mounts=[registry_mount(settings, url)])) as site:
        status, _, body = _request(site, "POST", "/predict", json.dumps({"review": "superb"}).encode(),
                                   {"Content-Type": "application/json"})
        assert status == 200
        inference_id = json.loads(body)["inference_id"]
        _wait_for(lambda: inference_id in {r["inference_id"] for r in _captured(home, VARIANT_NAME)})
        browser.get(f"{site.url}/registry/compare?challenger=2")
        summary = browser.find_element(By.ID, "live-summary").text
        assert "same label on 20 of 20" in summary and "too few to judge yet" in summary, summary
        assert "Milliseconds" in browser.find_element(By.ID, "live-latency").text

    shadow_pid = open_state(home).execute("SELECT shadow_pid FROM endpoints").fetchone()["shadow_pid"]
    assert _alive(shadow_pid)
    assert _cli(capsys, home, "registry", "approve", "2")[0] == 0
    endpoint = hosting.describe_endpoint(settings.endpoint_name)
    assert "ShadowProductionVariants" not in endpoint and hosting.config_version(endpoint["EndpointConfigName"]) == 2
    _wait_for(lambda: not _alive(shadow_pid))
    events = [row["event"] for row in hosting.endpoint_history(settings.endpoint_name)]
    assert events == ["Created", "Updated", "Updated"]


@pytest.mark.server
def test_a_broken_shadow_never_reaches_a_client_and_rejecting_it_ends_it(home, trained, capsys):
    from pipeline.local.services.events import announce_registration
    from pipeline.local.services.hosting import LocalHosting
    from pipeline.local.services.runtime import read_runtime_metrics, runtime_url
    from pipeline.local.state.db import open_state
    from pipeline.settings import Settings

    assert _cli(capsys, home, "registry", "approve", "1")[0] == 0
    _break(home, trained, 2)
    settings = Settings(home=home)
    assert announce_registration(settings, 2)["status"] == "shadowing"
    hosting = LocalHosting(home, open_state(home))
    endpoint = hosting.describe_endpoint(settings.endpoint_name)
    runtime = _runtime_client(endpoint["Url"])
    for _ in range(20):
        answer = runtime.invoke_endpoint(EndpointName=settings.endpoint_name, ContentType="application/json",
                                         Body=json.dumps({"review": "dull"}), InferenceId=str(uuid.uuid4()))
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    url = runtime_url(home)

    def shadow_errors() -> int:
        fleets = read_runtime_metrics(url, settings.endpoint_name)["shadow"]
        return sum(bucket[2] for buckets in fleets.values() for bucket in buckets)

    _wait_for(lambda: shadow_errors() == 10)
    fleets = read_runtime_metrics(url, settings.endpoint_name)["fleets"]
    assert sum(b[2] for buckets in fleets.values() for b in buckets) == 0  # the production alarms see no error
    assert _captured(home, SHADOW_VARIANT_NAME) == []  # a failed answer is not captured

    # A restart whose shadow cannot start keeps the production variant serving, and says why.
    start = hosting.start_model_server

    def no_shadow(model_name, log_path, environment=None):
        if model_name.endswith("-shadow"):
            raise RuntimeError("its server exited at once")
        return start(model_name, log_path, environment)

    hosting.start_model_server = no_shadow
    restarted = hosting.restart_endpoint(settings.endpoint_name)
    hosting.start_model_server = start
    assert restarted["EndpointStatus"] == "InService" and "serves without its shadow" in restarted["FailureReason"]
    assert restarted["ShadowProductionVariants"][0]["CurrentInstanceCount"] == 0
    answer = runtime.invoke_endpoint(EndpointName=settings.endpoint_name, ContentType="application/json",
                                     Body=json.dumps({"review": "dull"}))
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200

    code, answer = _cli(capsys, home, "registry", "reject", "2")
    assert code == 0, answer
    endpoint = hosting.describe_endpoint(settings.endpoint_name)
    assert "ShadowProductionVariants" not in endpoint and endpoint["EndpointStatus"] == "InService"
    assert hosting.config_version(endpoint["EndpointConfigName"]) == 1
