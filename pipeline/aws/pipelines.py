"""The pipeline on SageMaker: create or update it, start executions, follow them.

The definition sent is ``pipeline.definition.definition_json(settings)``, the very string the
local runtime executes, so what runs on AWS is what was tested locally. Parameters are checked
against the definition's own ``Parameters`` before anything is sent: a typo in a name or a word
where a number belongs is refused here, with the valid names, instead of by a failed job an
hour later.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from mlops_rules.data_versions import data_version
from mlops_rules.executions import ExecutionRecord
from mlops_rules.parameters import (
    INPUT_PARAMETER,
    VERSION_PARAMETER,
    ParameterError,
    check_names,
    declared_parameters,
    parameter_text,
)
from pipeline.aws.clients import AwsClients
from pipeline.aws.errors import (
    BackendError,
    ExecutionTimeout,
    aws_errors,
    error_code,
    is_already_exists,
    unless_missing,
)
from pipeline.settings import PLACEHOLDER_ROLE_ARN, Settings

log = logging.getLogger(__name__)

ParameterValue = str | int | float | bool
TERMINAL_STATUSES = ("Succeeded", "Failed", "Stopped")
# Codes an endpoint gives for an operation it does not implement (moto raises NotImplementedError).
_UNSUPPORTED = {"UnknownOperationException", "InvalidAction", "NotImplemented", "UnsupportedOperation"}


def _missing_pipeline(settings: Settings, region: str) -> str:
    return (f"pipeline {settings.pipeline_name} does not exist in {region}: create it with upsert first "
            f"(or check SENTIMENT_MLOPS_PIPELINE_NAME and SENTIMENT_MLOPS_REGION)")


def _missing_execution(execution_arn: str) -> str:
    return f"no pipeline execution {execution_arn}: list the executions and copy an id from there"


# --- upsert ---------------------------------------------------------------------------------

def _check_definition(definition: str) -> dict:
    try:
        parsed = json.loads(definition)
    except ValueError as error:
        raise BackendError(f"the pipeline definition is not JSON ({error}): build it with definition_json") from error
    if not isinstance(parsed, dict) or "Steps" not in parsed:
        raise BackendError("the pipeline definition has no Steps: build it with definition_json")
    return parsed


def require_role(settings: Settings) -> None:
    """Refuse the placeholder role before anything is uploaded or sent."""
    if settings.role_arn == PLACEHOLDER_ROLE_ARN:
        raise BackendError("no execution role: set SENTIMENT_MLOPS_ROLE_ARN to the ARN of a SageMaker execution role "
                           "(the placeholder only serves to build the definition offline)")


def upsert_pipeline(clients: AwsClients, settings: Settings, definition: str | None = None,
                    description: str | None = None) -> str:
    """Create the pipeline, or update it when the definition or role changed; return its ARN.

    ``definition`` defaults to ``definition_json(settings)`` (which builds the bundles from the
    source: upload the same bundles first). An unchanged pipeline is left alone, so a re-run
    makes no new pipeline version.
    """
    require_role(settings)
    if definition is None:
        from pipeline.definition import definition_json
        definition = definition_json(settings)
    _check_definition(definition)
    name = settings.pipeline_name
    description = description or "sentiment-mlops: preprocess, train, evaluate, gate on accuracy, register"
    fields = dict(PipelineDisplayName=name, PipelineDefinition=definition, PipelineDescription=description,
                  RoleArn=settings.role_arn)
    sagemaker = clients.sagemaker
    with aws_errors(f"reading pipeline {name}"):
        current = unless_missing(sagemaker.describe_pipeline, PipelineName=name)
    if current is not None:
        if current.get("PipelineDefinition") == definition and current.get("RoleArn") == settings.role_arn:
            log.info("pipeline %s is unchanged", name)
            return current["PipelineArn"]
        return _update(clients, name, fields)
    with aws_errors(f"creating pipeline {name}"):
        try:
            arn = sagemaker.create_pipeline(PipelineName=name, **fields)["PipelineArn"]
        except ClientError as error:
            if not is_already_exists(error):  # created meanwhile by someone else: update it
                raise
            return _update(clients, name, fields)
    log.info("created pipeline %s", arn)
    return arn


def _update(clients: AwsClients, name: str, fields: dict) -> str:
    with aws_errors(f"updating pipeline {name}"):
        arn = clients.sagemaker.update_pipeline(PipelineName=name, **fields)["PipelineArn"]
    log.info("updated pipeline %s", arn)
    return arn


def execution_arn_of(clients: AwsClients, settings: Settings, execution: str) -> str:
    """An execution's ARN, given its ARN or its id (what ``executions list`` and ``aws list`` print):
    the pipeline's ARN (one DescribePipeline) and ``/execution/ID``."""
    if execution.startswith("arn:"):
        return execution
    with aws_errors(f"reading pipeline {settings.pipeline_name}", not_found=_missing_pipeline(settings, clients.region)):
        pipeline_arn = clients.sagemaker.describe_pipeline(PipelineName=settings.pipeline_name)["PipelineArn"]
    return f"{pipeline_arn}/execution/{execution}"


def deployed_definition(clients: AwsClients, settings: Settings) -> str:
    """The definition SageMaker holds for the pipeline now."""
    with aws_errors(f"reading pipeline {settings.pipeline_name}", not_found=_missing_pipeline(settings, clients.region)):
        return clients.sagemaker.describe_pipeline(PipelineName=settings.pipeline_name)["PipelineDefinition"]


# --- parameters -----------------------------------------------------------------------------

def validate_parameters(definition: str | Mapping[str, Any], values: Mapping[str, ParameterValue] | None
                        ) -> list[dict[str, str]]:
    """``PipelineParameters`` for StartPipelineExecution, checked against the definition.

    No AWS call: unknown names and values of the wrong type (or outside ``EnumValues``) raise
    ``BackendError``; parameters not given keep the definition's defaults. Integer, Float and
    Boolean parameters also take their usual string spelling (``"8"``, ``"0.9"``, ``"true"``),
    as a command line gives them.
    """
    parsed = json.loads(definition) if isinstance(definition, str) else definition
    values = dict(values or {})
    try:
        declared = check_names(parsed, values)
    except ParameterError as error:
        raise BackendError(str(error)) from None
    problems, result = [], []
    for name, value in values.items():
        try:
            result.append({"Name": name, "Value": parameter_text(declared[name], value)})
        except ParameterError as error:
            problems.append(str(error))
    if problems:
        raise BackendError("bad pipeline parameter value: " + "; ".join(problems))
    return result


# --- the data's version ---------------------------------------------------------------------

def with_data_version(clients: AwsClients, definition: str | Mapping[str, Any],
                      parameters: Mapping[str, ParameterValue] | None) -> dict[str, ParameterValue]:
    """``parameters`` plus ``InputDataVersion``: the digest of the S3 listing under the execution's
    ``InputDataUri`` (given, or the definition's default), computed by the retrain Lambda's own
    ``data_version`` (mlops_rules) so that a start by hand and a scheduled one name the same data alike.

    SageMaker caches steps by their arguments, not by the bytes in S3: without a version, data
    replaced in place would be answered from the cache with the model trained on the old data.
    Left as given when the caller gave a version, or when the definition declares none (a
    pipeline upserted before the parameter existed). With no object under the URI, no version is
    set and Preprocess will say what it found.
    """
    uri_name, version_name = INPUT_PARAMETER, VERSION_PARAMETER
    values = dict(parameters or {})
    parsed = json.loads(definition) if isinstance(definition, str) else definition
    declared = declared_parameters(parsed)
    if version_name in values or version_name not in declared:
        return values
    uri = str(values.get(uri_name) or declared.get(uri_name, {}).get("DefaultValue", ""))
    try:
        with aws_errors(f"listing the data under {uri}"):
            version = data_version(clients.s3, uri)
    except ValueError as error:
        raise BackendError(f"{uri_name} {uri!r} is not an s3:// URI: "
                           f"pass --param {uri_name}=s3://BUCKET/PREFIX/") from error
    if version is None:
        log.warning("no objects under %s: %s is left empty (upload the data first: aws upload-data)",
                    uri, version_name)
        return values
    log.info("%s of %s: %s", version_name, uri, version)
    return {**values, version_name: version}


# --- executions -----------------------------------------------------------------------------

def start_execution(clients: AwsClients, settings: Settings, parameters: Mapping[str, ParameterValue] | None = None,
                    *, definition: str | Mapping[str, Any] | None = None, display_name: str | None = None,
                    description: str | None = None) -> str:
    """Start an execution of the pipeline with ``parameters``; return the execution ARN.

    Parameters are checked against ``definition`` (the one just upserted, when the caller has
    it: then nothing is sent before the check passes) or else against the definition SageMaker
    holds, which is the one the execution will run.
    """
    if definition is None:
        definition = deployed_definition(clients, settings)
    pipeline_parameters = validate_parameters(definition, parameters)
    request: dict[str, Any] = {"PipelineName": settings.pipeline_name, "PipelineParameters": pipeline_parameters}
    if display_name:
        request["PipelineExecutionDisplayName"] = display_name
    if description:
        request["PipelineExecutionDescription"] = description
    with aws_errors(f"starting pipeline {settings.pipeline_name}", not_found=_missing_pipeline(settings, clients.region)):
        arn = clients.sagemaker.start_pipeline_execution(**request)["PipelineExecutionArn"]
    log.info("started %s", arn)
    return arn


def describe_execution(clients: AwsClients, execution_arn: str) -> dict[str, Any]:
    """An execution's status and its parameters.

    Keys: ``ExecutionRecord.as_dict``'s (what ``list_executions`` gives), ``pipeline_arn``,
    ``last_modified`` and ``parameters`` (``{name: value}``, values as strings).
    """
    sagemaker = clients.sagemaker
    with aws_errors(f"reading execution {execution_arn}", not_found=_missing_execution(execution_arn)):
        found = sagemaker.describe_pipeline_execution(PipelineExecutionArn=execution_arn)
        parameters: dict[str, str] = {}
        for page in sagemaker.get_paginator("list_pipeline_parameters_for_execution").paginate(
                PipelineExecutionArn=execution_arn):
            parameters.update({p["Name"]: p["Value"] for p in page.get("PipelineParameters", [])})
    return {**ExecutionRecord.from_summary(found).as_dict(), "pipeline_arn": found.get("PipelineArn"),
            "last_modified": found.get("LastModifiedTime"), "parameters": parameters}


def list_executions(clients: AwsClients, settings: Settings, max_results: int = 20) -> list[ExecutionRecord]:
    """The pipeline's latest executions, newest first."""
    found: list[ExecutionRecord] = []
    with aws_errors(f"listing executions of {settings.pipeline_name}",
                    not_found=_missing_pipeline(settings, clients.region)):
        pages = clients.sagemaker.get_paginator("list_pipeline_executions").paginate(
            PipelineName=settings.pipeline_name, SortBy="CreationTime", SortOrder="Descending",
            PaginationConfig={"MaxItems": max_results, "PageSize": min(max_results, 100)})
        for page in pages:
            summaries = page.get("PipelineExecutionSummaries", [])
            found.extend(ExecutionRecord.from_summary(s) for s in summaries)
    # Sorted here too: the order is the contract, whatever the endpoint did with SortOrder.
    found.sort(key=lambda e: e.started or "", reverse=True)
    return found[:max_results]


@dataclass(frozen=True)
class SageMakerExecutions:
    """The pipeline's executions on SageMaker, as ``pipeline.execution_history.ExecutionHistory``."""

    clients: AwsClients
    settings: Settings

    def recent(self, limit: int | None = None) -> list[ExecutionRecord]:
        return list_executions(self.clients, self.settings, max_results=limit or 100)


def execution_steps(clients: AwsClients, execution_arn: str) -> tuple[list[dict[str, Any]] | None, str | None]:
    """``(steps, None)`` with each step's name, status, times, failure reason and job ARN, or
    ``(None, why)`` where the endpoint cannot list them (moto lacks ListPipelineExecutionSteps;
    an IAM policy may not grant it): waiting still works on the execution's own status."""
    steps: list[dict[str, Any]] = []
    try:
        with aws_errors(f"listing the steps of {execution_arn}", not_found=_missing_execution(execution_arn)):
            try:
                for page in clients.sagemaker.get_paginator("list_pipeline_execution_steps").paginate(
                        PipelineExecutionArn=execution_arn, SortOrder="Ascending"):
                    steps.extend(_step(s) for s in page.get("PipelineExecutionSteps", []))
            except ClientError as error:
                code = error_code(error)
                if code in _UNSUPPORTED:
                    return None, f"step statuses unavailable: this endpoint does not support ListPipelineExecutionSteps ({code})"
                if code in ("AccessDenied", "AccessDeniedException"):
                    return None, "step statuses unavailable: the caller may not call ListPipelineExecutionSteps"
                raise
    except NotImplementedError:  # moto's answer for an operation it does not implement
        return None, "step statuses unavailable: this endpoint does not implement ListPipelineExecutionSteps"
    return steps, None


def _step(step: Mapping[str, Any]) -> dict[str, Any]:
    metadata = step.get("Metadata", {}) or {}
    job = next((value.get("Arn") for value in metadata.values() if isinstance(value, dict) and value.get("Arn")), None)
    return {"name": step.get("StepName"), "status": step.get("StepStatus"), "started": step.get("StartTime"),
            "ended": step.get("EndTime"), "failure_reason": step.get("FailureReason") or None,
            "attempts": step.get("AttemptCount"), "job_arn": job}


def wait_for_execution(clients: AwsClients, execution_arn: str, *, timeout_s: float = 8 * 3600, poll_s: float = 30,
                       on_progress: Callable[[dict[str, Any]], None] | None = None,
                       sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic
                       ) -> dict[str, Any]:
    """Poll until the execution ends; return ``describe_execution``'s dict plus ``steps`` and
    ``steps_note`` (why ``steps`` is ``None``).

    ``on_progress`` gets that dict whenever the status or a step's status changes. A Failed or
    Stopped execution is returned, not raised: it is an answer. Running past ``timeout_s``
    raises ``ExecutionTimeout`` (the execution goes on on AWS).
    """
    deadline = clock() + timeout_s
    unsupported: str | None = None  # once the steps cannot be listed, stop asking
    last_seen = None
    while True:
        found = describe_execution(clients, execution_arn)
        steps, note = execution_steps(clients, execution_arn) if unsupported is None else (None, unsupported)
        if steps is None and unsupported is None:
            unsupported = note
            log.info("%s", note)
        found.update(steps=steps, steps_note=note)
        seen = (found["status"], tuple((s["name"], s["status"]) for s in steps or ()))
        if seen != last_seen:
            last_seen = seen
            if on_progress is not None:
                on_progress(found)
        if found["status"] in TERMINAL_STATUSES:
            return found
        remaining = deadline - clock()
        if remaining <= 0:
            raise ExecutionTimeout(f"execution {execution_arn} is still {found['status']} after {timeout_s:g} s: "
                                   f"wait again, or stop it with StopPipelineExecution", found)
        sleep(min(poll_s, remaining))
