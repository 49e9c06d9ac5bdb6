"""A pipeline execution, one shape whichever runtime ran it: SageMaker (what
ListPipelineExecutions and DescribePipelineExecution answer) or the local one (a row of the state
database). ``executions list`` and ``aws list`` print this, field for field."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

# PipelineExecutionStatus: the statuses an execution runs in, and those it ends in.
EXECUTION_RUNNING = ("Executing", "Stopping")
EXECUTION_TERMINAL = ("Stopped", "Failed", "Succeeded")
EXECUTION_STATUSES = EXECUTION_RUNNING + EXECUTION_TERMINAL


def _text(moment: Any) -> str | None:
    """ISO 8601 in UTC (boto3 gives local-time datetimes; text in one zone sorts in time order)."""
    if isinstance(moment, datetime):
        return (moment.astimezone(UTC) if moment.tzinfo else moment).isoformat()
    return str(moment) if moment else None


@dataclass(frozen=True)
class ExecutionRecord:
    arn: str
    status: str  # PipelineExecutionStatus
    started: str | None  # ISO 8601
    ended: str | None  # when it reached a terminal status; None while it runs, and in SageMaker's listing (no time there)
    failure_reason: str | None
    display_name: str | None

    @property
    def execution_id(self) -> str:
        """The last part of the ARN (``…:pipeline/NAME/execution/ID``): what the local commands take."""
        return self.arn.rsplit("/", 1)[-1]

    def as_dict(self) -> dict[str, Any]:
        return {"execution_id": self.execution_id, **asdict(self)}

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> ExecutionRecord:
        """From a PipelineExecutionSummary or DescribePipelineExecution's answer (boto3's datetimes
        or text). SageMaker gives no end time: a finished execution's last change (LastModifiedTime,
        which only DescribePipelineExecution holds) is its end."""
        status = str(summary.get("PipelineExecutionStatus"))
        return cls(arn=str(summary["PipelineExecutionArn"]), status=status,
                   started=_text(summary.get("StartTime") or summary.get("CreationTime")),
                   ended=_text(summary.get("LastModifiedTime")) if status in EXECUTION_TERMINAL else None,
                   failure_reason=summary.get("FailureReason") or summary.get("PipelineExecutionFailureReason") or None,
                   display_name=summary.get("PipelineExecutionDisplayName"))
