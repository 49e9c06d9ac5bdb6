"""One SQLite file holds the local runtime's state: executions, their steps, the model registry.

Why SQLite and these settings: two executions (two processes) may run at once and both write.
WAL lets readers go on while one writer writes; ``busy_timeout`` makes a second writer wait
instead of failing; every write begins with ``BEGIN IMMEDIATE`` so that the write lock is taken
before anything is read (a read-then-write that upgrades its lock later can fail with
SQLITE_BUSY without waiting, and two of them can allocate the same version number).

Connections are per thread: open one with :func:`connect` in each thread or process.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

STATE_FILE = "state.db"
BUSY_TIMEOUT_S = 30.0

Clock = Callable[[], datetime]


class StateError(UserError):
    """A problem with the local state; the message is one line that says what to do."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """Fixed-width UTC ISO 8601 with milliseconds, so that text order is time order in SQL."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def to_json(value: Any) -> str:
    """Canonical JSON (sorted keys, no NaN): equal values give equal text, and a value that is
    not plain JSON fails here, inside the transaction, so nothing half-written remains."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def sha256_text(text: str) -> str:
    """The sha256 of ``text`` (canonical JSON, say): a definition's fingerprint, a step's cache key."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def state_path(home: Path | str) -> Path:
    """Where the state lives under the local home (``Settings.home``, default ``.mlops/``)."""
    return Path(home) / STATE_FILE


# Each migration is a list of statements, applied in order and recorded in schema_version.
# Statements, not executescript(): executescript commits first, which would break atomicity.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE executions (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            execution_id TEXT NOT NULL UNIQUE CHECK (length(execution_id) = 12),
            arn TEXT NOT NULL UNIQUE,
            pipeline_name TEXT NOT NULL,
            definition_sha256 TEXT NOT NULL,
            parameters TEXT NOT NULL,
            display_name TEXT,
            status TEXT NOT NULL CHECK (status IN ('Executing','Stopping','Stopped','Failed','Succeeded')),
            start_time TEXT NOT NULL,
            end_time TEXT,
            last_modified_time TEXT NOT NULL,
            failure_reason TEXT)""",
        "CREATE INDEX executions_newest ON executions (pipeline_name, start_time, seq)",
        """CREATE TABLE steps (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            execution_id TEXT NOT NULL REFERENCES executions (execution_id) ON DELETE CASCADE,
            step_name TEXT NOT NULL,
            step_type TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN
                ('Starting','Executing','Stopping','Stopped','Failed','Succeeded','Skipped')),
            start_time TEXT,
            end_time TEXT,
            seconds REAL,
            failure_reason TEXT,
            log_path TEXT,
            properties TEXT NOT NULL DEFAULT '{}',
            cache_key TEXT,
            cache_source_execution_id TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            UNIQUE (execution_id, step_name))""",
        "CREATE INDEX steps_cache ON steps (step_name, cache_key, status, end_time)",
        """CREATE TABLE model_package_groups (
            name TEXT PRIMARY KEY,
            arn TEXT NOT NULL UNIQUE,
            creation_time TEXT NOT NULL)""",
        """CREATE TABLE model_packages (
            group_name TEXT NOT NULL REFERENCES model_package_groups (name),
            version INTEGER NOT NULL CHECK (version >= 1),
            arn TEXT NOT NULL UNIQUE,
            artifact_uri TEXT NOT NULL,
            artifact_sha256 TEXT NOT NULL,
            metrics TEXT NOT NULL,
            metrics_uri TEXT,
            inference_specification TEXT NOT NULL,
            approval_status TEXT NOT NULL CHECK (approval_status IN ('PendingManualApproval','Approved','Rejected')),
            approval_description TEXT,
            execution_id TEXT REFERENCES executions (execution_id),
            description TEXT,
            creation_time TEXT NOT NULL,
            last_modified_time TEXT NOT NULL,
            PRIMARY KEY (group_name, version))""",
        """CREATE TABLE approval_history (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            group_name TEXT NOT NULL,
            version INTEGER NOT NULL,
            changed_at TEXT NOT NULL,
            approver TEXT NOT NULL,
            from_status TEXT,
            to_status TEXT NOT NULL,
            comment TEXT,
            FOREIGN KEY (group_name, version) REFERENCES model_packages (group_name, version))""",
    ],
    [
        # The definition each execution ran, so that a retry runs the same one (as
        # RetryPipelineExecution does), whatever the code has become since.
        """CREATE TABLE pipeline_definitions (
            sha256 TEXT PRIMARY KEY CHECK (length(sha256) = 64),
            definition TEXT NOT NULL,
            creation_time TEXT NOT NULL)""",
    ],
    [
        # Local hosting (pipeline/local/services/hosting.py): SageMaker's models, endpoint configs and
        # endpoints, each endpoint served by a model-server process on this machine.
        """CREATE TABLE hosted_models (
            name TEXT PRIMARY KEY,
            arn TEXT NOT NULL UNIQUE,
            primary_container TEXT NOT NULL,
            artifact_uri TEXT NOT NULL,
            execution_role_arn TEXT NOT NULL,
            creation_time TEXT NOT NULL)""",
        """CREATE TABLE endpoint_configs (
            name TEXT PRIMARY KEY,
            arn TEXT NOT NULL UNIQUE,
            production_variants TEXT NOT NULL,
            creation_time TEXT NOT NULL)""",
        """CREATE TABLE endpoints (
            name TEXT PRIMARY KEY,
            arn TEXT NOT NULL UNIQUE,
            config_name TEXT NOT NULL REFERENCES endpoint_configs (name),
            status TEXT NOT NULL CHECK (status IN ('Creating','Updating','InService','Failed')),
            url TEXT,
            pid INTEGER,
            failure_reason TEXT,
            creation_time TEXT NOT NULL,
            last_modified_time TEXT NOT NULL)""",
    ],
    [
        # The process running an execution: an Executing execution whose runner is gone (killed
        # outright, a power cut) can then be told from a running one, and retried.
        "ALTER TABLE executions ADD COLUMN runner_pid INTEGER",
        "ALTER TABLE steps ADD COLUMN job_pid INTEGER",
    ],
    [
        # Tags on hosting resources (AddTags, ListTags): the deploy handler records on the
        # endpoint which approval it follows.
        """CREATE TABLE tags (
            resource_arn TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (resource_arn, key))""",
    ],
    [
        # A package's CustomerMetadataProperties as the Register step gave them (the links to the
        # evaluation's files), a JSON object of strings.
        "ALTER TABLE model_packages ADD COLUMN customer_metadata_properties TEXT NOT NULL DEFAULT '{}'",
    ],
    [
        # Who runs an execution, beyond its pid (which a later process may be given): the
        # runner's start time (processes.process_identity), and when it was last seen working
        # (renewed while a job runs), so that a runner that was killed can be told from a live
        # one, and its execution settled as Failed with the time it ended. The same for a job.
        "ALTER TABLE executions ADD COLUMN runner_identity TEXT",
        "ALTER TABLE executions ADD COLUMN runner_seen TEXT",
        "ALTER TABLE steps ADD COLUMN job_identity TEXT",
    ],
    [
        # Batch Transform jobs (pipeline/local/services/transform/): the request as given, the
        # status and reason, how far the job got, and who runs it (a job whose runner was
        # killed is settled as Failed when read, as an execution is).
        """CREATE TABLE transform_jobs (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL UNIQUE,
            arn TEXT NOT NULL UNIQUE,
            model_name TEXT NOT NULL,
            request TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('InProgress','Completed','Failed','Stopping','Stopped')),
            failure_reason TEXT,
            progress TEXT NOT NULL DEFAULT '{}',
            creation_time TEXT NOT NULL,
            start_time TEXT,
            end_time TEXT,
            last_modified_time TEXT NOT NULL,
            runner_pid INTEGER,
            runner_identity TEXT,
            server_pid INTEGER)""",
        "CREATE INDEX transform_jobs_newest ON transform_jobs (creation_time, seq)",
    ],
    [
        # Guarded rollouts (pipeline/local/services/rollout.py): an endpoint may be RollingBack,
        # and while an update shifts traffic it has a candidate server beside its own, with the
        # candidate's share of the requests and the rollout's plan and progress. SQLite cannot
        # change a CHECK constraint in place: the table is made again with its rows.
        """CREATE TABLE endpoints_new (
            name TEXT PRIMARY KEY,
            arn TEXT NOT NULL UNIQUE,
            config_name TEXT NOT NULL REFERENCES endpoint_configs (name),
            status TEXT NOT NULL CHECK (status IN ('Creating','Updating','RollingBack','InService','Failed')),
            url TEXT,
            pid INTEGER,
            failure_reason TEXT,
            creation_time TEXT NOT NULL,
            last_modified_time TEXT NOT NULL,
            candidate_config TEXT REFERENCES endpoint_configs (name),
            candidate_url TEXT,
            candidate_pid INTEGER,
            candidate_share REAL NOT NULL DEFAULT 0,
            rollout TEXT)""",
        "INSERT INTO endpoints_new (name, arn, config_name, status, url, pid, failure_reason, creation_time, "
        "last_modified_time) SELECT name, arn, config_name, status, url, pid, failure_reason, creation_time, "
        "last_modified_time FROM endpoints",
        "DROP TABLE endpoints",
        "ALTER TABLE endpoints_new RENAME TO endpoints",
        # CloudWatch metric alarms (pipeline/local/services/cloudwatch.py), PutMetricAlarm's request as given.
        """CREATE TABLE alarms (
            name TEXT PRIMARY KEY,
            arn TEXT NOT NULL UNIQUE,
            definition TEXT NOT NULL,
            last_modified_time TEXT NOT NULL)""",
        # What each endpoint served when: every change of the config that takes its traffic, and
        # every update that did not take (rolled back, failed), in order.
        """CREATE TABLE endpoint_history (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            endpoint TEXT NOT NULL,
            time TEXT NOT NULL,
            event TEXT NOT NULL,
            config_name TEXT,
            detail TEXT)""",
        "CREATE INDEX endpoint_history_by_endpoint ON endpoint_history (endpoint, seq)",
    ],
    [
        # An endpoint config's DataCaptureConfig as given (pipeline/local/services/capture.py).
        "ALTER TABLE endpoint_configs ADD COLUMN data_capture_config TEXT",
    ],
    [
        # A config's ShadowProductionVariants, and the shadow's model server while it runs.
        "ALTER TABLE endpoint_configs ADD COLUMN shadow_variants TEXT",
        "ALTER TABLE endpoints ADD COLUMN shadow_url TEXT",
        "ALTER TABLE endpoints ADD COLUMN shadow_pid INTEGER",
    ],
    [
        # A model package's DriftCheckBaselines as registered (the monitoring baseline's files).
        "ALTER TABLE model_packages ADD COLUMN drift_check_baselines TEXT NOT NULL DEFAULT '{}'",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)


def connect(path: Path | str, *, timeout_s: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the state database.

    Autocommit mode (``isolation_level=None``): transactions are explicit, see
    :func:`write_transaction`, so that no statement starts one behind our back.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = NORMAL")  # durable enough with WAL; one fsync per checkpoint
    try:
        _use_wal(conn, timeout_s)
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _use_wal(conn: sqlite3.Connection, timeout_s: float) -> None:
    """Put the file in WAL mode (it stays so), waiting out other processes doing the same.

    Switching the journal mode needs an exclusive lock that SQLite does not wait for: its busy
    handler is not called, so two processes opening a new file at once could fail with
    "database is locked". The switch is retried here until the same deadline as a busy
    statement; a file already in WAL mode is left alone.
    """
    deadline = time.monotonic() + timeout_s
    delay_s = 0.005
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() == "wal":
                return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise
        if time.monotonic() >= deadline:
            raise sqlite3.OperationalError("could not put the state database in WAL mode: database is locked")
        time.sleep(delay_s)
        delay_s = min(delay_s * 2, 0.2)


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction that holds the write lock from its first statement.

    Commits on success, rolls back on any exception: nothing half-written survives.
    """
    conn.execute("BEGIN IMMEDIATE")
    with conn:  # commit on success, rollback on exception
        yield conn


def update_row(conn: sqlite3.Connection, table: str, name: str, columns: frozenset[str], /,
               guard: tuple[str, tuple[Any, ...]] = ("", ()), **fields: Any) -> int:
    """Set ``fields`` and ``last_modified_time`` on the row of ``table`` whose ``name`` is ``name``,
    in one write transaction; with ``guard`` (an SQL condition and its parameters), only while the
    row still meets it: a compare-and-set. Returns how many rows changed (0 or 1). Column names go
    into the SQL text, so only ``columns`` may be set; the guard is the caller's own SQL."""
    unknown = set(fields) - columns
    if unknown:
        raise ValueError(f"not {table} columns: {sorted(unknown)}")
    assignments = ", ".join(f"{column} = ?" for column in fields)
    condition, parameters = guard
    with write_transaction(conn):
        return conn.execute(f"UPDATE {table} SET {assignments}, last_modified_time = ? WHERE name = ?"
                            f"{f' AND ({condition})' if condition else ''}",
                            (*fields.values(), iso(utc_now()), name, *parameters)).rowcount


@contextlib.contextmanager
def read_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A consistent snapshot across several SELECTs (an execution and its steps, say)."""
    conn.execute("BEGIN")
    with conn:
        yield conn


def schema_version(conn: sqlite3.Connection) -> int:
    """The applied schema version; 0 for a new, empty file."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone() is None:
        return 0
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def _check_not_newer(current: int) -> None:
    if current > SCHEMA_VERSION:
        raise StateError(f"the state database has schema version {current}, newer than this "
                         f"sentiment-mlops knows ({SCHEMA_VERSION}); upgrade sentiment-mlops")


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to :data:`SCHEMA_VERSION`.

    An up-to-date file is only read, so opening it never waits for a running writer. Otherwise
    the version is read again under the write lock: when two processes open a new file at once,
    the second waits, then finds nothing left to do.
    """
    current = schema_version(conn)
    _check_not_newer(current)
    if current == SCHEMA_VERSION:
        return current
    with write_transaction(conn):
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version ("
                     "version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
        current = schema_version(conn)
        _check_not_newer(current)
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?, ?)", (version, iso(utc_now())))
    return SCHEMA_VERSION


def open_state(home: Path | str) -> sqlite3.Connection:
    """The state database under the local home: ``open_state(Settings().home)``."""
    return connect(state_path(home))
