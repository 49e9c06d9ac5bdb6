"""Data capture on this machine: the router's captured invocations, written as SageMaker writes
them (``mlops_rules/capture.py``) into the local store, without slowing or failing a request.

The router hands each sampled invocation to ``CaptureWriter.add``, which only appends the
encoded line to a bounded buffer (``MAX_PENDING`` lines or ``MAX_PENDING_BYTES``; past that a line is dropped and
counted, never waited for). Once a second a background thread takes what is buffered and writes
each hour-folder's lines as one new object (``<prefix>/mm-ss-mmm-<uuid>.jsonl``), through the
store's temporary file and rename: a reader finds a whole file or none, so no record is ever
torn. On shutdown what is buffered is written. ``stats`` says how many were written and dropped.
"""
from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import defaultdict, deque
from datetime import UTC, datetime
from typing import Any

from pipeline.local.state.store import ArtifactStore

log = logging.getLogger(__name__)

MAX_PENDING = 20_000
MAX_PENDING_BYTES = 64 * 1024 * 1024  # a 6 MB request and its answer are two of them
FLUSH_EVERY_S = 1.0


class CaptureWriter:
    """Captured lines, buffered and written in files of their hour, once a second."""

    def __init__(self, store: ArtifactStore, max_pending: int = MAX_PENDING, flush_every_s: float = FLUSH_EVERY_S) -> None:
        self.store, self.max_pending, self.flush_every_s = store, max_pending, flush_every_s
        self._pending: deque[tuple[str, str]] = deque()
        self._pending_bytes = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = self.dropped = self.failed = 0

    def add(self, prefix: str, record: dict[str, Any]) -> None:
        """Buffer one record for ``prefix`` (its hour's folder); drop it if the buffer is full."""
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            if len(self._pending) >= self.max_pending or self._pending_bytes + len(line) > MAX_PENDING_BYTES:
                self.dropped += 1
                return
            self._pending.append((prefix, line))
            self._pending_bytes += len(line)

    def flush(self) -> int:
        """Write what is buffered, one object per hour folder; returns how many lines were written."""
        with self._lock:
            batch, self._pending, self._pending_bytes = self._pending, deque(), 0
        groups: dict[str, list[str]] = defaultdict(list)
        for prefix, line in batch:
            groups[prefix].append(line)
        done = 0
        for prefix, lines in groups.items():
            now = datetime.now(UTC)
            uri = f"{prefix}/{now:%M-%S}-{now.microsecond // 1000:03d}-{uuid.uuid4()}.jsonl"
            try:
                self.store.put_bytes(uri, ("\n".join(lines) + "\n").encode("utf-8"))
            except (OSError, ValueError) as error:  # a full disk, a refused URI: counted, the router goes on
                log.error("data capture: %d records for %s not written: %s", len(lines), prefix, error)
                self.failed += len(lines)
                continue
            done += len(lines)
        self.written += done
        return done

    def start(self) -> CaptureWriter:
        self._thread = threading.Thread(target=self._run, name="data-capture", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.flush_every_s):
            self.flush()

    def close(self) -> None:
        """Stop the background thread and write what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        self.flush()

    @property
    def stats(self) -> dict[str, int]:
        with self._lock:
            pending = len(self._pending)
        return {"written": self.written, "dropped": self.dropped, "failed": self.failed, "pending": pending}
