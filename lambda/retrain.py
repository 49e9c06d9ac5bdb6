"""The retrain trigger: a schedule, or new data in the bucket, starts the pipeline.

EventBridge delivers three kinds of event to ``handler``:

- a "Scheduled Event" from the template's schedule rule (only when ``RetrainSchedule`` is set):
  an execution starts on the pipeline's default ``InputDataUri``, unless one is still running
  (a retrain that outlasts the interval would otherwise pile executions up behind each other),
  and unless it would repeat a run (``_unchanged_since``).
- a "Monitoring Violations" event from the monitoring function (only when ``MonitorRetrain`` is
  true): the same as a scheduled run, on the default data;
- an S3 "Object Created" event for a key under ``DATA_PREFIX`` that completes a dataset:
  an archive (``.tar.gz``, ``.tgz``, ``.tar``) or a ``.csv``, which is a dataset by itself,
  or a ``_SUCCESS`` marker uploaded last into a folder of several files (``train.jsonl`` and
  ``test.jsonl``, an unpacked ``aclImdb/`` tree). Its ``InputDataUri`` is the archive or csv,
  or the marker's folder. Any other key is ignored: starting on the first of several files
  would train on half a dataset. New data starts an execution even while another runs, unless
  it would repeat a run: the copy of an unchanged file, or its event delivered again after
  that run.

A run is repeated when any Succeeded execution started within the step cache's lifetime
(``CACHE_LIFETIME``) ran the definition deployed now with the same effective parameters and the
same ``InputDataVersion``, whatever ``InputDataUri`` named the data. Not only the newest one
counts: after a default run, a run by hand with other parameters, or a definition changed and
changed back, SageMaker would still take Preprocess, Train and Evaluate from the first run's
cache and RegisterModel would register the very same model.tar.gz again.

Every start carries ``InputDataVersion``, the digest of the S3 listing under its
``InputDataUri`` (``data_version``: keys, ETags and sizes of what an ``S3Prefix`` input
downloads). SageMaker's cache key holds the step's arguments, not the bytes in S3; the version
is a Preprocess argument, so data replaced in place (same key, new bytes) gets new cache keys.
Keys count relative to the URI's folder, so an archive's own URI (what its upload event gives)
and its dataset folder's URI (the pipeline's default) have the same version: the same data.

Starting is idempotent: ``ClientRequestToken`` is derived from the event's id, so an event
delivered twice (EventBridge delivers at least once; Lambda retries) starts one execution.
An event the handler should not act on is answered ``ignored`` with the reason, not raised. A
pipeline that does not exist yet raises ``RetrainError``, so that the event lands in the
failures queue instead of vanishing.

Runs in AWS Lambda with the standard library, boto3 and ``mlops_rules`` (packaged beside it),
which holds the rules ``sentiment-mlops aws start`` and a local run follow too: the data's
version (``data_version``), the unchanged-since rule (``repeats``), the parameters' typing and
the cache's lifetime. Settings come from the function's environment: ``PIPELINE_NAME``,
``DATA_BUCKET`` and ``DATA_PREFIX``. The default ``InputDataUri`` is read from the deployed
definition itself, so it cannot drift from it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlops_rules.caching import CACHE_LIFETIME
from mlops_rules.data_versions import DATASET_SUFFIXES, READY_MARKER, data_version, repeats
from mlops_rules.executions import EXECUTION_RUNNING
from mlops_rules.monitoring import VIOLATIONS_DETAIL_TYPE, VIOLATIONS_SOURCE
from mlops_rules.parameters import INPUT_PARAMETER, VERSION_PARAMETER, declared_parameters

log = logging.getLogger("retrain")
log.setLevel(logging.INFO)

SCHEDULE_SOURCE, SCHEDULE_DETAIL_TYPE = "aws.events", "Scheduled Event"
S3_SOURCE, S3_DETAIL_TYPE = "aws.s3", "Object Created"
# At most this many executions are read back, newest first, to find a run that a start would
# repeat: it bounds the calls a trigger makes (one page of summaries, then per Succeeded
# execution on the same data version one parameter listing and one definition). A pipeline that
# started more than this within CACHE_LIFETIME may repeat a run older than the 50th; the cost is
# one model version registered twice, not a wrong one.
RECENT_EXECUTIONS = 50
_PIPELINE_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,255}$")
_DISPLAY_NAME_LIMIT = 82


class EventError(ValueError):
    """An event the handler cannot read; the message says what is wrong with it."""


class RetrainError(RuntimeError):
    """An execution that cannot start without someone's action; the message says which."""


@dataclass(frozen=True)
class RetrainConfig:
    pipeline_name: str
    data_bucket: str
    data_prefix: str  # "sentiment-mlops/data/": keys under it are datasets

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> RetrainConfig:
        missing = [n for n in ("PIPELINE_NAME", "DATA_BUCKET", "DATA_PREFIX") if not environ.get(n)]
        if missing:
            raise RetrainError(f"the function's environment lacks {', '.join(missing)}: set them in the template")
        if not _PIPELINE_NAME.match(environ["PIPELINE_NAME"]):
            raise RetrainError(f"PIPELINE_NAME {environ['PIPELINE_NAME']!r} is not a pipeline name")
        return cls(environ["PIPELINE_NAME"], environ["DATA_BUCKET"], environ["DATA_PREFIX"].strip("/") + "/")


@dataclass(frozen=True)
class Trigger:
    """Why an execution should start, and with which parameters."""

    event_id: str
    kind: str  # "scheduled", "new-data" or "monitoring" (violations found; MonitorRetrain)
    time: str
    description: str
    input_data_uri: str | None = None  # None: the pipeline's default


def _envelope(event: Any) -> tuple[str, str, str, str]:
    if not isinstance(event, Mapping):
        raise EventError(f"the event is a {type(event).__name__}, not a JSON object")
    fields = [event.get(name) for name in ("id", "source", "detail-type", "time")]
    if not all(isinstance(value, str) and value for value in fields):
        raise EventError("the event lacks id, source, detail-type or time: not an EventBridge event")
    event_id, source, detail_type, time = (str(value) for value in fields)
    return event_id, source, detail_type, time


def _dataset_uri(bucket: str, key: str) -> str | None:
    """The ``InputDataUri`` a new object completes, or None when it completes nothing."""
    name = key.rsplit("/", 1)[-1]
    if name == READY_MARKER:
        return f"s3://{bucket}/{key[:-len(READY_MARKER)]}"
    if name.lower().endswith(DATASET_SUFFIXES) and name[0] not in "._":
        return f"s3://{bucket}/{key}"
    return None


def parse_event(event: Any, config: RetrainConfig) -> Trigger:
    """The trigger an EventBridge event carries; EventError when it carries none."""
    event_id, source, detail_type, time = _envelope(event)
    if (source, detail_type) == (SCHEDULE_SOURCE, SCHEDULE_DETAIL_TYPE):
        rules = ", ".join(r for r in event.get("resources") or [] if isinstance(r, str)) or "a schedule"
        return Trigger(event_id, "scheduled", time, f"Scheduled retrain ({rules}) at {time}")
    if (source, detail_type) == (VIOLATIONS_SOURCE, VIOLATIONS_DETAIL_TYPE):
        detail = event.get("detail") if isinstance(event.get("detail"), Mapping) else {}
        where = f"endpoint {detail.get('endpoint', '?')}, report {detail.get('report', '?')}"
        return Trigger(event_id, "monitoring", time, f"Retrain: monitoring found violations ({where}) at {time}")
    if (source, detail_type) != (S3_SOURCE, S3_DETAIL_TYPE):
        raise EventError(f"not a scheduled, monitoring or S3 Object Created event (source {source!r}, detail-type {detail_type!r})")
    detail = event.get("detail")
    bucket_info = detail.get("bucket") if isinstance(detail, Mapping) else None
    stored = detail.get("object") if isinstance(detail, Mapping) else None
    bucket = bucket_info.get("name") if isinstance(bucket_info, Mapping) else None
    key = stored.get("key") if isinstance(stored, Mapping) else None
    if not isinstance(bucket, str) or not isinstance(key, str) or not key:
        raise EventError("detail lacks bucket.name or object.key")
    if bucket != config.data_bucket or not key.startswith(config.data_prefix):
        raise EventError(f"s3://{bucket}/{key} is not under s3://{config.data_bucket}/{config.data_prefix}")
    if key == config.data_prefix + READY_MARKER:
        raise EventError(f"s3://{bucket}/{key} would train on every dataset at once: put {READY_MARKER} "
                         "inside the dataset's own folder")
    uri = _dataset_uri(bucket, key)
    if uri is None:
        raise EventError(f"s3://{bucket}/{key} does not complete a dataset: upload an archive or a .csv, or "
                         f"put {READY_MARKER} in the folder once all its files are there")
    etag = stored.get("etag") if isinstance(stored, Mapping) else None
    return Trigger(event_id, "new-data", time, f"New data s3://{bucket}/{key}" + (f" (etag {etag})" if etag else ""),
                   input_data_uri=uri)


def request_token(trigger: Trigger) -> str:
    """The same event gives the same token, so SageMaker starts it once (32 to 128 characters)."""
    return "retrain-" + hashlib.sha256(trigger.event_id.encode()).hexdigest()[:48]


def display_name(trigger: Trigger) -> str:
    """``scheduled-20261122T030000`` or ``new-data-...``: what Studio's execution list shows."""
    stamp = re.sub(r"[^0-9T]", "", trigger.time)[:15] or "now"
    return f"{trigger.kind}-{stamp}"[:_DISPLAY_NAME_LIMIT]


def _recent_executions(sagemaker, pipeline_name: str, since: datetime) -> list[dict[str, Any]]:
    """The pipeline's execution summaries started at ``since`` or later, newest first, at most
    ``RECENT_EXECUTIONS`` of them (sorted and cut here too: the order is what the decisions below
    rely on, whatever the endpoint did with SortOrder and MaxResults).

    Pages are asked for newest first, so a page that reaches back past ``since`` is the last one
    needed. The SageMaker calls are written out, not made through boto3's paginators, so that
    each one the function makes (and its role must grant) reads plainly in this file."""
    summaries: list[dict[str, Any]] = []
    request: dict[str, Any] = {"PipelineName": pipeline_name, "SortBy": "CreationTime", "SortOrder": "Descending"}
    read, cutoff = 0, since.timestamp()
    while read < RECENT_EXECUTIONS:
        page = sagemaker.list_pipeline_executions(**request, MaxResults=RECENT_EXECUTIONS - read)
        listed = page.get("PipelineExecutionSummaries", [])
        recent = [s for s in listed if _timestamp(s.get("StartTime")) >= cutoff]
        summaries.extend(recent)
        read += len(listed)
        if not listed or len(recent) < len(listed) or not page.get("NextToken"):
            break  # the last page, or one that reaches back past the cache's lifetime
        request["NextToken"] = page["NextToken"]
    return sorted(summaries, key=lambda s: _timestamp(s.get("StartTime")), reverse=True)[:RECENT_EXECUTIONS]


def _timestamp(value: Any) -> float:
    return value.timestamp() if hasattr(value, "timestamp") else float(value or 0)


def _is_missing_pipeline(error: Exception) -> bool:
    """SageMaker says ResourceNotFound, or a ValidationException worded "could not find"/"does not exist"."""
    code = getattr(error, "response", {}).get("Error", {}).get("Code")
    message = str(error).lower()
    return code == "ResourceNotFound" or (
        code == "ValidationException" and ("could not find" in message or "does not exist" in message))


def _missing_pipeline(config: RetrainConfig) -> RetrainError:
    return RetrainError(f"pipeline {config.pipeline_name!r} does not exist: create it with "
                        "`sentiment-mlops aws upsert`, then replay the event from the failures queue")


def _deployed_definition(sagemaker, config: RetrainConfig) -> dict[str, Any]:
    """The definition SageMaker holds for the pipeline now: what the execution would run."""
    try:
        text = sagemaker.describe_pipeline(PipelineName=config.pipeline_name)["PipelineDefinition"]
    except Exception as error:  # botocore's ClientError, without importing botocore here
        if _is_missing_pipeline(error):
            raise _missing_pipeline(config) from error
        raise
    definition = json.loads(text)
    if VERSION_PARAMETER not in declared_parameters(definition):
        raise RetrainError(f"pipeline {config.pipeline_name!r} has no {VERSION_PARAMETER} parameter: it was "
                           "upserted by an older sentiment-mlops; run `sentiment-mlops aws upsert` again, then "
                           "replay the event from the failures queue")
    return definition


def _execution_parameters(sagemaker, execution_arn: str) -> dict[str, str]:
    parameters: dict[str, str] = {}
    request = {"PipelineExecutionArn": execution_arn}
    while True:
        page = sagemaker.list_pipeline_parameters_for_execution(**request)
        parameters.update({p["Name"]: p["Value"] for p in page.get("PipelineParameters", [])})
        if not page.get("NextToken"):
            return parameters
        request["NextToken"] = page["NextToken"]


def _unchanged_since(sagemaker, summaries: list[dict[str, Any]], definition: Mapping[str, Any],
                     parameters: Mapping[str, str]) -> str | None:
    """The newest of ``summaries`` (the executions within the cache's lifetime) that Succeeded
    running this very definition with the same effective parameters and the same data version,
    whatever its ``InputDataUri``; else None. Starting would repeat that run.

    Any such run counts, not only the newest on the data: a run by hand with other parameters in
    between, or a definition changed and changed back, leaves the first run's cache entries in
    place, and a start would take every step from them and register the same model again.
    """
    for summary in summaries:
        if summary.get("PipelineExecutionStatus") != "Succeeded":
            continue
        arn = summary["PipelineExecutionArn"]
        listed = _execution_parameters(sagemaker, arn)
        if listed.get(VERSION_PARAMETER) != parameters[VERSION_PARAMETER]:
            continue  # other data (or none named): no read of its definition
        ran = json.loads(sagemaker.describe_pipeline_definition_for_execution(
            PipelineExecutionArn=arn)["PipelineDefinition"])
        if repeats(definition, parameters, ran, listed):
            return arn
    return None


def _skip_reason(sagemaker, config: RetrainConfig, trigger: Trigger, definition: Mapping[str, Any],
                 parameters: Mapping[str, str]) -> str | None:
    """Why the trigger should start nothing, or None when it should start. Only a schedule tick
    waits for a running execution; new data starts even then, unless it would repeat a run
    (``_unchanged_since``)."""
    since = datetime.now(UTC) - CACHE_LIFETIME
    summaries = _recent_executions(sagemaker, config.pipeline_name, since)
    running = next((s["PipelineExecutionArn"] for s in summaries
                    if s.get("PipelineExecutionStatus") in EXECUTION_RUNNING), None)
    if trigger.kind in ("scheduled", "monitoring") and running:
        return f"execution {running} is still running; the next schedule will retry"
    unchanged = _unchanged_since(sagemaker, summaries, definition, parameters)
    if unchanged:
        return (f"no new data since execution {unchanged}: {parameters[INPUT_PARAMETER]} is version "
                f"{parameters[VERSION_PARAMETER]}, which that execution trained on with this pipeline definition "
                "and the same parameters")
    return None


def start(trigger: Trigger, config: RetrainConfig, sagemaker, s3) -> dict[str, Any]:
    """Start the execution the trigger asks for, on the data as it is now (or say why not)."""
    definition = _deployed_definition(sagemaker, config)
    uri = trigger.input_data_uri or declared_parameters(definition).get(INPUT_PARAMETER, {}).get("DefaultValue")
    if not isinstance(uri, str):
        raise RetrainError(f"the deployed pipeline declares no {INPUT_PARAMETER} default: run `sentiment-mlops aws upsert`")
    try:
        version = data_version(s3, uri)
    except ValueError as error:
        raise RetrainError(f"the pipeline's {INPUT_PARAMETER} default is not an S3 URI ({error}): "
                           "fix the settings and run `sentiment-mlops aws upsert`") from error
    if version is None:
        return {"status": "ignored", "reason": f"no data under {uri}: nothing to train on (upload it with "
                                               "`sentiment-mlops aws upload-data`)"}
    # InputDataUri is sent even when it is the default: the version is of the data at that URI.
    parameters = {INPUT_PARAMETER: uri, VERSION_PARAMETER: version}
    reason = _skip_reason(sagemaker, config, trigger, definition, parameters)
    if reason:
        return {"status": "skipped", "reason": reason}
    try:
        response = sagemaker.start_pipeline_execution(
            PipelineName=config.pipeline_name, PipelineExecutionDisplayName=display_name(trigger),
            PipelineExecutionDescription=trigger.description,
            PipelineParameters=[{"Name": name, "Value": value} for name, value in parameters.items()],
            ClientRequestToken=request_token(trigger))
    except Exception as error:  # botocore's ClientError, without importing botocore here
        if _is_missing_pipeline(error):
            raise _missing_pipeline(config) from error
        raise
    return {"status": "started", "execution_arn": response["PipelineExecutionArn"], "reason": trigger.description,
            "parameters": parameters}


def handle(event: Any, config: RetrainConfig, sagemaker, s3) -> dict[str, Any]:
    """The handler's decision, with its dependencies given (what the tests and the local runtime call)."""
    try:
        trigger = parse_event(event, config)
    except EventError as error:
        return {"status": "ignored", "reason": str(error)}
    return start(trigger, config, sagemaker, s3)


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """AWS Lambda's entry point (``retrain.handler``)."""
    import boto3

    result = handle(event, RetrainConfig.from_env(), boto3.client("sagemaker"), boto3.client("s3"))
    log.info("%s", json.dumps(result))
    return result
