"""``sentiment-mlops registry ...``: list, show, approve and reject model versions.

The same commands work on the local registry (SQLite under the home folder, the default) and
on SageMaker's model registry (``--backend sagemaker``), and print the same fields, so a script
written against one works against the other.
"""
from __future__ import annotations

import argparse
import contextlib
import re
import sys
from typing import Any

from mlops_rules.approvals import APPROVAL_STATUSES, VERBS
from pipeline.commands.common import Reply, deployment_line
from pipeline.errors import CommandError
from pipeline.registries import RegistryStore, stop_serving_problem, version_summary
from pipeline.settings import Settings

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
TERMINAL_DISAGREEMENTS = 20  # `registry compare` lists these; --json all it has


def registry_store(settings: Settings, backend: str) -> RegistryStore:
    """The registry the command works on: SageMaker's, or the local one (the default)."""
    if backend == "sagemaker":
        from pipeline.aws import SageMakerRegistry, make_clients

        return SageMakerRegistry(make_clients(settings), settings.model_package_group)
    from pipeline.review.local_registry import LocalRegistry

    return LocalRegistry(settings)


def list_versions(store: RegistryStore, status: str | None) -> list[dict[str, Any]]:
    return [version_summary(v, store.report(v)) for v in store.versions(status)]


def show_version(store: RegistryStore, version: int) -> dict[str, Any]:
    """One version, with ``links``: the files of its evaluation that the package links
    (CustomerMetadataProperties). On SageMaker each has an HTTPS ``url`` presigned for an hour;
    locally each has the ``path`` of the file in the local store, and ``registry_page`` is where
    ``sentiment-mlops api`` shows the version."""
    found = store.version(version)
    return {**version_summary(found, store.report(found)), "links": store.links(found), **store.details(found)}


def set_status(store: RegistryStore, version: int, verb: str, comment: str | None,
               deliver: bool = True, stop_serving: bool = False) -> dict[str, Any]:
    """Approve or reject. On SageMaker, EventBridge takes the event from there. Locally the
    decision takes the path the registry page's takes too (``pipeline.review.decisions.decide``):
    the event is recorded and (unless ``deliver`` is False) handed to the deploy handler at once;
    a deployment that fails leaves the approval in place and says why in ``deployment_error``."""
    from pipeline.review.decisions import check_comment

    problem = stop_serving_problem(store, version, verb)
    if problem and not stop_serving:
        raise CommandError(f"{problem}; add --stop-serving to reject it anyway")
    decided = store.decide(version, verb, check_comment(comment), deliver=deliver)
    return {**version_summary(decided.version, store.report(decided.version)), **decided.extras}


def compare_versions(settings: Settings, backend: str, champion: int, challenger: int) -> dict[str, Any]:
    """The champion/challenger comparison the registry page shows, from the local store."""
    if backend == "sagemaker":
        raise CommandError("registry compare reads each version's saved predictions and test reviews from the local "
                           "artifact store, so it works on the local registry only; run it without --backend sagemaker")
    from pipeline.review.compare import compare
    from pipeline.review.evidence import reading

    with reading(settings) as evidence:
        return compare(evidence, champion, challenger).as_dict()


# --- the command line -----------------------------------------------------------------------------

def register(commands: argparse._SubParsersAction) -> None:
    registry = commands.add_parser("registry", help="list, show, approve or reject registered model versions")
    registry.add_argument("--backend", choices=("local", "sagemaker"), default="local",
                          help="the local SQLite registry (default) or SageMaker's model registry")
    actions = registry.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="model versions, newest first")
    listing.add_argument("--status", choices=APPROVAL_STATUSES)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=command_list)
    show = actions.add_parser("show", help="one version: metrics, artifact, approval history")
    show.add_argument("version", type=int)
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=command_show)
    for verb in VERBS:
        action = actions.add_parser(verb, help=f"{verb} a version (locally, the approval event goes to the deploy handler)")
        action.add_argument("version", type=int)
        action.add_argument("--comment", help="why: kept in the approval history")
        action.add_argument("--no-deploy", action="store_true",
                            help="locally: keep the approval event pending instead of deploying at once "
                                 "(`events deliver` delivers it later)")
        if verb == "reject":
            action.add_argument("--stop-serving", action="store_true",
                                help="confirm rejecting the only Approved version, which stops the endpoint")
        action.add_argument("--no-wait", action="store_true",
                            help="locally: return once a guarded rollout has started instead of following it to its end")
        action.add_argument("--json", action="store_true")
        action.set_defaults(handler=command_set_status)
    comparing = actions.add_parser("compare", help="champion against challenger: metric deltas and the test reviews "
                                                   "on which the two disagree (local registry)")
    comparing.add_argument("champion", type=int, help="the version to compare against (the one serving, usually)")
    comparing.add_argument("challenger", type=int, help="the candidate; deltas are challenger minus champion")
    comparing.add_argument("--json", action="store_true")
    comparing.set_defaults(handler=command_compare)


def command_list(args: argparse.Namespace, settings: Settings) -> Reply:
    return Reply(list_versions(registry_store(settings, args.backend), args.status), _print_versions)


def command_show(args: argparse.Namespace, settings: Settings) -> Reply:
    return Reply(show_version(registry_store(settings, args.backend), args.version), _print_version)


def command_set_status(args: argparse.Namespace, settings: Settings) -> Reply:
    result = set_status(registry_store(settings, args.backend), args.version, args.action, args.comment,
                        deliver=not args.no_deploy, stop_serving=getattr(args, "stop_serving", False))
    if args.backend == "local" and not args.no_wait:
        rollout = follow_rollout(settings, result)
        if rollout:
            result = {**result, "rollout": rollout}
    # exit 1 when the approval is recorded but its deployment is not done
    failed = result.get("deployment_error") or (result.get("rollout") or {}).get("outcome") == "rolled back"
    return Reply(result, _print_version, 1 if failed else 0)


def follow_rollout(settings: Settings, result: dict[str, Any]) -> dict[str, Any] | None:
    """Locally, an approval whose update shifts traffic in steps is followed to its end (the
    steps on stderr): its outcome, or None when the update took effect at once."""
    from pipeline.local.services.hosting import LocalHosting
    from pipeline.local.state.db import open_state

    updated = [d for d in result.get("deployment") or [] if d.get("status") == "updated"]
    if not updated:
        return None
    wanted = updated[-1]["endpoint_config"]
    with contextlib.closing(open_state(settings.home)) as conn:
        hosting = LocalHosting(settings.home, conn)
        ended = hosting.describe_endpoint(settings.endpoint_name)
        if ended.get("PendingDeploymentSummary") is not None:
            print(f"rollout of {wanted}: {updated[-1].get('traffic', '')}", file=sys.stderr, flush=True)
            ended = hosting.wait_for_rollout(settings.endpoint_name, lambda share: print(
                f"  the new version takes {100 * share:.0f} % of the requests", file=sys.stderr, flush=True))
        elif ended["EndpointConfigName"] == wanted or not hosting.rolled_back(settings.endpoint_name, wanted):
            return None  # it took effect at once (or another change has come since)
    took = ended["EndpointConfigName"] == wanted
    return {"outcome": "completed" if took else "rolled back", "endpoint_config": ended["EndpointConfigName"],
            "status": ended["EndpointStatus"], "reason": None if took else ended.get("FailureReason")}


def command_compare(args: argparse.Namespace, settings: Settings) -> Reply:
    return Reply(compare_versions(settings, args.backend, args.champion, args.challenger), _print_comparison)


def _print_comparison(result: dict) -> None:
    champion, challenger, now = result["champion"], result["challenger"], result["serving"]

    def role(row: dict) -> str:
        return f"{row['status']}, serving" if row["serving"] else row["status"]

    def number(value: float | None, signed: bool = False) -> str:
        return "—" if value is None else (f"{value:+.4f}" if signed else f"{value:.4f}")

    print(f"version {challenger['version']} ({role(challenger)}) against version {champion['version']} "
          f"({role(champion)}); endpoint {now['endpoint']}: {now['status'] or 'not deployed'}")
    width = max(10, *(len(row["label"]) for row in result["deltas"]))
    print(f"  {'metric':<{width}} {'v' + str(champion['version']):>8} {'v' + str(challenger['version']):>8} {'change':>8}")
    for row in result["deltas"]:
        print(f"  {row['label']:<{width}} {number(row['champion']):>8} {number(row['challenger']):>8} "
              f"{number(row['delta'], signed=True):>8}")
    if not result["per_review"]:
        print(f"  reviews not compared: {result['reason']}")
        return
    test_set = result["test_set"]
    print(f"  same {test_set['count']:,} test reviews (sha256 {test_set['sha256'][:12]}…): the two disagree on "
          f"{result['disagreements_total']:,}; version {challenger['version']} is right on "
          f"{result['challenger_right']:,} of them, version {champion['version']} on {result['champion_right']:,}")
    shown = result["disagreements"][:TERMINAL_DISAGREEMENTS]
    for row in shown:
        # one line per review, no terminal control characters (the text is the data set's, not ours)
        text = " ".join(_CONTROL.sub(" ", row["text"].replace("<br />", " ")).split())
        print(f"  #{row['index']:<6} actually {row['actual']:<8} v{champion['version']} "
              f"{row['champion_probability']:.3f}  v{challenger['version']} {row['challenger_probability']:.3f}  "
              f"{text[:80] + ('…' if len(text) > 80 else '')}")
    if len(shown) < result["disagreements_total"]:
        print(f"  … {result['disagreements_total'] - len(shown):,} more: --json and the registry page list the "
              f"{len(result['disagreements'])} with the biggest difference in score")


def _print_version(result: dict) -> None:
    _print_versions([result])
    links = result.get("links")
    if links:
        expires = result.get("links_expire_s")
        print("  the evaluation's files" + (f" (the https links work for {expires // 60} minutes):" if expires else ":"))
        width = max(len(link["name"]) for link in links)
        for link in links:
            where = link.get("url") or link.get("path") or link["uri"]
            missing = " (not there: not written for this version)" if link.get("exists") is False else ""
            print(f"    {link['name']:<{width}}  {where}{missing}")
            if where != link["uri"]:
                print(f"    {'':<{width}}  {link['uri']}")
    if result.get("registry_page"):
        print(f"  registry page: {result['registry_page']} (while `sentiment-mlops api` runs)")


def _print_versions(rows: list) -> None:
    if not rows:
        print("no model versions registered")
    for row in rows:
        accuracy = "—" if row.get("accuracy") is None else f"{row['accuracy']:.4f}"
        by_dataset = row.get("accuracy_by_dataset") or {}
        each = "".join(f", {name} {value:.4f}" for name, value in by_dataset.items()) if len(by_dataset) > 1 else ""
        print(f"  version {row['version']:<4} {row['status']:<22} accuracy {accuracy}{each}  {row.get('created', '')}")
        for deployment in row.get("deployment") or []:
            print(f"  {deployment.get('reason') or deployment_line(deployment)}")
        if row.get("deployment_error"):
            print(f"  deployment failed: {row['deployment_error']} (retry with: sentiment-mlops events deliver)")
        rollout = row.get("rollout")
        if rollout and rollout["outcome"] == "completed":
            print(f"  rollout completed: {rollout['endpoint_config']} serves all requests")
        elif rollout:
            print(f"  rollout {rollout['reason']}; {rollout['endpoint_config']} goes on serving")
