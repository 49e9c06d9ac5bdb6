"""Step caching, RetryPolicies and retrying a failed execution, on small hand-written definitions
whose Processing steps are real subprocesses (a line of Python each), so every case runs in
well under a second."""
from __future__ import annotations

import errno
import json
import subprocess
from pathlib import Path

import pytest

from pipeline.local.engine import jobs
from pipeline.local.engine.executor import retry_execution, run_pipeline
from pipeline.local.state.db import StateError, iso, open_state, utc_now
from pipeline.local.state.executions import ExecutionError, ExecutionStore
from pipeline.local.state.store import ArtifactStore
from pipeline.settings import Settings

# Appends a line to $COUNTER (how many times the step really ran) and writes argv[1] as output.
WRITE = ("import os, pathlib, sys; open(os.environ['COUNTER'], 'a').write('ran\\n'); "
         "pathlib.Path('/opt/ml/processing/out/word.txt').write_text(sys.argv[1])")
# Fails (exit 3) until the file $MARKER exists.
NEEDS_MARKER = "import os, sys; sys.exit(0 if os.path.exists(os.environ['MARKER']) else 3)"
CAPACITY = {"ExceptionType": ["SageMaker.CAPACITY_ERROR"], "IntervalSeconds": 5, "BackoffRate": 2.0, "MaxAttempts": 2}


def _step(name: str, script: str, arguments: list, env: dict, *, cache: str | None = "PT1H",
          retries: list | None = None) -> dict:
    step = {"Name": name, "Type": "Processing", "Arguments": {
        "AppSpecification": {"ImageUri": "local", "ContainerEntrypoint": ["python", "-c", script],
                             "ContainerArguments": arguments},
        "Environment": env,
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "out", "S3Output": {
            "LocalPath": "/opt/ml/processing/out", "S3UploadMode": "EndOfJob",
            "S3Uri": {"Std:Join": {"On": "/", "Values": ["s3://bucket/runs", {"Get": "Execution.PipelineExecutionId"},
                                                        name]}}}}]}}}
    if cache:
        step["CacheConfig"] = {"Enabled": True, "ExpireAfter": cache}
    if retries is not None:
        step["RetryPolicies"] = retries
    return step


def _definition(*steps: dict) -> str:
    return json.dumps({"Version": "2020-12-01", "Parameters": [{"Name": "Word", "Type": "String", "DefaultValue": "hello"}],
                       "Steps": list(steps)}, sort_keys=True)


@pytest.fixture
def env(tmp_path) -> dict:
    return {"COUNTER": str(tmp_path / "counter"), "MARKER": str(tmp_path / "marker")}


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home")


def _write_step(env: dict, **options) -> dict:
    return _step("Write", WRITE, [{"Get": "Parameters.Word"}], {"COUNTER": env["COUNTER"]}, **options)


def _runs(env: dict) -> int:
    counter = Path(env["COUNTER"])
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def _steps(settings: Settings, execution) -> dict:
    return {s.step_name: s for s in ExecutionStore(open_state(settings.home)).steps(execution.execution_id)}


# --- caching ----------------------------------------------------------------------------------

def test_a_step_with_the_same_key_is_taken_from_the_cache(settings, env, caplog):
    definition = _definition(_write_step(env))
    first = run_pipeline(definition, settings, {}, None)
    caplog.set_level("INFO", logger="pipeline.local.engine.executor")
    second = run_pipeline(definition, settings, {}, None)
    assert (first.status, second.status) == ("Succeeded", "Succeeded")
    assert _runs(env) == 1
    original, reused = _steps(settings, first)["Write"], _steps(settings, second)["Write"]
    assert not original.cache_hit
    assert reused.cache_source_execution_id == first.execution_id and reused.seconds == 0
    # Later steps read the outputs of the execution that really ran the step.
    assert reused.properties == original.properties
    assert f"cache hit, reusing the result of execution {first.execution_id}" in caplog.text


def test_a_changed_argument_runs_the_step_again(settings, env):
    definition = _definition(_write_step(env))
    run_pipeline(definition, settings, {}, None)
    second = run_pipeline(definition, settings, {"Word": "other"}, None)
    assert _runs(env) == 2 and not _steps(settings, second)["Write"].cache_hit
    uri = _steps(settings, second)["Write"].properties["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
    assert ArtifactStore(settings.home).read_bytes(f"{uri}/word.txt") == b"other"


def test_use_cache_false_runs_every_step(settings, env):
    definition = _definition(_write_step(env))
    run_pipeline(definition, settings, {}, None)
    second = run_pipeline(definition, settings, {}, None, use_cache=False)
    assert _runs(env) == 2 and not _steps(settings, second)["Write"].cache_hit


def test_a_step_without_cache_config_always_runs(settings, env):
    definition = _definition(_write_step(env, cache=None))
    run_pipeline(definition, settings, {}, None)
    run_pipeline(definition, settings, {}, None)
    assert _runs(env) == 2


def test_an_expired_entry_is_not_reused(settings, env):
    definition = _definition(_write_step(env, cache="PT1H"))
    first = run_pipeline(definition, settings, {}, None)
    conn = open_state(settings.home)
    two_hours_ago = iso(utc_now().replace(microsecond=0) - __import__("datetime").timedelta(hours=2))
    conn.execute("UPDATE steps SET end_time = ? WHERE execution_id = ?", (two_hours_ago, first.execution_id))
    second = run_pipeline(definition, settings, {}, None)
    assert _runs(env) == 2 and not _steps(settings, second)["Write"].cache_hit


def test_reusing_a_result_does_not_make_it_younger(settings, env):
    """Expiry counts from the run that really ran the step, not from the last reuse."""
    definition = _definition(_write_step(env, cache="PT1H"))
    first = run_pipeline(definition, settings, {}, None)
    run_pipeline(definition, settings, {}, None)  # a cache hit, ending now
    conn = open_state(settings.home)
    two_hours_ago = iso(utc_now().replace(microsecond=0) - __import__("datetime").timedelta(hours=2))
    conn.execute("UPDATE steps SET end_time = ? WHERE execution_id = ?", (two_hours_ago, first.execution_id))
    third = run_pipeline(definition, settings, {}, None)
    assert _runs(env) == 2 and not _steps(settings, third)["Write"].cache_hit


def test_an_entry_whose_outputs_are_gone_is_not_reused(settings, env):
    definition = _definition(_write_step(env))
    first = run_pipeline(definition, settings, {}, None)
    uri = _steps(settings, first)["Write"].properties["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
    (ArtifactStore(settings.home).path(uri) / "word.txt").unlink()
    (ArtifactStore(settings.home).path(uri)).rmdir()
    second = run_pipeline(definition, settings, {}, None)
    assert second.status == "Succeeded" and _runs(env) == 2


# --- retry policies ---------------------------------------------------------------------------

def _popen_failing(monkeypatch, times: int) -> list:
    """subprocess.Popen in the job runner fails ``times`` times as fork does when the machine
    has no room for another process (EAGAIN), then works."""
    calls, real = [], subprocess.Popen

    def popen(*args, **kwargs):
        calls.append(args[0])
        if len(calls) <= times:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        return real(*args, **kwargs)

    monkeypatch.setattr(jobs.subprocess, "Popen", popen)
    return calls


def test_a_transient_fault_is_retried_as_the_policy_says(settings, env, monkeypatch):
    _popen_failing(monkeypatch, times=1)
    waits: list[float] = []
    execution = run_pipeline(_definition(_write_step(env, retries=[CAPACITY])), settings, {}, None, sleep=waits.append)
    step = _steps(settings, execution)["Write"]
    assert execution.status == "Succeeded" and waits == [5.0]
    assert step.attempts == 2 and _runs(env) == 1


def test_retries_stop_after_max_attempts_with_backoff(settings, env, monkeypatch):
    calls = _popen_failing(monkeypatch, times=10)
    waits: list[float] = []
    execution = run_pipeline(_definition(_write_step(env, retries=[CAPACITY])), settings, {}, None, sleep=waits.append)
    assert execution.status == "Failed" and "Resource temporarily unavailable" in execution.failure_reason
    assert waits == [5.0, 10.0] and len(calls) == 3 and _steps(settings, execution)["Write"].attempts == 3


def test_a_fault_no_policy_names_is_not_retried(settings, env, monkeypatch):
    _popen_failing(monkeypatch, times=1)
    waits: list[float] = []
    throttling = {**CAPACITY, "ExceptionType": ["Step.THROTTLING"]}
    execution = run_pipeline(_definition(_write_step(env, retries=[throttling])), settings, {}, None, sleep=waits.append)
    assert execution.status == "Failed" and waits == []


def test_a_scripts_own_failure_is_never_retried(settings, env):
    every_type = {**CAPACITY, "ExceptionType": ["Step.SERVICE_FAULT", "Step.THROTTLING", "SageMaker.JOB_INTERNAL_ERROR",
                                                "SageMaker.CAPACITY_ERROR", "SageMaker.RESOURCE_LIMIT"]}
    waits: list[float] = []
    step = _step("Check", NEEDS_MARKER, [], {"MARKER": env["MARKER"]}, retries=[every_type])
    execution = run_pipeline(_definition(step), settings, {}, None, sleep=waits.append)
    assert execution.status == "Failed" and "exited with code 3" in execution.failure_reason and waits == []


@pytest.mark.parametrize("bad", [{"CacheConfig": {"Enabled": True, "ExpireAfter": "one day"}},
                                 {"RetryPolicies": [{"ExceptionType": ["Step.OOPS"], "MaxAttempts": 2}]},
                                 {"RetryPolicies": [{"ExceptionType": ["Step.THROTTLING"], "MaxAttempts": "x"}]},
                                 {"RetryPolicies": [{"ExceptionType": ["Step.THROTTLING"], "BackoffRate": 0.5,
                                                     "MaxAttempts": 2}]},
                                 {"RetryPolicies": [{"ExceptionType": ["Step.THROTTLING"]}]},  # no limit at all
                                 {"RetryPolicies": [{"ExceptionType": ["Step.THROTTLING"], "MaxAttempts": 2,
                                                     "ExpireAfterMin": 5}]}])
def test_a_malformed_policy_is_refused_before_anything_runs(settings, env, bad):
    step = {**_write_step(env), **bad}
    with pytest.raises(StateError):
        run_pipeline(_definition(step), settings, {}, None)
    assert ExecutionStore(open_state(settings.home)).list_executions() == [] and _runs(env) == 0


# --- retrying an execution ----------------------------------------------------------------------

def _two_steps(env: dict) -> str:
    """Write, then Check (which reads Write's output URI, so it depends on it) fails until the marker exists."""
    check = _step("Check", NEEDS_MARKER, [{"Get": "Steps.Write.ProcessingOutputConfig.Outputs['out'].S3Output.S3Uri"}],
                  {"MARKER": env["MARKER"]}, cache=None)
    return _definition(_write_step(env, cache=None), check)


def test_a_failed_execution_is_retried_from_the_failed_step(settings, env):
    failed = run_pipeline(_two_steps(env), settings, {}, None)
    assert failed.status == "Failed" and "Step Check failed" in failed.failure_reason
    before = _steps(settings, failed)
    Path(env["MARKER"]).touch()  # what the user fixes before retrying

    retried = retry_execution(failed.execution_id, settings)
    after = _steps(settings, retried)
    assert retried.execution_id == failed.execution_id and retried.status == "Succeeded"
    assert retried.failure_reason is None and retried.end_time is not None
    assert _runs(env) == 1  # Write was kept, not run again
    assert after["Write"].start_time == before["Write"].start_time and after["Write"].attempts == 1
    assert after["Check"].status == "Succeeded" and after["Check"].attempts == 2
    log = Path(after["Check"].log_path).read_text()
    assert log.count("$ ") == 2  # both attempts are in the step's log


def test_a_retry_runs_the_definition_the_execution_started_with(settings, env):
    failed = run_pipeline(_two_steps(env), settings, {"Word": "kept"}, None)
    Path(env["MARKER"]).touch()
    retried = retry_execution(failed.execution_id, settings)
    assert retried.parameters["Word"] == "kept"
    assert ExecutionStore(open_state(settings.home)).definition(retried.execution_id) == _two_steps(env)


def test_only_a_failed_or_stopped_execution_can_be_retried(settings, env):
    done = run_pipeline(_definition(_write_step(env)), settings, {}, None)
    with pytest.raises(ExecutionError, match="only a Failed or Stopped execution can be retried"):
        retry_execution(done.execution_id, settings)
    with pytest.raises(ExecutionError, match="no execution"):
        retry_execution("nosuchexecut", settings)
