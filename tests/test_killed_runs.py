"""A run whose process is killed outright (SIGKILL, a power cut) is settled, not left Executing:
any read of the executions marks it Failed with the time its runner ended, its unfinished step
too, and stops the job it left running; a live run in another process is left alone."""
from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.local.processes import process_alive
from pipeline.local.state.db import connect, parse_iso, state_path
from pipeline.local.state.executions import ExecutionError, ExecutionStore

SHA = "ab" * 32
ROOT = Path(__file__).resolve().parents[1]
# The pipeline's steps in order, with their types: a runner can be killed in any of them.
STEPS = [("Preprocess", "Processing"), ("Train", "Training"), ("Evaluate", "Processing"),
         ("CheckAccuracy", "Condition"), ("CheckSentenceAccuracy", "Condition"), ("Register", "RegisterModel")]

RUNNER = """
import os, signal, subprocess, sys, time
from pipeline.local.state.db import connect
from pipeline.local.state.executions import ExecutionStore

store = ExecutionStore(connect(sys.argv[1]))
run = store.create("p", "ab" * 32, {{}})
for name, kind in {before!r}:
    store.start_step(run.execution_id, name, kind)
    store.mark_step(run.execution_id, name, "Succeeded", properties={{}})
store.start_step(run.execution_id, {step!r}, {kind!r})
if {with_job!r}:
    job = subprocess.Popen(["sleep", "300"], start_new_session=True)
    store.set_job_pid(run.execution_id, {step!r}, job.pid)
if {stopping!r}:
    store.set_status(run.execution_id, "Stopping")
print(run.execution_id, flush=True)
if {die!r}:
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(300)
"""


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return state_path(tmp_path / ".mlops")


@pytest.fixture
def store(path: Path):
    with contextlib.closing(connect(path)) as connection:
        yield ExecutionStore(connection)


def _runner(path: Path, step: str = "Train", *, die: bool, with_job: bool = False,
            stopping: bool = False) -> tuple[subprocess.Popen, str]:
    """A process that runs an execution up to ``step`` (its earlier steps Succeeded), then dies
    by SIGKILL or lives on; returns it and the execution's id."""
    names = [name for name, _ in STEPS]
    before = STEPS[:names.index(step)]
    script = RUNNER.format(before=before, step=step, kind=dict(STEPS)[step], with_job=with_job,
                           stopping=stopping, die=die)
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), str(path)], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    execution_id = process.stdout.readline().strip()
    assert execution_id, "the runner printed no execution id"
    if die:
        assert process.wait(timeout=30) == -signal.SIGKILL
    return process, execution_id


@pytest.mark.parametrize("step", [name for name, _ in STEPS])
def test_a_run_killed_in_any_step_reads_as_failed_with_its_step(path: Path, store: ExecutionStore, step: str) -> None:
    _, execution_id = _runner(path, step, die=True)
    execution, steps = store.describe(execution_id)
    assert execution.status == "Failed" and execution.end_time is not None
    assert re.match(r"the process running it \(pid \d+\) ended at about \d{4}-\d\d-\d\dT[\d:.]+Z, before the "
                    r"execution finished$", execution.failure_reason or "")
    by_name = {s.step_name: s for s in steps}
    assert by_name[step].status == "Failed" and by_name[step].end_time == execution.end_time
    assert "ended at about" in (by_name[step].failure_reason or "")
    assert all(s.status == "Succeeded" for s in steps if s.step_name != step)
    assert [e.status for e in store.list_executions()] == ["Failed"]


def test_the_time_a_runner_ended_is_the_last_it_was_seen_working(path: Path, store: ExecutionStore) -> None:
    _, execution_id = _runner(path, die=True)
    seen = "2099-01-01T00:00:00.000Z"  # a lease renewed later than every record: the runner's last sign
    store.conn.execute("UPDATE executions SET runner_seen = ? WHERE execution_id = ?", (seen, execution_id))
    execution, steps = store.describe(execution_id)
    assert execution.end_time == seen and f"ended at about {seen}" in (execution.failure_reason or "")
    train = next(s for s in steps if s.step_name == "Train")
    assert train.seconds == pytest.approx((parse_iso(seen) - parse_iso(train.start_time or "")).total_seconds())


def test_a_live_run_in_another_process_is_left_alone(path: Path, store: ExecutionStore) -> None:
    process, execution_id = _runner(path, "Evaluate", die=False)
    try:
        assert store.settle_abandoned() == []
        execution, steps = store.describe(execution_id)
        assert execution.status == "Executing" and steps[-1].status == "Executing"
        with pytest.raises(ExecutionError, match=rf"is Executing in process {process.pid}; only a Failed"):
            store.reopen(execution_id)
    finally:
        process.kill()
        process.wait(timeout=30)
    assert store.get(execution_id).status == "Executing"  # a bare get does not settle; a listing does
    assert [e.status for e in store.list_executions()] == ["Failed"]


def test_a_pid_given_to_a_later_process_is_not_the_runner(store: ExecutionStore) -> None:
    """This process is alive, but it is not the process that started the execution."""
    run = store.create("p", SHA, {})
    store.start_step(run.execution_id, "Train", "Training")
    store.conn.execute("UPDATE executions SET runner_identity = 'another-boot:1' WHERE execution_id = ?",
                       (run.execution_id,))
    assert [e.execution_id for e in store.settle_abandoned()] == [run.execution_id]
    assert store.step(run.execution_id, "Train").status == "Failed"


def test_this_process_own_run_is_alive(store: ExecutionStore) -> None:
    run = store.create("p", SHA, {})
    assert store.settle_abandoned() == [] and store.describe(run.execution_id)[0].status == "Executing"


def test_a_run_killed_while_stopping_reads_as_stopped(path: Path, store: ExecutionStore) -> None:
    _, execution_id = _runner(path, die=True, stopping=True)
    execution, steps = store.describe(execution_id)
    assert execution.status == "Stopped" and steps[-1].status == "Stopped"


def test_the_job_a_killed_runner_left_is_stopped_and_the_run_can_be_retried(path: Path, store: ExecutionStore) -> None:
    _, execution_id = _runner(path, die=True, with_job=True)
    job = store.conn.execute("SELECT job_pid FROM steps WHERE step_name = 'Train'").fetchone()["job_pid"]
    assert process_alive(job)
    store.list_executions()
    deadline = time.monotonic() + 10
    while process_alive(job) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process_alive(job), "the orphaned job was not stopped"
    assert store.leftover_jobs(execution_id) == []
    reopened = store.reopen(execution_id)
    assert reopened.status == "Executing" and reopened.failure_reason is None
    assert store.start_step(execution_id, "Train", "Training").attempts == 2


def test_a_lease_is_renewed_only_by_its_own_runner(store: ExecutionStore) -> None:
    run = store.create("p", SHA, {})
    other = store.create("p", SHA, {})
    store.conn.execute("UPDATE executions SET runner_pid = 1, runner_seen = 'old' WHERE execution_id = ?",
                       (other.execution_id,))
    store.conn.execute("UPDATE executions SET runner_seen = 'old' WHERE execution_id = ?", (run.execution_id,))
    store.renew_lease(run.execution_id)
    store.renew_lease(other.execution_id)
    seen = dict(store.conn.execute("SELECT execution_id, runner_seen FROM executions").fetchall())
    assert seen[run.execution_id] != "old" and seen[other.execution_id] == "old"



def test_a_job_pid_without_its_start_time_is_never_signalled(path: Path, store: ExecutionStore) -> None:
    """A pid alone (a step recorded before start times were, or where there is no /proc) may be
    another process by now: settling and retrying leave it alone."""
    _, execution_id = _runner(path, die=True)
    bystander = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        store.conn.execute("UPDATE steps SET job_pid = ?, job_identity = NULL WHERE execution_id = ?",
                           (bystander.pid, execution_id))
        assert store.describe(execution_id)[0].status == "Failed"
        assert store.leftover_jobs(execution_id) == []
        time.sleep(0.2)
        assert bystander.poll() is None, "an unrelated process was signalled"
    finally:
        bystander.kill()
        bystander.wait(timeout=30)


def test_a_lease_that_cannot_be_written_does_not_stop_the_job(monkeypatch) -> None:
    """The lease only sharpens a killed runner's end time; a busy database must not fail a step."""
    import sqlite3
    from types import SimpleNamespace

    from pipeline.local.engine import executor

    def locked(execution_id: str) -> None:
        raise sqlite3.OperationalError("database is locked")

    run = SimpleNamespace(execution_id="abc", executions=SimpleNamespace(renew_lease=locked))
    executor._renew_lease(run)  # type: ignore[arg-type]  # logs and goes on
