"""A step's RetryPolicies, as SageMaker Pipelines applies them, for the local runtime.

A policy names exception types (``Step.SERVICE_FAULT``, ``Step.THROTTLING``,
``SageMaker.CAPACITY_ERROR``, ``SageMaker.RESOURCE_LIMIT``, ``SageMaker.JOB_INTERNAL_ERROR``),
the wait before the first retry (``IntervalSeconds``), its growth (``BackoffRate``) and a limit:
``MaxAttempts`` retries after the first attempt, or no retry later than ``ExpireAfterMin``
minutes after the step began. A script's own failure (a non-zero exit) is none of these types
and is never retried, on SageMaker or here.

Locally the faults of those kinds are the machine's and the state database's:
:func:`exception_type` maps a process that could not be started for lack of resources to
``SageMaker.CAPACITY_ERROR`` and a state database still locked after its busy timeout to
``Step.THROTTLING``. Unlike SageMaker, a step with no policy for a type is not retried.
"""
from __future__ import annotations

import errno
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.local.engine.errors import PolicyError

EXCEPTION_TYPES = ("Step.SERVICE_FAULT", "Step.THROTTLING", "SageMaker.JOB_INTERNAL_ERROR",
                   "SageMaker.CAPACITY_ERROR", "SageMaker.RESOURCE_LIMIT")
_RESOURCE_ERRNOS = (errno.EAGAIN, errno.ENOMEM)


@dataclass(frozen=True)
class RetryPolicy:
    exception_types: tuple[str, ...]
    interval_s: float = 1.0
    backoff_rate: float = 2.0
    max_attempts: int | None = None
    expire_after_min: float | None = None

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        return self.interval_s * self.backoff_rate ** (retry - 1)

    def allows(self, retry: int, minutes_since_start: float) -> bool:
        """Whether retry number ``retry`` may still happen (a policy has exactly one limit)."""
        if self.max_attempts is not None:
            return retry <= self.max_attempts
        return minutes_since_start + self.delay(retry) / 60 <= (self.expire_after_min or 0.0)


def retry_policies(step: Mapping[str, Any]) -> list[RetryPolicy]:
    """The step's RetryPolicies; a malformed one is refused before the step runs."""
    policies = []
    for raw in step.get("RetryPolicies") or []:
        types = tuple(raw.get("ExceptionType") or ())
        unknown = [t for t in types if t not in EXCEPTION_TYPES]
        if not types or unknown:
            raise PolicyError(f"step {step.get('Name')}: a RetryPolicy needs ExceptionType from "
                              f"{', '.join(EXCEPTION_TYPES)} (got {list(types)})")
        try:
            policy = RetryPolicy(types, float(raw.get("IntervalSeconds", 1)), float(raw.get("BackoffRate", 2.0)),
                                 int(raw["MaxAttempts"]) if "MaxAttempts" in raw else None,
                                 float(raw["ExpireAfterMin"]) if "ExpireAfterMin" in raw else None)
        except (TypeError, ValueError) as exc:
            raise PolicyError(f"step {step.get('Name')}: a RetryPolicy has a value that is not a number: {exc}") from None
        if policy.interval_s < 0 or policy.backoff_rate < 1 or (policy.max_attempts or 1) < 1:
            raise PolicyError(f"step {step.get('Name')}: a RetryPolicy needs IntervalSeconds >= 0, "
                              "BackoffRate >= 1 and MaxAttempts >= 1")
        if (policy.max_attempts is None) == (policy.expire_after_min is None):  # as the SDK requires
            raise PolicyError(f"step {step.get('Name')}: a RetryPolicy needs exactly one of MaxAttempts "
                              "and ExpireAfterMin")
        policies.append(policy)
    return policies


def exception_type(error: BaseException) -> str | None:
    """The SageMaker exception type a local failure corresponds to; None for a failure no
    policy retries (a script's error, a bad argument, a missing input)."""
    if isinstance(error, OSError) and error.errno in _RESOURCE_ERRNOS:
        return "SageMaker.CAPACITY_ERROR"
    if isinstance(error, sqlite3.OperationalError) and ("locked" in str(error) or "busy" in str(error)):
        return "Step.THROTTLING"
    return None


def matching_policy(policies: list[RetryPolicy], kind: str | None) -> RetryPolicy | None:
    """The first policy that names ``kind``, as SageMaker picks one."""
    return next((p for p in policies if kind in p.exception_types), None) if kind else None
