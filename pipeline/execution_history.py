"""A pipeline's executions as the commands list them, whichever runtime ran them: the local
one (``pipeline.runs.LocalExecutions``) or SageMaker (``pipeline.aws.pipelines.SageMakerExecutions``).
Both answer with ``ExecutionRecord`` (mlops_rules), so ``executions list`` and ``aws list`` print
the same fields, the same way.
"""
from __future__ import annotations

from typing import Protocol

from mlops_rules.executions import ExecutionRecord


class ExecutionHistory(Protocol):
    """One pipeline's executions."""

    def recent(self, limit: int | None = None) -> list[ExecutionRecord]:
        """Newest first, at most ``limit`` of them (None: every one)."""
        ...
