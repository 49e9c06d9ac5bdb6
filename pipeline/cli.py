"""The ``sentiment-mlops`` command: one entry point, a subcommand per job, ``--json`` for scripts."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipeline import registry_commands, run_commands
from pipeline.aws.errors import BackendError
from pipeline.download import DownloadError, download, download_dataset
from pipeline.local.db import StateError
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
    return run_commands.run_local(settings, data, params, args.sample)


def command_executions(args: argparse.Namespace, settings: Settings):
    if args.action == "list":
        return run_commands.list_executions(settings)
    return run_commands.summarize(settings, args.execution_id)


def command_download(args: argparse.Namespace, settings: Settings) -> dict:
    return {"path": str(download_dataset(settings))}


def command_definition(args: argparse.Namespace, settings: Settings) -> dict:
    """The SageMaker Pipelines definition JSON, built offline (no AWS call, no upload)."""
    text = run_commands.quiet_definition_json(settings)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        return {"path": args.output}
    return {"definition": text}


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
    run.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    executions = commands.add_parser("executions", help="local pipeline executions")
    execution_actions = executions.add_subparsers(dest="action", required=True)
    listing = execution_actions.add_parser("list", help="executions, newest first")
    listing.add_argument("--json", action="store_true")
    show = execution_actions.add_parser("show", help="one execution: steps, times, accuracy, registered version")
    show.add_argument("execution_id")
    show.add_argument("--json", action="store_true")
    download = commands.add_parser("download", help="download and checksum the official IMDb archive into the cache")
    download.add_argument("--json", action="store_true")
    definition = commands.add_parser("definition", help="print the SageMaker Pipelines definition JSON (offline: no AWS call)")
    definition.add_argument("--output", "-o", help="write the JSON to this file instead of printing it")
    _add_registry_parser(commands)
    return parser


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
        action.add_argument("--json", action="store_true")


def command_registry(args: argparse.Namespace, settings: Settings):
    if args.action == "list":
        return registry_commands.list_versions(settings, args.backend, args.status)
    if args.action == "show":
        return registry_commands.show_version(settings, args.backend, args.version)
    return registry_commands.set_status(settings, args.backend, args.version, args.action, args.comment)


def _print_summary(command: str, result: dict) -> None:
    if command == "run" or (command == "executions" and isinstance(result, dict)):
        _print_execution(result)
    elif command == "executions":
        for row in result:
            print(f"  {row['execution_id']}  {row['status']:<10} {row['started']}  {row['failure_reason'] or ''}")
    elif command == "registry":
        rows = result if isinstance(result, list) else [result]
        if not rows:
            print("no model versions registered")
        for row in rows:
            accuracy = "—" if row.get("accuracy") is None else f"{row['accuracy']:.4f}"
            print(f"  version {row['version']:<4} {row['status']:<22} accuracy {accuracy}  {row.get('created', '')}")
    elif command == "definition":
        if "definition" in result:
            sys.stdout.write(result["definition"])
        else:
            print(result["path"])
    else:
        print(result["path"])


def _print_execution(result: dict) -> None:
    print(f"execution {result['execution_id']}: {result['status']}")
    for name, step in result["steps"].items():
        seconds = "" if step["seconds"] is None else f"{step['seconds']:>7.1f}s"
        print(f"  {name:<14} {step['status']:<10} {seconds}")
    if result["accuracy"] is not None:
        print(f"  test accuracy {result['accuracy']:.4f} (threshold {result['threshold']})")
    if result["model_package_version"] is not None:
        print(f"  registered model version {result['model_package_version']} (approve it: sentiment-mlops registry approve "
              f"{result['model_package_version']})")
    if result["failure_reason"]:
        print(f"  {result['failure_reason']}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings(home=Path(args.home)) if args.home else Settings()
    handlers = {"run": command_run, "download": command_download, "definition": command_definition,
                "registry": command_registry, "executions": command_executions}
    try:
        result = handlers[args.command](args, settings)
    except (CommandError, DownloadError, StateError, BackendError, run_commands.RunError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if getattr(args, "json", False):
        print(json.dumps(result))
    else:
        _print_summary(args.command, result)
    # A run whose pipeline failed (the gate, or a step) is a failure for scripts too.
    return 1 if args.command == "run" and result["status"] != "Succeeded" else 0


if __name__ == "__main__":
    sys.exit(main())
