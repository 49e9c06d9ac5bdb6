"""The model server's knobs, read from the environment under the names the SageMaker PyTorch
inference container uses, so an endpoint's environment means the same here as on AWS.

- ``SAGEMAKER_MODEL_SERVER_WORKERS``: worker processes, each with its own copy of the model
  (default: one per CPU core).
- ``SAGEMAKER_TS_BATCH_SIZE``: the most reviews scored in one forward pass (default 64).
- ``SAGEMAKER_TS_MAX_BATCH_DELAY``: milliseconds a request may wait for others to fill its batch
  (default 0: a batch is whatever arrived while the previous one was being scored; under load
  that is already a full batch, and a lone request is never kept waiting).
- ``SAGEMAKER_TS_JOB_QUEUE_SIZE``: requests a worker holds waiting for the model (default 100,
  TorchServe's); the next one gets 503 with ``Retry-After``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_BATCH_SIZE = 64
DEFAULT_MAX_BATCH_DELAY_MS = 0.0
DEFAULT_QUEUE_SIZE = 100


def cpu_count() -> int:
    """Cores this process may run on (a container's or taskset's limit, not the machine's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


class SettingsError(ValueError):
    """A setting with a value the server cannot use; the message names the variable."""


def _number(environ: Mapping[str, str], name: str, default: float, minimum: float, kind: type = int):
    raw = environ.get(name, "").strip()
    if not raw:
        return kind(default)
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a {'whole ' if kind is int else ''}number") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} must be at least {minimum:g}")
    return value


@dataclass(frozen=True)
class ServerSettings:
    workers: int
    batch_size: int = DEFAULT_BATCH_SIZE
    max_batch_delay_ms: float = DEFAULT_MAX_BATCH_DELAY_MS
    queue_size: int = DEFAULT_QUEUE_SIZE

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ServerSettings:
        return cls(workers=_number(environ, "SAGEMAKER_MODEL_SERVER_WORKERS", cpu_count(), 1),
                   batch_size=_number(environ, "SAGEMAKER_TS_BATCH_SIZE", DEFAULT_BATCH_SIZE, 1),
                   max_batch_delay_ms=_number(environ, "SAGEMAKER_TS_MAX_BATCH_DELAY", DEFAULT_MAX_BATCH_DELAY_MS, 0,
                                              float),
                   queue_size=_number(environ, "SAGEMAKER_TS_JOB_QUEUE_SIZE", DEFAULT_QUEUE_SIZE, 1))

    def threads_per_worker(self) -> int:
        """Torch threads for each worker: the cores shared out, so workers do not fight over them."""
        return max(1, cpu_count() // self.workers)
