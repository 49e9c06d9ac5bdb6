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

from mlops_rules.rollouts import ENV_NAMES
from pipeline.lambdas import lambda_path, load_lambda
from pipeline.local.services.events import deploy_module
from pipeline.monitoring import MONITORING_FOLDER
from pipeline.transforms import OUTPUTS as TRANSFORM_OUTPUTS
from tests.test_aws_backend import REGION, aws_env  # noqa: F401  (aws_env is a fixture)

DEPLOY_HANDLER = lambda_path("deploy")
TEMPLATE_PATH = DEPLOY_HANDLER.parent / "template.yaml"
TEMPLATE = yaml.safe_load(TEMPLATE_PATH.read_text(encoding="utf-8"))
RESOURCES = TEMPLATE["Resources"]
# Actions AWS defines without a resource: the only ones allowed on "*", each for a reason.
# Actions IAM authorizes on no resource type: "*" is the only Resource they take.
NO_RESOURCE_ACTIONS = {"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData", "sagemaker:ListModelPackages"}


def _statements():
    """(role, statement) for every Allow a role is given: its inline policies, and the
    AWS::IAM::Policy resources attached to it."""
    for name, resource in RESOURCES.items():
        properties = resource.get("Properties") or {}
        for policy in properties.get("Policies") or []:
            for statement in policy["PolicyDocument"]["Statement"]:
                yield name, statement
        if resource["Type"] == "AWS::IAM::Policy":
            for role in properties["Roles"]:
                for statement in properties["PolicyDocument"]["Statement"]:
                    yield role["Ref"], statement


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


@pytest.mark.slow
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


def test_each_role_may_pass_one_role_only_to_sagemaker():
    """The deploy function passes the endpoint model's role; the pipeline role passes itself to its jobs."""
    passes = {role: s for role, s in _statements() if s["Action"] == "iam:PassRole"}
    assert {role: s["Resource"] for role, s in passes.items()} == {
        "DeployFunctionRole": {"Fn::GetAtt": ["EndpointModelRole", "Arn"]},
        "PipelineRole": {"Fn::GetAtt": ["PipelineRole", "Arn"]},
        # the monitoring job runs as the pipeline's role, which may write its reports
        "MonitoringFunctionRole": {"Fn::GetAtt": ["PipelineRole", "Arn"]}}
    for statement in passes.values():
        assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}


def test_the_deploy_role_covers_every_call_deploy_py_makes():
    """Each SageMaker call in deploy.py is granted; a call added there without its permission fails here."""
    calls = set(re.findall(r"sagemaker\.(\w+)\(", DEPLOY_HANDLER.read_text()))
    watched = {"".join(part.title() for part in call.split("_"))
               for call in re.findall(r"cloudwatch\.(\w+)\(", DEPLOY_HANDLER.read_text())}
    assert watched and watched <= {a.split(":", 1)[1] for _, s in _statements() for a in _as_list(s["Action"])
                                   if a.startswith("cloudwatch:")}, watched
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
    variables = function["Environment"]["Variables"]
    assert set(variables) == {"ENDPOINT_NAME", "ALLOWED_ORIGIN", "GROUND_TRUTH_URI", "FEEDBACK_SECRET_ARN"}
    environ = {name: "x" for name in variables} | {"GROUND_TRUTH_URI": "s3://bucket/prefix/groundtruth"}
    config = load_lambda("predict").PredictConfig.from_env(environ, feedback_key=b"k")
    assert config.endpoint_name == "x" and config.takes_feedback
    assert variables["GROUND_TRUTH_URI"] == {"Fn::Sub": "s3://${ArtifactBucket}/${ArtifactPrefix}/groundtruth"}
    assert variables["FEEDBACK_SECRET_ARN"] == {"Ref": "FeedbackSigningKey"}
    routes = {(e["Properties"]["Method"], e["Properties"]["Path"]) for e in function["Events"].values()}
    assert routes == {("POST", "/predict"), ("GET", "/health"), ("POST", "/feedback")}


def test_the_predict_function_may_write_ground_truth_and_read_its_key_and_nothing_else_of_s3():
    actions = _role_actions("PredictFunctionRole")
    assert {a for a in actions if a.startswith(("s3:", "secretsmanager:"))} == {"s3:PutObject",
                                                                               "secretsmanager:GetSecretValue"}
    assert actions["s3:PutObject"] == [{"Fn::Sub": "${ArtifactBucket.Arn}/${ArtifactPrefix}/groundtruth/*"}]
    assert actions["secretsmanager:GetSecretValue"] == [{"Ref": "FeedbackSigningKey"}]
    secret = RESOURCES["FeedbackSigningKey"]["Properties"]
    assert "SecretString" not in secret and secret["GenerateSecretString"]["PasswordLength"] >= 32


def test_the_functions_settings_are_the_ones_deploy_py_reads():
    function = RESOURCES["DeployFunction"]["Properties"]
    module, handler = function["Handler"].split(".")
    assert (DEPLOY_HANDLER.parent / f"{module}.py") == DEPLOY_HANDLER and callable(getattr(deploy_module(), handler))
    variables = function["Environment"]["Variables"]
    environ = {name: "x" for name in variables}
    environ.update(ENDPOINT_NAME="sentiment-mlops", INSTANCE_COUNT="1", DEPLOYMENT_MODE="CANARY", TRAFFIC_STEP_PERCENT="10",
                   BAKE_SECONDS="30", TERMINATION_WAIT_SECONDS="0", MAX_DEPLOYMENT_SECONDS="600", ROLLBACK_ALARMS="a,b",
                   NEW_FLEET_ALARM="b", CAPTURE_PERCENT="100", CAPTURE_DESTINATION="s3://bucket/prefix/datacapture",
                   SHADOW_PERCENT="20")
    with pytest.raises(deploy_module().DeployError, match="at least 2 instances"):
        deploy_module().DeployConfig.from_env(environ)
    environ["INSTANCE_COUNT"] = "2"
    config = deploy_module().DeployConfig.from_env(environ)
    assert config.endpoint_name == "sentiment-mlops"
    assert set(variables) == {"ENDPOINT_NAME", "MODEL_PACKAGE_GROUP", "EXECUTION_ROLE_ARN", "INSTANCE_TYPE", "INSTANCE_COUNT",
                              "RETRY_QUEUE_URL", *ENV_NAMES, "CAPTURE_PERCENT", "CAPTURE_DESTINATION", "SHADOW_PERCENT"}
    assert config.capture_percent == 100 and config.capture_destination == "s3://bucket/prefix/datacapture"
    assert config.shadow_percent == 20


def test_the_endpoint_instance_type_defaults_are_the_settings():
    """The stack's template keeps a copy of the default endpoint instance type (mlops_rules holds
    it for the handler and the settings); a local deploy and a deployed stack use the same one."""
    from mlops_rules.hosting import DEFAULT_ENDPOINT_INSTANCE_TYPE

    assert TEMPLATE["Parameters"]["EndpointInstanceType"]["Default"] == DEFAULT_ENDPOINT_INSTANCE_TYPE
    deploy = deploy_module()
    environ = {"ENDPOINT_NAME": "e", "MODEL_PACKAGE_GROUP": "g", "EXECUTION_ROLE_ARN": "r"}
    assert deploy.DeployConfig.from_env(environ).instance_type == DEFAULT_ENDPOINT_INSTANCE_TYPE


def test_an_approval_that_meets_a_busy_endpoint_comes_back_through_the_retry_queue():
    function = RESOURCES["DeployFunction"]["Properties"]
    assert function["Environment"]["Variables"]["RETRY_QUEUE_URL"] == {"Ref": "DeployRetries"}
    retries = function["Events"]["Retries"]
    assert retries["Type"] == "SQS" and retries["Properties"]["Queue"] == {"Fn::GetAtt": ["DeployRetries", "Arn"]}
    queue = RESOURCES["DeployRetries"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * function["Timeout"]  # what Lambda's SQS trigger asks for
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["DeployFailures", "Arn"]}
    actions = _role_actions("DeployFunctionRole")
    for action in ("sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"):
        assert {"Fn::GetAtt": ["DeployRetries", "Arn"]} in actions[action], action
    # SQS delays a message by at most 900 s; the handler's waits must fit.
    assert max(deploy_module().RETRY_DELAYS_S) <= 900


def test_no_concurrency_is_reserved_unless_asked_for():
    """Reserving concurrency fails stack creation where the account has little (new accounts: 10)."""
    assert TEMPLATE["Parameters"]["ReservedConcurrency"]["Default"] == ""
    for name in ("DeployFunction", "RetrainFunction"):
        assert RESOURCES[name]["Properties"]["ReservedConcurrentExecutions"] == {
            "Fn::If": ["HasReservedConcurrency", {"Ref": "ReservedConcurrency"}, {"Ref": "AWS::NoValue"}]}
    assert "ReservedConcurrentExecutions" not in RESOURCES["PredictFunction"]["Properties"]


def test_log_grants_name_the_bare_log_group_that_create_and_describe_are_authorized_against():
    for role, group in (("EndpointModelRole", "/aws/sagemaker/Endpoints/${EndpointName}"),
                        ("PipelineRole", "/aws/sagemaker/TrainingJobs"), ("PipelineRole", "/aws/sagemaker/ProcessingJobs")):
        arns = [r["Fn::Sub"] for r in _role_actions(role)["logs:CreateLogGroup"]]
        base = "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:" + group
        assert base in arns and base + ":*" in arns, (role, arns)


def test_every_logs_grant_names_a_log_group_in_the_documented_form_with_one_suffix():
    """CloudFormation's ``Arn`` of a log group already ends in ``:*``, so ``${Group.Arn}:*`` grants
    ``log-group:NAME:*:*``, which matches no stream ARN IAM documents. Every logs grant is written
    as ``arn:...:log-group:NAME`` or that with one ``:*``."""
    prefix = "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:"
    grants = [(role, resource) for role, statement in _statements()
              for action in _as_list(statement["Action"]) if action.startswith("logs:")
              for resource in _as_list(statement["Resource"])]
    assert len({role for role, _ in grants}) >= 5  # the pipeline, the endpoint's model and the three functions
    for role, resource in grants:
        arn = resource["Fn::Sub"]
        assert arn.startswith(prefix) and ".Arn}" not in arn, (role, arn)
        assert not arn.endswith(":*:*") and ":*" not in arn[len(prefix):].removesuffix(":*"), (role, arn)


def test_image_pulls_are_granted_on_the_repositories_given_not_on_one_accounts():
    """The PyTorch images live in other accounts in several regions, and a user may pin another image."""
    assert _role_actions("EndpointModelRole")["ecr:BatchGetImage"] == [{"Ref": "InferenceImageRepository"}]
    assert _role_actions("PipelineRole")["ecr:BatchGetImage"] == [{"Ref": "JobImageRepositories"}]
    assert "763104351884" not in TEMPLATE_PATH.read_text()


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
    from pipeline.local.state.db import connect
    from pipeline.local.state.registry import ModelRegistry

    registry = ModelRegistry(connect(tmp_path / f"{status}-{group}.db"))
    registry.register(group, "s3://b/model.tar.gz", "0" * 64, {}, inference_specification={"Containers": []})
    event = registry.update_approval(group, 1, status).event
    assert event is not None, "an approval change sends an event"
    return event


@pytest.mark.parametrize("status, group, delivered", [("Approved", "sentiment-mlops-imdb-lstm", True),
                                                      ("Rejected", "sentiment-mlops-imdb-lstm", True),
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
        assert (approval.status, approval.version) == (status, 1)


# --- retraining: schedule and new data → lambda/retrain.py ------------------------------------
RETRAIN_HANDLER = DEPLOY_HANDLER.parent / "retrain.py"


def test_the_retrain_role_covers_every_call_retrain_py_makes_on_this_pipeline_only():
    """Every call in the function's package: retrain.py and the rules packaged with it."""
    actions = _role_actions("RetrainFunctionRole")
    code = RETRAIN_HANDLER.read_text() + "".join(p.read_text() for p in (RETRAIN_HANDLER.parent / "mlops_rules").glob("*.py"))
    calls = set(re.findall(r"sagemaker\.(\w+)\(", code))
    needed = {"sagemaker:" + "".join(part.title() for part in call.split("_")) for call in calls}
    assert {a for a in actions if a.startswith("sagemaker:")} == needed
    arn = "arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}:pipeline/${PipelineName}"
    for action in needed:  # the pipeline, or its executions (the *ForExecution calls)
        expected = arn + "/execution/*" if action.endswith("ForExecution") else arn
        assert actions[action] == [{"Fn::Sub": expected}], action
    assert not any(a.startswith("iam:") for a in actions)  # starting passes no role
    s3_calls = set(re.findall(r"s3\.(\w+)\(", code))
    s3_calls |= set(re.findall(r"s3\.get_paginator\(\"(\w+)\"", code))
    assert s3_calls == {"get_paginator", "list_objects_v2"}  # ListObjectsV2 is authorized as s3:ListBucket
    assert actions["s3:ListBucket"] == [{"Fn::GetAtt": ["ArtifactBucket", "Arn"]}]


def test_the_retrain_functions_settings_are_the_ones_retrain_py_reads():
    function = RESOURCES["RetrainFunction"]["Properties"]
    module, handler = function["Handler"].split(".")
    assert (DEPLOY_HANDLER.parent / f"{module}.py") == RETRAIN_HANDLER
    assert callable(getattr(load_lambda("retrain"), handler))
    variables = function["Environment"]["Variables"]
    assert variables["DATA_PREFIX"] == {"Fn::Sub": "${ArtifactPrefix}/data/"}
    environ = {name: "x" for name in variables}
    assert load_lambda("retrain").RetrainConfig.from_env(environ).pipeline_name == "x"
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


# --- from an empty account: the artifact bucket and the pipeline's role ---------------------------

def test_the_artifact_bucket_is_encrypted_versioned_private_tls_only_and_kept():
    bucket = RESOURCES["ArtifactBucket"]
    properties = bucket["Properties"]
    assert bucket["DeletionPolicy"] == bucket["UpdateReplacePolicy"] == "Retain"  # it holds every registered model
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    assert properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert all(properties["PublicAccessBlockConfiguration"].values()) and len(properties["PublicAccessBlockConfiguration"]) == 4
    assert properties["NotificationConfiguration"]["EventBridgeConfiguration"] == {"EventBridgeEnabled": True}
    (deny,) = RESOURCES["ArtifactBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert (deny["Effect"], deny["Principal"], deny["Action"]) == ("Deny", "*", "s3:*")
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert RESOURCES["RetrainFunction"]["Properties"]["Environment"]["Variables"]["DATA_BUCKET"] == {"Ref": "ArtifactBucket"}


SNAPSHOT = json.loads((Path(__file__).parent / "snapshots" / "pipeline_definition.json").read_text(encoding="utf-8"))
# What SageMaker Pipelines calls, as the pipeline role, for each step type the definition has.
STEP_ACTIONS = {
    "Processing": {"sagemaker:CreateProcessingJob", "sagemaker:DescribeProcessingJob", "sagemaker:StopProcessingJob",
                   "sagemaker:AddTags"},
    "Training": {"sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob",
                 "sagemaker:AddTags"},
    "Model": {"sagemaker:CreateModel"},
    "Transform": {"sagemaker:CreateTransformJob", "sagemaker:DescribeTransformJob", "sagemaker:StopTransformJob",
                  "sagemaker:AddTags"},
    "RegisterModel": {"sagemaker:CreateModelPackage", "sagemaker:DescribeModelPackage",
                      "sagemaker:CreateModelPackageGroup", "sagemaker:DescribeModelPackageGroup"},
    "Condition": set(), "Fail": set(),
}


def _step_types(steps: list) -> set[str]:
    types = set()
    for step in steps:
        types.add(step["Type"])
        arguments = step.get("Arguments") or {}
        types |= _step_types(arguments.get("IfSteps", []) + arguments.get("ElseSteps", []))
    return types


def test_the_pipeline_role_may_run_every_step_the_definition_has():
    actions = _role_actions("PipelineRole")
    types = _step_types(SNAPSHOT["Steps"])
    assert types <= set(STEP_ACTIONS), types - set(STEP_ACTIONS)
    needed = set().union(*(STEP_ACTIONS[t] for t in types))
    assert needed <= set(actions), needed - set(actions)
    assert {a for a in actions if a.startswith("sagemaker:")} == needed  # and nothing else of SageMaker
    assert SNAPSHOT.get("PipelineExperimentConfig") is None  # experiments would need more than the role grants
    group = "${ModelPackageGroupName}"
    assert all(group in r["Fn::Sub"] for r in actions["sagemaker:CreateModelPackage"])


def test_the_pipeline_role_writes_only_where_the_definition_writes():
    """Every S3 location the definition names is under the prefix; writes go to three folders of it,
    to the folder where ``transform --backend sagemaker`` writes by default, and to the monitoring
    job's reports (the monitoring function starts it as this role)."""
    prefix = "s3://test-bucket/sentiment-mlops/"
    text = json.dumps(SNAPSHOT)
    assert set(re.findall(r"s3://[^\"/]+/", text)) == {"s3://test-bucket/"}
    folders = set(re.findall(re.escape(prefix) + r"([a-z]+)", text))
    assert folders == {"code", "data", "executions", "models", "checkpoints"}
    actions = _role_actions("PipelineRole")
    writes = {r["Fn::Sub"] for r in actions["s3:PutObject"]}
    assert writes == {"${ArtifactBucket.Arn}/${ArtifactPrefix}/" + f + "/*"
                      for f in ("executions", "models", "checkpoints", TRANSFORM_OUTPUTS, MONITORING_FOLDER)}
    assert actions["s3:GetObject"] == [{"Fn::Sub": "${ArtifactBucket.Arn}/${ArtifactPrefix}/*"}]
    assert "s3:DeleteObject" not in actions
