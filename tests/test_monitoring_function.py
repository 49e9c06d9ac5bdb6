"""The monitoring schedule's function (``lambda/monitoring.py``), the code that runs in AWS Lambda:
each call against botocore's Stubber, so every request is checked against the service's model
(CreateProcessingJob's shape, PutMetricData's, PutEvents'), and the stack's rules and role."""
from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from pipeline.lambdas import load_lambda
from tests.test_aws_backend import REGION
from tests.test_deploy_template import RESOURCES, _role_actions

monitoring = load_lambda("monitoring")

CONFIG = monitoring.MonitorConfig("sentiment-test", "sentiment-pipeline", "s3://bucket/sentiment/groundtruth",
                                  "s3://bucket/sentiment/monitoring")
PACKAGE = f"arn:aws:sagemaker:{REGION}:123456789012:model-package/sentiment-group/2"
BASELINE = "s3://bucket/sentiment/executions/abc/Evaluate/evaluation/baseline"
ROLE = "arn:aws:iam::123456789012:role/PipelineRole"
TICK = {"version": "0", "id": "7bf73129-1428-4cd3-a780-95db273d1602", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012", "time": "2026-12-07T21:20:00Z", "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:123456789012:rule/monitor"], "detail": {}}
DEFINITION = {"Version": "2020-12-01", "Parameters": [
    {"Name": "ProcessingInstanceType", "Type": "String", "DefaultValue": "ml.m5.xlarge"}], "Steps": [
    {"Name": "Evaluate", "Type": "Processing", "Arguments": {
        "RoleArn": ROLE, "Environment": {"PYTHONUNBUFFERED": "1", "PIP_INDEX_URL": "https://mirror.example/simple"},
        "AppSpecification": {"ImageUri": "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.5-cpu-py311",
                             "ContainerEntrypoint": ["/bin/bash", "/opt/ml/processing/input/entrypoint/runproc.sh"],
                             "ContainerArguments": ["evaluation/evaluate.py"]},
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "VolumeSizeInGB": 30,
                                                  "InstanceType": {"Get": "Parameters.ProcessingInstanceType"}}},
        "ProcessingInputs": [
            {"InputName": "model", "S3Input": {"S3Uri": {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}}},
            *({"InputName": name, "S3Input": {"S3Uri": f"s3://bucket/sentiment/code/{name}/x", "LocalPath":
                                              f"/opt/ml/processing/input/{name}", "S3DataType": "S3Prefix",
                                              "S3InputMode": "File", "S3DataDistributionType": "FullyReplicated"}}
              for name in ("code", "entrypoint"))]}}]}


def _clients():
    made = {name: boto3.client(name, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
            for name in ("sagemaker", "s3", "cloudwatch", "events")}
    return made, {name: Stubber(client) for name, client in made.items()}


def _serving(stub: Stubber, baselines: dict | None = None, capture: bool = True,
             changed: datetime = datetime(2026, 12, 7, tzinfo=UTC)) -> None:
    stub.add_response("describe_endpoint", {
        "EndpointName": "sentiment-test", "EndpointArn": f"arn:aws:sagemaker:{REGION}:123456789012:endpoint/sentiment-test",
        "EndpointConfigName": "sentiment-test-v2-abcdef12", "EndpointStatus": "InService",
        "CreationTime": datetime(2026, 12, 7, tzinfo=UTC), "LastModifiedTime": changed},
        {"EndpointName": "sentiment-test"})
    stub.add_response("describe_endpoint_config", {
        "EndpointConfigName": "sentiment-test-v2-abcdef12",
        "EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:123456789012:endpoint-config/sentiment-test-v2-abcdef12",
        "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": "sentiment-test-v2"}],
        "CreationTime": datetime(2026, 12, 7, tzinfo=UTC),
        **({"DataCaptureConfig": {"EnableCapture": True, "InitialSamplingPercentage": 100,
                                  "DestinationS3Uri": "s3://bucket/sentiment/datacapture",
                                  "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}]}}
           if capture else {})}, {"EndpointConfigName": "sentiment-test-v2-abcdef12"})
    if not capture:
        return
    stub.add_response("describe_model", {
        "ModelName": "sentiment-test-v2", "ModelArn": f"arn:aws:sagemaker:{REGION}:123456789012:model/sentiment-test-v2",
        "PrimaryContainer": {"ModelPackageName": PACKAGE}, "CreationTime": datetime(2026, 12, 7, tzinfo=UTC)},
        {"ModelName": "sentiment-test-v2"})
    stub.add_response("describe_model_package", {
        "ModelPackageName": "sentiment-group", "ModelPackageArn": PACKAGE, "ModelPackageVersion": 2,
        "CreationTime": datetime(2026, 12, 7, tzinfo=UTC), "ModelPackageStatus": "Completed",
        "ModelPackageStatusDetails": {"ValidationStatuses": []}, "ModelApprovalStatus": "Approved",
        "InferenceSpecification": {"Containers": [{"Image": "x", "ModelDataUrl": "s3://bucket/sentiment/models/v2/model.tar.gz"}],
                                   "SupportedContentTypes": ["application/json"],
                                   "SupportedResponseMIMETypes": ["application/json"]},
        **({"DriftCheckBaselines": baselines} if baselines is not None else {})}, {"ModelPackageName": PACKAGE})


BASELINES = {"ModelDataQuality": {
    "Statistics": {"ContentType": "application/json", "S3Uri": f"{BASELINE}/statistics.json"},
    "Constraints": {"ContentType": "application/json", "S3Uri": f"{BASELINE}/constraints.json"}}}


def _listed(stub: Stubber, prefix: str, count: int) -> None:
    stub.add_response("list_objects_v2", {"KeyCount": count, "IsTruncated": False},
                      {"Bucket": "bucket", "Prefix": prefix, "MaxKeys": 1})


def test_a_tick_starts_the_job_over_the_last_whole_hour_with_the_serving_versions_baseline():
    clients, stubs = _clients()
    _serving(stubs["sagemaker"], BASELINES)
    _listed(stubs["s3"], "sentiment/datacapture/sentiment-test/AllTraffic/2026/12/07/20/", 3)
    stubs["sagemaker"].add_response("describe_pipeline", {"PipelineDefinition": json.dumps(DEFINITION)},
                                    {"PipelineName": "sentiment-pipeline"})
    _listed(stubs["s3"], "sentiment/groundtruth/2026/12/07/20/", 1)
    _listed(stubs["s3"], "sentiment/groundtruth/2026/12/07/21/", 0)  # no feedback has come in this hour yet
    code = DEFINITION["Steps"][0]["Arguments"]["ProcessingInputs"][1:]
    report = "s3://bucket/sentiment/monitoring/sentiment-test/v2/2026-12-07T21-00-00"
    stubs["sagemaker"].add_response("create_processing_job", {"ProcessingJobArn": "arn:x"}, {
        "ProcessingJobName": "monitor-sentiment-test-2026120721", "RoleArn": ROLE,
        "Environment": {"PYTHONUNBUFFERED": "1", "PIP_INDEX_URL": "https://mirror.example/simple",
                        "dataset_source": "/opt/ml/processing/input/capture", "output_path": "/opt/ml/processing/output",
                        "start_time": "2026-12-07T20:00:00Z", "end_time": "2026-12-07T21:00:00Z",
                        "baseline_statistics": "/opt/ml/processing/input/baseline/statistics.json",
                        "baseline_constraints": "/opt/ml/processing/input/baseline/constraints.json",
                        "model_source": "/opt/ml/processing/input/model",
                        "ground_truth_source": "/opt/ml/processing/input/groundtruth",
                        "sagemaker_endpoint_name": "sentiment-test", "model_package_version": "2"},
        "AppSpecification": {**DEFINITION["Steps"][0]["Arguments"]["AppSpecification"],
                             "ContainerArguments": ["monitor/job.py"]},
        "ProcessingInputs": [*code, monitoring._input(
            "capture", "s3://bucket/sentiment/datacapture/sentiment-test/AllTraffic/2026/12/07/20",
            "/opt/ml/processing/input/capture/2026/12/07/20"),
            monitoring._input("baseline", BASELINE, "/opt/ml/processing/input/baseline"),
            monitoring._input("model", "s3://bucket/sentiment/models/v2/model.tar.gz", "/opt/ml/processing/input/model"),
            monitoring._input("groundtruth-20", "s3://bucket/sentiment/groundtruth/2026/12/07/20",
                              "/opt/ml/processing/input/groundtruth/2026/12/07/20")],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "report", "S3Output": {
            "S3Uri": report, "LocalPath": "/opt/ml/processing/output", "S3UploadMode": "EndOfJob"}}]},
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 30}},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600}})
    with stubs["sagemaker"], stubs["s3"]:
        result = monitoring.handle(TICK, CONFIG, *clients.values())
    for stub in stubs.values():
        stub.assert_no_pending_responses()
    assert result == {"status": "started", "job": "monitor-sentiment-test-2026120721", "version": 2, "report": report,
                      "window": ["2026-12-07T20:00:00Z", "2026-12-07T21:00:00Z"]}


@pytest.mark.parametrize("baselines, capture, listed, reason", [
    (None, True, None, "no monitoring baseline"),
    (BASELINES, False, None, "captures nothing"),
    (BASELINES, True, 0, "no traffic was captured from 2026-12-07T20:00Z to 21:00Z"),
])
def test_a_tick_with_nothing_to_judge_is_ignored_with_the_reason(baselines, capture, listed, reason):
    clients, stubs = _clients()
    _serving(stubs["sagemaker"], baselines, capture)
    if listed is not None:
        _listed(stubs["s3"], "sentiment/datacapture/sentiment-test/AllTraffic/2026/12/07/20/", listed)
    with stubs["sagemaker"], stubs["s3"]:
        result = monitoring.handle(TICK, CONFIG, *clients.values())
    assert result["status"] == "ignored" and reason in result["reason"], result


def test_a_window_is_judged_from_the_endpoints_last_change_on():
    """Before it, the capture holds another version's answers (or, during an update, both)."""
    clients, stubs = _clients()
    _serving(stubs["sagemaker"], BASELINES, changed=datetime(2026, 12, 7, 21, 2, tzinfo=UTC))
    with stubs["sagemaker"], stubs["s3"]:
        result = monitoring.handle(TICK, CONFIG, *clients.values())
    assert result["status"] == "ignored" and "after the hour to judge" in result["reason"]
    clients, stubs = _clients()
    _serving(stubs["sagemaker"], BASELINES, changed=datetime(2026, 12, 7, 20, 30, 15, 250000, tzinfo=UTC))
    _listed(stubs["s3"], "sentiment/datacapture/sentiment-test/AllTraffic/2026/12/07/20/", 3)
    stubs["sagemaker"].add_response("describe_pipeline", {"PipelineDefinition": json.dumps(DEFINITION)})
    _listed(stubs["s3"], "sentiment/groundtruth/2026/12/07/20/", 0)
    _listed(stubs["s3"], "sentiment/groundtruth/2026/12/07/21/", 0)
    stubs["sagemaker"].add_response("create_processing_job", {"ProcessingJobArn": "arn:x"})
    with stubs["sagemaker"], stubs["s3"]:
        result = monitoring.handle(TICK, CONFIG, *clients.values())
    assert result["window"] == ["2026-12-07T20:30:15Z", "2026-12-07T21:00:00Z"]


def test_a_tick_without_an_endpoint_is_ignored():
    clients, stubs = _clients()
    stubs["sagemaker"].add_client_error("describe_endpoint", "ValidationException",
                                        'Could not find endpoint "sentiment-test".')
    with stubs["sagemaker"]:
        result = monitoring.handle(TICK, CONFIG, *clients.values())
    assert result["status"] == "ignored" and "does not exist" in result["reason"]


def test_job_names_are_one_per_endpoint_and_hour_within_sagemakers_limit():
    end = datetime(2026, 12, 7, 21, tzinfo=UTC)
    longest = "e" * 43  # the stack's EndpointName allows 43 characters
    assert monitoring.job_name(longest, end) == f"monitor-{longest}-2026120721" and len(monitoring.job_name(longest, end)) <= 63
    assert monitoring.window_of(datetime(2026, 12, 7, 21, 59, 59, tzinfo=UTC)) == (datetime(2026, 12, 7, 20, tzinfo=UTC), end)
    # a tick just after the hour waits for the hour's capture files to land: the hour before
    assert monitoring.window_of(datetime(2026, 12, 7, 21, 10, tzinfo=UTC)) == (
        datetime(2026, 12, 7, 19, tzinfo=UTC), datetime(2026, 12, 7, 20, tzinfo=UTC))


def _finished(status: str = "Completed") -> dict:
    return {"version": "0", "id": "x", "detail-type": "SageMaker Processing Job State Change", "source": "aws.sagemaker",
            "account": "123456789012", "time": "2026-12-07T21:09:00Z", "region": REGION, "resources": [],
            "detail": {"ProcessingJobName": "monitor-sentiment-test-2026120721", "ProcessingJobStatus": status,
                       "FailureReason": "AlgorithmError: see the job's log",
                       "ProcessingOutputConfig": {"Outputs": [{"OutputName": "report", "S3Output": {
                           "S3Uri": "s3://bucket/sentiment/monitoring/sentiment-test/v2/2026-12-07T21-00-00",
                           "LocalPath": "/opt/ml/processing/output", "S3UploadMode": "EndOfJob"}}]}}}


def _object(stub: Stubber, key: str, body: dict) -> None:
    data = json.dumps(body).encode()
    stub.add_response("get_object", {"Body": StreamingBody(io.BytesIO(data), len(data))},
                      {"Bucket": "bucket", "Key": f"sentiment/monitoring/sentiment-test/v2/2026-12-07T21-00-00/{key}"})


STATISTICS = {"window": {"start": "2026-12-07T20:00:00Z", "end": "2026-12-07T21:00:00Z"}, "invocations": 812,
              "unreadable_lines": 1, "checks": [
                  {"name": "input_length", "test": "kolmogorov-smirnov", "statistic": 0.4, "p_value": 0.0, "violated": True},
                  {"name": "oov_rate", "test": "rise", "statistic": 0.01, "violated": False}],
              "live_quality": {"accuracy": {"value": 0.91}}}


def test_a_finished_job_becomes_metrics_and_its_violations_an_event():
    clients, stubs = _clients()
    violation = {"feature_name": "input_length", "constraint_check_type": "drift_check", "description": "moved"}
    _object(stubs["s3"], "statistics.json", STATISTICS)
    _object(stubs["s3"], "constraint_violations.json", {"violations": [violation]})
    dimensions = [{"Name": "Endpoint", "Value": "sentiment-test"}]
    stubs["cloudwatch"].add_response("put_metric_data", {}, {"Namespace": "SentimentMlops/Monitoring", "MetricData": [
        {"MetricName": name, "Dimensions": dimensions, "Value": value} for name, value in (
            ("Invocations", 812.0), ("Violations", 1.0), ("UnreadableLines", 1.0), ("input_length.PValue", 0.0),
            ("oov_rate.Rise", 0.01), ("LiveAccuracy", 0.91))]})
    report = "s3://bucket/sentiment/monitoring/sentiment-test/v2/2026-12-07T21-00-00"
    stubs["events"].add_response("put_events", {"FailedEntryCount": 0, "Entries": [{"EventId": "1"}]}, {"Entries": [{
        "Source": "sentiment-mlops.monitoring", "DetailType": "Monitoring Violations", "Detail": json.dumps({
            "endpoint": "sentiment-test", "job": "monitor-sentiment-test-2026120721", "report": report,
            "window": STATISTICS["window"], "version": 2, "violations": [violation]})}]})
    with stubs["s3"], stubs["cloudwatch"], stubs["events"]:
        result = monitoring.handle(_finished(), CONFIG, *clients.values())
    for stub in stubs.values():
        stub.assert_no_pending_responses()
    assert result == {"status": "reported", "job": "monitor-sentiment-test-2026120721", "violations": 1, "report": report}


def test_a_failed_job_is_counted_and_another_processing_job_is_none_of_its_business():
    clients, stubs = _clients()
    stubs["cloudwatch"].add_response("put_metric_data", {}, {"Namespace": "SentimentMlops/Monitoring", "MetricData": [
        {"MetricName": "JobFailures", "Dimensions": [{"Name": "Endpoint", "Value": "sentiment-test"}], "Value": 1.0,
         "Unit": "Count"}]})
    stubs["cloudwatch"].add_response("put_metric_data", {}, {"Namespace": "SentimentMlops/Monitoring", "MetricData": [
        {"MetricName": "JobFailures", "Dimensions": [{"Name": "Endpoint", "Value": "sentiment-test"}], "Value": 1.0,
         "Unit": "Count"}]})
    with stubs["cloudwatch"]:
        assert monitoring.handle(_finished("Failed"), CONFIG, *clients.values())["status"] == "failed"
        assert monitoring.handle(_finished("Stopped"), CONFIG, *clients.values())["status"] == "failed"
    stubs["cloudwatch"].assert_no_pending_responses()
    for name in ("pipelines-abc-Evaluate-xyz", "monitor-sentiment-other-2026120721"):  # not this endpoint's
        other = _finished()
        other["detail"]["ProcessingJobName"] = name
        with stubs["s3"], stubs["cloudwatch"]:  # nothing queued: any call fails the test
            assert monitoring.handle(other, CONFIG, *clients.values())["status"] == "ignored"
    for event in ([], {"source": "aws.s3", "detail-type": "Object Created"}, {**TICK, "time": "yesterday"}):
        assert monitoring.handle(event, CONFIG, *clients.values())["status"] == "ignored"


def test_the_function_says_which_setting_it_lacks():
    with pytest.raises(monitoring.MonitorError, match="REPORT_URI"):
        monitoring.MonitorConfig.from_env({"ENDPOINT_NAME": "e", "PIPELINE_NAME": "p", "GROUND_TRUTH_URI": "s3://b/g"})


def test_the_stack_runs_it_on_a_schedule_and_on_its_jobs_ends_with_only_what_it_calls():
    function = RESOURCES["MonitoringFunction"]["Properties"]
    assert function["Handler"] == "monitoring.handler" and callable(monitoring.handler)
    variables = function["Environment"]["Variables"]
    assert set(variables) == {"ENDPOINT_NAME", "PIPELINE_NAME", "GROUND_TRUTH_URI", "REPORT_URI"}
    monitoring.MonitorConfig.from_env({name: "s3://b/p" for name in variables})  # every setting it reads
    ended = function["Events"]["JobEnded"]["Properties"]["Pattern"]
    assert ended["detail-type"] == [monitoring.JOB_DETAIL_TYPE]
    assert ended["detail"]["ProcessingJobName"] == [{"prefix": {"Fn::Sub": "monitor-${EndpointName}-"}}]
    assert monitoring.jobs_of("${EndpointName}") == "monitor-${EndpointName}-"  # the names the function gives
    assert ended["detail"]["ProcessingJobStatus"] == ["Completed", "Failed", "Stopped"]
    assert function["Events"]["Tick"]["Properties"]["Schedule"] == {"Ref": "MonitorSchedule"}
    alarm = RESOURCES["MonitoringViolationsAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == (monitoring.METRIC_NAMESPACE, "Violations")
    retrain = RESOURCES["RetrainOnViolationsRule"]
    assert retrain["Condition"] == "RetrainsOnViolations"
    assert retrain["Properties"]["EventPattern"] == {"source": [monitoring.VIOLATIONS_SOURCE],
                                                     "detail-type": [monitoring.VIOLATIONS_DETAIL_TYPE],
                                                     "detail": {"endpoint": [{"Ref": "EndpointName"}]}}
    actions = _role_actions("MonitoringFunctionRole")
    assert actions["sagemaker:CreateProcessingJob"] == [{"Fn::Sub": "arn:${AWS::Partition}:sagemaker:${AWS::Region}:"
                                                         "${AWS::AccountId}:processing-job/monitor-${EndpointName}-*"}]
    assert not [a for a in actions if a.startswith(("s3:Put", "s3:Delete", "sagemaker:Update", "sagemaker:Delete"))]
