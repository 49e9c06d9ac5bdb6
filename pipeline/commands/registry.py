"""``sentiment-mlops registry ...``: list, show, approve and reject model versions.

The same commands work on the local registry (SQLite under the home folder, the default) and
on SageMaker's model registry (``--backend sagemaker``), and print the same fields, so a script
written against one works against the other.
"""
from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pipeline.commands.common import Reply, deployment_line
from pipeline.definition import report_accuracy
from pipeline.parameters import APPROVAL_STATUSES
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.local.state.registry import ModelRegistry

APPROVAL_VERBS = {"approve": "Approved", "reject": "Rejected"}


def _local_summary(package) -> dict[str, Any]:
    return {"version": package.version, "status": package.approval_status, "accuracy": report_accuracy(package.metrics),
            "arn": package.arn, "created": package.creation_time, "artifact": package.artifact_uri,
            "execution_id": package.execution_id, "approval_description": package.approval_description}


@contextlib.contextmanager
def _local_registry(settings: Settings) -> Iterator[ModelRegistry]:
    """The local registry, on a connection closed when the command is done with it."""
    from pipeline.local.state.db import open_state
    from pipeline.local.state.registry import ModelRegistry

    with contextlib.closing(open_state(settings.home)) as conn:
        yield ModelRegistry(conn)


def list_versions(settings: Settings, backend: str, status: str | None) -> list[dict[str, Any]]:
    if backend == "sagemaker":
        from pipeline.aws import list_model_packages, make_clients

        return list_model_packages(make_clients(settings), settings.model_package_group, status)
    with _local_registry(settings) as registry:
        return [_local_summary(p) for p in registry.list_packages(settings.model_package_group, status)]


def show_version(settings: Settings, backend: str, version: int) -> dict[str, Any]:
    if backend == "sagemaker":
        from pipeline.aws import describe_model_package, make_clients

        return describe_model_package(make_clients(settings), settings.model_package_group, version)
    with _local_registry(settings) as registry:
        package = registry.get(settings.model_package_group, version)
        history = [{"when": h.changed_at, "who": h.approver, "from": h.from_status, "to": h.to_status,
                    "comment": h.comment} for h in registry.history(settings.model_package_group, version)]
    return {**_local_summary(package), "metrics": package.metrics, "inference_specification": package.inference_specification,
            "history": history}


def set_status(settings: Settings, backend: str, version: int, verb: str, comment: str | None,
               deliver: bool = True) -> dict[str, Any]:
    """Approve or reject. On SageMaker, EventBridge takes the event from there. Locally the
    event is recorded and (unless ``deliver`` is False) handed to the deploy handler at once;
    a deployment that fails leaves the approval in place and says why in ``deployment_error``."""
    from pipeline.local.services.events import deliver_pending, record_event

    status = APPROVAL_VERBS[verb]
    if backend == "sagemaker":
        from pipeline.aws import make_clients, set_approval

        return set_approval(make_clients(settings), settings.model_package_group, version, status, comment or "")
    with _local_registry(settings) as registry:
        change = registry.update_approval(settings.model_package_group, version, status, comment=comment)
    result = _local_summary(change.package)
    result["event"] = str(record_event(settings, change.event)) if change.event else None
    result["deployment"], result["deployment_error"] = [], None
    if deliver:
        try:
            result["deployment"] = deliver_pending(settings)
        except Exception as error:  # the deploy handler's or the hosting's own message, kept to one line
            result["deployment_error"] = f"{type(error).__name__}: {error}".splitlines()[0]
    return result


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
    for verb in APPROVAL_VERBS:
        action = actions.add_parser(verb, help=f"{verb} a version (locally, the approval event goes to the deploy handler)")
        action.add_argument("version", type=int)
        action.add_argument("--comment", help="why: kept in the approval history")
        action.add_argument("--no-deploy", action="store_true",
                            help="locally: keep the approval event pending instead of deploying at once "
                                 "(`events deliver` delivers it later)")
        action.add_argument("--json", action="store_true")
        action.set_defaults(handler=command_set_status)


def command_list(args: argparse.Namespace, settings: Settings) -> Reply:
    return Reply(list_versions(settings, args.backend, args.status), _print_versions)


def command_show(args: argparse.Namespace, settings: Settings) -> Reply:
    return Reply(show_version(settings, args.backend, args.version), _print_version)


def command_set_status(args: argparse.Namespace, settings: Settings) -> Reply:
    result = set_status(settings, args.backend, args.version, args.action, args.comment, deliver=not args.no_deploy)
    # exit 1 when the approval is recorded but its deployment is not done
    return Reply(result, _print_version, 1 if isinstance(result, dict) and result.get("deployment_error") else 0)


def _print_version(result: dict) -> None:
    _print_versions([result])


def _print_versions(rows: list) -> None:
    if not rows:
        print("no model versions registered")
    for row in rows:
        accuracy = "—" if row.get("accuracy") is None else f"{row['accuracy']:.4f}"
        print(f"  version {row['version']:<4} {row['status']:<22} accuracy {accuracy}  {row.get('created', '')}")
        for deployment in row.get("deployment") or []:
            print(f"  {deployment.get('reason') or deployment_line(deployment)}")
        if row.get("deployment_error"):
            print(f"  deployment failed: {row['deployment_error']} (retry with: sentiment-mlops events deliver)")
