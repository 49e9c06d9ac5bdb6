"""One transform job's work: every object under the input prefix read a record at a time, sent
to the model server, and answered into ``<S3OutputPath>/<relative path>.out``.

Memory stays flat in the input's size: records are read as they are needed and at most
``2 × MaxConcurrentTransforms`` requests are held at once; answers are written in the input's
order as they complete. An output object appears only whole (``ArtifactStore.writer``); the
first object that fails fails the job, and what it had written is removed.

Invocations follow ``ModelClientConfig``: each waits at most ``InvocationsTimeoutInSeconds``;
an answer of 5xx, a timeout or a broken connection is tried again up to
``InvocationsMaxRetries`` times; a 4xx answer (the model refusing the records) fails the job at
once, with the model's own first line as the reason.
"""
from __future__ import annotations

import gzip
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import IO, cast

import urllib3

from evaluation.outputs import TRANSFORM_OUTPUT_SUFFIX as OUTPUT_SUFFIX
from pipeline.local.services.transform.records import (
    Assembly,
    Prepared,
    RecordError,
    batches,
    prepare,
    read_records,
    request_body,
)
from pipeline.local.services.transform.spec import Resolved, TransformSpec
from pipeline.local.state.store import ArtifactStore, StoreError, landing_path, split_uri

log = logging.getLogger(__name__)

RETRY_PAUSE_S = 0.5


class TransformFailed(Exception):
    """The job failed; the message is its FailureReason (one line)."""


class TransformStopped(Exception):
    """StopTransformJob was asked for."""


@dataclass
class Progress:
    """How far the job is, for a progress bar and the job's record."""

    objects: int = 0
    objects_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    records: int = 0


@dataclass(frozen=True)
class Answer:
    body: bytes
    content_type: str | None


class ModelClient:
    """POST /invocations with the job's timeout and retries, over a pool of kept-alive connections."""

    def __init__(self, url: str, spec: TransformSpec, connections: int) -> None:
        self.url = url.rstrip("/") + "/invocations"
        self.headers = {k: v for k, v in (("Content-Type", spec.content_type), ("Accept", spec.accept)) if v}
        # A connection per request: the model server's workers each listen on their own socket
        # and the kernel deals connections (not requests) among them, so kept-alive connections
        # can leave a worker idle for the whole job; a new one is dealt afresh each time.
        self.headers["Connection"] = "close"
        self.timeout = urllib3.Timeout(connect=10.0, read=float(spec.invocation_timeout_s))
        self.retries = spec.invocation_retries
        self.pool = urllib3.PoolManager(maxsize=connections, block=True, retries=False)

    def invoke(self, body: bytes, where: str) -> Answer:
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(RETRY_PAUSE_S * attempt)
            try:
                response = self.pool.request("POST", self.url, body=body, headers=self.headers, timeout=self.timeout)
            except urllib3.exceptions.HTTPError as error:
                last = f"the model did not answer ({type(error).__name__}: {error})"
                continue
            if response.status == 200:
                return Answer(response.data, response.headers.get("Content-Type"))
            message = _first_line(response.data)
            if 400 <= response.status < 500:
                raise TransformFailed(f"ClientError: the model answered {response.status} for {where}: {message}")
            last = f"the model answered {response.status}: {message}"
        raise TransformFailed(f"ClientError: {where}: {last} (tried {self.retries + 1} times)")

    def close(self) -> None:
        self.pool.clear()


def _first_line(body: bytes) -> str:
    """The model's reason: the first line of its answer (the inference toolkit puts the
    traceback after it), or a JSON refusal's ``error``."""
    text = body.decode("utf-8", errors="replace").strip()
    line = text.splitlines()[0] if text else "(no message)"
    return line[:500]


def output_uri(spec: TransformSpec, key: str, bucket: str) -> str:
    """``<S3OutputPath>/<the object's path under the input prefix>.out``."""
    relative = landing_path(split_uri(spec.input_uri)[1], key)
    return f"{spec.output_uri.rstrip('/')}/{relative}{OUTPUT_SUFFIX}"


def run_transform(spec: TransformSpec, resolved: Resolved, store: ArtifactStore, server_url: str,
                  on_progress: Callable[[Progress], None] = lambda p: None,
                  should_stop: Callable[[], bool] = lambda: False) -> Progress:
    """Transform every input object; TransformFailed or TransformStopped if it does not finish.

    As on SageMaker, an object that fails does not stop the others: every object is tried, those
    that succeed get their output, and the job then fails with the first failure's reason. A stop,
    an interrupt or an error of the job itself ends it at once, leaving in-flight requests behind
    (their answers are not waited for: the caller stops the server)."""
    bucket = split_uri(spec.input_uri)[0]
    keys = _input_keys(spec, store)
    outputs = [output_uri(spec, key, bucket) for key in keys]
    for target in outputs:
        try:
            split_uri(target)
        except StoreError as error:
            raise TransformFailed(f"ClientError: cannot write the output {target}: {error}") from None
    progress = Progress(objects=len(keys), bytes_total=sum(store.path(f"s3://{bucket}/{k}").stat().st_size
                                                            for k in keys))
    on_progress(progress)
    client = ModelClient(server_url, spec, resolved.max_concurrent)
    assembly = Assembly(spec.line_per_answer, spec.processing, spec.input_format)
    pool = ThreadPoolExecutor(resolved.max_concurrent, thread_name_prefix=f"transform-{spec.name}")
    failures: list[str] = []
    try:
        for key, target in zip(keys, outputs, strict=True):
            source, read_before = f"s3://{bucket}/{key}", progress.bytes_done
            try:
                _transform_object(source, target, spec, resolved, store, client, assembly, pool, progress,
                                  on_progress, should_stop)
            except TransformFailed as failure:
                failures.append(str(failure))
                log.warning("transform job %s: %s", spec.name, failure)
            progress.objects_done += 1
            progress.bytes_done = read_before + store.path(source).stat().st_size
            on_progress(progress)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    else:
        pool.shutdown(wait=True)
    finally:
        client.close()
    if failures:
        more = f" ({len(failures)} of {len(keys)} input files failed)" if len(keys) > 1 else ""
        raise TransformFailed(failures[0] + more)
    return progress


def _input_keys(spec: TransformSpec, store: ArtifactStore) -> list[str]:
    try:
        keys = store.keys(spec.input_uri)
    except StoreError as error:
        raise TransformFailed(f"ClientError: cannot read the input {spec.input_uri}: {error}") from None
    if not keys:
        raise TransformFailed(f"ClientError: no object under {spec.input_uri}: put the data there, or give the "
                              "prefix of data that is there")
    return keys


def _transform_object(source: str, target: str, spec: TransformSpec, resolved: Resolved, store: ArtifactStore,
                      client: ModelClient, assembly: Assembly, pool: ThreadPoolExecutor, progress: Progress,
                      on_progress: Callable[[Progress], None], should_stop: Callable[[], bool]) -> None:
    """One object to its output, whole or not at all; TransformFailed with the reason."""
    window: deque[tuple[list[Prepared], str, Future[Answer]]] = deque()
    path, read_before = store.path(source), progress.bytes_done
    try:
        with ExitStack() as stack:
            raw = stack.enter_context(open(path, "rb"))
            stream: IO[bytes] = raw
            if spec.gzip:
                stream = cast(IO[bytes], stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb")))
            out = stack.enter_context(store.writer(target))
            first = 1
            for batch in _batches(stream, spec, resolved, source):
                if should_stop():
                    raise TransformStopped()
                where = f"{source} record {first}" if len(batch) == 1 else f"{source} records {first}-{first + len(batch) - 1}"
                first += len(batch)
                window.append((batch, where, pool.submit(client.invoke, request_body(batch), where)))
                if len(window) >= 2 * resolved.max_concurrent:
                    _write_oldest(window, assembly, out, progress, target)
                    progress.bytes_done = read_before + raw.tell()
                    on_progress(progress)
            while window:
                _write_oldest(window, assembly, out, progress, target)
    except RecordError as error:
        raise TransformFailed(f"ClientError: {error}") from None
    except StoreError as error:  # the output's key is a folder in the store, say
        raise TransformFailed(f"ClientError: cannot write {target}: {error}") from None
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise TransformFailed(f"ClientError: cannot read {source}"
                              f"{' as gzip' if spec.gzip else ''}: {error}") from None
    finally:
        for _, _, future in window:
            future.cancel()


def _batches(stream: IO[bytes], spec: TransformSpec, resolved: Resolved, source: str) -> Iterator[list[Prepared]]:
    records = read_records(stream, spec.split_lines, resolved.max_payload_bytes, source)
    prepared = prepare(records, spec.processing, spec.input_format, source, resolved.max_payload_bytes)
    return batches(prepared, resolved.batch_strategy == "MultiRecord", resolved.max_payload_bytes)


def _write_oldest(window: deque, assembly: Assembly, out: IO[bytes], progress: Progress, target: str) -> None:
    batch, where, future = window.popleft()
    answer = future.result()
    data = assembly.output(batch, answer.body, answer.content_type, where)
    try:
        out.write(data)
    except OSError as error:  # a full disk, say: not the input's fault
        raise TransformFailed(f"InternalServerError: cannot write {target}: {error}") from None
    progress.records += len(batch)
