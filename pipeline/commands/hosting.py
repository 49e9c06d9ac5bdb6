"""``sentiment-mlops events``, ``endpoints``, ``api`` and ``serve``: the model served on this machine.

``events deliver`` hands pending approval events to the deploy handler, which starts local
endpoints; ``endpoints`` lists and manages them; ``api`` serves the website and its API as the
AWS stack does; ``serve`` serves one model as a SageMaker endpoint does.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from botocore.exceptions import ClientError

from pipeline.commands.common import Reply, deployment_line
from pipeline.errors import CommandError
from pipeline.settings import Settings


def register(commands: argparse._SubParsersAction) -> None:
    events = commands.add_parser("events", help="local approval events and their delivery to the deploy handler")
    event_actions = events.add_subparsers(dest="action", required=True)
    deliver = event_actions.add_parser("deliver", help="deliver pending approval events, oldest first")
    deliver.add_argument("--json", action="store_true")
    deliver.set_defaults(handler=command_events_deliver)
    endpoints = commands.add_parser("endpoints", help="local endpoints: model servers the deploy handler started")
    endpoint_actions = endpoints.add_subparsers(dest="action", required=True)
    endpoint_list = endpoint_actions.add_parser("list", help="endpoints with their status, version and URL")
    endpoint_list.add_argument("--json", action="store_true")
    endpoint_list.set_defaults(handler=command_endpoints)
    for verb, text in (("show", "one endpoint"), ("history", "which version served when, and the updates that did not take"),
                       ("restart", "start an endpoint's server again (after a reboot, say)"),
                       ("delete", "stop an endpoint's server and forget it")):
        action = endpoint_actions.add_parser(verb, help=text)
        action.add_argument("name")
        action.add_argument("--json", action="store_true")
        action.set_defaults(handler=command_endpoints)
    api = commands.add_parser("api", help="the website and its API (API Gateway + the predict Lambda, locally), "
                                          "and the model registry page at /registry")
    api.add_argument("--host", default="127.0.0.1",
                     help="the address to listen on (default: this machine only; anything else prints a warning)")
    api.add_argument("--port", type=int, default=3000)
    api.set_defaults(handler=command_api)
    serve = commands.add_parser("serve", help="serve a model on /ping and /invocations, as a SageMaker endpoint does")
    which = serve.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", type=int, help="a version from the local model registry")
    which.add_argument("--model", help="a model.tar.gz or the folder it unpacks to")
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: this machine only)")
    serve.add_argument("--port", type=int, default=8080)
    serve.set_defaults(handler=command_serve)


# --- events and endpoints --------------------------------------------------------------------------

def command_events_deliver(args: argparse.Namespace, settings: Settings) -> Reply:
    from pipeline.local.services.events import deliver_pending

    try:
        return Reply(deliver_pending(settings), _print_events)
    except Exception as exc:  # the deploy handler's own message; the event stays pending
        raise CommandError(f"{type(exc).__name__}: {exc}".splitlines()[0] + "; the event stays pending") from exc


def command_endpoints(args: argparse.Namespace, settings: Settings) -> Reply:
    from pipeline.local.services.hosting import LocalHosting
    from pipeline.local.state.db import open_state

    conn = open_state(settings.home)
    hosting = LocalHosting(settings.home, conn, runtime_port=settings.runtime_port)
    try:
        if args.action == "list":
            return Reply(hosting.list_endpoints(), _print_endpoints)
        if args.action == "show":
            return Reply(hosting.describe_endpoint(args.name), _print_endpoint)
        if args.action == "history":
            return Reply(hosting.endpoint_history(args.name), _print_history)
        if args.action == "restart":
            return Reply(hosting.restart_endpoint(args.name), _print_endpoint)
        hosting.delete_endpoint(args.name)
        return Reply({"deleted": args.name}, _print_deleted)
    except ClientError as exc:
        raise CommandError(exc.response["Error"]["Message"].rstrip(".") + "; list the endpoints to see their names") from exc
    finally:
        conn.close()


def _print_events(rows: list) -> None:
    if not rows:
        print("  no pending events")
    for row in rows:
        print(f"  {row['event']}: {row.get('reason') or deployment_line(row)}")


def _print_endpoint(row: dict) -> None:
    _print_endpoints([row])


def _print_endpoints(rows: list) -> None:
    for row in rows:
        print(f"  {row['EndpointName']:<20} {row['EndpointStatus']:<10} {row['EndpointConfigName']:<36} "
              f"{row.get('Url') or ''}  {row.get('FailureReason') or ''}")
        pending = row.get("PendingDeploymentSummary")
        if pending:
            share = pending["ProductionVariants"][0]["CurrentWeight"]
            print(f"  {'':<20} rolling out {pending['EndpointConfigName']}: {100 * share:.0f} % of the requests")
        for shadow in row.get("ShadowProductionVariants") or []:
            running = "running" if shadow["CurrentInstanceCount"] else "NOT running (endpoints restart starts it)"
            print(f"  {'':<20} shadow variant {shadow['VariantName']}: a copy of {100 * min(1.0, shadow['CurrentWeight']):.0f} % "
                  f"of the requests, {running}")
    if not rows:
        print("no endpoints")


def _print_history(rows: list) -> None:
    for row in rows:
        version = f"version {row['version']}" if row["version"] is not None else (row["endpoint_config"] or "")
        print(f"  {row['time']}  {row['event']:<12} {version:<12} {row['detail'] or ''}")
    if not rows:
        print("no history")


def _print_deleted(result: dict) -> None:
    print(f"deleted endpoint {result['deleted']}")


# --- serving: a model, or the website and its API --------------------------------------------------

def command_serve(args: argparse.Namespace, settings: Settings) -> Reply:
    """Serve a model over HTTP as a SageMaker endpoint does, until Ctrl-C."""
    from serve.artifact import ArtifactError
    from serve.server.settings import SettingsError
    from serve.server.supervisor import WorkerFailed, serve_model

    path = Path(args.model) if args.model else artifact_path(settings, args.version)
    served: dict[str, str] = {"path": str(path)}

    def announce(url: str) -> None:
        served["url"] = url
        print(f"serving {path} on {url} (GET /ping, POST /invocations); Ctrl-C stops it", flush=True)

    try:
        serve_model(path, args.host, args.port, on_ready=announce)
    except (ArtifactError, SettingsError, WorkerFailed) as exc:
        raise CommandError(str(exc)) from exc
    except OSError as exc:
        raise CommandError(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); pick another --port") from exc
    return Reply(served, _print_served)


def artifact_path(settings: Settings, version: int) -> Path:
    """Where a locally registered version's ``model.tar.gz`` lies in the local artifact store."""
    from pipeline.local.state.db import open_state
    from pipeline.local.state.registry import ModelRegistry
    from pipeline.local.state.store import ArtifactStore

    with contextlib.closing(open_state(settings.home)) as conn:
        package = ModelRegistry(conn).get(settings.model_package_group, version)
    return ArtifactStore(settings.home).path(package.artifact_uri)


def _print_served(result: dict) -> None:
    print(f"stopped serving {result['path']}")


def command_api(args: argparse.Namespace, settings: Settings) -> Reply:
    """The website, its API and the registry page, as the AWS stack serves the first two, until Ctrl-C."""
    from pipeline.local.services.api import api_app
    from pipeline.review.web import PREFIX, is_loopback, registry_mount
    from serve.server.run import listening_socket, serve_forever, url_of

    try:
        sock = listening_socket(args.host, args.port)
    except OSError as exc:
        raise CommandError(f"cannot listen on {args.host}:{args.port} ({exc.strerror}); pick another --port") from exc
    url = url_of(sock)
    if not is_loopback(args.host):
        print(f"warning: listening on {args.host}: other machines can reach the website and the registry page, "
              "which approves and deploys models, with no login; use it only on a network you trust",
              file=sys.stderr, flush=True)
    try:
        app = api_app(settings, url, mounts=[registry_mount(settings, url, args.host)])
    except RuntimeError as exc:  # the local runtime could not start
        sock.close()
        raise CommandError(str(exc)) from exc
    print(f"website and API on {url} (predictions from endpoint {settings.endpoint_name}), the model registry on "
          f"{url}{PREFIX}; Ctrl-C stops it", flush=True)
    serve_forever(app, [sock])
    return Reply({"url": url}, _print_stopped)


def _print_stopped(result: dict) -> None:
    print(f"stopped {result['url']}")
