"""Pipeline executions and their steps, as SageMaker's DescribePipelineExecution and
ListPipelineExecutionSteps report them, kept in the local state database.

The executor writes here as it goes (so a second process can watch an execution live), later
steps read earlier steps' ``properties`` (what ``Get: Steps.X.…`` resolves against), and the
cache lookup finds a previous successful run of a step with the same resolved arguments.
"""
from __future__ import annotations

import json
import os
import secrets
import sqlite3
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pipeline.local.aws_identity import REGION, execution_arn
from pipeline.local.processes import process_alive
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

EXECUTION_STATUSES = ("Executing", "Stopping", "Stopped", "Failed", "Succeeded")
EXECUTION_TERMINAL = ("Stopped", "Failed", "Succeeded")
# SageMaker's StepStatus, plus Skipped for a step on a condition's branch not taken (SageMaker
# does not list those at all; the executor may record them or not).
STEP_STATUSES = ("Starting", "Executing", "Stopping", "Stopped", "Failed", "Succeeded", "Skipped")
STEP_TERMINAL = ("Stopped", "Failed", "Succeeded", "Skipped")
ID_ALPHABET = string.ascii_lowercase + string.digits
ID_LENGTH = 12


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
                        "display_name, status, start_time, last_modified_time, runner_pid) VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (execution_id, execution_arn(pipeline_name, execution_id, region=self.region), pipeline_name,
                         definition_sha256, to_json(dict(parameters)), display_name, "Executing", now, now, os.getpid()))
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
        """Newest first, like ListPipelineExecutions' default order."""
        sql = "SELECT * FROM executions" + (" WHERE pipeline_name = ?" if pipeline_name else "")
        sql += " ORDER BY start_time DESC, seq DESC" + (" LIMIT ?" if limit else "")
        args = [a for a in (pipeline_name, limit) if a]
        return [_execution(r) for r in self.conn.execute(sql, args)]

    def describe(self, execution: str) -> tuple[Execution, list[Step]]:
        """An execution and its steps, read from one snapshot."""
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
        decide again); its Failed and Stopped steps start again when their turn comes. An
        Executing one whose runner process is gone (killed outright) counts as Stopped."""
        now = iso(self.clock())
        with write_transaction(self.conn):
            current = self.get(execution)
            runner, abandoned = self._runner(current)
            if current.status not in ("Failed", "Stopped") and not abandoned:
                raise ExecutionError(f"execution {current.execution_id} is {current.status}"
                                     + (f" in process {runner}" if current.status == "Executing" and runner else "")
                                     + "; only a Failed or Stopped execution can be retried")
            if abandoned:
                self.conn.execute("UPDATE steps SET status = 'Stopped', end_time = ?, failure_reason = ? WHERE "
                                  "execution_id = ? AND status IN ('Starting', 'Executing')",
                                  (now, f"its runner (process {runner}) ended without recording it", current.execution_id))
            self.conn.execute("DELETE FROM steps WHERE execution_id = ? AND status = 'Skipped'", (current.execution_id,))
            self.conn.execute("UPDATE executions SET status = 'Executing', end_time = NULL, failure_reason = NULL, "
                              "last_modified_time = ?, runner_pid = ? WHERE execution_id = ?",
                              (now, os.getpid(), current.execution_id))
        return self.get(current.execution_id)

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

    def _runner(self, current: Execution) -> tuple[int | None, bool]:
        """The pid of the process running ``current``, and whether the execution is abandoned:
        Executing, with that process gone (killed outright)."""
        runner = self.conn.execute("SELECT runner_pid FROM executions WHERE execution_id = ?",
                                   (current.execution_id,)).fetchone()["runner_pid"]
        return runner, current.status == "Executing" and not process_alive(runner)

    def set_job_pid(self, execution_id: str, step_name: str, pid: int) -> None:
        """The job process of a running step (its process group), so that a later retry can
        stop a job its killed runner left behind."""
        with write_transaction(self.conn):
            self.conn.execute("UPDATE steps SET job_pid = ? WHERE execution_id = ? AND step_name = ?",
                              (pid, execution_id, step_name))

    def abandoned_jobs(self, execution: str) -> list[int]:
        """The job pids of an Executing execution whose runner is gone; [] for any other."""
        current = self.get(execution)
        if not self._runner(current)[1]:
            return []
        rows = self.conn.execute("SELECT job_pid FROM steps WHERE execution_id = ? AND status IN ('Starting', 'Executing') "
                                 "AND job_pid IS NOT NULL", (current.execution_id,))
        return [r["job_pid"] for r in rows]

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


def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ExecutionError(f"{value!r} is not a valid {what}; use one of {', '.join(allowed)}")
