"""Deployment guardrails on the AWS side: SageMaker's rules for a DeploymentConfig
(``mlops_rules/rollouts.py``), the deploy function's UpdateEndpoint and PutMetricAlarm calls
against botocore's Stubber (the real clients, each request checked against the service model),
and the stack's alarms as SageMaker publishes the metrics they watch."""
from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from mlops_rules.hosting import VARIANT_NAME
from mlops_rules.rollouts import (
    ERRORS_METRIC,
    LATENCY_METRIC,
    NAMESPACE,
    NEW_FLEET_DIMENSION,
    RolloutPolicy,
    deployment_problems,
    errors_alarm_name,
    latency_alarm_name,
    traffic_steps,
)
from pipeline.local.services.events import deploy_module
from tests.test_aws_backend import REGION
from tests.test_deploy_handler import CONFIG, ENDPOINT_ARN, V2, _event, _stubbed
from tests.test_deploy_template import RESOURCES, TEMPLATE, _role_actions

deploy = deploy_module()
ALARMS = ("sentiment-test-invocation-5xx-errors", "sentiment-test-new-fleet-model-latency")


def _policy(**fields) -> RolloutPolicy:
    return RolloutPolicy(**{"alarms": ALARMS, "new_fleet_alarm": ALARMS[1], "bake_s": 30, **fields})


# --- SageMaker's rules -----------------------------------------------------------------------------

@pytest.mark.parametrize("mode, percent, instances, steps", [
    ("ALL_AT_ONCE", 10, 1, [1.0]),
    ("CANARY", 10, 10, [0.1, 1.0]),
    ("CANARY", 10, 2, [0.5, 1.0]),  # a canary is whole instances: 10 % of 2 is one of them
    ("CANARY", 25, 4, [0.25, 1.0]),
    ("LINEAR", 20, 10, [0.2, 0.4, 0.6, 0.8, 1.0]),
    ("LINEAR", 30, 10, [0.3, 0.6, 0.9, 1.0]),
    ("LINEAR", 50, 2, [0.5, 1.0]),
])
def test_each_mode_shifts_the_traffic_in_whole_instances(mode, percent, instances, steps):
    config = _policy(mode=mode, step_percent=percent).deployment_config()
    assert deployment_problems(config, instances) == []
    assert traffic_steps(config, instances) == pytest.approx(steps)


@pytest.mark.parametrize("fields, instances, message", [
    ({"mode": "CANARY"}, 1, "CANARY needs at least 2 instances"),
    ({"mode": "LINEAR", "step_percent": 50}, 1, "at least 2 instances"),
    ({"mode": "CANARY", "step_percent": 60}, 10, "at most half"),
    ({"mode": "LINEAR", "step_percent": 5}, 20, "10 to 50 %"),
    ({"bake_s": 3601}, 1, "WaitIntervalInSeconds 3601"),
    ({"termination_wait_s": -1}, 1, "TerminationWaitInSeconds -1"),
    ({"max_execution_s": 599}, 1, "MaximumExecutionTimeoutInSeconds 599 is not between 600 and 14400"),
    ({"mode": "LINEAR", "step_percent": 20, "bake_s": 200, "max_execution_s": 900}, 10, "must exceed the deployment's waits (5 step(s) of 200 s"),
    ({"alarms": tuple(f"a{i}" for i in range(11)), "new_fleet_alarm": ""}, 1, "1 to 10 alarms"),
    ({"new_fleet_alarm": "elsewhere"}, 1, "NEW_FLEET_ALARM 'elsewhere' is not one of ROLLBACK_ALARMS"),
])
def test_what_sagemaker_refuses_is_refused_with_the_reason(fields, instances, message):
    assert any(message in problem for problem in _policy(**fields).problems(instances)), _policy(**fields).problems(instances)


def test_no_policy_means_no_deployment_config():
    """The default is SageMaker's plain blue/green update: no DeploymentConfig at all."""
    assert RolloutPolicy().deployment_config() is None
    assert RolloutPolicy.from_env({}) == RolloutPolicy()


@pytest.mark.parametrize("environ, message", [
    ({"DEPLOYMENT_MODE": "BLUE"}, "not one of ALL_AT_ONCE, CANARY, LINEAR"),
    ({"DEPLOYMENT_MODE": "CANARY"}, "CANARY needs at least 2 instances"),
    ({"BAKE_SECONDS": "soon"}, "BAKE_SECONDS 'soon' is not a whole number"),
])
def test_the_deploy_function_refuses_a_rollout_sagemaker_would_refuse(environ, message):
    base = {"ENDPOINT_NAME": "e", "MODEL_PACKAGE_GROUP": "g", "EXECUTION_ROLE_ARN": "r"}
    with pytest.raises(deploy.DeployError, match=message):
        deploy.DeployConfig.from_env({**base, **environ})


# --- the deploy function's calls -------------------------------------------------------------------

def _cloudwatch_stub(new_config: str) -> tuple:
    """The new-fleet alarm as the stack made it, then PutMetricAlarm pointing it at ``new_config``."""
    client = boto3.client("cloudwatch", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    stub = Stubber(client)
    dimensions = [{"Name": "EndpointName", "Value": "sentiment-test"}, {"Name": "VariantName", "Value": VARIANT_NAME}]
    alarm = {"AlarmName": ALARMS[1], "AlarmDescription": "slow", "ActionsEnabled": True, "MetricName": LATENCY_METRIC,
             "Namespace": NAMESPACE, "Statistic": "Average", "Period": 60, "EvaluationPeriods": 1,
             "Threshold": 1_000_000.0, "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching",
             "Dimensions": [*dimensions, {"Name": NEW_FLEET_DIMENSION, "Value": "sentiment-test-no-update-yet"}]}
    stub.add_response("describe_alarms", {"MetricAlarms": [alarm]},
                      {"AlarmNames": [ALARMS[1]], "AlarmTypes": ["MetricAlarm"]})
    stub.add_response("put_metric_alarm", {}, {
        "AlarmName": ALARMS[1], "AlarmDescription": "slow", "ActionsEnabled": True, "MetricName": LATENCY_METRIC,
        "Namespace": NAMESPACE, "Statistic": "Average", "Period": 60, "EvaluationPeriods": 1, "Threshold": 1_000_000.0,
        "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching",
        "Dimensions": [*dimensions, {"Name": NEW_FLEET_DIMENSION, "Value": new_config}]})
    return client, stub


@pytest.mark.parametrize("policy, routing", [
    (_policy(mode="CANARY", step_percent=10, termination_wait_s=60, max_execution_s=1200),
     {"Type": "CANARY", "WaitIntervalInSeconds": 30, "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10}}),
    (_policy(mode="LINEAR", step_percent=20),
     {"Type": "LINEAR", "WaitIntervalInSeconds": 30, "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 20}}),
    (_policy(), {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 30}),
])
def test_an_update_carries_the_deployment_config_and_points_the_new_fleet_alarm_first(policy, routing):
    config = deploy.DeployConfig("sentiment-test", CONFIG.model_package_group, CONFIG.execution_role_arn,
                                 "ml.m5.large", 10, rollout=policy)
    expected_config = f"sentiment-test-v2-{config.variant_hash()}"
    client, stub = _stubbed("InService", "sentiment-test-v1-aaaaaaaa", followed_at="2026-11-21T06:00:00+00:00")
    cloudwatch, watch = _cloudwatch_stub(expected_config)
    stub.add_response("update_endpoint", {"EndpointArn": ENDPOINT_ARN}, {
        "EndpointName": "sentiment-test", "EndpointConfigName": expected_config,
        "DeploymentConfig": {
            "BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": routing,
                                      "TerminationWaitInSeconds": policy.termination_wait_s,
                                      "MaximumExecutionTimeoutInSeconds": policy.max_execution_s},
            "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": ALARMS[0]}, {"AlarmName": ALARMS[1]}]}}})
    stub.add_response("list_tags", {"Tags": []}, {"ResourceArn": ENDPOINT_ARN})
    stub.add_response("add_tags", {}, {"ResourceArn": ENDPOINT_ARN, "Tags": [
        {"Key": deploy.APPROVED_AT_TAG, "Value": "2026-11-22T06:00:00+00:00"},
        {"Key": deploy.APPROVED_PACKAGE_TAG, "Value": V2}]})
    with stub, watch:
        result = deploy.handle(_event(V2), config, client, cloudwatch=cloudwatch)
    stub.assert_no_pending_responses()
    watch.assert_no_pending_responses()
    assert result["status"] == "updated" and "baking" in result["traffic"]


def test_a_missing_new_fleet_alarm_stops_the_update_with_what_to_do():
    config = deploy.DeployConfig("sentiment-test", CONFIG.model_package_group, CONFIG.execution_role_arn,
                                 "ml.m5.large", 1, rollout=_policy())
    client, stub = _stubbed("InService", "sentiment-test-v1-aaaaaaaa", followed_at="2026-11-21T06:00:00+00:00")
    cloudwatch = boto3.client("cloudwatch", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    watch = Stubber(cloudwatch)
    watch.add_response("describe_alarms", {"MetricAlarms": []})
    with stub, watch, pytest.raises(deploy.DeployError, match="does not exist: deploy the stack again"):
        deploy.handle(_event(V2), config, client, cloudwatch=cloudwatch)


# --- the stack -------------------------------------------------------------------------------------

def test_the_stacks_alarms_watch_the_metrics_sagemaker_publishes_for_a_rollout():
    errors = RESOURCES["InvocationErrorsAlarm"]["Properties"]
    latency = RESOURCES["NewFleetLatencyAlarm"]["Properties"]
    for alarm, metric in ((errors, ERRORS_METRIC), (latency, LATENCY_METRIC)):
        assert (alarm["Namespace"], alarm["MetricName"], alarm["Period"]) == (NAMESPACE, metric, 60)
        assert alarm["TreatMissingData"] == "notBreaching"  # no traffic is no reason to roll back
        assert alarm["Dimensions"][:2] == [{"Name": "EndpointName", "Value": {"Ref": "EndpointName"}},
                                           {"Name": "VariantName", "Value": VARIANT_NAME}]
    assert [d["Name"] for d in latency["Dimensions"]][2:] == [NEW_FLEET_DIMENSION]
    assert len(errors["Dimensions"]) == 2  # both fleets: an old fleet's errors roll back too, as AWS warns
    assert errors["AlarmName"] == {"Fn::Sub": errors_alarm_name("${EndpointName}")}
    assert latency["AlarmName"] == {"Fn::Sub": latency_alarm_name("${EndpointName}")}
    variables = RESOURCES["DeployFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["ROLLBACK_ALARMS"] == {"Fn::Join": [",", [{"Ref": "InvocationErrorsAlarm"},
                                                               {"Ref": "NewFleetLatencyAlarm"}]]}
    assert variables["NEW_FLEET_ALARM"] == {"Ref": "NewFleetLatencyAlarm"}


def test_the_deploy_role_may_read_both_alarms_and_rewrite_only_the_new_fleets():
    actions = _role_actions("DeployFunctionRole")
    assert actions["cloudwatch:DescribeAlarms"] == [{"Fn::GetAtt": ["InvocationErrorsAlarm", "Arn"]},
                                                    {"Fn::GetAtt": ["NewFleetLatencyAlarm", "Arn"]}]
    assert actions["cloudwatch:PutMetricAlarm"] == [{"Fn::GetAtt": ["NewFleetLatencyAlarm", "Arn"]}]


def test_the_stacks_default_rollout_is_one_sagemaker_accepts():
    """The defaults bake the new version under the alarms, all at once (one instance allows no canary)."""
    parameters = TEMPLATE["Parameters"]
    variables = RESOURCES["DeployFunction"]["Properties"]["Environment"]["Variables"]
    environ = {"ENDPOINT_NAME": "e", "MODEL_PACKAGE_GROUP": "g", "EXECUTION_ROLE_ARN": "r",
               "ROLLBACK_ALARMS": "e-errors,e-latency", "NEW_FLEET_ALARM": "e-latency",
               "CAPTURE_DESTINATION": "s3://bucket/prefix/datacapture"}
    for name, value in variables.items():
        if isinstance(value, dict) and "Ref" in value and value["Ref"] in parameters and name not in environ:
            environ[name] = str(parameters[value["Ref"]]["Default"])
    config = deploy.DeployConfig.from_env(environ)
    assert config.rollout.mode == "ALL_AT_ONCE" and config.rollout.bake_s > 0 and config.rollout.alarms
    canary = {**environ, "DEPLOYMENT_MODE": "CANARY", "INSTANCE_COUNT": "2"}
    assert deploy.DeployConfig.from_env(canary).rollout.deployment_config()["BlueGreenUpdatePolicy"][
        "TrafficRoutingConfiguration"]["CanarySize"] == {"Type": "CAPACITY_PERCENT", "Value": 10}
