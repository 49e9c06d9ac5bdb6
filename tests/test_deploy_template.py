"""lambda/template.yaml: valid for CloudFormation (cfn-lint, SAM transform included), least
privilege, its EventBridge rule matches approvals of the project's group only (moto's
EventBridge does the matching), the functions' settings are the ones deploy.py and predict.py
read, and the website's bucket is private behind its distribution."""
from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import boto3
import pytest
import yaml
from moto import mock_aws

from pipeline.local.events import DEPLOY_HANDLER, deploy_module
from pipeline.local.lambdas import load_lambda
from tests.test_aws_backend import REGION, aws_env  # noqa: F401  (aws_env is a fixture)

TEMPLATE_PATH = DEPLOY_HANDLER.parent / "template.yaml"
TEMPLATE = yaml.safe_load(TEMPLATE_PATH.read_text(encoding="utf-8"))
RESOURCES = TEMPLATE["Resources"]
# Actions AWS defines without a resource: the only ones allowed on "*", each for a reason.
NO_RESOURCE_ACTIONS = {"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData"}


def _statements():
    for name, resource in RESOURCES.items():
        for policy in (resource.get("Properties") or {}).get("Policies") or []:
            for statement in policy["PolicyDocument"]["Statement"]:
                yield name, statement


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def test_cfn_lint_finds_nothing():
    from cfnlint.api import lint_file

    matches = lint_file(Path(TEMPLATE_PATH))
    assert [str(m) for m in matches] == []


def test_no_policy_grants_a_wildcard_action_or_resource_it_does_not_need():
    statements = list(_statements())
    assert statements
    for role, statement in statements:
        assert statement["Effect"] == "Allow", (role, statement)
        for action in _as_list(statement["Action"]):
            assert "*" not in action, (role, action)
        if "*" in _as_list(statement["Resource"]):
            assert set(_as_list(statement["Action"])) <= NO_RESOURCE_ACTIONS, (role, statement)
    metrics = next(s for _, s in statements if s["Action"] == "cloudwatch:PutMetricData")
    assert "cloudwatch:namespace" in json.dumps(metrics["Condition"])


def test_the_model_role_is_passed_only_to_sagemaker():
    (pass_role,) = [s for _, s in _statements() if s["Action"] == "iam:PassRole"]
    assert pass_role["Resource"] == {"Fn::GetAtt": ["EndpointModelRole", "Arn"]}
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}


def test_the_deploy_role_covers_every_call_deploy_py_makes():
    """Each SageMaker call in deploy.py is granted; a call added there without its permission fails here."""
    calls = set(re.findall(r"sagemaker\.(create_\w+|describe_\w+|update_\w+|delete_\w+)\(", DEPLOY_HANDLER.read_text()))
    calls |= set(re.findall(r"_exists\(sagemaker\.(\w+)", DEPLOY_HANDLER.read_text()))
    granted = {a.split(":", 1)[1] for _, s in _statements() for a in _as_list(s["Action"]) if a.startswith("sagemaker:")}
    needed = {"".join(part.title() for part in call.split("_")) for call in calls}
    assert needed and needed <= granted, needed - granted


def _role_actions(role: str) -> dict[str, list]:
    return {a: _as_list(s["Resource"]) for name, s in _statements() if name == role for a in _as_list(s["Action"])}


def test_the_predict_function_may_invoke_the_endpoint_and_nothing_else_of_sagemaker():
    actions = _role_actions("PredictFunctionRole")
    assert {a for a in actions if a.startswith("sagemaker:")} == {"sagemaker:InvokeEndpoint"}
    assert actions["sagemaker:InvokeEndpoint"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}:endpoint/${EndpointName}"}]
    assert "invoke_endpoint(" in (DEPLOY_HANDLER.parent / "predict.py").read_text()


def test_the_website_bucket_is_private_and_read_only_by_its_distribution():
    bucket = RESOURCES["WebsiteBucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    (statement,) = RESOURCES["WebsiteBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "cloudfront.amazonaws.com"} and statement["Action"] == "s3:GetObject"
    assert "distribution/${WebsiteDistribution}" in json.dumps(statement["Condition"])
    cors = RESOURCES["PredictApi"]["Properties"]["CorsConfiguration"]["AllowOrigins"]
    assert cors == [{"Fn::Sub": "https://${WebsiteDistribution.DomainName}"}]  # the site, not "*"


def test_the_predict_functions_settings_are_the_ones_predict_py_reads():
    function = RESOURCES["PredictFunction"]["Properties"]
    assert function["Handler"] == "predict.handler" and callable(load_lambda("predict").handler)
    environ = {name: "x" for name in function["Environment"]["Variables"]}
    assert load_lambda("predict").PredictConfig.from_env(environ).endpoint_name == "x"
    routes = {(e["Properties"]["Method"], e["Properties"]["Path"]) for e in function["Events"].values()}
    assert routes == {("POST", "/predict"), ("GET", "/health")}


def test_the_functions_settings_are_the_ones_deploy_py_reads():
    function = RESOURCES["DeployFunction"]["Properties"]
    module, handler = function["Handler"].split(".")
    assert (DEPLOY_HANDLER.parent / f"{module}.py") == DEPLOY_HANDLER and callable(getattr(deploy_module(), handler))
    variables = function["Environment"]["Variables"]
    environ = {name: "x" for name in variables}
    environ.update(ENDPOINT_NAME="sentiment-mlops", INSTANCE_COUNT="1")
    config = deploy_module().DeployConfig.from_env(environ)
    assert config.endpoint_name == "sentiment-mlops"
    assert set(variables) == {"ENDPOINT_NAME", "MODEL_PACKAGE_GROUP", "EXECUTION_ROLE_ARN", "INSTANCE_TYPE", "INSTANCE_COUNT"}


@contextlib.contextmanager
def _rule_to_queue(pattern: dict):
    """A rule with this pattern in moto's EventBridge (which does the matching), sending to a queue."""
    with mock_aws():
        sqs, events = boto3.client("sqs", region_name=REGION), boto3.client("events", region_name=REGION)
        queue = sqs.create_queue(QueueName="matched")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name="rule", EventPattern=json.dumps(pattern))
        events.put_targets(Rule="rule", Targets=[{"Id": "target", "Arn": arn}])
        yield events, sqs, queue


@pytest.fixture
def rule_queue(aws_env):  # noqa: F811
    """The template's approval rule (its group parameter filled in), sending to a queue."""
    pattern = json.loads(json.dumps(RESOURCES["DeployFunction"]["Properties"]["Events"]["Approved"]["Properties"]["Pattern"])
                         .replace('{"Ref": "ModelPackageGroupName"}', '"sentiment-mlops-imdb-lstm"'))
    with _rule_to_queue(pattern) as matched:
        yield matched


def _local_event(tmp_path: Path, status: str, group: str = "sentiment-mlops-imdb-lstm") -> dict:
    from pipeline.local.db import connect
    from pipeline.local.registry import ModelRegistry

    registry = ModelRegistry(connect(tmp_path / f"{status}-{group}.db"))
    registry.register(group, "s3://b/model.tar.gz", "0" * 64, {}, inference_specification={"Containers": []})
    return registry.update_approval(group, 1, status).event


@pytest.mark.parametrize("status, group, delivered", [("Approved", "sentiment-mlops-imdb-lstm", True),
                                                      ("Rejected", "sentiment-mlops-imdb-lstm", False),
                                                      ("Approved", "someone-elses-group", False)])
def test_the_rule_matches_approvals_of_the_group_only(rule_queue, tmp_path, status, group, delivered):
    events, sqs, queue = rule_queue
    event = _local_event(tmp_path, status, group)
    events.put_events(Entries=[{"Source": event["source"], "DetailType": event["detail-type"],
                                "Detail": json.dumps(event["detail"])}])
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
    assert len(messages) == (1 if delivered else 0)
    if delivered:  # what arrives is an event the handler reads
        approval = deploy_module().parse_event(json.loads(messages[0]["Body"]))
        assert (approval.status, approval.version) == ("Approved", 1)


# --- retraining: schedule and new data → lambda/retrain.py ------------------------------------
RETRAIN_HANDLER = DEPLOY_HANDLER.parent / "retrain.py"


def test_the_retrain_role_may_start_and_list_the_pipelines_executions_only():
    actions = _role_actions("RetrainFunctionRole")
    calls = set(re.findall(r"sagemaker\.(\w+)\(", RETRAIN_HANDLER.read_text()))
    needed = {"sagemaker:" + "".join(part.title() for part in call.split("_")) for call in calls}
    assert needed == {"sagemaker:StartPipelineExecution", "sagemaker:ListPipelineExecutions"}
    assert {a for a in actions if a.startswith("sagemaker:")} == needed
    pipeline_arn = {"Fn::Sub": "arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}:pipeline/${PipelineName}"}
    assert all(actions[a] == [pipeline_arn] for a in needed)
    assert not any(a.startswith("iam:") for a in actions)  # starting passes no role


def test_the_retrain_functions_settings_are_the_ones_retrain_py_reads():
    function = RESOURCES["RetrainFunction"]["Properties"]
    module, handler = function["Handler"].split(".")
    assert (DEPLOY_HANDLER.parent / f"{module}.py") == RETRAIN_HANDLER
    assert callable(getattr(load_lambda("retrain"), handler))
    variables = function["Environment"]["Variables"]
    assert variables["DATA_PREFIX"] == {"Fn::Sub": "${ArtifactPrefix}/data/"}
    environ = {name: "x" for name in variables}
    assert load_lambda("retrain").RetrainConfig.from_env(environ).pipeline_name == "x"
    assert function["ReservedConcurrentExecutions"] == 1  # two ticks cannot both see "nothing running"
    assert function["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": ["RetrainFailures", "Arn"]}


def test_the_schedule_exists_only_when_one_is_given_and_invokes_the_function():
    rule, permission = RESOURCES["RetrainScheduleRule"], RESOURCES["RetrainSchedulePermission"]
    assert rule["Condition"] == permission["Condition"] == "HasRetrainSchedule"
    assert TEMPLATE["Conditions"]["HasRetrainSchedule"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "RetrainSchedule"}, ""]}]}
    assert TEMPLATE["Parameters"]["RetrainSchedule"]["Default"] == ""
    assert rule["Properties"]["ScheduleExpression"] == {"Ref": "RetrainSchedule"}
    assert rule["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": ["RetrainFunction", "Arn"]}
    assert permission["Properties"]["SourceArn"] == {"Fn::GetAtt": ["RetrainScheduleRule", "Arn"]}
    pattern = re.compile(TEMPLATE["Parameters"]["RetrainSchedule"]["AllowedPattern"])
    assert all(pattern.match(e) for e in ("", "rate(7 days)", "cron(0 3 ? * MON *)"))
    assert not pattern.match("every monday")


@pytest.mark.parametrize("bucket, key, delivered", [("my-bucket", "sentiment-mlops/data/aclImdb_v1.tar.gz", True),
                                                    ("my-bucket", "sentiment-mlops/data/v2/_SUCCESS", True),
                                                    ("my-bucket", "sentiment-mlops/models/model.tar.gz", False),
                                                    ("other-bucket", "sentiment-mlops/data/a.tar.gz", False)])
def test_the_new_data_rule_matches_objects_under_the_data_prefix_only(aws_env, bucket, key, delivered):  # noqa: F811
    text = json.dumps(RESOURCES["RetrainFunction"]["Properties"]["Events"]["NewData"]["Properties"]["Pattern"])
    pattern = json.loads(text.replace('{"Ref": "ArtifactBucket"}', '"my-bucket"')
                         .replace('{"Fn::Sub": "${ArtifactPrefix}/data/"}', '"sentiment-mlops/data/"'))
    with _rule_to_queue(pattern) as (events, sqs, queue):
        events.put_events(Entries=[{"Source": "aws.s3", "DetailType": "Object Created", "Detail": json.dumps(
            {"version": "0", "bucket": {"name": bucket}, "object": {"key": key, "size": 1}, "reason": "PutObject"})}])
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
    assert len(messages) == (1 if delivered else 0)
    if delivered:  # what arrives is an event the handler reads
        config = load_lambda("retrain").RetrainConfig("p", "my-bucket", "sentiment-mlops/data/")
        assert load_lambda("retrain").parse_event(json.loads(messages[0]["Body"]), config).kind == "new-data"
