"""SageMaker's transform-job calls on this machine: ``create_transform_job``,
``describe_transform_job``, ``list_transform_jobs`` and ``stop_transform_job``, with boto3's
request and response shapes and ``ClientError``s, so the code that drives a transform on AWS
drives it here.

A job runs where it is created, to the end (SageMaker's call returns at once; the caller here
would wait with a waiter anyway, and a progress bar needs the records as they go): the model's
server is started as hosting starts an endpoint's, with the model's container environment and
the job's own ``Environment`` on top; ``GET /execution-parameters`` is asked for what the request
left out; the objects are transformed (``runner.py``); the server is stopped. Its log is
``<home>/hosting/transform-jobs/<name>.log``.

A job whose process was killed is settled as Failed the next time it is read, and the model
server it left is stopped, as a killed pipeline run is.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import urllib3
from botocore.exceptions import ClientError

from pipeline.local.aws_identity import sagemaker_arn
from pipeline.local.processes import process_identity, process_is, process_runs, stop_process_group
from pipeline.local.services.hosting import LocalHosting
from pipeline.local.services.runtime import hosting_folder
from pipeline.local.services.transform.runner import Progress, TransformFailed, TransformStopped, run_transform
from pipeline.local.services.transform.spec import RequestError, TransformSpec, parse_request, resolve
from pipeline.local.state.db import iso, parse_iso, to_json, update_row, utc_now, write_transaction
from pipeline.local.state.store import ArtifactStore

log = logging.getLogger(__name__)

STATUSES = ("InProgress", "Completed", "Failed", "Stopping", "Stopped")
RUNNING = ("InProgress", "Stopping")
PROGRESS_EVERY_S = 1.0
STOP_TIMEOUT_S = 40.0
DEFAULT_MAX_RESULTS = 10
JOB_COLUMNS = frozenset({"status", "failure_reason", "progress", "end_time", "server_pid"})


def _client_error(operation: str, message: str, code: str = "ValidationException") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


def transform_log(home: Path | str, name: str) -> Path:
    """Where a transform job's model server writes its log."""
    return hosting_folder(Path(home)) / "transform-jobs" / f"{name}.log"


class LocalTransforms:
    """The transform-job calls of a SageMaker client, served from ``home``. ``on_progress`` is
    told how far a job created here is, as it goes."""

    def __init__(self, home: Path | str, conn, hosting: LocalHosting | None = None,
                 on_progress: Callable[[Progress], None] = lambda p: None) -> None:
        self.home, self.conn = Path(home), conn
        self.hosting = hosting or LocalHosting(home, conn)
        self.store = ArtifactStore(home)
        self.on_progress = on_progress

    # --- CreateTransformJob -----------------------------------------------------------------
    def create_transform_job(self, **request: Any) -> dict[str, str]:
        try:
            spec = parse_request(request)
        except RequestError as error:
            raise _client_error("CreateTransformJob", str(error)) from None
        self.hosting.describe_model(spec.model_name)  # ValidationException "Could not find model", as SageMaker
        arn, now = sagemaker_arn("transform-job", spec.name), iso(utc_now())
        with write_transaction(self.conn):
            if self.conn.execute("SELECT 1 FROM transform_jobs WHERE name = ?", (spec.name,)).fetchone():
                raise _client_error("CreateTransformJob", f"Job name must be unique within an AWS account and region, "
                                                          f"and a job with this name already exists ({arn})")
            pid = os.getpid()
            self.conn.execute("INSERT INTO transform_jobs (name, arn, model_name, request, status, creation_time, "
                              "start_time, last_modified_time, runner_pid, runner_identity) "
                              "VALUES (?,?,?,?,'InProgress',?,?,?,?,?)",
                              (spec.name, arn, spec.model_name, to_json(request), now, now, now, pid,
                               process_identity(pid)))
        self._run(spec)
        return {"TransformJobArn": arn}

    def _run(self, spec: TransformSpec) -> None:
        """The job to its end, recorded; the model server it starts is stopped whatever happens."""
        server_pid: int | None = None
        try:
            try:
                server_pid, url = self.hosting.start_model_server(
                    spec.model_name, transform_log(self.home, spec.name), spec.environment)
            except RuntimeError as error:
                self._finish(spec.name, "Failed", f"AlgorithmError: the model's server did not start: {error}")
                return
            self._set(spec.name, server_pid=server_pid)
            resolved = resolve(spec, execution_parameters(url))
            log.info("transform job %s: %s, %d MB a request, %d at once", spec.name, resolved.batch_strategy,
                     resolved.max_payload_bytes // (1024 * 1024), resolved.max_concurrent)
            run_transform(spec, resolved, self.store, url, self._recorder(spec.name), self._stop_asked(spec.name))
        except TransformStopped:
            self._finish(spec.name, "Stopped", None)
        except TransformFailed as error:
            self._finish(spec.name, "Failed", str(error))
        except Exception as error:  # the job's own fault, not the data's: one line, the traceback in the log
            log.exception("transform job %s failed", spec.name)
            self._finish(spec.name, "Failed", f"InternalServerError: {type(error).__name__}: {error}".splitlines()[0])
        except BaseException:
            self._finish(spec.name, "Failed", "the job was interrupted (Ctrl-C or a signal)")
            raise
        else:
            self._finish(spec.name, "Completed", None)
        finally:
            _stop_server(server_pid)

    def _recorder(self, name: str) -> Callable[[Progress], None]:
        last = [0.0]

        def record(progress: Progress) -> None:
            self.on_progress(progress)
            if time.monotonic() - last[0] >= PROGRESS_EVERY_S or progress.objects_done == progress.objects:
                last[0] = time.monotonic()
                self._set(name, progress=to_json(vars(progress)))

        return record

    def _stop_asked(self, name: str) -> Callable[[], bool]:
        checked = [0.0, False]

        def asked() -> bool:
            if not checked[1] and time.monotonic() - checked[0] >= PROGRESS_EVERY_S:
                checked[0] = time.monotonic()
                row = self.conn.execute("SELECT status FROM transform_jobs WHERE name = ?", (name,)).fetchone()
                checked[1] = row is not None and row["status"] == "Stopping"
            return bool(checked[1])

        return asked

    def _set(self, name: str, **fields: Any) -> None:
        update_row(self.conn, "transform_jobs", name, JOB_COLUMNS, **fields)

    def _finish(self, name: str, status: str, reason: str | None) -> None:
        log.log(logging.WARNING if status == "Failed" else logging.INFO, "transform job %s: %s%s", name, status,
                f": {reason}" if reason else "")
        self._set(name, status=status, failure_reason=reason, end_time=iso(utc_now()))

    # --- DescribeTransformJob, ListTransformJobs, StopTransformJob ----------------------------
    def describe_transform_job(self, TransformJobName: str) -> dict[str, Any]:  # noqa: N803 (boto3's names)
        row = self._row(TransformJobName, "DescribeTransformJob")
        request = json.loads(row["request"])
        found: dict[str, Any] = {
            "TransformJobName": row["name"], "TransformJobArn": row["arn"], "TransformJobStatus": row["status"],
            "ModelName": row["model_name"], "CreationTime": parse_iso(row["creation_time"]),
            **{key: request[key] for key in ("MaxConcurrentTransforms", "ModelClientConfig", "MaxPayloadInMB",
                                             "BatchStrategy", "Environment", "TransformInput", "TransformOutput",
                                             "DataCaptureConfig", "TransformResources", "DataProcessing")
               if key in request}}
        if row["failure_reason"]:
            found["FailureReason"] = row["failure_reason"]
        if row["start_time"]:
            found["TransformStartTime"] = parse_iso(row["start_time"])
        if row["end_time"]:
            found["TransformEndTime"] = parse_iso(row["end_time"])
        return found

    def progress(self, name: str) -> dict[str, int]:
        """How far the job got (objects, bytes and records): the local runtime's own record."""
        return json.loads(self._row(name, "DescribeTransformJob")["progress"])

    def list_transform_jobs(self, NameContains: str = "", StatusEquals: str | None = None,  # noqa: N803
                            MaxResults: int = DEFAULT_MAX_RESULTS, SortOrder: str = "Descending",
                            **_: Any) -> dict[str, list[dict[str, Any]]]:
        self._settle_abandoned()
        order = "ASC" if SortOrder == "Ascending" else "DESC"
        rows = self.conn.execute(
            f"SELECT * FROM transform_jobs WHERE instr(lower(name), lower(?)) > 0 AND (? IS NULL OR status = ?) "
            f"ORDER BY creation_time {order}, seq {order} LIMIT ?", (NameContains, StatusEquals, StatusEquals,
                                                                    MaxResults)).fetchall()
        summaries = []
        for row in rows:
            summary = {"TransformJobName": row["name"], "TransformJobArn": row["arn"],
                       "CreationTime": parse_iso(row["creation_time"]),
                       "LastModifiedTime": parse_iso(row["last_modified_time"]), "TransformJobStatus": row["status"]}
            if row["end_time"]:
                summary["TransformEndTime"] = parse_iso(row["end_time"])
            if row["failure_reason"]:
                summary["FailureReason"] = row["failure_reason"]
            summaries.append(summary)
        return {"TransformJobSummaries": summaries}

    def stop_transform_job(self, TransformJobName: str) -> dict[str, Any]:  # noqa: N803
        with write_transaction(self.conn):
            row = self.conn.execute("SELECT status FROM transform_jobs WHERE name = ?", (TransformJobName,)).fetchone()
            if row is None:
                raise _client_error("StopTransformJob", f"Could not find job to stop with name {TransformJobName}")
            if row["status"] != "InProgress":
                raise _client_error("StopTransformJob", f"The transform job {TransformJobName} is {row['status']} "
                                                        "and cannot be stopped")
            self.conn.execute("UPDATE transform_jobs SET status = 'Stopping', last_modified_time = ? WHERE name = ?",
                              (iso(utc_now()), TransformJobName))
        return {}

    def _row(self, name: str, operation: str):
        self._settle_abandoned(name)
        row = self.conn.execute("SELECT * FROM transform_jobs WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise _client_error(operation, f"Could not find requested job with name {name}")
        return row

    def _settle_abandoned(self, name: str | None = None) -> None:
        """A running job whose runner is gone (killed outright) is Failed, and its server stopped."""
        rows = self.conn.execute("SELECT name, status, runner_pid, runner_identity, server_pid, last_modified_time "
                                 "FROM transform_jobs WHERE status IN ('InProgress','Stopping') AND (? IS NULL OR name = ?)",
                                 (name, name)).fetchall()
        for row in rows:
            if process_is(row["runner_pid"], row["runner_identity"]):
                continue
            with write_transaction(self.conn):
                reason = (f"the process running it (pid {row['runner_pid']}) ended at about "
                          f"{row['last_modified_time']}, before the job finished")
                status, failure = ("Stopped", None) if row["status"] == "Stopping" else ("Failed", reason)
                self.conn.execute("UPDATE transform_jobs SET status = ?, failure_reason = ?, end_time = ?, "
                                  "last_modified_time = ? WHERE name = ? AND status = ?",
                                  (status, failure, row["last_modified_time"], iso(utc_now()), row["name"],
                                   row["status"]))
            _stop_server(row["server_pid"])


def execution_parameters(url: str) -> dict[str, Any]:
    """The container's ``GET /execution-parameters``, or nothing where it has none (404, say),
    as SageMaker treats a container that does not answer it."""
    try:
        response = urllib3.request("GET", url.rstrip("/") + "/execution-parameters", timeout=10.0, retries=False)
        found = json.loads(response.data) if response.status == 200 else {}
    except (urllib3.exceptions.HTTPError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _stop_server(pid: int | None) -> None:
    if pid is not None and process_runs(pid, "serve.server"):
        stop_process_group(pid, STOP_TIMEOUT_S)


def summary_times(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary or description with its times as ISO text (for the CLI's JSON)."""
    return {key: iso(value) if isinstance(value, datetime) else value for key, value in summary.items()}
