"""Execute a pipeline definition JSON on this machine: no AWS, no Docker.

The same JSON that ``upsert`` sends to SageMaker is the input: the plan (``graph``) says which
step runs next, each step's ``Arguments`` are resolved (``expressions``) against the parameters,
the execution variables and the properties of the steps that already ran, and then:

- Processing / Training: run as subprocesses by ``jobs`` in ``<home>/jobs/<execution>/<step>/``
  (the ``/opt/ml`` mirror), output in ``<home>/jobs/<execution>/<step>.log``;
- Transform: a subprocess too, ``python -m pipeline.local.services.transform`` (the local
  transform service, which starts the model's server); Model: a Model recorded in the state,
  named for the execution as SageMaker names it;
- Condition: ``condition_step_outcome`` chooses IfSteps or ElseSteps;
- RegisterModel: a new version in the local ``ModelRegistry``, with the artifact's sha256 and
  the evaluation report read from the ModelMetrics S3Uri;
- Fail: the execution fails with the resolved ``ErrorMessage``.

Everything is recorded in the state database as it happens, so another process can watch.
Steps run one at a time, in definition order among the ready ones, so every local run
schedules identically.

A step with CacheConfig enabled first looks for an earlier run with the same cache key
(``cache``) and, when one is found, takes its result and says so. A step's RetryPolicies
(``retry``) run it again after a transient fault. :func:`retry_execution` runs a Failed or
Stopped execution again from the step that failed, with its own definition and parameters,
like SageMaker's RetryPipelineExecution.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_rules.approvals import DEFAULT_APPROVAL_STATUS
from pipeline.bundles import CodeBundles
from pipeline.local.engine.cache import CachePolicy, cache_key, cache_policy, missing_outputs
from pipeline.local.engine.conditions import condition_step_outcome
from pipeline.local.engine.expressions import (
    ExecutionContext,
    ExpressionError,
    execution_variables,
    parameter_values,
    read_path,
    resolve,
)
from pipeline.local.engine.graph import Plan, StepNode, build_plan
from pipeline.local.engine.jobs import JobFailed, JobWatch, run_processing_job, run_training_job, run_transform_job
from pipeline.local.engine.retry import exception_type, matching_policy, retry_policies
from pipeline.local.processes import stop_process_group
from pipeline.local.state.db import iso, open_state, parse_iso, sha256_text, utc_now
from pipeline.local.state.executions import RUNNER_LEASE_S, Execution, ExecutionStore, Step
from pipeline.local.state.models import ModelStore
from pipeline.local.state.registry import ModelRegistry
from pipeline.local.state.store import ArtifactStore
from pipeline.settings import Settings

JOBS_DIR = "jobs"
JOB_NAME_VARIABLES = {"Processing": "ProcessingJobName", "Training": "TrainingJobName",
                      "Transform": "TransformJobName"}
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
    use_cache: bool = True
    sleep: Callable[[float], None] = time.sleep  # the wait between a RetryPolicy's attempts
    context: ExecutionContext = field(init=False)
    done: set[str] = field(default_factory=set)
    outcomes: dict[str, bool] = field(default_factory=dict)

    @property
    def pipeline_name(self) -> str:
        return self.execution.pipeline_name

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


def _context(run: _Run) -> ExecutionContext:
    variables = execution_variables(run.pipeline_name, run.execution_id, parse_iso(run.execution.start_time))
    return ExecutionContext(run.execution.parameters, variables, read_property_file=run.read_property_file,
                            read_s3_json=run.store.read_json, now=lambda: iso(utc_now()))


# --- step handlers: each returns the step's properties, or raises StepFailed ---------------------
# Job handlers get their request resolved already (the cache key is computed from it).

def _job_arguments(run: _Run, node: StepNode) -> dict[str, Any]:
    """A Processing or Training step's request, resolved, with its job name as SageMaker sets it."""
    variable = JOB_NAME_VARIABLES[node.type]
    return resolve(node.arguments(), run.context.with_execution(**{variable: run.job_name(node.name)}))


def _watch(run: _Run, node: StepNode) -> JobWatch:
    """Record the job's pid as it starts, and renew this runner's claim on the execution while it runs."""
    return JobWatch(started=lambda pid: run.executions.set_job_pid(run.execution_id, node.name, pid),
                    running=lambda: _renew_lease(run), interval_s=RUNNER_LEASE_S)


def _renew_lease(run: _Run) -> None:
    """The lease only makes a killed runner's end time precise: a database held busy by another
    command must not stop a healthy job, so a renewal that cannot be written is skipped."""
    try:
        run.executions.renew_lease(run.execution_id)
    except sqlite3.Error as error:
        log.warning("could not renew the claim on execution %s (%s); the job goes on", run.execution_id, error)


def _processing(run: _Run, node: StepNode, arguments: Any, log_path: Path) -> dict[str, Any]:
    return run_processing_job(arguments, job_name=run.job_name(node.name), job_dir=run.jobs_dir / node.name,
                              store=run.store, log_path=log_path, watch=_watch(run, node))


def _training(run: _Run, node: StepNode, arguments: Any, log_path: Path) -> dict[str, Any]:
    return run_training_job(arguments, job_name=run.job_name(node.name), job_dir=run.jobs_dir / node.name,
                            store=run.store, log_path=log_path, watch=_watch(run, node))


def _transform(run: _Run, node: StepNode, arguments: Any, log_path: Path) -> dict[str, Any]:
    """A transform job's name must be new in the account (a retried step's attempt too), so each
    attempt's name ends in a random part, as SageMaker's own names for a pipeline's jobs do."""
    name = f"{run.job_name(node.name)[:54]}-{secrets.token_hex(4)}"
    return run_transform_job(arguments, job_name=name, job_dir=run.jobs_dir / node.name,
                             home=run.store.root.parent, log_path=log_path, watch=_watch(run, node))


def _create_model(run: _Run, node: StepNode, arguments: Any, log_path: Path) -> dict[str, Any]:
    """CreateModel (a ModelStep built with ModelBuilder.build()): the pipeline names the model,
    ``pipelines-<execution id>-<step>``, as SageMaker names it for the execution; its artifact
    must be in the store."""
    request = resolve(node.arguments(), run.context)
    container = request.get("PrimaryContainer") or {}
    artifact_uri = container.get("ModelDataUrl")
    if not artifact_uri or not run.store.has_object(artifact_uri):
        raise StepFailed(f"CreateModel: the model artifact {artifact_uri!r} is not in the local store")
    model = ModelStore(run.registry.conn).create(run.job_name(node.name).lower(), container, artifact_uri,
                                              request.get("ExecutionRoleArn", ""))
    return {"ModelName": model.name, "ModelArn": model.arn, "PrimaryContainer": container}


def _condition(run: _Run, node: StepNode, arguments: Any, log_path: Path) -> dict[str, Any]:
    outcome = condition_step_outcome(node.definition, run.context)
    run.outcomes[node.name] = outcome
    return {"Outcome": outcome}


def _register(run: _Run, node: StepNode, arguments: Any, log_path: Path) -> dict[str, Any]:
    """RegisterModel: the artifact is hashed and the metrics read now, so that the registry holds
    what was evaluated even if the store changes later. CustomerMetadataProperties (the links to
    the evaluation's files) are kept as resolved, as CreateModelPackage keeps them."""
    arguments = resolve(node.arguments(), run.context)
    specification = arguments["InferenceSpecification"]
    artifact_uri = specification["Containers"][0]["ModelDataUrl"]
    metrics_uri = read_path(arguments, "ModelMetrics.ModelQuality.Statistics.S3Uri", f"step {node.name}")
    package = run.registry.register(
        arguments["ModelPackageGroupName"], artifact_uri, hashlib.sha256(run.store.read_bytes(artifact_uri)).hexdigest(),
        run.store.read_json(metrics_uri), approval_status=arguments.get("ModelApprovalStatus") or DEFAULT_APPROVAL_STATUS,
        inference_specification=specification, execution_id=run.execution_id,
        description=arguments.get("ModelPackageDescription"), metrics_uri=metrics_uri,
        customer_metadata_properties=arguments.get("CustomerMetadataProperties"),
        drift_check_baselines=arguments.get("DriftCheckBaselines"))
    return {"ModelPackageArn": package.arn, "ModelPackageGroupName": package.group_name,
            "ModelPackageVersion": package.version, "ModelApprovalStatus": package.approval_status}


def _fail(run: _Run, node: StepNode, arguments: Any, log_path: Path) -> dict[str, Any]:
    message = resolve(node.arguments().get("ErrorMessage", ""), run.context)
    raise StepFailed(str(message) or f"step {node.name} (Fail) was reached")


_HANDLERS: dict[str, Callable[[_Run, StepNode, Any, Path], dict[str, Any]]] = {
    "Processing": _processing, "Training": _training, "Transform": _transform, "Model": _create_model,
    "Condition": _condition, "RegisterModel": _register, "Fail": _fail}


def _run_step(run: _Run, node: StepNode) -> None:
    """Run one step (or take it from the cache) and record it; raises StepFailed (recorded) or
    KeyboardInterrupt (recorded)."""
    log_path = run.jobs_dir / f"{node.name}.log"
    is_job = node.type in JOB_NAME_VARIABLES
    arguments, key, preparation_error = None, None, None
    policy = cache_policy(node.definition) if run.use_cache else None  # checked valid before the run
    try:
        arguments = _job_arguments(run, node) if is_job else None
        key = cache_key(node.name, node.type, arguments) if policy and arguments is not None else None
    except Exception as error:  # recorded as the step's failure, once the step is started below
        preparation_error = error
    if key is not None and policy is not None and _take_from_cache(run, node, key, policy):
        return
    run.executions.start_step(run.execution_id, node.name, node.type, cache_key=key,
                              log_path=str(log_path) if is_job else None)
    started = time.perf_counter()
    log.info("step %s (%s) started%s", node.name, node.type, f"; follow it with: tail -f {log_path}" if is_job else "")
    try:
        if preparation_error is not None:
            raise preparation_error
        handler = _HANDLERS.get(node.type)
        if handler is None:
            raise StepFailed(f"step type {node.type!r} is not supported by the local runtime")
        properties = _attempts(run, node, handler, arguments, log_path)
    except KeyboardInterrupt:  # _drive closes the step and the execution
        raise
    except JobFailed as error:
        _record_failure(run, node, StepFailed(str(error), error.log_path))
    except StepFailed as error:
        _record_failure(run, node, error)
    except Exception as error:  # a resolution, store or registry problem: the step failed, say why
        _record_failure(run, node, StepFailed(f"{type(error).__name__}: {error}", log_path if is_job else None))
    run.executions.mark_step(run.execution_id, node.name, "Succeeded", properties=properties)
    log.info("step %s succeeded in %.1fs", node.name, time.perf_counter() - started)
    _done(run, node.name, properties)


def _done(run: _Run, step: str, properties: Mapping[str, Any]) -> None:
    run.context = run.context.with_step_properties(step, properties)
    run.done.add(step)


def _take_from_cache(run: _Run, node: StepNode, key: str, policy: CachePolicy) -> bool:
    """Reuse an earlier run of the step with the same key, if one is young enough and its
    outputs are still in the store; says which execution it came from."""
    hit = run.executions.find_cached(run.pipeline_name, node.name, key, policy.expire_after)
    if hit is None:
        return False
    missing = missing_outputs(node.type, hit.properties, run.store)
    if missing:
        log.info("step %s: the cached result of execution %s is gone from the store (%s); running the step",
                 node.name, hit.execution_id, missing[0])
        return False
    step: Step = run.executions.record_cache_hit(run.execution_id, hit)
    log.info("step %s: cache hit, reusing the result of execution %s (ended %s)",
             node.name, step.cache_source_execution_id, hit.end_time)
    _done(run, node.name, step.properties)
    return True


def _attempts(run: _Run, node: StepNode, handler: Callable[[_Run, StepNode, Any, Path], dict[str, Any]],
              arguments: Any, log_path: Path) -> dict[str, Any]:
    """Run the handler; after a fault that one of the step's RetryPolicies names, wait and run
    it again (each attempt in a fresh job folder; the log keeps every attempt)."""
    policies = retry_policies(node.definition)
    started, retry = time.monotonic(), 0
    while True:
        if node.type in JOB_NAME_VARIABLES:
            shutil.rmtree(run.jobs_dir / node.name, ignore_errors=True)
        try:
            return handler(run, node, arguments, log_path)
        except (StepFailed, JobFailed):
            raise
        except Exception as error:
            kind = exception_type(error)
            policy = matching_policy(policies, kind)
            retry += 1
            if policy is None or not policy.allows(retry, (time.monotonic() - started) / 60):
                raise
            delay = policy.delay(retry)
            log.warning("step %s: %s (%s); retry %d in %.0f s", node.name, error, kind, retry, delay)
            run.executions.count_attempt(run.execution_id, node.name)
            run.sleep(delay)


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
        if not store.has_object(bundle.s3_uri):
            store.put_bytes(bundle.s3_uri, bundle.data)


def _checked_plan(definition: Mapping[str, Any]) -> Plan:
    """The plan, with every step's CacheConfig and RetryPolicies read: a malformed one is
    refused before anything runs."""
    plan = build_plan(definition)
    for name in plan.order:
        cache_policy(plan.step(name).definition)
        retry_policies(plan.step(name).definition)
    return plan


def run_pipeline(definition_json: str, settings: Settings, parameters: Mapping[str, Any],
                 bundles: CodeBundles | None, *, conn: sqlite3.Connection | None = None,
                 display_name: str | None = None, use_cache: bool = True,
                 sleep: Callable[[float], None] = time.sleep) -> Execution:
    """Execute the definition; returns the finished execution record (Succeeded or Failed).
    Ctrl-C marks the running step and the execution Stopped, then goes on as KeyboardInterrupt.
    ``bundles`` go into the store first (None: the definition's code is there already);
    ``use_cache=False`` runs every step even where its CacheConfig would reuse a result;
    ``sleep`` waits between a RetryPolicy's attempts."""
    definition = json.loads(definition_json)
    values = parameter_values(definition, parameters)
    plan = _checked_plan(definition)
    store = ArtifactStore(settings.home)
    if bundles is not None:
        put_bundles(store, bundles)
    with _state(settings, conn) as state:
        executions = ExecutionStore(state)
        execution = executions.create(settings.pipeline_name, sha256_text(definition_json), values,
                                      display_name=display_name, definition_json=definition_json)
        run = _Run(definition, plan, execution, store, executions, ModelRegistry(state),
                   _jobs_dir(settings, execution), use_cache=use_cache, sleep=sleep)
        run.context = _context(run)
        return _drive(run)


def retry_execution(execution_id: str, settings: Settings, *, conn: sqlite3.Connection | None = None,
                    use_cache: bool = True, sleep: Callable[[float], None] = time.sleep) -> Execution:
    """Run a Failed or Stopped execution again from where it stopped, as RetryPipelineExecution
    does: the same id, definition and parameters; its Succeeded steps are kept, the rest run.
    The jobs a runner killed outright left running are stopped first; reopening settles its
    execution as Failed."""
    with _state(settings, conn) as state:
        executions = ExecutionStore(state)
        definition_json = executions.definition(execution_id)
        definition = json.loads(definition_json)
        plan = _checked_plan(definition)
        for pid in executions.leftover_jobs(execution_id):  # a killed runner's jobs may still run
            log.info("stopping job process group %d, left running by the execution's previous runner", pid)
            stop_process_group(pid)
        execution = executions.reopen(execution_id)
        run = _Run(definition, plan, execution, ArtifactStore(settings.home), executions, ModelRegistry(state),
                   _jobs_dir(settings, execution), use_cache=use_cache, sleep=sleep)
        run.context = _context(run)
        kept = [s for s in executions.steps(execution.execution_id) if s.status == "Succeeded"]
        for step in kept:
            if step.step_type == "Condition":
                run.outcomes[step.step_name] = bool(step.properties.get("Outcome"))
            _done(run, step.step_name, step.properties)
        log.info("retrying execution %s; keeping %s", execution.execution_id,
                 ", ".join(s.step_name for s in kept) or "no step")
        return _drive(run)


def _jobs_dir(settings: Settings, execution: Execution) -> Path:
    return Path(settings.home).resolve() / JOBS_DIR / execution.execution_id


@contextlib.contextmanager
def _state(settings: Settings, conn: sqlite3.Connection | None) -> Iterator[sqlite3.Connection]:
    """The given connection, or one opened (and closed) here."""
    if conn is not None:
        yield conn
        return
    conn = open_state(settings.home)
    try:
        yield conn
    finally:
        conn.close()


def _drive(run: _Run) -> Execution:
    """Run the plan to its end and record how the execution ended, whatever ends it: an
    execution is never left Executing by this process (it can then always be retried)."""
    try:
        _loop(run)
    except KeyboardInterrupt:  # Ctrl-C, and SIGTERM/SIGHUP, which the command turns into it
        _close_open_steps(run, "Stopped", "interrupted")
        run.executions.set_status(run.execution_id, "Stopped", failure_reason="interrupted (Ctrl-C or a stop signal)")
        raise
    except StepFailed as error:
        return run.executions.set_status(run.execution_id, "Failed", failure_reason=error.reason)
    except Exception as error:  # the runtime's own failure (the state database, say): record it, then report it
        reason = f"the local runtime failed: {type(error).__name__}: {error}"
        _close_open_steps(run, "Failed", reason)
        run.executions.set_status(run.execution_id, "Failed", failure_reason=reason)
        raise
    return run.executions.set_status(run.execution_id, "Succeeded")


def _close_open_steps(run: _Run, status: str, reason: str) -> None:
    for step in run.executions.steps(run.execution_id):
        if step.status in ("Starting", "Executing"):
            run.executions.mark_step(run.execution_id, step.step_name, status, failure_reason=reason)
