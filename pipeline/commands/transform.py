"""``sentiment-mlops transform`` (score a file, a folder or an S3 prefix of reviews with a
registered version, as a Batch Transform job) and ``transforms`` (list, show and stop such jobs).

The work is in ``pipeline/transforms.py`` (the request, the version's Model, staging) and the
local runtime's ``LocalTransforms``; this module parses and prints.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from pipeline.commands.common import Reply, as_text
from pipeline.errors import CommandError
from pipeline.settings import Settings


def register(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("transform", help="score many reviews with a registered version, as a Batch Transform "
                                                "job (one <input>.out per input file)")
    run.add_argument("--version", type=int, required=True, help="a version from the local model registry")
    run.add_argument("--input", required=True, help="a JSON Lines file, a folder of them, or an s3:// prefix in the "
                                                    "local store")
    run.add_argument("--output", help="the s3:// prefix for the .out files (default: PREFIX/transforms/<job>/)")
    run.add_argument("--name", help="the job's name (default: transform-v<N>-<time>)")
    run.add_argument("--content-type", default="application/jsonlines",
                     help="the records' type: application/jsonlines (default), application/json, text/csv, text/plain")
    run.add_argument("--accept", default="application/jsonlines", help="the answers' type (default application/jsonlines)")
    run.add_argument("--split-type", choices=("Line", "None"), default="Line",
                     help="Line (default): one record a line; None: each file is one request")
    run.add_argument("--batch-strategy", choices=("MultiRecord", "SingleRecord"), default="MultiRecord")
    run.add_argument("--assemble-with", choices=("Line", "None"), default="Line")
    run.add_argument("--max-payload-mb", type=int, help="the largest request (default: what the model server says, 5)")
    run.add_argument("--max-concurrent", type=int, help="requests at once (default: what the model server says)")
    run.add_argument("--input-filter", help="JSONPath of what to send of each record, e.g. $.review")
    run.add_argument("--join-source", choices=("Input", "None"), help="Input: write each answer joined to its record")
    run.add_argument("--output-filter", help="JSONPath of what to write of each joined record, e.g. "
                                             "$['id','SageMakerOutput']")
    run.add_argument("--gzip", action="store_true", help="the input files are gzip-compressed")
    run.add_argument("--instance-type", default="ml.m5.xlarge", help="on SageMaker: the instance type (default "
                                                                    "ml.m5.xlarge)")
    _backend(run)
    run.add_argument("--json", action="store_true")
    run.set_defaults(handler=command_transform)
    jobs = commands.add_parser("transforms", help="transform jobs: list, show, stop")
    actions = jobs.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="recent transform jobs, newest first")
    listing.add_argument("--limit", type=int, default=20)
    _backend(listing)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=command_transforms)
    for verb, text in (("show", "one transform job, with its progress and output files"),
                       ("stop", "ask a running transform job to stop")):
        action = actions.add_parser(verb, help=text)
        action.add_argument("name")
        _backend(action)
        action.add_argument("--json", action="store_true")
        action.set_defaults(handler=command_transforms)


def _backend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=("local", "sagemaker"), default="local",
                        help="the local runtime (default) or SageMaker (the stack's role runs the job)")


@contextlib.contextmanager
def _local(settings: Settings, on_progress=lambda p: None) -> Iterator[Any]:
    from pipeline.local.services.hosting import LocalHosting
    from pipeline.local.services.transform.jobs import LocalTransforms
    from pipeline.local.state.db import open_state

    conn = open_state(settings.home)
    try:
        yield LocalTransforms(settings.home, conn, LocalHosting(settings.home, conn, runtime_port=settings.runtime_port),
                              on_progress)
    finally:
        conn.close()


def _options(args: argparse.Namespace):
    from pipeline.transforms import TransformOptions

    return TransformOptions(content_type=args.content_type, accept=args.accept or None, split_type=args.split_type,
                            batch_strategy=args.batch_strategy, assemble_with=args.assemble_with,
                            max_payload_mb=args.max_payload_mb, max_concurrent=args.max_concurrent,
                            input_filter=args.input_filter, join_source=args.join_source,
                            output_filter=args.output_filter, compression="Gzip" if args.gzip else "None",
                            instance_type=args.instance_type)


def command_transform(args: argparse.Namespace, settings: Settings) -> Reply:
    if args.backend == "sagemaker":
        return _transform_on_sagemaker(args, settings)
    from tqdm import tqdm

    from pipeline.local.state.registry import ModelRegistry
    from pipeline.transforms import default_output, ensure_model, job_name, stage_input, transform_request

    name = args.name or job_name(args.version)
    input_uri = args.input if args.input.startswith("s3://") else stage_input(settings, Path(args.input))
    output_uri = args.output or default_output(settings, name)
    with tqdm(total=0, unit="B", unit_scale=True, desc=name, disable=None) as bar:
        def show(progress) -> None:
            bar.total = progress.bytes_total
            bar.update(progress.bytes_done - bar.n)

        with _local(settings, show) as transforms:
            try:
                package = ModelRegistry(transforms.conn).get(settings.model_package_group, args.version)
                model = ensure_model(transforms.hosting, settings, args.version, package.arn)
                transforms.create_transform_job(**transform_request(name, model, input_uri, output_uri, _options(args)))
            except ClientError as error:
                raise CommandError(error.response["Error"]["Message"]) from error
            result = _shown(transforms, name)
    return Reply(result, _print_job, 0 if result["TransformJobStatus"] == "Completed" else 1)


def _transform_on_sagemaker(args: argparse.Namespace, settings: Settings) -> Reply:
    from pipeline.aws.transforms import follow_transform, start_transform
    from pipeline.commands.aws import connect

    settings, clients = connect(settings)
    name = start_transform(clients, settings, args.version, args.input, args.output, _options(args), args.name)
    last: list[str] = []

    def say(described: dict[str, Any]) -> None:
        if [described["TransformJobStatus"]] != last:
            last[:] = [described["TransformJobStatus"]]
            print(f"{name}: {described['TransformJobStatus']}", file=sys.stderr, flush=True)

    described = follow_transform(clients, name, say)
    return Reply(described, _print_job, 0 if described["TransformJobStatus"] == "Completed" else 1)


def _transforms_on_sagemaker(args: argparse.Namespace, settings: Settings) -> Reply:
    from pipeline.aws import make_clients
    from pipeline.aws.transforms import describe_transform, list_transforms, stop_transform

    clients = make_clients(settings)
    if args.action == "list":
        return Reply(list_transforms(clients, args.limit), _print_jobs)
    if args.action == "stop":
        return Reply(stop_transform(clients, args.name), _print_job)
    return Reply(describe_transform(clients, args.name), _print_job)


def _shown(transforms, name: str) -> dict[str, Any]:
    """DescribeTransformJob's answer, with the local record of progress and the output files."""
    from pipeline.local.services.transform.runner import OUTPUT_SUFFIX
    from pipeline.local.state.store import split_uri

    described = transforms.describe_transform_job(TransformJobName=name)
    output = described["TransformOutput"]["S3OutputPath"]
    bucket = split_uri(output)[0]
    files = [f"s3://{bucket}/{key}" for key in transforms.store.keys(output.rstrip("/") + "/")
             if key.endswith(OUTPUT_SUFFIX)]
    return {**described, "Progress": transforms.progress(name),
            "OutputFiles": [{"uri": uri, "path": str(transforms.store.path(uri))} for uri in files]}


def command_transforms(args: argparse.Namespace, settings: Settings) -> Reply:
    if args.backend == "sagemaker":
        return _transforms_on_sagemaker(args, settings)
    with _local(settings) as transforms:
        try:
            if args.action == "list":
                rows = transforms.list_transform_jobs(MaxResults=args.limit)["TransformJobSummaries"]
                return Reply(rows, _print_jobs)
            if args.action == "stop":
                transforms.stop_transform_job(TransformJobName=args.name)
            return Reply(_shown(transforms, args.name), _print_job)
        except ClientError as error:
            raise CommandError(error.response["Error"]["Message"] + "; transforms list shows the jobs") from error


def _print_jobs(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        print(f"  {row['TransformJobName']:<40} {row['TransformJobStatus']:<10} {as_text(row['CreationTime'])}  "
              f"{row.get('FailureReason') or ''}")
    if not rows:
        print("no transform jobs")


def _print_job(job: dict[str, Any]) -> None:
    progress = job.get("Progress")  # the local runtime's record; SageMaker gives a status only
    done = (f" ({progress.get('records', 0):,} records, {progress.get('objects_done', 0)} of "
            f"{progress.get('objects', 0)} files)") if progress else ""
    print(f"transform job {job['TransformJobName']}: {job['TransformJobStatus']}{done}")
    if job.get("FailureReason"):
        print(f"  reason: {job['FailureReason']}")
    print(f"  input:  {job['TransformInput']['DataSource']['S3DataSource']['S3Uri']}")
    print(f"  output: {job['TransformOutput']['S3OutputPath']}")
    for file in job.get("OutputFiles", []):
        print(f"    {file['path']}")
