"""Approve or reject a version: the one path a decision takes, whether a person types
``sentiment-mlops registry approve`` or presses Approve on the registry page.

1. The registry records the new status and who set it, with the comment, in one write
   transaction (``ModelRegistry.update_approval``, under SQLite's write lock). A version that
   already has that status changes nothing and yields no event, so two approvals racing each other
   give one event: the second is told the version is approved already.
2. The "SageMaker Model Package State Change" event is written to ``<home>/events/``, as
   EventBridge would carry it.
3. Unless told not to, pending events are handed to the deploy handler (``lambda/deploy.py``, the
   Lambda's code) by ``events.deliver_pending``, one deliverer at a time (a file lock), which
   creates or updates the endpoint. A deployment that fails leaves the approval in place and the
   event pending; the reason comes back in ``deployment_error``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_rules.approvals import MAX_COMMENT_CHARS, VERBS
from pipeline.errors import UserError
from pipeline.local.services.events import deliver_pending, delivered_result, pending_events, record_event
from pipeline.local.state.db import open_state
from pipeline.local.state.registry import ModelPackage, ModelRegistry
from pipeline.settings import Settings


class DecisionError(UserError):
    """A decision that cannot be recorded as asked; the message says what to change."""


def check_comment(comment: str | None) -> str | None:
    """The comment as it will be kept (trimmed, line ends made ``\\n``), or None for none."""
    if comment is None:
        return None
    text = comment.replace("\r\n", "\n").replace("\r", "\n").strip()
    if len(text) > MAX_COMMENT_CHARS:
        raise DecisionError(f"the comment is {len(text):,} characters; the approval history keeps at most "
                            f"{MAX_COMMENT_CHARS:,} (as SageMaker's ApprovalDescription does): shorten it")
    return text or None


@dataclass(frozen=True)
class Decision:
    """What a decision did."""

    verb: str
    package: ModelPackage  # as it is now
    changed: bool  # False: the version had that status already; no event was sent
    event: str | None  # the event file recorded, if any
    deployments: list[dict[str, Any]]  # every event this call delivered, with the handler's answer
    deployment_error: str | None  # why delivery failed (the approval stands; the event stays pending)
    outcome: dict[str, Any] | None  # the handler's answer to this decision's own event, whoever delivered it
    pending: bool  # this decision's event is still waiting for delivery

    @property
    def version(self) -> int:
        return self.package.version

    @property
    def event_file(self) -> str | None:
        """The event's file name, as ``deployments`` name the events they answer."""
        return Path(self.event).name if self.event else None


def decide(settings: Settings, version: int, verb: str, comment: str | None = None, *, deliver: bool = True,
           approver: str | None = None) -> Decision:
    """Set ``version``'s approval status (``verb``: approve or reject) and deliver the event."""
    if verb not in VERBS:
        raise DecisionError(f"{verb!r} is not a decision; use one of {', '.join(VERBS)}")
    comment = check_comment(comment)
    with contextlib.closing(open_state(settings.home)) as conn:
        change = ModelRegistry(conn).update_approval(settings.model_package_group, version, VERBS[verb],
                                                     approver=approver, comment=comment)
    event = record_event(settings, change.event) if change.event else None
    deployments: list[dict[str, Any]] = []
    error = None
    if deliver:
        try:
            deployments = deliver_pending(settings)
        except Exception as failure:  # the deploy handler's or the hosting's own message, kept to one line
            error = f"{type(failure).__name__}: {failure}".splitlines()[0]
    outcome = None
    if event is not None:
        outcome = next((d for d in deployments if d.get("event") == event.name), None) or delivered_result(
            settings, event.name)
    pending = event is not None and any(p.name == event.name for p in pending_events(settings))
    return Decision(verb, change.package, change.changed, str(event) if event else None, deployments, error,
                    outcome, pending)
