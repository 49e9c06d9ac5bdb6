"""``sentiment-mlops monitor run``: the monitoring job over a window of an endpoint's captured
traffic, against the baseline registered with the version that serves (``pipeline/monitoring.py``
finds what it needs; ``monitor/job.py`` is the job). Exit status 1 when it finds violations, so a
scheduler's next command (``|| sentiment-mlops run ...``) can act on them.
"""
from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

from pipeline.commands.common import Reply
from pipeline.settings import Settings


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("monitor", help="check the live traffic against the serving version's baseline")
    actions = group.add_subparsers(dest="action", required=True)
    run = actions.add_parser("run", help="the monitoring job over a window of the endpoint's captured traffic "
                                         "(exit 1 when it finds violations)")
    run.add_argument("--endpoint", help="the endpoint (default: the project's, SENTIMENT_MLOPS_ENDPOINT_NAME)")
    run.add_argument("--hours", type=float, help="the last N hours up to now (default 1)")
    run.add_argument("--start", help="the window's start, ISO 8601 UTC (e.g. 2026-12-07T20:00:00Z)")
    run.add_argument("--end", help="the window's end, excluded (default: now)")
    run.add_argument("--json", action="store_true")
    run.set_defaults(handler=command_monitor_run)
    export = actions.add_parser("feedback-data", help="web users' verdicts as a dataset for the next run "
                                                      "(train.jsonl, test.jsonl: run --data feedback=DIR)")
    export.add_argument("--output", required=True, type=Path, help="a new folder")
    export.add_argument("--endpoint", help="the endpoint (default: the project's)")
    export.add_argument("--kind", choices=("sentences", "reviews"), default="sentences",
                        help="what web users typed, for the gate's thresholds (default: sentences)")
    export.add_argument("--json", action="store_true")
    export.set_defaults(handler=command_feedback_data)


def command_monitor_run(args: argparse.Namespace, settings: Settings) -> Reply:
    from pipeline.local.services.hosting import LocalHosting
    from pipeline.local.state.db import open_state
    from pipeline.monitoring import monitor_run, window

    start, end = window(args.hours, args.start, args.end)
    with contextlib.closing(open_state(settings.home)) as conn:
        hosting = LocalHosting(settings.home, conn, runtime_port=settings.runtime_port)
        result = monitor_run(settings, hosting, args.endpoint or settings.endpoint_name, start, end)
    return Reply(result, _print_report, 1 if result["violations"] else 0)


def command_feedback_data(args: argparse.Namespace, settings: Settings) -> Reply:
    from pipeline.local.services.hosting import LocalHosting
    from pipeline.local.state.db import open_state
    from pipeline.monitoring import export_feedback

    with contextlib.closing(open_state(settings.home)) as conn:
        hosting = LocalHosting(settings.home, conn, runtime_port=settings.runtime_port)
        result = export_feedback(settings, hosting, args.endpoint or settings.endpoint_name, args.output, args.kind)
    return Reply(result, lambda r: print(f"{r['output']}: {r['train']} train and {r['test']} test {r['kind']} from "
                                         f"{r['verdicts']} verdicts; train on them with sentiment-mlops run --data "
                                         f"IMDB --data feedback={r['output']}"))


def _print_report(result: dict[str, Any]) -> None:
    found = result["statistics"]
    window = found["window"]
    print(f"endpoint {result['endpoint']} (version {result['version']}), {window['start']} to {window['end']}: "
          f"{found['invocations']} invocations, {found['texts']} texts")
    if result.get("serving_since"):
        print(f"  (from {result['serving_since']}, when this version took the endpoint: earlier answers are another's)")
    if found["unreadable_lines"]:
        print(f"  {found['unreadable_lines']} capture lines skipped (first: {found['first_unreadable']})")
    for check in found["checks"]:
        figure = f"p = {check['p_value']:.4f}" if "p_value" in check else f"{check['statistic']:+.4f}"
        print(f"  {check['name']:<20} {check['test']:<26} {figure:<12} {'VIOLATED' if check['violated'] else 'ok'}")
    quality = found["live_quality"]
    accuracy = quality["accuracy"]
    if accuracy["value"] is None:
        print(f"  live accuracy: no feedback joined yet (judged from {quality['min_labels']} labels on)")
    else:
        low, high = accuracy["interval"]
        enough = "" if quality["enough"] else f" (too few to judge: {quality['min_labels']} needed)"
        print(f"  live accuracy {accuracy['value']:.3f} (95 % {low:.3f} to {high:.3f}) on {quality['labels']} labels"
              f"{enough}; the evaluation's: {quality['evaluation_accuracy']}")
    for violation in result["violations"]:
        print(f"violation: {violation['description']}")
    print(f"report: {result['report']}/")
