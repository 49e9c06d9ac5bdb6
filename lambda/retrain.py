"""The retrain trigger: a schedule, or new data in the bucket, starts the pipeline.

EventBridge delivers two kinds of event to ``handler``:

- a "Scheduled Event" from the template's schedule rule (only when ``RetrainSchedule`` is set):
  an execution starts with the pipeline's default parameters, unless one is still running. A
  retrain that outlasts the interval would otherwise pile executions up behind each other.
- an S3 "Object Created" event for a key under ``DATA_PREFIX`` that completes a dataset:
  an archive (``.tar.gz``, ``.tgz``, ``.tar``) or a ``.csv``, which is a dataset by itself,
  or a ``_SUCCESS`` marker uploaded last into a folder of several files (``train.jsonl`` and
  ``test.jsonl``, an unpacked ``aclImdb/`` tree). Its ``InputDataUri`` is the archive or csv,
  or the marker's folder. Any other key is ignored: starting on the first of several files
  would train on half a dataset. New data always starts an execution, even while another runs.

Starting is idempotent: ``ClientRequestToken`` is derived from the event's id, so an event
delivered twice (EventBridge delivers at least once; Lambda retries) starts one execution.
An event the handler should not act on is answered ``ignored`` with the reason, not raised. A
pipeline that does not exist yet raises ``RetrainError``, so that the event lands in the
failures queue instead of vanishing.

Runs in AWS Lambda with only the standard library and boto3. Settings come from the
function's environment: ``PIPELINE_NAME``, ``DATA_BUCKET`` and ``DATA_PREFIX``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

log = logging.getLogger("retrain")
log.setLevel(logging.INFO)

SCHEDULE_SOURCE, SCHEDULE_DETAIL_TYPE = "aws.events", "Scheduled Event"
S3_SOURCE, S3_DETAIL_TYPE = "aws.s3", "Object Created"
DATASET_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".csv")
READY_MARKER = "_SUCCESS"
RUNNING_STATUSES = ("Executing", "Stopping")
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
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "RetrainConfig":
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
    kind: str  # "scheduled" or "new-data"
    time: str
    description: str
    input_data_uri: str | None = None  # None: the pipeline's default


def _envelope(event: Any) -> tuple[str, str, str, str]:
    if not isinstance(event, Mapping):
        raise EventError(f"the event is a {type(event).__name__}, not a JSON object")
    fields = [event.get(name) for name in ("id", "source", "detail-type", "time")]
    if not all(isinstance(value, str) and value for value in fields):
        raise EventError("the event lacks id, source, detail-type or time: not an EventBridge event")
    return fields[0], fields[1], fields[2], fields[3]


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
    if (source, detail_type) != (S3_SOURCE, S3_DETAIL_TYPE):
        raise EventError(f"not a scheduled or S3 Object Created event (source {source!r}, detail-type {detail_type!r})")
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
    etag = stored.get("etag")
    return Trigger(event_id, "new-data", time, f"New data s3://{bucket}/{key}" + (f" (etag {etag})" if etag else ""),
                   input_data_uri=uri)


def request_token(trigger: Trigger) -> str:
    """The same event gives the same token, so SageMaker starts it once (32 to 128 characters)."""
    return "retrain-" + hashlib.sha256(trigger.event_id.encode()).hexdigest()[:48]


def display_name(trigger: Trigger) -> str:
    """``scheduled-20261122T030000`` or ``new-data-...``: what Studio's execution list shows."""
    stamp = re.sub(r"[^0-9T]", "", trigger.time)[:15] or "now"
    return f"{trigger.kind}-{stamp}"[:_DISPLAY_NAME_LIMIT]


def _running_execution(sagemaker, pipeline_name: str) -> str | None:
    summaries = sagemaker.list_pipeline_executions(PipelineName=pipeline_name, SortBy="CreationTime",
                                                   SortOrder="Descending", MaxResults=20)
    for summary in summaries.get("PipelineExecutionSummaries", []):
        if summary.get("PipelineExecutionStatus") in RUNNING_STATUSES:
            return summary["PipelineExecutionArn"]
    return None


def _is_missing_pipeline(error: Exception) -> bool:
    """SageMaker says ResourceNotFound, or a ValidationException worded "could not find"/"does not exist"."""
    code = getattr(error, "response", {}).get("Error", {}).get("Code")
    message = str(error).lower()
    return code == "ResourceNotFound" or (
        code == "ValidationException" and ("could not find" in message or "does not exist" in message))


def start(trigger: Trigger, config: RetrainConfig, sagemaker) -> dict[str, Any]:
    """Start the execution the trigger asks for (or say why not)."""
    if trigger.kind == "scheduled":
        running = _running_execution(sagemaker, config.pipeline_name)
        if running:
            return {"status": "skipped", "reason": f"execution {running} is still running; the next schedule will retry"}
    parameters = [{"Name": "InputDataUri", "Value": trigger.input_data_uri}] if trigger.input_data_uri else []
    try:
        response = sagemaker.start_pipeline_execution(
            PipelineName=config.pipeline_name, PipelineExecutionDisplayName=display_name(trigger),
            PipelineExecutionDescription=trigger.description, PipelineParameters=parameters,
            ClientRequestToken=request_token(trigger))
    except Exception as error:  # botocore's ClientError, without importing botocore here
        if _is_missing_pipeline(error):
            raise RetrainError(f"pipeline {config.pipeline_name!r} does not exist: create it with "
                               "`sentiment-mlops aws upsert`, then replay the event from the failures queue") from error
        raise
    return {"status": "started", "execution_arn": response["PipelineExecutionArn"], "reason": trigger.description,
            "parameters": {p["Name"]: p["Value"] for p in parameters}}


def handle(event: Any, config: RetrainConfig, sagemaker) -> dict[str, Any]:
    """The handler's decision, with its dependencies given (what the tests and the local runtime call)."""
    try:
        trigger = parse_event(event, config)
    except EventError as error:
        return {"status": "ignored", "reason": str(error)}
    return start(trigger, config, sagemaker)


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """AWS Lambda's entry point (``retrain.handler``)."""
    import boto3

    result = handle(event, RetrainConfig.from_env(), boto3.client("sagemaker"))
    log.info("%s", json.dumps(result))
    return result
