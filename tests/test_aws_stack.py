"""The stack from the user's side: ``aws stack-parameters`` (what the template is deployed with),
its outputs read by the other ``aws`` commands, and ``aws teardown``, against moto's
CloudFormation, S3 and SageMaker."""
from __future__ import annotations

import json
import re

import boto3
import pytest
import yaml
from moto import mock_aws

from pipeline.aws import make_clients
from pipeline.aws.errors import BackendError
from pipeline.aws.stack import image_repository_arn, stack_parameters, stack_settings
from pipeline.aws.teardown import teardown
from pipeline.cli import main
from pipeline.lambdas import LAMBDA_DIR
from pipeline.settings import PLACEHOLDER_ROLE_ARN, Settings
from tests.test_aws_backend import REGION, aws_env  # noqa: F401  (aws_env is a fixture)

pytestmark = pytest.mark.slow

TEMPLATE = yaml.safe_load((LAMBDA_DIR / "template.yaml").read_text(encoding="utf-8"))
ROLE = "arn:aws:iam::123456789012:role/sentiment-mlops-PipelineRole-ABC"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.5-cpu-py311"


def _pytorch_registries(scope: str) -> dict[str, str]:
    """The SDK's own table of the PyTorch images' accounts by region."""
    from sagemaker.core import image_uris

    config = image_uris.config_for_framework("pytorch")[scope]
    version = config.get("version_aliases", {}).get("2.5", "2.5")
    return dict(config["versions"][version]["registries"])


@pytest.mark.parametrize("region", ["us-east-1", "af-south-1", "il-central-1", "ca-west-1", "cn-north-1",
                                    "us-gov-west-1"])
def test_the_image_pulls_are_granted_in_the_images_own_account_in_every_region(region, monkeypatch):
    """The endpoint role used to name account 763104351884, which serves 16 of the 38 regions."""
    monkeypatch.setenv("SENTIMENT_MLOPS_REGION", region)
    parameters = stack_parameters(Settings())
    account = _pytorch_registries("inference")[region]
    partition = {"cn": "aws-cn", "us-gov": "aws-us-gov"}.get(region.rsplit("-", 2)[0], "aws")
    assert parameters["InferenceImageRepository"] == f"arn:{partition}:ecr:{region}:{account}:repository/pytorch-inference"
    # processing and training share the training image's repository; the test set's transform runs the inference image
    assert parameters["JobImageRepositories"].split(",") == sorted({
        parameters["InferenceImageRepository"],
        f"arn:{partition}:ecr:{region}:{_pytorch_registries('training')[region]}:repository/pytorch-training"})


def test_a_pinned_image_is_granted_where_it_lives(monkeypatch):
    monkeypatch.setenv("SENTIMENT_MLOPS_INFERENCE_IMAGE_URI",
                       "111122223333.dkr.ecr.eu-west-1.amazonaws.com/team/sentiment-serve@sha256:" + "a" * 64)
    assert stack_parameters(Settings())["InferenceImageRepository"] == (
        "arn:aws:ecr:eu-west-1:111122223333:repository/team/sentiment-serve")
    with pytest.raises(BackendError, match="not an ECR image URI"):
        image_repository_arn("docker.io/library/python:3.11")


def test_the_parameters_are_the_templates_and_satisfy_its_patterns():
    """What `sam deploy --parameter-overrides $(sentiment-mlops aws stack-parameters)` sends is accepted."""
    declared = TEMPLATE["Parameters"]
    parameters = stack_parameters(Settings())
    assert set(parameters) <= set(declared)
    assert {name for name, spec in declared.items() if "Default" not in spec} <= set(parameters)
    for name, value in parameters.items():
        pattern = declared[name].get("AllowedPattern")
        values = value.split(",") if declared[name]["Type"] == "CommaDelimitedList" else [value]
        assert not pattern or all(re.fullmatch(pattern, v) for v in values), (name, value)


def test_the_printed_overrides_are_what_sam_deploy_takes(capsys):
    assert main(["aws", "stack-parameters"]) == 0
    line = capsys.readouterr().out.strip()
    assert dict(pair.split("=", 1) for pair in line.split()) == stack_parameters(Settings())


# --- the stack's outputs, read by the other commands -------------------------------------------

def _stack(outputs: dict, parameters: dict | None = None, name: str = "sentiment-mlops") -> dict[str, str]:
    """A stack in moto's CloudFormation with these outputs (moto cannot run the SAM template
    itself), and a website bucket of its own as the real one has; returns the outputs."""
    template = {"Parameters": {k: {"Type": "String"} for k in parameters or {}},
                "Resources": {"WebsiteBucket": {"Type": "AWS::S3::Bucket"}},
                "Outputs": {"WebsiteBucketName": {"Value": {"Ref": "WebsiteBucket"}},
                            **{key: {"Value": value} for key, value in outputs.items()}}}
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    cloudformation.create_stack(StackName=name, TemplateBody=json.dumps(template),
                                Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in (parameters or {}).items()])
    stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}


@pytest.fixture
def cloud(aws_env, monkeypatch, tmp_path):  # noqa: F811
    for name in ("SENTIMENT_MLOPS_BUCKET", "SENTIMENT_MLOPS_ROLE_ARN", "SENTIMENT_MLOPS_STACK_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SENTIMENT_MLOPS_REGION", REGION)
    monkeypatch.setenv("SENTIMENT_MLOPS_HOME", str(tmp_path / "home"))
    with mock_aws():
        yield boto3.client("s3", region_name=REGION)


def test_the_bucket_and_role_come_from_the_stack_unless_the_environment_names_them(cloud, monkeypatch):
    _stack({"ArtifactBucketName": "stack-bucket", "PipelineRoleArn": ROLE})
    settings = stack_settings(Settings(), make_clients(Settings()))
    assert (settings.bucket, settings.role_arn) == ("stack-bucket", ROLE)
    monkeypatch.setenv("SENTIMENT_MLOPS_BUCKET", "my-own-bucket")
    settings = stack_settings(Settings(), make_clients(Settings()))
    assert (settings.bucket, settings.role_arn) == ("my-own-bucket", ROLE)


def test_without_a_stack_the_commands_say_how_to_get_one(cloud, capsys):
    assert Settings().role_arn == PLACEHOLDER_ROLE_ARN
    assert main(["aws", "upsert"]) == 2
    err = capsys.readouterr().err
    assert "no stack 'sentiment-mlops'" in err and "deploy lambda/template.yaml" in err and len(err.splitlines()) == 1


def test_upsert_uses_the_stacks_bucket_and_role(cloud, capsys):
    cloud.create_bucket(Bucket="stack-bucket")
    _stack({"ArtifactBucketName": "stack-bucket", "PipelineRoleArn": ROLE})
    assert main(["aws", "upsert", "--json"]) == 0
    upserted = json.loads(capsys.readouterr().out)
    assert upserted["uploaded"] and all(uri.startswith("s3://stack-bucket/") for uri in upserted["uploaded"])
    described = boto3.client("sagemaker", region_name=REGION).describe_pipeline(PipelineName="sentiment-mlops")
    assert described["RoleArn"] == ROLE
    assert "s3://stack-bucket/sentiment-mlops/data/imdb" in described["PipelineDefinition"]


def test_publish_website_finds_its_bucket_and_api_in_the_stack(cloud, capsys):
    outputs = _stack({"ApiUrl": "https://abc.execute-api.us-east-1.amazonaws.com"})
    assert main(["aws", "publish-website", "--json"]) == 0
    config = cloud.get_object(Bucket=outputs["WebsiteBucketName"], Key="config.json")["Body"].read()
    assert json.loads(config) == {"apiUrl": "https://abc.execute-api.us-east-1.amazonaws.com"}


# --- teardown -------------------------------------------------------------------------------

def _deployed(cloud, *, registered: bool = True) -> None:
    """What a user has after the walk in docs/aws.md: the stack, its buckets with objects in them, the
    pipeline, an endpoint the deploy function made with its model and config, a registered version."""
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    cloud.create_bucket(Bucket="artifact-bucket")
    cloud.put_bucket_versioning(Bucket="artifact-bucket", VersioningConfiguration={"Status": "Enabled"})
    for body in (b"v1", b"v2"):
        cloud.put_object(Bucket="artifact-bucket", Key="sentiment-mlops/models/model.tar.gz", Body=body)
    outputs = _stack({"ArtifactBucketName": "artifact-bucket", "PipelineRoleArn": ROLE},
                     {"EndpointName": "sentiment-mlops", "PipelineName": "sentiment-mlops",
                      "ModelPackageGroupName": "sentiment-mlops-imdb-lstm"})
    cloud.put_object(Bucket=outputs["WebsiteBucketName"], Key="index.html", Body=b"<html>")
    sagemaker.create_pipeline(PipelineName="sentiment-mlops", RoleArn=ROLE,
                              PipelineDefinition=json.dumps({"Version": "2020-12-01", "Steps": []}))
    if registered:
        sagemaker.create_model_package_group(ModelPackageGroupName="sentiment-mlops-imdb-lstm")
        sagemaker.create_model_package(ModelPackageGroupName="sentiment-mlops-imdb-lstm", InferenceSpecification={
            "Containers": [{"Image": IMAGE, "ModelDataUrl": "s3://artifact-bucket/sentiment-mlops/models/model.tar.gz"}],
            "SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"]})
    sagemaker.create_model(ModelName="someone-elses-model", ExecutionRoleArn=ROLE,
                           PrimaryContainer={"Image": IMAGE, "ModelDataUrl": "s3://artifact-bucket/m.tar.gz"})
    # the Model `transform --backend sagemaker` makes for a version: a teardown deletes it too
    sagemaker.create_model(ModelName="sentiment-mlops-v1-transform", ExecutionRoleArn=ROLE,
                           PrimaryContainer={"Image": IMAGE, "ModelDataUrl": "s3://artifact-bucket/m.tar.gz"})
    _deploy_version(sagemaker, 1)


def _deploy_version(sagemaker, version: int) -> None:
    """The model, endpoint config and endpoint lambda/deploy.py makes for a version."""
    model, config = f"sentiment-mlops-v{version}", f"sentiment-mlops-v{version}-0a1b2c3d"
    sagemaker.create_model(ModelName=model, ExecutionRoleArn=ROLE,
                           PrimaryContainer={"Image": IMAGE, "ModelDataUrl": "s3://artifact-bucket/m.tar.gz"})
    sagemaker.create_endpoint_config(EndpointConfigName=config, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": model, "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}])
    sagemaker.create_endpoint(EndpointName="sentiment-mlops", EndpointConfigName=config)


def _left(cloud) -> dict:
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    return {"stacks": [s["StackName"] for s in boto3.client("cloudformation", region_name=REGION).list_stacks()[
                "StackSummaries"] if s["StackStatus"] != "DELETE_COMPLETE"],
            "endpoints": [e["EndpointName"] for e in sagemaker.list_endpoints()["Endpoints"]],
            "configs": [c["EndpointConfigName"] for c in sagemaker.list_endpoint_configs()["EndpointConfigs"]],
            "models": sorted(m["ModelName"] for m in sagemaker.list_models()["Models"]),
            "pipelines": [p["PipelineName"] for p in sagemaker.list_pipelines()["PipelineSummaries"]],
            "buckets": sorted(b["Name"] for b in cloud.list_buckets()["Buckets"]),
            "packages": len(sagemaker.list_model_packages(ModelPackageGroupName="sentiment-mlops-imdb-lstm").get(
                "ModelPackageSummaryList", []))}


def test_teardown_without_yes_deletes_nothing_and_lists_what_would_go(cloud):
    _deployed(cloud)
    before = _left(cloud)
    plan = teardown(make_clients(Settings()), Settings(), yes=False, delete_data=False, poll_s=0)
    assert _left(cloud) == before and plan["teardown"] == "planned"
    assert any(w.startswith("endpoint sentiment-mlops ") for w in plan["would_delete"])
    assert "artifact bucket artifact-bucket" in plan["kept"] and "$0.023 per GB-month" in plan["kept"][
        "artifact bucket artifact-bucket"]


def test_teardown_leaves_nothing_billing_and_keeps_the_data(cloud, capsys):
    _deployed(cloud)
    assert main(["aws", "teardown", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "deleted:" in out and "kept, and what each costs while idle:" in out
    assert _left(cloud) == {"stacks": [], "endpoints": [], "configs": [], "models": ["someone-elses-model"],
                            "pipelines": [], "buckets": ["artifact-bucket"], "packages": 1}
    assert main(["aws", "teardown", "--yes"]) == 0  # again: nothing left to do, and no error


def test_teardown_with_delete_data_removes_every_version_and_the_registry(cloud):
    _deployed(cloud, registered=False)  # moto cannot delete model packages or groups: that part is below
    result = teardown(make_clients(Settings()), Settings(), yes=True, delete_data=True, poll_s=0)
    assert result["teardown"] == "done" and "artifact bucket" not in json.dumps(result["kept"])
    assert "artifact bucket artifact-bucket (every object version)" in result["deleted"]
    left = _left(cloud)
    assert left["buckets"] == [] and left["endpoints"] == [] and left["stacks"] == []


def test_delete_data_empties_the_group_before_deleting_it():
    """The registry part, with botocore's Stubber (the real client, checked against the service model)."""
    from botocore.stub import Stubber

    from pipeline.aws.clients import AwsClients
    from pipeline.aws.teardown import _data_steps

    client = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    group, arns = "sentiment-mlops-imdb-lstm", [f"arn:aws:sagemaker:{REGION}:123456789012:model-package/g/{v}"
                                                for v in (1, 2)]
    with Stubber(client) as stub:
        stub.add_response("describe_model_package_group", {
            "ModelPackageGroupName": group, "ModelPackageGroupArn": "arn:aws:sagemaker:x:1:model-package-group/g",
            "CreationTime": "2026-11-22T06:00:00Z", "CreatedBy": {}, "ModelPackageGroupStatus": "Completed"})
        stub.add_response("list_model_packages", {"ModelPackageSummaryList": [
            {"ModelPackageArn": arn, "CreationTime": "2026-11-22T06:00:00Z", "ModelPackageStatus": "Completed"}
            for arn in arns]}, {"ModelPackageGroupName": group})
        for arn in arns:
            stub.add_response("delete_model_package", {}, {"ModelPackageName": arn})
        stub.add_response("delete_model_package_group", {}, {"ModelPackageGroupName": group})
        steps = _data_steps(AwsClients(s3=None, sagemaker=client, region=REGION), None, group)
        for _, delete in steps:
            delete()
        stub.assert_no_pending_responses()
    assert [what for what, _ in steps][-1] == f"model package group {group}"


def test_a_running_execution_is_stopped_before_its_pipeline_is_deleted():
    """SageMaker deletes no pipeline that runs, and a running training job bills: teardown stops
    it, waits for it to stop, then deletes (moto has no StopPipelineExecution: Stubber)."""
    from botocore.stub import ANY, Stubber

    from pipeline.aws.clients import AwsClients
    from pipeline.aws.teardown import _delete_pipeline

    client = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    arn = f"arn:aws:sagemaker:{REGION}:123456789012:pipeline/sentiment-mlops/execution/abc123"

    def listing(status: str) -> dict:
        return {"PipelineExecutionSummaries": [{"PipelineExecutionArn": arn, "PipelineExecutionStatus": status}]}

    with Stubber(client) as stub:
        stub.add_response("list_pipeline_executions", listing("Executing"), {"PipelineName": "sentiment-mlops"})
        stub.add_response("describe_pipeline_execution", {"PipelineExecutionArn": arn,
                                                          "PipelineExecutionStatus": "Executing"})
        stub.add_response("stop_pipeline_execution", {"PipelineExecutionArn": arn},
                          {"PipelineExecutionArn": arn, "ClientRequestToken": ANY})
        stub.add_response("list_pipeline_executions", listing("Stopping"), {"PipelineName": "sentiment-mlops"})
        stub.add_response("list_pipeline_executions", listing("Stopped"), {"PipelineName": "sentiment-mlops"})
        stub.add_response("delete_pipeline", {}, {"PipelineName": "sentiment-mlops", "ClientRequestToken": ANY})
        _delete_pipeline(AwsClients(s3=None, sagemaker=client, region=REGION), "sentiment-mlops", 0, 60)
        stub.assert_no_pending_responses()


def test_an_endpoint_an_approval_in_flight_creates_during_teardown_is_deleted_too(cloud, monkeypatch):
    """The plan found no endpoint; the deploy function, still running while the stack goes, makes one."""
    from pipeline.aws import teardown as module

    _stack({"ArtifactBucketName": "artifact-bucket", "PipelineRoleArn": ROLE})
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    delete_stack = module._delete_stack

    def stack_deleted_while_a_deployment_lands(*args, **kwargs):
        _deploy_version(sagemaker, 2)
        delete_stack(*args, **kwargs)

    monkeypatch.setattr(module, "_delete_stack", stack_deleted_while_a_deployment_lands)
    teardown(make_clients(Settings()), Settings(), yes=True, delete_data=False, poll_s=0)
    left = _left(cloud)
    assert (left["endpoints"], left["configs"], left["models"]) == ([], [], [])
