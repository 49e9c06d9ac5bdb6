"""The ``sentiment-mlops`` command.

Until the pipeline runtime lands, ``run`` executes the three job scripts in sequence, each as
its own process exactly as a container would run it, on a data path or the downloaded archive.
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from pipeline import registry_commands
from pipeline.aws.errors import BackendError
from pipeline.download import DownloadError, download, download_dataset
from pipeline.local.db import StateError
from pipeline.settings import REPO_ROOT, Settings

log = logging.getLogger("sentiment-mlops")

STEP_SCRIPTS = {
    "Preprocess": REPO_ROOT / "steps" / "preprocess.py",
    "Train": REPO_ROOT / "train" / "train.py",
    "Evaluate": REPO_ROOT / "evaluation" / "evaluate.py",
}


class CommandError(RuntimeError):
    """A failure the user can fix; printed as one line, no traceback."""


def _run_step(name: str, args: list[str], log_path: Path) -> float:
    """Run one job script, its output teed to the terminal and to its log; returns seconds."""
    started = time.perf_counter()
    log.info("step %s: %s", name, " ".join(args))
    with open(log_path, "w", encoding="utf-8") as log_file:
        process = subprocess.Popen([sys.executable, str(STEP_SCRIPTS[name]), *args], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, errors="replace")
        assert process.stdout is not None
        for line in process.stdout:
            log_file.write(line)
            sys.stderr.write(line)
        code = process.wait()
    if code != 0:
        raise CommandError(f"step {name} failed (exit {code}); its log: {log_path}")
    return time.perf_counter() - started


def resolve_data(data: str | None, settings: Settings) -> Path:
    if data is None:
        return download_dataset(settings)
    if data.startswith(("http://", "https://")):
        return download(data, None, settings.cache_dir)
    path = Path(data).expanduser()
    if not path.exists():
        raise CommandError(f"--data {data}: no such file or folder; pass the folder holding the reviews, or omit --data to download them")
    return path


def option_args(pairs: list[str] | None, flag: str, switches: bool = False) -> list[str]:
    """``NAME=VALUE`` pairs as the ``--NAME VALUE`` arguments a job script takes.

    With ``switches``, true/false become ``--NAME``/``--no-NAME`` (the preprocessing step's on/off flags).
    """
    args = []
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CommandError(f"{flag} {pair!r}: write options as NAME=VALUE, for example {flag} epochs=3")
        name = name.replace("_", "-")
        if switches and value.lower() in ("true", "false"):
            args.append(f"--{name}" if value.lower() == "true" else f"--no-{name}")
        else:
            args += [f"--{name}", value]
    return args


def command_run(args: argparse.Namespace, settings: Settings) -> dict:
    preprocess_options = option_args(args.preprocess_option, "-P", switches=True)
    hyperparameters = option_args(args.hyperparameter, "-H")
    if args.sample:
        preprocess_options += ["--sample", str(args.sample)]
    data = resolve_data(args.data, settings)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    work = Path(args.work_dir or settings.home / "runs" / stamp)
    if work.exists() and any(work.iterdir()):
        raise CommandError(f"{work} is not empty: choose another --work-dir")
    (work / "logs").mkdir(parents=True)
    prep, model, evaluation = work / "preprocess", work / "model", work / "evaluation"
    steps = {
        "Preprocess": ["--input-dir", str(data), "--output-dir", str(prep), *preprocess_options],
        "Train": ["--train", str(prep / "train"), "--validation", str(prep / "validation"), "--model-dir", str(model),
                  "--output-data-dir", str(work / "train-output"), "--checkpoint-dir", str(work / "checkpoints"),
                  "--profile", args.profile, *hyperparameters],
        "Evaluate": ["--model", str(model), "--test", str(prep / "test"), "--output-dir", str(evaluation)],
    }
    seconds = {name: _run_step(name, step_args, work / "logs" / f"{name.lower()}.log") for name, step_args in steps.items()}
    report = json.loads((evaluation / "evaluation.json").read_text(encoding="utf-8"))
    accuracy = report["binary_classification_metrics"]["accuracy"]["value"]
    return {"work_dir": str(work), "data": str(data), "profile": args.profile, "accuracy": accuracy,
            "steps": {name: {"seconds": round(s, 1)} for name, s in seconds.items()},
            "total_seconds": round(sum(seconds.values()), 1)}


def command_download(args: argparse.Namespace, settings: Settings) -> dict:
    return {"path": str(download_dataset(settings))}


def command_definition(args: argparse.Namespace, settings: Settings) -> dict:
    """The SageMaker Pipelines definition JSON, built offline (no AWS call, no upload)."""
    import logging as _logging
    import warnings

    from pipeline.definition import definition_json

    # The SDK logs and warns about its own choices while building; stdout stays pure JSON.
    for name in ("sagemaker", "sagemaker.config"):
        _logging.getLogger(name).setLevel(_logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = definition_json(settings)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        return {"path": args.output}
    return {"definition": text}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sentiment-mlops", allow_abbrev=False, description="Train, evaluate and serve an IMDb sentiment LSTM.")
    parser.add_argument("--home", help="folder for local runs, artifacts and the registry (default ./.mlops or $SENTIMENT_MLOPS_HOME)")
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="preprocess, train and evaluate, each step as its own process")
    run.add_argument("--data", help="folder or file with the reviews, or a URL (default: download the official archive)")
    run.add_argument("--profile", choices=("cpu", "gpu"), default="cpu", help="training hyperparameter profile")
    run.add_argument("--hyperparameter", "-H", action="append", metavar="NAME=VALUE", help="override one training hyperparameter")
    run.add_argument("--preprocess-option", "-P", action="append", metavar="NAME=VALUE",
                     help="set one preprocessing option (for example -P max_len=300 -P truncate=head)")
    run.add_argument("--sample", type=int, help="use only N reviews per split (a quick look, not a real run)")
    run.add_argument("--work-dir", help="where this run's outputs go (default HOME/runs/TIMESTAMP)")
    run.add_argument("--json", action="store_true", help="print the summary as one JSON object")
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
    if command == "run":
        print(f"run finished in {result['total_seconds']}s; outputs in {result['work_dir']}")
        for name, step in result["steps"].items():
            print(f"  {name:<10} {step['seconds']:>7.1f}s")
        print(f"  test accuracy {result['accuracy']:.4f}")
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings(home=Path(args.home)) if args.home else Settings()
    handlers = {"run": command_run, "download": command_download, "definition": command_definition,
                "registry": command_registry}
    try:
        result = handlers[args.command](args, settings)
    except (CommandError, DownloadError, StateError, BackendError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if getattr(args, "json", False):
        print(json.dumps(result))
    else:
        _print_summary(args.command, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
