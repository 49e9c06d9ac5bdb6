"""The ``sentiment-mlops`` command: one entry point, a subcommand per job, ``--json`` for scripts."""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sqlite3
import sys
import threading
from pathlib import Path

from botocore.exceptions import ClientError

from pipeline import aws_commands, registry_commands, run_commands
from pipeline.cli_output import as_text, print_summary
from pipeline.aws.errors import BackendError
from pipeline.download import DownloadError, download, download_dataset
from pipeline.local.db import StateError, state_path
from pipeline.settings import Settings

log = logging.getLogger("sentiment-mlops")

class CommandError(RuntimeError):
    """A failure the user can fix; printed as one line, no traceback."""


def resolve_data(data: str | None, settings: Settings) -> Path:
    if data is None:
        return download_dataset(settings)
    if data.startswith(("http://", "https://")):
        return download(data, None, settings.cache_dir)
    path = Path(data).expanduser()
    if not path.exists():
        raise CommandError(f"--data {data}: no such file or folder; pass the folder holding the reviews, or omit --data to download them")
    return path


def command_run(args: argparse.Namespace, settings: Settings) -> dict:
    params = run_commands.parse_params(args.param)
    data = resolve_data(args.data, settings) if "InputDataUri" not in params else Path(".")
    return run_commands.run_local(settings, data, params, args.sample, use_cache=not args.no_cache,
                                  skip_unchanged=args.skip_unchanged)


def command_executions(args: argparse.Namespace, settings: Settings):
    if args.action == "list":
        return run_commands.list_executions(settings)
    if args.action == "retry":
        return run_commands.retry_local(settings, args.execution_id, use_cache=not args.no_cache)
    return run_commands.summarize(settings, args.execution_id)


def command_aws(args: argparse.Namespace, settings: Settings):
    if args.action == "upsert":
        return aws_commands.upsert(settings)
    if args.action == "start":
        return aws_commands.start(settings, args.param, args.display_name, args.wait, args.timeout, args.poll)
    if args.action == "list":
        return aws_commands.list_executions(settings, args.limit)
    if args.action == "show":
        return aws_commands.show(settings, args.execution_arn)
    if args.action == "stack-parameters":
        return aws_commands.stack_parameters(settings)
    if args.action == "teardown":
        return aws_commands.teardown(settings, args.yes, args.delete_data)
    if args.action == "publish-website":
        return aws_commands.publish_website(settings, args.bucket, args.api_url)
    if args.action == "upload-data":
        return aws_commands.upload_data(settings, args.path, args.name)
    return aws_commands.follow(settings, args.execution_arn, args.timeout, args.poll)


def command_download(args: argparse.Namespace, settings: Settings) -> dict:
    return {"path": str(download_dataset(settings))}


def command_definition(args: argparse.Namespace, settings: Settings) -> dict:
    """The SageMaker Pipelines definition JSON, built offline (no AWS call, no upload)."""
    text = run_commands.quiet_definition_json(settings)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        return {"path": args.output}
    return {"definition": text}


def command_serve(args: argparse.Namespace, settings: Settings) -> dict:
    """Serve a model over HTTP as a SageMaker endpoint does, until Ctrl-C."""
    from serve.artifact import ArtifactError
    from serve.server.settings import SettingsError
    from serve.server.supervisor import WorkerFailed, serve_model

    path = Path(args.model) if args.model else registry_commands.artifact_path(settings, args.version)
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
    return served


def command_api(args: argparse.Namespace, settings: Settings) -> dict:
    """The website and its API, as the AWS stack serves them, until Ctrl-C."""
    from pipeline.local.api import api_app
    from serve.server.run import listening_socket, serve_forever, url_of

    try:
        sock = listening_socket(args.host, args.port)
    except OSError as exc:
        raise CommandError(f"cannot listen on {args.host}:{args.port} ({exc.strerror}); pick another --port") from exc
    url = url_of(sock)
    try:
        app = api_app(settings, url)
    except RuntimeError as exc:  # the local runtime could not start
        sock.close()
        raise CommandError(str(exc)) from exc
    print(f"website and API on {url} (predictions from endpoint {settings.endpoint_name}); Ctrl-C stops it",
          flush=True)
    serve_forever(app, [sock])
    return {"url": url}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sentiment-mlops", allow_abbrev=False, description="Train, evaluate and serve an IMDb sentiment LSTM.")
    parser.add_argument("--home", help="folder for local runs, artifacts and the registry (default ./.mlops or $SENTIMENT_MLOPS_HOME)")
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="execute the pipeline locally: preprocess, train, evaluate, gate, register")
    run.add_argument("--data", help="folder or file with the reviews, or a URL (default: download the official archive)")
    run.add_argument("--param", action="append", metavar="NAME=VALUE",
                     help="set a pipeline parameter, e.g. --param Epochs=4 --param AccuracyThreshold=0.9 (see `definition`)")
    run.add_argument("--sample", type=int, help="use only N reviews per split (a quick look, not a real run)")
    run.add_argument("--no-cache", action="store_true",
                     help="run every step, even where an earlier run with the same inputs could be reused")
    run.add_argument("--skip-unchanged", action="store_true",
                     help="start nothing (exit 0, status skipped) when a successful run within the step cache's "
                          "lifetime had the same data version, code and parameters: for scheduled runs, which would "
                          "otherwise register the cached model again")
    run.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    executions = commands.add_parser("executions", help="local pipeline executions")
    execution_actions = executions.add_subparsers(dest="action", required=True)
    listing = execution_actions.add_parser("list", help="executions, newest first")
    listing.add_argument("--json", action="store_true")
    show = execution_actions.add_parser("show", help="one execution: steps, times, accuracy, registered version")
    show.add_argument("execution_id")
    show.add_argument("--json", action="store_true")
    retry = execution_actions.add_parser(
        "retry", help="run a Failed or Stopped execution again from the step that failed (its steps that "
                      "succeeded are kept; same id, definition and parameters)")
    retry.add_argument("execution_id")
    retry.add_argument("--no-cache", action="store_true", help="do not reuse cached results for the steps that run")
    retry.add_argument("--json", action="store_true")
    download = commands.add_parser("download", help="download and checksum the official IMDb archive into the cache")
    download.add_argument("--json", action="store_true")
    definition = commands.add_parser("definition", help="print the SageMaker Pipelines definition JSON (offline: no AWS call)")
    definition.add_argument("--output", "-o", help="write the JSON to this file instead of printing it")
    _add_registry_parser(commands)
    _add_aws_parser(commands)
    events = commands.add_parser("events", help="local approval events and their delivery to the deploy handler")
    event_actions = events.add_subparsers(dest="action", required=True)
    deliver = event_actions.add_parser("deliver", help="deliver pending approval events, oldest first")
    deliver.add_argument("--json", action="store_true")
    endpoints = commands.add_parser("endpoints", help="local endpoints: model servers the deploy handler started")
    endpoint_actions = endpoints.add_subparsers(dest="action", required=True)
    endpoint_list = endpoint_actions.add_parser("list", help="endpoints with their status, version and URL")
    endpoint_list.add_argument("--json", action="store_true")
    for verb, text in (("show", "one endpoint"), ("restart", "start an endpoint's server again (after a reboot, say)"),
                       ("delete", "stop an endpoint's server and forget it")):
        action = endpoint_actions.add_parser(verb, help=text)
        action.add_argument("name")
        action.add_argument("--json", action="store_true")
    api = commands.add_parser("api", help="the website and its API (API Gateway + the predict Lambda, locally)")
    api.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: this machine only)")
    api.add_argument("--port", type=int, default=3000)
    serve = commands.add_parser("serve", help="serve a model on /ping and /invocations, as a SageMaker endpoint does")
    which = serve.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", type=int, help="a version from the local model registry")
    which.add_argument("--model", help="a model.tar.gz or the folder it unpacks to")
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: this machine only)")
    serve.add_argument("--port", type=int, default=8080)
    return parser


def _add_aws_parser(commands) -> None:
    aws = commands.add_parser("aws", help="the pipeline on SageMaker: upsert it, start and follow executions "
                                          "(needs AWS credentials and the stack of lambda/template.yaml)")
    actions = aws.add_subparsers(dest="action", required=True)
    upsert = actions.add_parser("upsert", help="upload the code bundles and create or update the pipeline")
    upsert.add_argument("--json", action="store_true")
    start = actions.add_parser("start", help="start an execution on SageMaker")
    start.add_argument("--param", action="append", metavar="NAME=VALUE",
                       help="set a pipeline parameter (checked against the deployed definition before starting)")
    start.add_argument("--display-name", help="a name for the execution, shown in Studio")
    start.add_argument("--wait", action="store_true", help="follow the execution until it ends")
    listing = actions.add_parser("list", help="the pipeline's executions on SageMaker, newest first")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--json", action="store_true")
    show = actions.add_parser("show", help="one execution: status, parameters, steps")
    show.add_argument("execution_arn")
    show.add_argument("--json", action="store_true")
    parameters = actions.add_parser("stack-parameters", help="the parameters to deploy lambda/template.yaml with "
                                                             "(names, prefix, image repositories), for sam deploy")
    parameters.add_argument("--json", action="store_true")
    teardown = actions.add_parser("teardown", help="delete the stack, the endpoint and the pipeline: nothing left "
                                                   "billing (without --yes, only list what would go)")
    teardown.add_argument("--yes", action="store_true", help="delete, instead of listing what would be deleted")
    teardown.add_argument("--delete-data", action="store_true",
                          help="also delete the artifact bucket (every version) and the model registry")
    teardown.add_argument("--json", action="store_true")
    website = actions.add_parser("publish-website", help="upload the website and its config.json to the stack's bucket")
    website.add_argument("--bucket", help="default: the stack's WebsiteBucketName output")
    website.add_argument("--api-url", help="default: the stack's ApiUrl output")
    website.add_argument("--json", action="store_true")
    upload = actions.add_parser("upload-data", help="upload a dataset under the bucket's data/ prefix; with the "
                                                    "template's trigger, that starts a run on it")
    upload.add_argument("path", help="an archive or .csv (a dataset by itself), or a folder of the dataset's files")
    upload.add_argument("--name", help="the folder under data/ (default: the file or folder name)")
    upload.add_argument("--json", action="store_true")
    wait = actions.add_parser("wait", help="follow an execution until it ends")
    wait.add_argument("execution_arn")
    for waiting in (start, wait):
        waiting.add_argument("--timeout", type=float, default=aws_commands.DEFAULT_TIMEOUT_S, help="seconds to wait at most")
        waiting.add_argument("--poll", type=float, default=aws_commands.DEFAULT_POLL_S, help="seconds between status checks")
        waiting.add_argument("--json", action="store_true")


def _add_registry_parser(commands) -> None:
    registry = commands.add_parser("registry", help="list, show, approve or reject registered model versions")
    registry.add_argument("--backend", choices=("local", "sagemaker"), default="local",
                          help="the local SQLite registry (default) or SageMaker's model registry")
    actions = registry.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="model versions, newest first")
    listing.add_argument("--status", choices=("PendingManualApproval", "Approved", "Rejected"))
    listing.add_argument("--json", action="store_true")
    show = actions.add_parser("show", help="one version: metrics, artifact, approval history")
    show.add_argument("version", type=int)
    show.add_argument("--json", action="store_true")
    for verb in registry_commands.APPROVAL_VERBS:
        action = actions.add_parser(verb, help=f"{verb} a version (locally, the approval event goes to the deploy handler)")
        action.add_argument("version", type=int)
        action.add_argument("--comment", help="why: kept in the approval history")
        action.add_argument("--no-deploy", action="store_true",
                            help="locally: keep the approval event pending instead of deploying at once "
                                 "(`events deliver` delivers it later)")
        action.add_argument("--json", action="store_true")


def command_registry(args: argparse.Namespace, settings: Settings):
    if args.action == "list":
        return registry_commands.list_versions(settings, args.backend, args.status)
    if args.action == "show":
        return registry_commands.show_version(settings, args.backend, args.version)
    return registry_commands.set_status(settings, args.backend, args.version, args.action, args.comment,
                                        deliver=not args.no_deploy)


def command_events(args: argparse.Namespace, settings: Settings) -> list:
    from pipeline.local.events import deliver_pending

    try:
        return deliver_pending(settings)
    except Exception as exc:  # the deploy handler's own message; the event stays pending
        raise CommandError(f"{type(exc).__name__}: {exc}".splitlines()[0] + "; the event stays pending") from exc


def command_endpoints(args: argparse.Namespace, settings: Settings):
    from pipeline.local.db import open_state
    from pipeline.local.hosting import LocalHosting

    hosting = LocalHosting(settings.home, open_state(settings.home), runtime_port=settings.runtime_port)
    try:
        if args.action == "list":
            return hosting.list_endpoints()
        if args.action == "show":
            return hosting.describe_endpoint(args.name)
        if args.action == "restart":
            return hosting.restart_endpoint(args.name)
        hosting.delete_endpoint(args.name)
        return {"deleted": args.name}
    except ClientError as exc:
        raise CommandError(exc.response["Error"]["Message"] + "; list the endpoints to see their names") from exc


def _exit_status(args: argparse.Namespace, result) -> int:
    """A run, a retry or a wait whose pipeline ended other than Succeeded is a failure for scripts too."""
    follows = (args.command == "run" or (args.command == "executions" and args.action == "retry")
               or (args.command == "aws" and (args.action == "wait" or (args.action == "start" and args.wait))))
    if args.command == "registry" and isinstance(result, dict) and result.get("deployment_error"):
        return 1  # the approval is recorded; its deployment is not done
    if args.command == "run" and result["status"] == run_commands.SKIPPED:
        return 0  # nothing to do is an answer, not a failure: a cron line stays quiet
    return 1 if follows and result["status"] != "Succeeded" else 0


def _state_error_message(error: sqlite3.Error, settings: Settings) -> str:
    """Say which file and what to do: "database is locked" alone does not name the home."""
    path = state_path(settings.home)
    text = str(error)
    if "locked" in text or "busy" in text:
        return (f"the state database {path} stayed locked by another sentiment-mlops command; "
                "wait for it to finish (executions list shows what runs) and try again")
    if isinstance(error, sqlite3.DatabaseError) and "not a database" in text:
        return (f"{path} is not a sentiment-mlops state database ({text}); "
                "point --home at another folder or move the file away")
    return f"the state database {path} could not be used: {text}"


def _interrupt(signum: int, frame) -> None:
    """SIGTERM and SIGHUP (a closed terminal, `kill`) stop a command as Ctrl-C does, so that a
    run marks its execution Stopped and stops its job instead of leaving both behind."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    stop_signals = [getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        return _main(argv)
    previous = {s: signal.signal(s, _interrupt) for s in stop_signals}
    try:
        return _main(argv)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings(home=Path(args.home)) if args.home else Settings()
    handlers = {"run": command_run, "download": command_download, "definition": command_definition,
                "registry": command_registry, "executions": command_executions, "aws": command_aws,
                "serve": command_serve, "events": command_events, "endpoints": command_endpoints,
                "api": command_api}
    try:
        result = handlers[args.command](args, settings)
    except (CommandError, DownloadError, StateError, BackendError, run_commands.RunError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except sqlite3.Error as exc:
        log.debug("state database error", exc_info=True)
        print(f"error: {_state_error_message(exc, settings)}", file=sys.stderr)
        return 2
    except ConnectionError as exc:  # a network that went away mid-command
        log.debug("connection error", exc_info=True)
        print(f"error: {exc}; check the network connection and run the command again", file=sys.stderr)
        return 2
    except OSError as exc:  # a home folder that cannot be written, a full disk
        log.debug("operating system error", exc_info=True)
        print(f"error: {exc}; check the path, its permissions and free space "
              "(--verbose shows where it happened)", file=sys.stderr)
        return 2
    if getattr(args, "json", False):
        print(json.dumps(result, default=as_text))
    elif args.command == "run" and result["status"] == run_commands.SKIPPED:
        print(f"skipped: {result['reason']}")
    else:
        print_summary(args.command, result)
    return _exit_status(args, result)


if __name__ == "__main__":
    sys.exit(main())
