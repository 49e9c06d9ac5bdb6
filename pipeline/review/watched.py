"""The serving version on live traffic, for its page: the newest monitoring report
(``sentiment-mlops monitor run``, ``pipeline/monitoring.py``) of that version on the endpoint, read
from the store. Only the report's own files are read; nothing is computed here.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from monitor.contract import STATISTICS_FILE, VIOLATIONS_FILE
from pipeline.local.state.store import ArtifactStore
from pipeline.monitoring import reports_uri
from pipeline.settings import Settings

log = logging.getLogger(__name__)

CHECK_NAMES = {"input_length": "Length in tokens", "score_distribution": "The model's scores",
               "representation": "The model's representation", "oov_rate": "Out-of-vocabulary rate"}


@dataclass(frozen=True)
class CheckView:
    name: str
    test: str
    figure: str  # the p-value, or the rise for the out-of-vocabulary rate
    violated: bool


@dataclass(frozen=True)
class WatchedView:
    report_uri: str
    start: str
    end: str
    invocations: int
    texts: int
    checks: list[CheckView]
    live_quality: dict[str, Any]
    violations: list[str] = field(default_factory=list)


def _check(check: dict[str, Any]) -> CheckView:
    if "p_value" in check:
        figure = f"p = {check['p_value']:.4f} ({check['current']} live texts against {check['reference']})"
    else:
        figure = f"{check['current']:.3f}, baseline {check['baseline']:.3f} ({check['statistic']:+.3f})"
    return CheckView(CHECK_NAMES.get(check["name"], check["name"]), check["test"], figure, bool(check["violated"]))


def newest_report(settings: Settings, version: int) -> WatchedView | None:
    """The newest monitoring report of ``version`` on the project's endpoint, or None (none yet,
    or one that cannot be read: logged, and the page says there is none)."""
    store = ArtifactStore(settings.home)
    folder = reports_uri(settings, settings.endpoint_name, version)
    reports = sorted({key.rsplit("/", 2)[-2] for key in store.keys(folder + "/") if key.endswith("/" + VIOLATIONS_FILE)})
    if not reports:
        return None
    uri = f"{folder}/{reports[-1]}"
    try:
        found = json.loads(store.read_bytes(f"{uri}/{STATISTICS_FILE}"))
        violations = json.loads(store.read_bytes(f"{uri}/{VIOLATIONS_FILE}"))["violations"]
        return WatchedView(uri, found["window"]["start"], found["window"]["end"], found["invocations"], found["texts"],
                           [_check(c) for c in found["checks"]], found["live_quality"],
                           [str(v["description"]) for v in violations])
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("the monitoring report %s cannot be read: %s", uri, error)
        return None
