"""The monitoring schedule on AWS: each tick runs the monitoring job (``monitor/job.py``) as a
SageMaker Processing job over the last whole hour of the endpoint's captured traffic; each finished
job's figures become CloudWatch metrics, and its violations an EventBridge event.

Model Monitor's schedules are closed to new customers, so the schedule is an EventBridge rule
and the job a plain Processing job that follows the same bring-your-own-container contract
(``dataset_source``, ``output_path``, ``start_time``/``end_time``, ``baseline_statistics``,
``baseline_constraints``), found the way a schedule finds it:

- the capture: the endpoint config's ``DataCaptureConfig`` destination, under the endpoint's and
  its production variant's names, the window's hour folder only (a job downloads its inputs);
- the baseline and the model: the ``DriftCheckBaselines`` and the artifact of the model package
  the production variant's Model was made from;
- the image, the code and the role: the deployed pipeline definition's Evaluate step (the same
  processing bundle, whose ``runproc.sh`` runs ``monitor/job.py``);
- web users' feedback: ``GROUND_TRUTH_URI``, the window's hour and the next (labels come late).

EventBridge delivers two kinds of event to ``handler``:

- a "Scheduled Event" (``MonitorSchedule``): start the job for the last whole hour that ended at
  least ``SETTLE`` ago (capture files land a few minutes late), named for the
  endpoint and the hour, so a tick delivered twice starts one job. No endpoint, no capture, no
  baseline or no traffic in the hour: ``ignored`` with the reason;
- a "SageMaker Processing Job State Change" for one of these jobs: Completed, the report's figures
  go to CloudWatch (namespace ``METRIC_NAMESPACE``, dimension ``Endpoint``), where the stack's alarm
  watches ``Violations``; with violations, a "Monitoring Violations" event goes to the default bus,
  which the retrain function takes when ``MonitorRetrain`` is true. Failed or Stopped: ``JobFailures``.

Runs with the standard library, boto3 and ``mlops_rules``; settings from the environment:
``ENDPOINT_NAME``, ``PIPELINE_NAME``, ``GROUND_TRUTH_URI``, ``REPORT_URI``.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from mlops_rules.hosting import VARIANT_NAME
from mlops_rules.monitoring import VIOLATIONS_DETAIL_TYPE, VIOLATIONS_SOURCE
from mlops_rules.parameters import declared_parameters
from mlops_rules.s3 import split_s3_uri

log = logging.getLogger("monitoring")
log.setLevel(logging.INFO)

SCHEDULE_SOURCE, SCHEDULE_DETAIL_TYPE = "aws.events", "Scheduled Event"
JOB_SOURCE, JOB_DETAIL_TYPE = "aws.sagemaker", "SageMaker Processing Job State Change"
METRIC_NAMESPACE = "SentimentMlops/Monitoring"
JOB_PREFIX = "monitor-"  # the jobs this function starts, and the only ones its second half reads
EVALUATE_STEP = "Evaluate"
MONITOR_SCRIPT = "monitor/job.py"
INPUT = "/opt/ml/processing/input"
OUTPUT = "/opt/ml/processing/output"
NAME_LIMIT = 63
SETTLE = timedelta(minutes=15)


class MonitorError(RuntimeError):
    """A tick that cannot start a job without someone's action; the message says which."""


@dataclass(frozen=True)
class MonitorConfig:
    endpoint_name: str
    pipeline_name: str
    ground_truth_uri: str  # s3://bucket/prefix/groundtruth
    report_uri: str  # s3://bucket/prefix/monitoring: reports under <endpoint>/v<version>/<window end>/

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> MonitorConfig:
        names = ("ENDPOINT_NAME", "PIPELINE_NAME", "GROUND_TRUTH_URI", "REPORT_URI")
        missing = [n for n in names if not environ.get(n)]
        if missing:
            raise MonitorError(f"the function's environment lacks {', '.join(missing)}: set them in the template")
        return cls(*(environ[n].rstrip("/") for n in names))


def window_of(time: datetime) -> tuple[datetime, datetime]:
    """The last whole hour that ended ``SETTLE`` before ``time``: what a tick at ``time`` monitors.
    SageMaker writes an hour's capture files a few minutes after it, and feedback comes later still."""
    end = (time.astimezone(UTC) - SETTLE).replace(minute=0, second=0, microsecond=0)
    return end - timedelta(hours=1), end


def jobs_of(endpoint: str) -> str:
    """``monitor-<endpoint>-``: the names of one endpoint's monitoring jobs begin so (the stack's
    rule for their ends matches it; EndpointName is at most 43 characters)."""
    return f"{JOB_PREFIX}{endpoint}-"


def job_name(endpoint: str, end: datetime) -> str:
    """``monitor-<endpoint>-<yyyymmddhh>``: one job per endpoint and hour (a second tick's
    CreateProcessingJob is refused), within SageMaker's 63 characters."""
    return f"{jobs_of(endpoint)}{end:%Y%m%d%H}"


def _parse_time(value: Any) -> datetime:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        raise ValueError(f"the event's time {value!r} is not ISO 8601") from None


def _has_objects(s3, uri: str) -> bool:
    bucket, key = split_s3_uri(uri)
    return bool(s3.list_objects_v2(Bucket=bucket, Prefix=key.rstrip("/") + "/", MaxKeys=1).get("KeyCount"))


def _input(name: str, uri: str, local: str, data_type: str = "S3Prefix") -> dict[str, Any]:
    return {"InputName": name, "S3Input": {"S3Uri": uri, "LocalPath": local, "S3DataType": data_type,
                                           "S3InputMode": "File", "S3DataDistributionType": "FullyReplicated"}}


def _serving(config: MonitorConfig, sagemaker) -> tuple[dict, str, dict, datetime | None] | str:
    """(the capture config, the production variant's name, its model package, when the endpoint
    last changed), or why there is none."""
    try:
        endpoint = sagemaker.describe_endpoint(EndpointName=config.endpoint_name)
    except Exception as error:  # botocore's ClientError, without importing botocore here
        if "Could not find" in str(error):
            return f"endpoint {config.endpoint_name} does not exist: nothing to monitor"
        raise
    endpoint_config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    capture = endpoint_config.get("DataCaptureConfig")
    if not capture:
        return f"endpoint {config.endpoint_name} captures nothing (CapturePercent 0)"
    variant = endpoint_config["ProductionVariants"][0]
    container = sagemaker.describe_model(ModelName=variant["ModelName"]).get("PrimaryContainer") or {}
    if "ModelPackageName" not in container:
        return f"model {variant['ModelName']} was not made from a model package: no baseline to compare with"
    package = sagemaker.describe_model_package(ModelPackageName=container["ModelPackageName"])
    changed = endpoint.get("LastModifiedTime")
    return capture, variant.get("VariantName", VARIANT_NAME), package, changed if isinstance(changed, datetime) else None


def _evaluate_job(config: MonitorConfig, sagemaker) -> tuple[dict[str, Any], str]:
    """The deployed definition's Evaluate step arguments (the image, the code, the role), and its
    instance type (the parameter's default where the step takes a parameter)."""
    definition = json.loads(sagemaker.describe_pipeline(PipelineName=config.pipeline_name)["PipelineDefinition"])
    for step in definition.get("Steps") or []:
        if step.get("Name") == EVALUATE_STEP:
            instance_type = step["Arguments"]["ProcessingResources"]["ClusterConfig"]["InstanceType"]
            if isinstance(instance_type, Mapping):  # {"Get": "Parameters.ProcessingInstanceType"}
                name = str(instance_type.get("Get", "")).removeprefix("Parameters.")
                instance_type = declared_parameters(definition)[name]["DefaultValue"]
            return step["Arguments"], str(instance_type)
    raise MonitorError(f"pipeline {config.pipeline_name}'s definition has no {EVALUATE_STEP} step: "
                       "run sentiment-mlops aws upsert")


def start_job(config: MonitorConfig, time: datetime, sagemaker, s3) -> dict[str, Any]:
    """Start the monitoring job over the last whole hour before ``time``."""
    serving = _serving(config, sagemaker)
    if isinstance(serving, str):
        return {"status": "ignored", "reason": serving}
    capture, variant, package, changed = serving
    version = package.get("ModelPackageVersion")
    quality = (package.get("DriftCheckBaselines") or {}).get("ModelDataQuality") or {}
    if not (quality.get("Statistics") or {}).get("S3Uri") or not (quality.get("Constraints") or {}).get("S3Uri"):
        return {"status": "ignored", "reason": f"version {version} has no monitoring baseline (DriftCheckBaselines): "
                                               "run the pipeline again and approve the new version"}
    start, end = window_of(time)
    # The endpoint's capture holds one version's answers only from its last change on (during a
    # blue/green update both answer under one variant): judge from then.
    if changed is not None and changed.astimezone(UTC) >= end:
        return {"status": "ignored", "reason": f"endpoint {config.endpoint_name} changed at {changed:%Y-%m-%dT%H:%M}Z, "
                                               f"after the hour to judge ({end:%H:%M}Z): the next tick judges it"}
    if changed is not None and changed.astimezone(UTC) > start:
        start = changed.astimezone(UTC).replace(microsecond=0)
    hour = f"{capture['DestinationS3Uri'].rstrip('/')}/{config.endpoint_name}/{variant}/{start:%Y/%m/%d/%H}"
    if not _has_objects(s3, hour):
        return {"status": "ignored", "reason": f"no traffic was captured from {start:%Y-%m-%dT%H:%M}Z to {end:%H:%M}Z"}
    evaluate, instance_type = _evaluate_job(config, sagemaker)
    code = [i for i in evaluate["ProcessingInputs"] if i["InputName"] in ("code", "entrypoint")]
    baseline_folder = quality["Statistics"]["S3Uri"].rsplit("/", 1)[0]
    inputs = [*code, _input("capture", hour, f"{INPUT}/capture/{start:%Y/%m/%d/%H}"),
              _input("baseline", baseline_folder, f"{INPUT}/baseline"),
              _input("model", package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"], f"{INPUT}/model",
                     "S3Prefix")]
    for when in (start, end):  # feedback is filed by the hour it arrives: the window's, and the next
        folder = f"{config.ground_truth_uri}/{when:%Y/%m/%d/%H}"
        if _has_objects(s3, folder):
            inputs.append(_input(f"groundtruth-{when:%H}", folder, f"{INPUT}/groundtruth/{when:%Y/%m/%d/%H}"))
    report = f"{config.report_uri}/{config.endpoint_name}/v{version}/{end:%Y-%m-%dT%H-%M-%S}"
    name = job_name(config.endpoint_name, end)
    environment = {**evaluate.get("Environment", {}),  # the Evaluate job's own (a pip mirror, say)
                   "dataset_source": f"{INPUT}/capture", "output_path": OUTPUT,
                   "start_time": f"{start:%Y-%m-%dT%H:%M:%SZ}", "end_time": f"{end:%Y-%m-%dT%H:%M:%SZ}",
                   "baseline_statistics": f"{INPUT}/baseline/{quality['Statistics']['S3Uri'].rsplit('/', 1)[1]}",
                   "baseline_constraints": f"{INPUT}/baseline/{quality['Constraints']['S3Uri'].rsplit('/', 1)[1]}",
                   "model_source": f"{INPUT}/model", "ground_truth_source": f"{INPUT}/groundtruth",
                   "sagemaker_endpoint_name": config.endpoint_name, "model_package_version": str(version)}
    specification = evaluate["AppSpecification"]
    try:
        sagemaker.create_processing_job(
            ProcessingJobName=name, RoleArn=evaluate["RoleArn"], Environment=environment,
            AppSpecification={"ImageUri": specification["ImageUri"],
                              "ContainerEntrypoint": specification["ContainerEntrypoint"],
                              "ContainerArguments": [MONITOR_SCRIPT]},
            ProcessingInputs=inputs,
            ProcessingOutputConfig={"Outputs": [{"OutputName": "report", "S3Output": {
                "S3Uri": report, "LocalPath": OUTPUT, "S3UploadMode": "EndOfJob"}}]},
            ProcessingResources={"ClusterConfig": {"InstanceCount": 1, "InstanceType": instance_type,
                                                   "VolumeSizeInGB": 30}},
            StoppingCondition={"MaxRuntimeInSeconds": 3600})
    except Exception as error:  # botocore's ClientError
        if "already exists" in str(error) or "ResourceInUse" in str(error):
            return {"status": "ignored", "reason": f"job {name} was started already for this hour"}
        raise
    return {"status": "started", "job": name, "version": version, "report": report,
            "window": [environment["start_time"], environment["end_time"]]}


def _report_metrics(statistics: Mapping[str, Any], violations: list) -> dict[str, float]:
    """The figures an alarm or a dashboard reads, by metric name."""
    figures: dict[str, float] = {"Invocations": float(statistics.get("invocations", 0)),
                                 "Violations": float(len(violations)),
                                 "UnreadableLines": float(statistics.get("unreadable_lines", 0))}
    for check in statistics.get("checks") or []:
        key = "PValue" if "p_value" in check else "Rise"
        figures[f"{check['name']}.{key}"] = float(check.get("p_value", check.get("statistic", 0.0)))
    accuracy = ((statistics.get("live_quality") or {}).get("accuracy") or {}).get("value")
    if accuracy is not None:
        figures["LiveAccuracy"] = float(accuracy)
    return figures


def _report_version(report: str) -> int | None:
    """The version a report judged, from its folder (``…/<endpoint>/v<N>/<window end>``)."""
    folder = report.rstrip("/").rsplit("/", 2)[-2] if report.count("/") >= 2 else ""
    return int(folder[1:]) if folder[:1] == "v" and folder[1:].isdigit() else None


def finish_job(config: MonitorConfig, detail: Mapping[str, Any], s3, cloudwatch, events) -> dict[str, Any]:
    """A finished job's figures to CloudWatch, and its violations to the default bus. What it
    reads of the event: the job's name, status and output (the endpoint is this function's own)."""
    name, status = str(detail.get("ProcessingJobName", "")), detail.get("ProcessingJobStatus")
    endpoint = config.endpoint_name
    if not name.startswith(jobs_of(endpoint)):
        return {"status": "ignored", "reason": f"processing job {name} is not a monitoring job of endpoint {endpoint}"}
    dimensions = [{"Name": "Endpoint", "Value": endpoint}]
    if status in ("Failed", "Stopped"):  # stopped: it ran past MaxRuntimeInSeconds, or someone stopped it
        cloudwatch.put_metric_data(Namespace=METRIC_NAMESPACE, MetricData=[
            {"MetricName": "JobFailures", "Dimensions": dimensions, "Value": 1.0, "Unit": "Count"}])
        return {"status": "failed", "job": name, "reason": detail.get("FailureReason", "no reason given")}
    if status != "Completed":
        return {"status": "ignored", "reason": f"job {name} is {status}"}
    try:
        report = str(detail["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]).rstrip("/")
    except (KeyError, IndexError, TypeError):
        return {"status": "ignored", "reason": f"the event of job {name} names no output"}
    bucket, key = split_s3_uri(report)
    statistics = json.loads(s3.get_object(Bucket=bucket, Key=f"{key}/statistics.json")["Body"].read())
    violations = json.loads(s3.get_object(Bucket=bucket, Key=f"{key}/constraint_violations.json")["Body"].read())[
        "violations"]
    cloudwatch.put_metric_data(Namespace=METRIC_NAMESPACE, MetricData=[
        {"MetricName": metric, "Dimensions": dimensions, "Value": value}
        for metric, value in _report_metrics(statistics, violations).items()])
    if violations:
        events.put_events(Entries=[{"Source": VIOLATIONS_SOURCE, "DetailType": VIOLATIONS_DETAIL_TYPE, "Detail": json.dumps({
            "endpoint": endpoint, "job": name, "report": report, "window": statistics.get("window"),
            "version": _report_version(report),
            "violations": violations[:10]})}])
    return {"status": "reported", "job": name, "violations": len(violations), "report": report}


def handle(event: Any, config: MonitorConfig, sagemaker, s3, cloudwatch, events) -> dict[str, Any]:
    """The handler's decision, with its dependencies given (what the tests call)."""
    if not isinstance(event, Mapping):
        return {"status": "ignored", "reason": f"the event is a {type(event).__name__}, not a JSON object"}
    kind = (event.get("source"), event.get("detail-type"))
    if kind == (SCHEDULE_SOURCE, SCHEDULE_DETAIL_TYPE):
        try:
            time = _parse_time(event.get("time"))
        except ValueError as error:
            return {"status": "ignored", "reason": str(error)}
        return start_job(config, time, sagemaker, s3)
    if kind == (JOB_SOURCE, JOB_DETAIL_TYPE) and isinstance(event.get("detail"), Mapping):
        return finish_job(config, event["detail"], s3, cloudwatch, events)
    return {"status": "ignored", "reason": f"a {kind[1]!r} event from {kind[0]!r} is not one this function takes"}


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """AWS Lambda's entry point (``monitoring.handler``)."""
    import boto3

    result = handle(event, MonitorConfig.from_env(), boto3.client("sagemaker"), boto3.client("s3"),
                    boto3.client("cloudwatch"), boto3.client("events"))
    log.info("%s", json.dumps(result))
    return result
