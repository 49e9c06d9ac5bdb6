"""Pipeline executions and their steps, as SageMaker's DescribePipelineExecution and
ListPipelineExecutionSteps report them, kept in the local state database.

The executor writes here as it goes (so a second process can watch an execution live), later
steps read earlier steps' ``properties`` (what ``Get: Steps.X.…`` resolves against), and the
cache lookup finds a previous successful run of a step with the same resolved arguments.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import sqlite3
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from mlops_rules.executions import EXECUTION_RUNNING, EXECUTION_STATUSES, EXECUTION_TERMINAL, ExecutionRecord
from pipeline.local.aws_identity import REGION, execution_arn
from pipeline.local.processes import process_identity, process_is
from pipeline.local.state.db import (
    Clock,
    StateError,
    iso,
    parse_iso,
    read_transaction,
    sha256_text,
    to_json,
    utc_now,
    write_transaction,
)

# SageMaker's StepStatus, plus Skipped for a step on a condition's branch not taken (SageMaker
# does not list those at all; the executor may record them or not).
STEP_STATUSES = ("Starting", "Executing", "Stopping", "Stopped", "Failed", "Succeeded", "Skipped")
STEP_TERMINAL = ("Stopped", "Failed", "Succeeded", "Skipped")
log = logging.getLogger(__name__)
ID_ALPHABET = string.ascii_lowercase + string.digits
ID_LENGTH = 12
UNFINISHED_STEP = ("Starting", "Executing", "Stopping")
RUNNER_LEASE_S = 10.0  # how often a runner renews runner_seen while a job runs: the "about" of the time it ended


class ExecutionError(StateError):
    """An unknown execution or step, or a status change that cannot happen."""


@dataclass(frozen=True)
class Execution:
    execution_id: str
    arn: str
    pipeline_name: str
    definition_sha256: str
    parameters: dict[str, Any]
    status: str
    start_time: str
    end_time: str | None
    last_modified_time: str
    failure_reason: str | None
    display_name: str | None

    def record(self) -> ExecutionRecord:
        """The execution in the shape both runtimes answer with (mlops_rules.executions)."""
        return ExecutionRecord(self.arn, self.status, self.start_time, self.end_time, self.failure_reason,
                               self.display_name)


@dataclass(frozen=True)
class Step:
    execution_id: str
    step_name: str
    step_type: str
    status: str
    start_time: str | None
    end_time: str | None
    seconds: float | None
    failure_reason: str | None
    log_path: str | None
    properties: dict[str, Any]
    cache_key: str | None
    cache_source_execution_id: str | None
    attempts: int

    @property
    def cache_hit(self) -> bool:
        return self.cache_source_execution_id is not None

    @property
    def hosts(self) -> int | None:
        """How many instances the step's job ran on (None for a step that runs no job)."""
        resources = (self.properties.get("ProcessingResources") or {}).get("ClusterConfig") or \
            self.properties.get("ResourceConfig") or {}
        count = resources.get("InstanceCount")
        return int(count) if count else None


def new_execution_id() -> str:
    """12 lowercase alphanumerics, like SageMaker's pipeline execution ids."""
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


def _execution(row: sqlite3.Row) -> Execution:
    return Execution(row["execution_id"], row["arn"], row["pipeline_name"], row["definition_sha256"],
                     json.loads(row["parameters"]), row["status"], row["start_time"], row["end_time"],
                     row["last_modified_time"], row["failure_reason"], row["display_name"])


def _step(row: sqlite3.Row) -> Step:
    return Step(row["execution_id"], row["step_name"], row["step_type"], row["status"], row["start_time"],
                row["end_time"], row["seconds"], row["failure_reason"], row["log_path"], json.loads(row["properties"]),
                row["cache_key"], row["cache_source_execution_id"], row["attempts"])


class ExecutionStore:
    """Executions and steps in one connection's database (one store per thread or process)."""

    def __init__(self, conn: sqlite3.Connection, *, clock: Clock = utc_now, region: str = REGION) -> None:
        self.conn, self.clock, self.region = conn, clock, region

    # --- executions -----------------------------------------------------------------------
    def create(self, pipeline_name: str, definition_sha256: str, parameters: Mapping[str, Any],
               *, display_name: str | None = None, definition_json: str | None = None) -> Execution:
        """A new execution, status Executing. The id is drawn again on the (unlikely) clash.
        ``definition_json`` (whose sha256 must be ``definition_sha256``) is kept for retries."""
        if definition_json is not None and sha256_text(definition_json) != definition_sha256:
            raise ExecutionError("the definition does not match its sha256; build it again")
        now = iso(self.clock())
        for _ in range(5):
            execution_id = new_execution_id()
            try:
                with write_transaction(self.conn):
                    if definition_json is not None:
                        self.conn.execute("INSERT OR IGNORE INTO pipeline_definitions VALUES (?,?,?)",
                                          (definition_sha256, definition_json, now))
                    self.conn.execute(
                        "INSERT INTO executions (execution_id, arn, pipeline_name, definition_sha256, parameters, "
                        "display_name, status, start_time, last_modified_time, runner_pid, runner_identity, runner_seen) "
                        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                        (execution_id, execution_arn(pipeline_name, execution_id, region=self.region), pipeline_name,
                         definition_sha256, to_json(dict(parameters)), display_name, "Executing", now, now,
                         *_this_runner(now)))
            except sqlite3.IntegrityError:
                continue
            return self.get(execution_id)
        raise ExecutionError("could not draw a free execution id; check the state database for damage")

    def get(self, execution: str) -> Execution:
        """One execution, by id or ARN."""
        row = self.conn.execute("SELECT * FROM executions WHERE execution_id = ? OR arn = ?",
                                (execution, execution)).fetchone()
        if row is None:
            raise ExecutionError(f"no execution {execution!r}; list the executions to see their ids")
        return _execution(row)

    def list_executions(self, pipeline_name: str | None = None, limit: int | None = None) -> list[Execution]:
        """Newest first, like ListPipelineExecutions' default order; abandoned ones settled first."""
        self.settle_abandoned()
        sql = "SELECT * FROM executions" + (" WHERE pipeline_name = ?" if pipeline_name else "")
        sql += " ORDER BY start_time DESC, seq DESC" + (" LIMIT ?" if limit else "")
        args = [a for a in (pipeline_name, limit) if a]
        return [_execution(r) for r in self.conn.execute(sql, args)]

    def describe(self, execution: str) -> tuple[Execution, list[Step]]:
        """An execution and its steps, read from one snapshot; abandoned executions settled first."""
        self.settle_abandoned()
        with read_transaction(self.conn):
            found = self.get(execution)
            return found, self.steps(found.execution_id)

    def set_status(self, execution_id: str, status: str, *, failure_reason: str | None = None) -> Execution:
        """Move an execution on; a terminal status also sets the end time. A finished execution
        stays finished (Stopping may still become Stopped/Failed/Succeeded)."""
        _check(status, EXECUTION_STATUSES, "execution status")
        now = iso(self.clock())
        with write_transaction(self.conn):
            current = self.get(execution_id)
            if current.status in EXECUTION_TERMINAL:
                raise ExecutionError(f"execution {execution_id} already ended as {current.status}; start a new one")
            end = now if status in EXECUTION_TERMINAL else None
            self.conn.execute("UPDATE executions SET status = ?, end_time = ?, last_modified_time = ?, "
                              "failure_reason = coalesce(?, failure_reason) WHERE execution_id = ?",
                              (status, end, now, failure_reason, current.execution_id))
        return self.get(execution_id)

    def definition(self, execution: str) -> str:
        """The definition JSON an execution ran (what a retry runs again)."""
        found = self.get(execution)
        row = self.conn.execute("SELECT definition FROM pipeline_definitions WHERE sha256 = ?",
                                (found.definition_sha256,)).fetchone()
        if row is None:
            raise ExecutionError(f"execution {found.execution_id} was started without keeping its definition; "
                                 "start a new execution instead of retrying this one")
        return row["definition"]

    def reopen(self, execution: str) -> Execution:
        """RetryPipelineExecution: a Failed or Stopped execution runs again under its own id, in
        this process. Its Succeeded steps stay; its Skipped steps are forgotten (the conditions
        decide again); its Failed and Stopped steps start again when their turn comes. One whose
        runner was killed is settled (Failed) first, so it can be retried too."""
        self.settle_abandoned()
        now = iso(self.clock())
        with write_transaction(self.conn):
            current = self.get(execution)
            if current.status not in ("Failed", "Stopped"):
                runner = self._row(current.execution_id)["runner_pid"]
                raise ExecutionError(f"execution {current.execution_id} is {current.status}"
                                     + (f" in process {runner}" if current.status == "Executing" and runner else "")
                                     + "; only a Failed or Stopped execution can be retried")
            self.conn.execute("DELETE FROM steps WHERE execution_id = ? AND status = 'Skipped'", (current.execution_id,))
            self.conn.execute("UPDATE executions SET status = 'Executing', end_time = NULL, failure_reason = NULL, "
                              "last_modified_time = ?, runner_pid = ?, runner_identity = ?, runner_seen = ? "
                              "WHERE execution_id = ?", (now, *_this_runner(now), current.execution_id))
        return self.get(current.execution_id)

    # --- runners: who runs an execution, and what is left when one is killed ----------------
    def renew_lease(self, execution_id: str) -> None:
        """This process is still at work on the execution: its ``runner_seen`` becomes now, so
        that if it is killed, the time it ended is known to within a renewal."""
        with write_transaction(self.conn):
            self.conn.execute("UPDATE executions SET runner_seen = ? WHERE execution_id = ? AND runner_pid = ?",
                              (iso(self.clock()), execution_id, os.getpid()))

    def settle_abandoned(self) -> list[Execution]:
        """Executions whose runner process is gone (killed outright, a power cut), settled as
        SageMaker never leaves an execution whose work has stopped: Executing becomes Failed
        (Stopping becomes Stopped), with the time the runner ended (about: when it was last seen
        working), and so do its unfinished steps; a job such a runner left running is told to
        stop. A live runner, in any process, is left alone. Returns the executions settled."""
        if self.conn.execute("SELECT 1 FROM executions WHERE status IN ('Executing', 'Stopping') LIMIT 1").fetchone() is None:
            return []  # the common case, without taking the write lock
        with write_transaction(self.conn):
            rows = self.conn.execute("SELECT * FROM executions WHERE status IN ('Executing', 'Stopping')").fetchall()
            settled = [self._settle(row) for row in rows if not process_is(row["runner_pid"], row["runner_identity"])]
        for execution in settled:
            for pid in self.leftover_jobs(execution.execution_id):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGTERM)
        return settled

    def _settle(self, row: sqlite3.Row) -> Execution:
        """Inside a write transaction: one abandoned execution and its unfinished steps ended."""
        execution_id, pid = row["execution_id"], row["runner_pid"]
        steps = self.steps(execution_id)
        ended = max([row["runner_seen"] or "", row["last_modified_time"],
                     *(t for s in steps for t in (s.start_time, s.end_time) if t)])
        status = "Stopped" if row["status"] == "Stopping" else "Failed"
        self.conn.execute("UPDATE executions SET status = ?, end_time = ?, last_modified_time = ?, failure_reason = ? "
                          "WHERE execution_id = ?",
                          (status, ended, iso(self.clock()), f"the process running it (pid {pid}) ended at about "
                           f"{ended}, before the execution finished", execution_id))
        for step in steps:
            if step.status in UNFINISHED_STEP:
                seconds = (parse_iso(ended) - parse_iso(step.start_time)).total_seconds() if step.start_time else None
                self.conn.execute(
                    "UPDATE steps SET status = ?, end_time = ?, seconds = ?, failure_reason = ? "
                    "WHERE execution_id = ? AND step_name = ?",
                    (status, ended, seconds, f"the process running the execution (pid {pid}) ended at about {ended} "
                     "while this step ran", execution_id, step.step_name))
        log.warning("execution %s: its runner (pid %s) is gone; recorded as %s", execution_id, pid, status)
        return self.get(execution_id)

    def leftover_jobs(self, execution: str) -> list[int]:
        """The job process groups still running for an execution that no live runner holds (a
        killed runner's jobs run on in their own sessions); [] while its runner lives. Only a job
        whose start time was recorded counts: a pid alone may belong to another process by now
        (a job recorded before start times were, or where there is no /proc, is left alone)."""
        with read_transaction(self.conn):
            current = self.get(execution)
            row = self._row(current.execution_id)
            if current.status in EXECUTION_RUNNING and process_is(row["runner_pid"], row["runner_identity"]):
                return []
            rows = self.conn.execute("SELECT job_pid, job_identity FROM steps WHERE execution_id = ? "
                                     "AND job_pid IS NOT NULL AND job_identity IS NOT NULL",
                                     (current.execution_id,)).fetchall()
        return [r["job_pid"] for r in rows if process_is(r["job_pid"], r["job_identity"])]

    def _row(self, execution_id: str) -> sqlite3.Row:
        return self.conn.execute("SELECT * FROM executions WHERE execution_id = ?", (execution_id,)).fetchone()

    # --- steps ----------------------------------------------------------------------------
    def steps(self, execution_id: str) -> list[Step]:
        """The steps in the order they started (ListPipelineExecutionSteps lists newest first;
        the CLI can reverse)."""
        rows = self.conn.execute("SELECT * FROM steps WHERE execution_id = ? ORDER BY seq", (execution_id,))
        return [_step(r) for r in rows]

    def step(self, execution_id: str, step_name: str) -> Step:
        row = self.conn.execute("SELECT * FROM steps WHERE execution_id = ? AND step_name = ?",
                                (execution_id, step_name)).fetchone()
        if row is None:
            raise ExecutionError(f"execution {execution_id} has no step {step_name!r}; show the execution to see its steps")
        return _step(row)

    def start_step(self, execution_id: str, step_name: str, step_type: str, *, status: str = "Executing",
                   cache_key: str | None = None, log_path: str | None = None) -> Step:
        """Record a step starting (or starting again: a retry after Failed or Stopped counts one
        more attempt)."""
        _check(status, ("Starting", "Executing"), "starting status")
        now = iso(self.clock())
        with write_transaction(self.conn):
            self.get(execution_id)
            row = self.conn.execute("SELECT status FROM steps WHERE execution_id = ? AND step_name = ?",
                                    (execution_id, step_name)).fetchone()
            if row is None:
                self.conn.execute(
                    "INSERT INTO steps (execution_id, step_name, step_type, status, start_time, cache_key, log_path, "
                    "attempts) VALUES (?,?,?,?,?,?,?,1)", (execution_id, step_name, step_type, status, now, cache_key, log_path))
            elif row["status"] in ("Failed", "Stopped", "Starting"):
                self.conn.execute(
                    "UPDATE steps SET status = ?, start_time = ?, end_time = NULL, seconds = NULL, failure_reason = NULL, "
                    "cache_key = coalesce(?, cache_key), log_path = coalesce(?, log_path), "
                    "attempts = attempts + (status IN ('Failed', 'Stopped')) WHERE execution_id = ? AND step_name = ?",
                    (status, now, cache_key, log_path, execution_id, step_name))
            else:
                raise ExecutionError(f"step {step_name!r} of {execution_id} is {row['status']}; it cannot start again")
        return self.step(execution_id, step_name)

    def mark_step(self, execution_id: str, step_name: str, status: str, *, properties: Mapping[str, Any] | None = None,
                  failure_reason: str | None = None, log_path: str | None = None) -> Step:
        """Set a started step's status; a terminal status sets end time and seconds, and
        Succeeded stores the properties later steps read."""
        _check(status, STEP_STATUSES, "step status")
        now = self.clock()
        with write_transaction(self.conn):
            current = self.step(execution_id, step_name)
            if current.status in STEP_TERMINAL:
                raise ExecutionError(f"step {step_name!r} of {execution_id} already ended as {current.status}")
            end = iso(now) if status in STEP_TERMINAL else None
            seconds = (now - parse_iso(current.start_time)).total_seconds() if end and current.start_time else None
            self.conn.execute(
                "UPDATE steps SET status = ?, end_time = ?, seconds = ?, failure_reason = coalesce(?, failure_reason), "
                "properties = coalesce(?, properties), log_path = coalesce(?, log_path) "
                "WHERE execution_id = ? AND step_name = ?",
                (status, end, seconds, failure_reason, to_json(dict(properties)) if properties is not None else None,
                 log_path, execution_id, step_name))
        return self.step(execution_id, step_name)

    def set_job_pid(self, execution_id: str, step_name: str, pid: int) -> None:
        """The job process of a running step (its process group), so that a later retry can
        stop a job its killed runner left behind."""
        with write_transaction(self.conn):
            self.conn.execute("UPDATE steps SET job_pid = ?, job_identity = ? WHERE execution_id = ? AND step_name = ?",
                              (pid, process_identity(pid), execution_id, step_name))

    def count_attempt(self, execution_id: str, step_name: str) -> Step:
        """A RetryPolicy runs an Executing step again: one more attempt, same record."""
        with write_transaction(self.conn):
            current = self.step(execution_id, step_name)
            if current.status != "Executing":
                raise ExecutionError(f"step {step_name!r} of {execution_id} is {current.status}, not Executing")
            self.conn.execute("UPDATE steps SET attempts = attempts + 1 WHERE execution_id = ? AND step_name = ?",
                              (execution_id, step_name))
        return self.step(execution_id, step_name)

    def record_skipped(self, execution_id: str, step_name: str, step_type: str) -> Step:
        """A step on a condition's branch not taken: never started, recorded for the record."""
        with write_transaction(self.conn):
            self.get(execution_id)
            self.conn.execute("INSERT INTO steps (execution_id, step_name, step_type, status, attempts) "
                              "VALUES (?,?,?,'Skipped',0)", (execution_id, step_name, step_type))
        return self.step(execution_id, step_name)

    def record_cache_hit(self, execution_id: str, source: Step) -> Step:
        """A step satisfied from the cache: Succeeded at once, with the source's properties and
        the execution that really ran it (the original, even if the source was itself a hit).
        In a retried execution it replaces the step's Failed or Stopped record."""
        now = iso(self.clock())
        origin = source.cache_source_execution_id or source.execution_id
        with write_transaction(self.conn):
            self.get(execution_id)
            row = self.conn.execute("SELECT status FROM steps WHERE execution_id = ? AND step_name = ?",
                                    (execution_id, source.step_name)).fetchone()
            if row is not None and row["status"] not in ("Failed", "Stopped"):
                raise ExecutionError(f"step {source.step_name!r} of {execution_id} is {row['status']}; "
                                     "it cannot be taken from the cache")
            self.conn.execute(
                "INSERT INTO steps (execution_id, step_name, step_type, status, start_time, end_time, seconds, "
                "log_path, properties, cache_key, cache_source_execution_id, attempts) "
                "VALUES (?,?,?,'Succeeded',?,?,0,?,?,?,?,0) ON CONFLICT (execution_id, step_name) DO UPDATE SET "
                "status = 'Succeeded', start_time = excluded.start_time, end_time = excluded.end_time, seconds = 0, "
                "failure_reason = NULL, log_path = excluded.log_path, properties = excluded.properties, "
                "cache_key = excluded.cache_key, cache_source_execution_id = excluded.cache_source_execution_id",
                (execution_id, source.step_name, source.step_type, now, now, source.log_path,
                 to_json(source.properties), source.cache_key, origin))
        return self.step(execution_id, source.step_name)

    def find_cached(self, pipeline_name: str, step_name: str, cache_key: str, expire_after: timedelta) -> Step | None:
        """The newest Succeeded run of this step, in this pipeline, with this cache key, that
        ended within ``expire_after`` of now; None if there is none. Only runs that really ran
        count: a cache hit is not a new run, so reusing a result does not make it younger.
        Reading a CacheConfig's ``ExpireAfter`` text is the engine's (``engine.cache.cache_policy``)."""
        cutoff = iso(self.clock() - expire_after)
        row = self.conn.execute(
            "SELECT s.* FROM steps s JOIN executions e USING (execution_id) WHERE e.pipeline_name = ? "
            "AND s.step_name = ? AND s.cache_key = ? AND s.status = 'Succeeded' AND s.end_time >= ? "
            "AND s.cache_source_execution_id IS NULL "
            "ORDER BY s.end_time DESC, s.seq DESC LIMIT 1", (pipeline_name, step_name, cache_key, cutoff)).fetchone()
        return _step(row) if row else None


def _this_runner(now: str) -> tuple[int, str | None, str]:
    """runner_pid, runner_identity and runner_seen for an execution this process runs from now."""
    return os.getpid(), process_identity(os.getpid()), now


def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ExecutionError(f"{value!r} is not a valid {what}; use one of {', '.join(allowed)}")
