"""Execute a pipeline definition JSON on this machine: no AWS, no Docker.

The same JSON that ``upsert`` sends to SageMaker is the input: the plan (``graph``) says which
step runs next, each step's ``Arguments`` are resolved (``expressions``) against the parameters,
the execution variables and the properties of the steps that already ran, and then:

- Processing / Training: run as subprocesses by ``jobs`` in ``<home>/jobs/<execution>/<step>/``
  (the ``/opt/ml`` mirror), output in ``<home>/jobs/<execution>/<step>.log``;
- Condition: ``condition_step_outcome`` chooses IfSteps or ElseSteps;
- RegisterModel: a new version in the local ``ModelRegistry``, with the artifact's sha256 and
  the evaluation report read from the ModelMetrics S3Uri;
- Fail: the execution fails with the resolved ``ErrorMessage``.

Everything is recorded in the state database as it happens, so another process can watch.
Steps run one at a time, in definition order among the ready ones, so every local run
schedules identically. Not yet done here: step caching (CacheConfig) and RetryPolicies.
"""
from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from pipeline.bundles import CodeBundles
from pipeline.local.conditions import condition_step_outcome
from pipeline.local.db import iso, open_state, parse_iso, utc_now
from pipeline.local.executions import Execution, ExecutionStore, sha256_text
from pipeline.local.expressions import (ExecutionContext, ExpressionError, execution_variables, parameter_values,
                                        read_path, resolve)
from pipeline.local.graph import Plan, StepNode, build_plan
from pipeline.local.jobs import JobFailed, run_processing_job, run_training_job
from pipeline.local.registry import ModelRegistry
from pipeline.local.store import ArtifactStore
from pipeline.settings import Settings

JOBS_DIR = "jobs"
log = logging.getLogger(__name__)


class StepFailed(RuntimeError):
    """A step that ended the execution: ``reason`` goes to the step and the execution."""

    def __init__(self, reason: str, log_path: Path | None = None) -> None:
        super().__init__(reason)
        self.reason, self.log_path = reason, log_path


@dataclass
class _Run:
    """One execution in progress: what the step handlers need, and what they have produced."""

    definition: Mapping[str, Any]
    plan: Plan
    execution: Execution
    store: ArtifactStore
    executions: ExecutionStore
    registry: ModelRegistry
    jobs_dir: Path
    context: ExecutionContext = field(init=False)
    done: set[str] = field(default_factory=set)
    outcomes: dict[str, bool] = field(default_factory=dict)

    @property
    def execution_id(self) -> str:
        return self.execution.execution_id

    def job_name(self, step: str) -> str:
        """``pipelines-<execution id>-<step>``: unique per execution, valid as a job name."""
        return f"pipelines-{self.execution_id}-{step}"[:63]

    def read_property_file(self, step: str, name: str) -> Any:
        """A PropertyFile's JSON: the step's output (by OutputName) at its S3Uri, plus FilePath."""
        declared = [p for p in self.plan.step(step).definition.get("PropertyFiles") or []
                    if p.get("PropertyFileName") == name]
        if not declared:
            raise ExpressionError(f"step {step} declares no property file {name!r}")
        output = declared[0]["OutputName"]
        properties = self.context.step_properties.get(step)
        if properties is None:
            raise ExpressionError(f"property file {step}.{name}: step {step} has not run")
        uri = read_path(properties, f"ProcessingOutputConfig.Outputs['{output}'].S3Output.S3Uri", f"{step}.{name}")
        return self.store.read_json(f"{uri.rstrip('/')}/{declared[0]['FilePath'].lstrip('/')}")


def _context(run: _Run, parameters: Mapping[str, Any], pipeline_name: str) -> ExecutionContext:
    variables = execution_variables(pipeline_name, run.execution_id, parse_iso(run.execution.start_time))
    variables["PipelineExecutionArn"] = run.execution.arn  # the ARN the state database reports
    return ExecutionContext(parameters, variables, read_property_file=run.read_property_file,
                            read_s3_json=run.store.read_json, now=lambda: iso(utc_now()))


# --- step handlers: each returns the step's properties, or raises StepFailed ---------------------

def _processing(run: _Run, node: StepNode, log_path: Path) -> dict[str, Any]:
    name = run.job_name(node.name)
    arguments = resolve(node.arguments(), run.context.with_execution(ProcessingJobName=name))
    return run_processing_job(arguments, job_name=name, job_dir=run.jobs_dir / node.name, store=run.store,
                              log_path=log_path)


def _training(run: _Run, node: StepNode, log_path: Path) -> dict[str, Any]:
    name = run.job_name(node.name)
    arguments = resolve(node.arguments(), run.context.with_execution(TrainingJobName=name))
    return run_training_job(arguments, job_name=name, job_dir=run.jobs_dir / node.name, store=run.store,
                            log_path=log_path)


def _condition(run: _Run, node: StepNode, log_path: Path) -> dict[str, Any]:
    outcome = condition_step_outcome(node.definition, run.context)
    run.outcomes[node.name] = outcome
    return {"Outcome": outcome}


def _register(run: _Run, node: StepNode, log_path: Path) -> dict[str, Any]:
    """RegisterModel: the artifact is hashed and the metrics read now, so that the registry holds
    what was evaluated even if the store changes later."""
    arguments = resolve(node.arguments(), run.context)
    specification = arguments["InferenceSpecification"]
    artifact_uri = specification["Containers"][0]["ModelDataUrl"]
    metrics_uri = read_path(arguments, "ModelMetrics.ModelQuality.Statistics.S3Uri", f"step {node.name}")
    package = run.registry.register(
        arguments["ModelPackageGroupName"], artifact_uri, hashlib.sha256(run.store.read_bytes(artifact_uri)).hexdigest(),
        run.store.read_json(metrics_uri), approval_status=arguments.get("ModelApprovalStatus") or "PendingManualApproval",
        inference_specification=specification, execution_id=run.execution_id,
        description=arguments.get("ModelPackageDescription"), metrics_uri=metrics_uri)
    return {"ModelPackageArn": package.arn, "ModelPackageGroupName": package.group_name,
            "ModelPackageVersion": package.version, "ModelApprovalStatus": package.approval_status}


def _fail(run: _Run, node: StepNode, log_path: Path) -> dict[str, Any]:
    message = resolve(node.arguments().get("ErrorMessage", ""), run.context)
    raise StepFailed(str(message) or f"step {node.name} (Fail) was reached")


_HANDLERS: dict[str, Callable[[_Run, StepNode, Path], dict[str, Any]]] = {
    "Processing": _processing, "Training": _training, "Condition": _condition,
    "RegisterModel": _register, "Fail": _fail}


def _run_step(run: _Run, node: StepNode) -> None:
    """Run one step and record it; raises StepFailed (recorded) or KeyboardInterrupt (recorded)."""
    log_path = run.jobs_dir / f"{node.name}.log"
    is_job = node.type in ("Processing", "Training")
    run.executions.start_step(run.execution_id, node.name, node.type, log_path=str(log_path) if is_job else None)
    started = time.perf_counter()
    log.info("step %s (%s) started%s", node.name, node.type, f"; follow it with: tail -f {log_path}" if is_job else "")
    try:
        handler = _HANDLERS.get(node.type)
        if handler is None:
            raise StepFailed(f"step type {node.type!r} is not supported by the local runtime")
        properties = handler(run, node, log_path)
    except KeyboardInterrupt:
        run.executions.mark_step(run.execution_id, node.name, "Stopped", failure_reason="interrupted")
        raise
    except JobFailed as error:
        _record_failure(run, node, StepFailed(str(error), error.log_path))
    except StepFailed as error:
        _record_failure(run, node, error)
    except Exception as error:  # a resolution, store or registry problem: the step failed, say why
        _record_failure(run, node, StepFailed(f"{type(error).__name__}: {error}", log_path if is_job else None))
    run.executions.mark_step(run.execution_id, node.name, "Succeeded", properties=properties)
    log.info("step %s succeeded in %.1fs", node.name, time.perf_counter() - started)
    run.context = run.context.with_step_properties(node.name, properties)
    run.done.add(node.name)


def _record_failure(run: _Run, node: StepNode, error: StepFailed) -> None:
    """Record the step as Failed and raise what the execution records: a Fail step's message as
    it is, any other failure prefixed with the step's name."""
    run.executions.mark_step(run.execution_id, node.name, "Failed", failure_reason=error.reason,
                             log_path=str(error.log_path) if error.log_path else None)
    log.warning("step %s failed: %s", node.name, error.reason)
    if node.type == "Fail":
        raise error
    raise StepFailed(f"Step {node.name} failed: {error.reason}", error.log_path) from error


def _loop(run: _Run) -> None:
    """Run ready steps until none remain; then (also after a failure) record the steps on
    branches the conditions did not choose."""
    try:
        while True:
            ready = run.plan.ready_steps(run.done, run.outcomes)
            if not ready:
                break
            _run_step(run, run.plan.step(ready[0]))
    except StepFailed:
        _record_skipped(run)
        raise
    _record_skipped(run)


def _record_skipped(run: _Run) -> None:
    for name in run.plan.skipped_steps(run.done, run.outcomes):
        run.executions.record_skipped(run.execution_id, name, run.plan.step(name).type)


def put_bundles(store: ArtifactStore, bundles: CodeBundles) -> None:
    """The code bundles at their s3 URIs, as the SageMaker backend uploads them before upsert.
    Content-addressed: an object already there has the same bytes and is left alone."""
    for bundle in bundles.all():
        if not store.exists(bundle.s3_uri):
            store.put_bytes(bundle.s3_uri, bundle.data)


def run_pipeline(definition_json: str, settings: Settings, parameters: Mapping[str, Any], bundles: CodeBundles,
                 *, conn: sqlite3.Connection | None = None, display_name: str | None = None) -> Execution:
    """Execute the definition; returns the finished execution record (Succeeded or Failed).
    Ctrl-C marks the running step and the execution Stopped, then goes on as KeyboardInterrupt."""
    definition = json.loads(definition_json)
    values = parameter_values(definition, parameters)
    plan = build_plan(definition)
    store = ArtifactStore(settings.home)
    put_bundles(store, bundles)
    own_conn = conn is None
    conn = conn or open_state(settings.home)
    try:
        return _execute(definition, definition_json, plan, store, conn, values, settings, display_name)
    finally:
        if own_conn:
            conn.close()


def _execute(definition: Mapping[str, Any], definition_json: str, plan: Plan, store: ArtifactStore,
             conn: sqlite3.Connection, values: Mapping[str, Any], settings: Settings,
             display_name: str | None) -> Execution:
    executions = ExecutionStore(conn)
    execution = executions.create(settings.pipeline_name, sha256_text(definition_json), values,
                                  display_name=display_name)
    run = _Run(definition, plan, execution, store, executions, ModelRegistry(conn),
               Path(settings.home).resolve() / JOBS_DIR / execution.execution_id)
    run.context = _context(run, values, settings.pipeline_name)
    try:
        _loop(run)
    except KeyboardInterrupt:
        executions.set_status(execution.execution_id, "Stopped", failure_reason="interrupted (Ctrl-C)")
        raise
    except StepFailed as error:
        return executions.set_status(execution.execution_id, "Failed", failure_reason=error.reason)
    return executions.set_status(execution.execution_id, "Succeeded")
