"""What the command modules share: the reply a handler returns, and helpers more than one command needs.

A handler is ``handler(args, settings) -> Reply``: the result (what ``--json`` prints), how to
print it for people, and the exit status. ``pipeline.cli.main`` does the printing and returns
the status; the handler decides both, so nothing downstream guesses which command ran.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from pipeline.errors import CommandError
from pipeline.execution_history import ExecutionHistory

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class Reply:
    """A command's answer: ``result`` for ``--json``, ``show(result)`` for people, and the exit status."""

    result: Any
    show: Callable[[Any], None]
    exit_code: int = 0

    def print_text(self) -> None:
        self.show(self.result)


def as_text(value) -> str:
    """Times from boto3 are datetimes: ISO 8601 in the output, JSON included."""
    return value.isoformat() if isinstance(value, (datetime, date)) else str(value)


def print_path(result: dict) -> None:
    print(result["path"])


def followed_exit_code(result: dict) -> int:
    """A run, a retry or a wait whose pipeline ended other than Succeeded is a failure for scripts too."""
    return 1 if result["status"] != "Succeeded" else 0


def parse_params(pairs: list[str] | None) -> dict[str, str]:
    """``--param Name=Value`` pairs (``run``, ``aws start``) as a dict."""
    params = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CommandError(f"--param {pair!r}: write parameters as Name=Value, for example --param Epochs=4")
        params[name] = value
    return params


def deployment_line(result: dict) -> str:
    """One local deployment (an approval event the deploy handler acted on), for people."""
    traffic = f", {result['traffic']}" if result.get("traffic") not in (None, "all at once") else ""
    return (f"endpoint {result['endpoint']} {result['status']}: version {result['version']} "
            f"({result['endpoint_config']}{traffic})")


def list_executions(history: ExecutionHistory, limit: int | None = None) -> list[dict[str, Any]]:
    """``executions list`` and ``aws list``: the same fields from either runtime, newest first."""
    return [record.as_dict() for record in history.recent(limit)]


def print_executions(rows: list) -> None:
    for row in rows:
        print(f"  {row['execution_id']}  {row['status']:<10} {as_text(row['started'])}  {row['failure_reason'] or ''}")
    if not rows:
        print("no executions")
