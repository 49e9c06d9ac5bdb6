"""``sentiment-mlops aws ...``: the same pipeline on SageMaker.

``upsert`` uploads the code bundles and creates or updates the pipeline with the definition the
local runtime executes; ``start`` starts an execution with ``--param Name=Value`` pairs checked
against the deployed definition, and the data's ``InputDataVersion`` (with ``--wait`` it follows
it to its end); ``list``,
``show`` and ``wait`` list, show and follow executions. Approvals go through ``registry --backend sagemaker``,
or through SageMaker Studio.
"""
from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from pipeline.commands.common import Reply, followed_exit_code, list_executions, parse_params, print_executions
from pipeline.settings import WEBSITE_DIR, Settings

log = logging.getLogger(__name__)

DEFAULT_POLL_S = 30.0
DEFAULT_TIMEOUT_S = 8 * 3600.0


def connect(settings: Settings):
    """The clients, and the settings with the stack's bucket and role where the environment names none."""
    from pipeline.aws import make_clients
    from pipeline.aws.stack import stack_settings

    clients = make_clients(settings)
    return stack_settings(settings, clients), clients


def upsert(settings: Settings) -> dict[str, Any]:
    """Upload the bundles the definition refers to, then create or update the pipeline."""
    from pipeline.aws import require_role, upload_bundles, upsert_pipeline
    from pipeline.bundles import build_bundles
    from pipeline.definition import quiet_definition_json

    settings, clients = connect(settings)
    require_role(settings)  # before anything is built or uploaded
    bundles = build_bundles(settings)
    definition = quiet_definition_json(settings, bundles)
    report = upload_bundles(clients, settings, bundles)
    arn = upsert_pipeline(clients, settings, definition)
    return {"pipeline_arn": arn, "uploaded": report.uploaded, "already_uploaded": report.skipped}


def start(settings: Settings, params: list[str] | None, display_name: str | None, wait: bool,
          timeout_s: float = DEFAULT_TIMEOUT_S, poll_s: float = DEFAULT_POLL_S) -> dict[str, Any]:
    """Start an execution; with ``wait``, follow it until it ends.

    Unless ``--param InputDataVersion=...`` is given, the execution carries the version of the data
    at its ``InputDataUri`` (as a scheduled start does), so that data replaced in place is trained
    on instead of answered from SageMaker's step cache.
    """
    from pipeline.aws import deployed_definition, describe_execution, make_clients, start_execution
    from pipeline.aws.pipelines import with_data_version

    clients = make_clients(settings)
    definition = deployed_definition(clients, settings)
    values = with_data_version(clients, definition, parse_params(params))
    arn = start_execution(clients, settings, values, definition=definition, display_name=display_name)
    if wait:
        return follow(settings, arn, timeout_s, poll_s, clients=clients)
    return describe_execution(clients, arn)


def follow(settings: Settings, execution: str, timeout_s: float = DEFAULT_TIMEOUT_S,
           poll_s: float = DEFAULT_POLL_S, *, clients=None) -> dict[str, Any]:
    """Wait for an execution (its id or ARN) to end, logging each change of its status or its
    steps' statuses."""
    from pipeline.aws import make_clients, wait_for_execution
    from pipeline.aws.pipelines import execution_arn_of

    clients = clients or make_clients(settings)
    return wait_for_execution(clients, execution_arn_of(clients, settings, execution), timeout_s=timeout_s,
                              poll_s=poll_s, on_progress=_log_progress)


def _log_progress(found: dict[str, Any]) -> None:
    steps = ", ".join(f"{s['name']} {s['status']}" for s in found.get("steps") or [])
    log.info("%s: %s%s", found["arn"].rsplit("/", 1)[-1], found["status"], f" ({steps})" if steps else "")


def show(settings: Settings, execution: str) -> dict[str, Any]:
    """An execution (its id or ARN) with its parameters and (where the endpoint lists them) its steps."""
    from pipeline.aws import describe_execution, execution_steps, make_clients
    from pipeline.aws.pipelines import execution_arn_of

    clients = make_clients(settings)
    execution_arn = execution_arn_of(clients, settings, execution)
    found = describe_execution(clients, execution_arn)
    steps, note = execution_steps(clients, execution_arn)
    return {**found, "steps": steps, "steps_note": note}


# --- the website ---------------------------------------------------------------------------------

WEBSITE_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
                 "style.css": "text/css; charset=utf-8"}


def publish_website(settings: Settings, bucket: str | None = None, api_url: str | None = None) -> dict[str, Any]:
    """Upload the page and the ``config.json`` that names its API (by default the stack's
    ``WebsiteBucketName`` and ``ApiUrl`` outputs), so that nobody pastes an address into the HTML."""
    from urllib.parse import urlsplit

    from pipeline.aws import make_clients
    from pipeline.aws.errors import BackendError, aws_errors
    from pipeline.aws.stack import stack_outputs

    clients = make_clients(settings)
    if bucket is None or api_url is None:
        outputs = stack_outputs(clients, settings.stack_name)
        bucket, api_url = bucket or outputs["WebsiteBucketName"], api_url or outputs["ApiUrl"]
    parts = urlsplit(api_url)
    if parts.scheme != "https" or not parts.hostname or parts.path.strip("/") or parts.query:
        raise BackendError(f"--api-url {api_url!r}: give the API's https:// base URL, e.g. the stack's ApiUrl output")
    s3 = clients.s3
    config = json.dumps({"apiUrl": api_url.rstrip("/")}).encode("utf-8")
    uploads = [(name, (WEBSITE_DIR / name).read_bytes(), kind) for name, kind in WEBSITE_FILES.items()]
    uploads.append(("config.json", config, "application/json"))
    for key, body, content_type in uploads:
        with aws_errors(f"uploading {key} to s3://{bucket}"):
            s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type, CacheControl="no-cache")
    return {"bucket": bucket, "uploaded": [key for key, _, _ in uploads], "api_url": api_url.rstrip("/")}


# --- new data: what the retrain trigger (lambda/retrain.py) acts on -------------------------------

def upload_data(settings: Settings, path: str, name: str | None) -> dict[str, Any]:
    """Upload a dataset under the watched prefix; storing its last object starts a run."""
    from pathlib import Path

    from pipeline.aws.data import upload_dataset
    from pipeline.aws.upload import check_bucket

    settings, clients = connect(settings)
    check_bucket(clients, settings.bucket)
    return upload_dataset(clients, settings, Path(path).expanduser(), name)


# --- the stack: its parameters, and taking everything down ----------------------------------------

def stack_parameters(settings: Settings) -> dict[str, Any]:
    """What ``sam deploy --parameter-overrides`` takes, from the settings the pipeline is built with."""
    from pipeline.aws.stack import stack_parameters as parameters

    values = parameters(settings)
    return {"stack_parameters": values,
            "parameter_overrides": " ".join(f"{name}={value}" for name, value in values.items())}


def teardown(settings: Settings, yes: bool, delete_data: bool) -> dict[str, Any]:
    """Delete the stack, the endpoint and the pipeline (and with ``delete_data`` the bucket and
    the registry); without ``yes``, only say what would go."""
    from pipeline.aws import make_clients
    from pipeline.aws.teardown import teardown as take_down

    return take_down(make_clients(settings), settings, yes=yes, delete_data=delete_data)


# --- the command line -----------------------------------------------------------------------------

def register(commands: argparse._SubParsersAction) -> None:
    aws = commands.add_parser("aws", help="the pipeline on SageMaker: upsert it, start and follow executions "
                                          "(needs AWS credentials and the stack of lambda/template.yaml)")
    actions = aws.add_subparsers(dest="action", required=True)
    upsert_parser = actions.add_parser("upsert", help="upload the code bundles and create or update the pipeline")
    upsert_parser.add_argument("--json", action="store_true")
    upsert_parser.set_defaults(handler=command_upsert)
    start_parser = actions.add_parser("start", help="start an execution on SageMaker")
    start_parser.add_argument("--param", action="append", metavar="NAME=VALUE",
                              help="set a pipeline parameter (checked against the deployed definition before starting)")
    start_parser.add_argument("--display-name", help="a name for the execution, shown in Studio")
    start_parser.add_argument("--wait", action="store_true", help="follow the execution until it ends")
    start_parser.set_defaults(handler=command_start)
    listing = actions.add_parser("list", help="the pipeline's executions on SageMaker, newest first")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=command_list)
    show_parser = actions.add_parser("show", help="one execution: status, parameters, steps")
    show_parser.add_argument("execution", help="the execution's id (as `aws list` prints it) or ARN")
    show_parser.add_argument("--json", action="store_true")
    show_parser.set_defaults(handler=command_show)
    parameters = actions.add_parser("stack-parameters", help="the parameters to deploy lambda/template.yaml with "
                                                             "(names, prefix, image repositories), for sam deploy")
    parameters.add_argument("--json", action="store_true")
    parameters.set_defaults(handler=command_stack_parameters)
    teardown_parser = actions.add_parser("teardown", help="delete the stack, the endpoint and the pipeline: nothing left "
                                                          "billing (without --yes, only list what would go)")
    teardown_parser.add_argument("--yes", action="store_true", help="delete, instead of listing what would be deleted")
    teardown_parser.add_argument("--delete-data", action="store_true",
                                 help="also delete the artifact bucket (every version) and the model registry")
    teardown_parser.add_argument("--json", action="store_true")
    teardown_parser.set_defaults(handler=command_teardown)
    website = actions.add_parser("publish-website", help="upload the website and its config.json to the stack's bucket")
    website.add_argument("--bucket", help="default: the stack's WebsiteBucketName output")
    website.add_argument("--api-url", help="default: the stack's ApiUrl output")
    website.add_argument("--json", action="store_true")
    website.set_defaults(handler=command_publish_website)
    upload = actions.add_parser("upload-data", help="upload a dataset under the bucket's data/ prefix; with the "
                                                    "template's trigger, that starts a run on it")
    upload.add_argument("path", help="an archive or .csv (a dataset by itself), or a folder of the dataset's files")
    upload.add_argument("--name", help="the folder under data/ (default: the file or folder name)")
    upload.add_argument("--json", action="store_true")
    upload.set_defaults(handler=command_upload_data)
    wait = actions.add_parser("wait", help="follow an execution until it ends")
    wait.add_argument("execution", help="the execution's id (as `aws list` prints it) or ARN")
    wait.set_defaults(handler=command_wait)
    for waiting in (start_parser, wait):
        waiting.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait at most")
        waiting.add_argument("--poll", type=float, default=DEFAULT_POLL_S, help="seconds between status checks")
        waiting.add_argument("--json", action="store_true")


def command_upsert(args: argparse.Namespace, settings: Settings) -> Reply:
    return Reply(upsert(settings), _print_upsert)


def command_start(args: argparse.Namespace, settings: Settings) -> Reply:
    result = start(settings, args.param, args.display_name, args.wait, args.timeout, args.poll)
    return Reply(result, _print_execution, followed_exit_code(result) if args.wait else 0)


def command_wait(args: argparse.Namespace, settings: Settings) -> Reply:
    result = follow(settings, args.execution, args.timeout, args.poll)
    return Reply(result, _print_execution, followed_exit_code(result))


def command_list(args: argparse.Namespace, settings: Settings) -> Reply:
    from pipeline.aws import make_clients
    from pipeline.aws.pipelines import SageMakerExecutions

    return Reply(list_executions(SageMakerExecutions(make_clients(settings), settings), args.limit), print_executions)


def command_show(args: argparse.Namespace, settings: Settings) -> Reply:
    return Reply(show(settings, args.execution), _print_execution)


def command_stack_parameters(args: argparse.Namespace, settings: Settings) -> Reply:
    return Reply(stack_parameters(settings), _print_stack_parameters)


def command_teardown(args: argparse.Namespace, settings: Settings) -> Reply:
    return Reply(teardown(settings, args.yes, args.delete_data), _print_teardown)


def command_publish_website(args: argparse.Namespace, settings: Settings) -> Reply:
    return Reply(publish_website(settings, args.bucket, args.api_url), _print_website)


def command_upload_data(args: argparse.Namespace, settings: Settings) -> Reply:
    return Reply(upload_data(settings, args.path, args.name), _print_upload)


def _print_execution(result: dict) -> None:
    print(f"execution {result['arn']}: {result['status']}")
    for step in result.get("steps") or []:
        print(f"  {step['name']:<14} {step['status']:<10} {step['failure_reason'] or ''}")
    if result.get("steps_note"):
        print(f"  ({result['steps_note']})")
    if result.get("failure_reason"):
        print(f"  {result['failure_reason']}")


def _print_upsert(result: dict) -> None:
    print(f"pipeline {result['pipeline_arn']} (bundles uploaded: {len(result['uploaded'])}, "
          f"already there: {len(result['already_uploaded'])})")


def _print_stack_parameters(result: dict) -> None:
    print(result["parameter_overrides"])


def _print_teardown(result: dict) -> None:
    done = result["teardown"] == "done"
    print("deleted:" if done else "would delete (run again with --yes):")
    for what in result["deleted" if done else "would_delete"] or ["nothing: none of it exists"]:
        print(f"  {what}")
    print("kept, and what each costs while idle:")
    for what, cost in result["kept"].items():
        print(f"  {what}: {cost}")


def _print_website(result: dict) -> None:
    print(f"website uploaded to s3://{result['bucket']} ({', '.join(result['uploaded'])}); its API: {result['api_url']}")


def _print_upload(result: dict) -> None:
    print(f"{result['files']} file(s), {result['bytes']} bytes, uploaded to {result['input_data_uri']}; "
          f"{result['trigger']} starts a run where the template's trigger is deployed")
