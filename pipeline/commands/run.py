"""``sentiment-mlops run``, ``executions`` and ``download``: the main job on the local runtime,
its records, and the dataset it reads by default; the arguments and the printing. The work is
``pipeline.runs``'s.

``run`` builds the very definition JSON that ``upsert`` would send to SageMaker, puts the data
and the code bundles into the local artifact store, and executes it step by step.
"""
from __future__ import annotations

import argparse

from pipeline.commands.common import (
    Reply,
    followed_exit_code,
    list_executions,
    parse_params,
    print_executions,
    print_path,
)
from pipeline.download import download_known
from pipeline.errors import CommandError
from pipeline.runs import (
    SKIPPED,
    LocalExecutions,
    resolve_data,
    retry_local,
    run_local,
    summarize,
)
from pipeline.settings import KNOWN_DATASETS, Settings

# --- the command line -----------------------------------------------------------------------------

def register(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="execute the pipeline locally: preprocess, train, evaluate, gate, register")
    run.add_argument("--data", action="append", metavar="[NAME=]PATH",
                     help="a dataset's folder or file, or a URL; give it more than once to train one model on several "
                          "(each keeps its own test set; NAME names it, else its layout does: imdb, sst2). "
                          "Default: download IMDb and SST-2")
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
    run.set_defaults(handler=command_run)
    executions = commands.add_parser("executions", help="local pipeline executions")
    execution_actions = executions.add_subparsers(dest="action", required=True)
    listing = execution_actions.add_parser("list", help="executions, newest first")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=command_executions_list)
    show = execution_actions.add_parser("show", help="one execution: steps, times, accuracy, registered version")
    show.add_argument("execution_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=command_executions_show)
    retry = execution_actions.add_parser(
        "retry", help="run a Failed or Stopped execution again from the step that failed (its steps that "
                      "succeeded are kept; same id, definition and parameters)")
    retry.add_argument("execution_id")
    retry.add_argument("--no-cache", action="store_true", help="do not reuse cached results for the steps that run")
    retry.add_argument("--json", action="store_true")
    retry.set_defaults(handler=command_executions_retry)
    download_parser = commands.add_parser(
        "download", help="download and checksum a dataset into the cache: the official IMDb archive, or SST-2")
    download_parser.add_argument(
        "dataset", nargs="?", choices=KNOWN_DATASETS, default="imdb",
        help="imdb (default): aclImdb_v1.tar.gz; sst2: stsa.binary.train/dev/test in one folder that --data accepts")
    download_parser.add_argument("--json", action="store_true")
    download_parser.set_defaults(handler=command_download)


def command_run(args: argparse.Namespace, settings: Settings) -> Reply:
    params = parse_params(args.param)
    if "InputDataUri" in params and (args.data or args.sample):
        raise CommandError("--param InputDataUri names the data already: leave out --data and --sample, or the parameter")
    if params.get("InputDataUri") == "":
        raise CommandError("--param InputDataUri= is empty: give the s3:// URI of the data, or leave it out and pass --data")
    data = resolve_data(args.data, settings) if "InputDataUri" not in params else []
    result = run_local(settings, data, params, args.sample, use_cache=not args.no_cache,
                       skip_unchanged=args.skip_unchanged)
    if result["status"] == SKIPPED:  # nothing to do is an answer, not a failure: a cron line stays quiet
        return Reply(result, _print_skipped)
    return Reply(result, print_execution, followed_exit_code(result))


def command_executions_list(args: argparse.Namespace, settings: Settings) -> Reply:
    return Reply(list_executions(LocalExecutions(settings)), print_executions)


def command_executions_show(args: argparse.Namespace, settings: Settings) -> Reply:
    return Reply(summarize(settings, args.execution_id), print_execution)


def command_executions_retry(args: argparse.Namespace, settings: Settings) -> Reply:
    result = retry_local(settings, args.execution_id, use_cache=not args.no_cache)
    return Reply(result, print_execution, followed_exit_code(result))


def command_download(args: argparse.Namespace, settings: Settings) -> Reply:
    return Reply({"path": str(download_known(args.dataset, settings))}, print_path)


def _print_skipped(result: dict) -> None:
    print(f"skipped: {result['reason']}")


def print_execution(result: dict) -> None:
    print(f"execution {result['execution_id']}: {result['status']}")
    for name, step in result["steps"].items():
        seconds = "" if step["seconds"] is None else f"{step['seconds']:>7.1f}s"
        note = f"  (cached: the result of execution {step['cached_from']})" if step.get("cached_from") else ""
        if step.get("attempts", 0) > 1:
            note += f"  ({step['attempts']} attempts)"
        if (step.get("hosts") or 1) > 1:
            note += f"  (on {step['hosts']} hosts)"
        print(f"  {name:<21} {step['status']:<10} {seconds}{note}")
    if result["accuracy"] is not None:
        by_dataset = result.get("accuracy_by_dataset") or {}
        if len(by_dataset) > 1:
            print(f"  test accuracy {result['accuracy']:.4f} over every test set")
            for name, accuracy in by_dataset.items():
                print(f"    {name:<12} {accuracy:.4f}")
        else:
            print(f"  test accuracy {result['accuracy']:.4f}")
        print(f"  thresholds: reviews {result['threshold']}, sentences {result['sentence_threshold']}")
    if result["model_package_version"] is not None:
        print(f"  registered model version {result['model_package_version']} (approve it: sentiment-mlops registry approve "
              f"{result['model_package_version']})")
    if result["failure_reason"]:
        print(f"  {result['failure_reason']}")
    if result.get("rerun"):
        print(f"  run it again from the step that stopped: {result['rerun']}")
