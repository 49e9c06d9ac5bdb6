"""Scoring many reviews with a registered version, as a Batch Transform job: the use cases behind
``sentiment-mlops transform`` and ``transforms``, written once against a SageMaker client (the
local runtime's ``LocalTransforms`` + ``LocalHosting``, or boto3's).

The version's Model for transforms is ``mlops_rules.hosting.transform_model_name`` (a container
naming the model package, run by the pipeline's role, which may write the output), made the first
time the version transforms; the endpoint's Model is another, run by the endpoint's own role.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops_rules.hosting import transform_model_name
from pipeline.errors import UserError
from pipeline.settings import Settings

# The project's own defaults for a transform of reviews: JSON Lines in and out, as many records
# a request as the container takes, each answer joined to its record.
DEFAULT_CONTENT_TYPE = "application/jsonlines"
DEFAULT_INSTANCE_TYPE = "ml.m5.xlarge"
STAGED_INPUTS = "transform-input"
OUTPUTS = "transforms"


class TransformError(UserError):
    """A transform that cannot be asked for as given; the message says what to change."""


@dataclass(frozen=True)
class TransformOptions:
    """What a user chooses of CreateTransformJob; None leaves it to the container and SageMaker."""

    content_type: str = DEFAULT_CONTENT_TYPE
    accept: str | None = DEFAULT_CONTENT_TYPE
    split_type: str = "Line"
    batch_strategy: str | None = "MultiRecord"
    assemble_with: str = "Line"
    max_payload_mb: int | None = None
    max_concurrent: int | None = None
    input_filter: str | None = None
    join_source: str | None = None
    output_filter: str | None = None
    compression: str = "None"
    instance_type: str = DEFAULT_INSTANCE_TYPE
    instance_count: int = 1
    environment: Mapping[str, str] | None = None


def job_name(version: int, now: datetime | None = None) -> str:
    """``transform-v<N>-<UTC time to the millisecond>``: unique per second's work, sortable."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"transform-v{version}-{moment:%Y%m%d-%H%M%S}-{moment.microsecond // 1000:03d}"


def transform_request(name: str, model: str, input_uri: str, output_uri: str,
                      options: TransformOptions) -> dict[str, Any]:
    """The CreateTransformJob request, the same for both backends. TransformError for a choice
    this model would answer wrongly: its handlers read a ``text/plain`` body as one review, so
    several records a request would be scored as one."""
    if options.content_type.split(";")[0].strip().lower() == "text/plain" and options.batch_strategy == "MultiRecord":
        raise TransformError("text/plain is one review a request: give --batch-strategy SingleRecord, or send "
                             "application/jsonlines or text/csv, which carry many")
    transform_input: dict[str, Any] = {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input_uri}},
                                       "ContentType": options.content_type, "SplitType": options.split_type,
                                       "CompressionType": options.compression}
    output: dict[str, Any] = {"S3OutputPath": output_uri, "AssembleWith": options.assemble_with}
    if options.accept:
        output["Accept"] = options.accept
    request: dict[str, Any] = {
        "TransformJobName": name, "ModelName": model, "TransformInput": transform_input, "TransformOutput": output,
        "TransformResources": {"InstanceType": options.instance_type, "InstanceCount": options.instance_count}}
    optional = {"BatchStrategy": options.batch_strategy, "MaxPayloadInMB": options.max_payload_mb,
                "MaxConcurrentTransforms": options.max_concurrent,
                "Environment": dict(options.environment) if options.environment else None}
    request.update({key: value for key, value in optional.items() if value is not None})
    processing = {"InputFilter": options.input_filter, "JoinSource": options.join_source,
                  "OutputFilter": options.output_filter}
    if any(processing.values()):
        request["DataProcessing"] = {key: value for key, value in processing.items() if value}
    return request


def ensure_model(client: Any, settings: Settings, version: int, package_arn: str) -> str:
    """The version's Model for transforms, made if it is not there. ``client``: boto3's SageMaker
    client or the local runtime's ``LocalHosting``."""
    name = transform_model_name(settings.endpoint_name, version)
    try:
        existing = client.describe_model(ModelName=name)
    except Exception as error:  # botocore's ClientError, or the local one: "Could not find model"
        if "Could not find" not in str(error):
            raise
        client.create_model(ModelName=name, ExecutionRoleArn=settings.role_arn,
                            PrimaryContainer={"ModelPackageName": package_arn},
                            Tags=[{"Key": "ModelPackageArn", "Value": package_arn}])
        return name
    made_from = (existing.get("PrimaryContainer") or {}).get("ModelPackageName")
    if made_from != package_arn:
        raise TransformError(f"model {name} exists already for {made_from or 'something else'}, not {package_arn}: "
                             "delete that model, or set SENTIMENT_MLOPS_ENDPOINT_NAME to name models another way")
    return name


def default_output(settings: Settings, name: str) -> str:
    """``s3://BUCKET/PREFIX/transforms/<job>/``."""
    return settings.s3_uri(OUTPUTS, name) + "/"


def stage_input(settings: Settings, path: Path) -> str:
    """A local file or folder put into the local store under a name made of its content (the
    same input is staged once); returns the prefix to transform. Streamed: never read whole."""
    from pipeline.local.state.store import ArtifactStore

    path = Path(path)
    if not path.exists():
        raise TransformError(f"no file or folder at {path}: give a JSON Lines file, a folder of them, or an s3:// URI")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise TransformError(f"{path} holds no files to transform")
    base = path if path.is_dir() else path.parent
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(base).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    prefix = settings.s3_uri(STAGED_INPUTS, digest.hexdigest()[:16]) + "/"
    store = ArtifactStore(settings.home)
    for file in files:
        uri = prefix + file.relative_to(base).as_posix()
        if not store.has_object(uri):
            store.upload_file(file, uri)
    return prefix
