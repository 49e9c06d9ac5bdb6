"""A CreateTransformJob request, checked as SageMaker checks it, and the job it describes.

The request's shape (names, types, required members, enums) is checked against botocore's own
model of the SageMaker API, so a request the local runtime takes is one boto3 would send; the
limits botocore leaves to the service (name pattern, ranges, the JSONPath) are checked here.
What the local runtime does not do is refused with the reason (a manifest input, RecordIO,
TFRecord), never ignored.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

from pipeline.local.services.transform.jsonpath import JsonPathError
from pipeline.local.services.transform.records import DataProcessing, record_format

NAME_PATTERN = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
# SageMaker's defaults where neither the request nor the container's /execution-parameters say.
DEFAULT_MAX_PAYLOAD_MB = 6
DEFAULT_MAX_CONCURRENT = 1
DEFAULT_BATCH_STRATEGY = "SingleRecord"
DEFAULT_INVOCATION_TIMEOUT_S = 600
DEFAULT_INVOCATION_RETRIES = 3
MAX_PAYLOAD_MB = 100
MAX_ENVIRONMENT = 16
MEGABYTE = 1024 * 1024


class RequestError(ValueError):
    """A request SageMaker would refuse (a ValidationException), or one this runtime cannot run."""


@functools.cache
def _input_shape():  # loading botocore's SageMaker model takes a moment: once per process
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return model.operation_model("CreateTransformJob").input_shape


def check_shape(request: dict[str, Any]) -> None:
    """RequestError with botocore's report if ``request`` is not a CreateTransformJob request."""
    from botocore.exceptions import ParamValidationError
    from botocore.validate import validate_parameters

    try:
        validate_parameters(request, _input_shape())
    except ParamValidationError as error:
        raise RequestError(" ".join(str(error.kwargs.get("report", error)).split())) from None


@dataclass(frozen=True)
class TransformSpec:
    """What a job does, with every default resolved except those the container may set
    (``None`` here: the runner asks ``/execution-parameters``, then takes SageMaker's)."""

    name: str
    model_name: str
    input_uri: str
    content_type: str | None
    gzip: bool
    split_lines: bool
    output_uri: str
    accept: str | None
    line_per_answer: bool
    processing: DataProcessing
    batch_strategy: str | None = None
    max_payload_mb: int | None = None
    max_concurrent: int | None = None
    invocation_timeout_s: int = DEFAULT_INVOCATION_TIMEOUT_S
    invocation_retries: int = DEFAULT_INVOCATION_RETRIES
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def input_format(self) -> str | None:
        return record_format(self.content_type)


def parse_request(request: dict[str, Any]) -> TransformSpec:
    """The job ``request`` describes; RequestError naming the first problem."""
    check_shape(request)
    name = request["TransformJobName"]
    if len(name) > 63 or not NAME_PATTERN.fullmatch(name):  # botocore checks neither the pattern nor the max
        raise RequestError(f"TransformJobName {name!r} must be 1 to 63 letters, digits and hyphens, starting and "
                           "ending with a letter or digit")
    source = request["TransformInput"]["DataSource"]["S3DataSource"]
    if source["S3DataType"] != "S3Prefix":
        raise RequestError(f"S3DataType {source['S3DataType']} is not run locally: give an S3Prefix (the objects "
                           "under a key prefix)")
    transform_input, output = request["TransformInput"], request["TransformOutput"]
    split = transform_input.get("SplitType", "None")
    if split not in ("None", "Line"):
        raise RequestError(f"SplitType {split} is not run locally: use Line (one record a line) or None")
    payload = request.get("MaxPayloadInMB")
    if payload is not None and not 0 <= payload <= MAX_PAYLOAD_MB:
        raise RequestError(f"MaxPayloadInMB must be 0 to {MAX_PAYLOAD_MB}, not {payload}")
    if payload == 0:  # SageMaker's "stream the object in chunks", for algorithms that read chunked bodies
        raise RequestError("MaxPayloadInMB 0 (a chunked, unlimited request) is not run locally, and the model server "
                           "needs a Content-Length: give 1 to 5")
    concurrent = request.get("MaxConcurrentTransforms")
    if concurrent is not None and concurrent < 0:
        raise RequestError(f"MaxConcurrentTransforms must be 0 or more, not {concurrent}")
    strategy = request.get("BatchStrategy")
    if strategy == "MultiRecord" and split == "None":
        raise RequestError("BatchStrategy MultiRecord needs SplitType Line: with None each object is one record")
    environment = request.get("Environment") or {}
    if len(environment) > MAX_ENVIRONMENT:
        raise RequestError(f"Environment has {len(environment)} entries; SageMaker takes at most {MAX_ENVIRONMENT}")
    try:
        processing = DataProcessing.parse(request.get("DataProcessing"))
    except JsonPathError as error:
        raise RequestError(f"DataProcessing: {error}") from None
    content_type = transform_input.get("ContentType")
    if not processing.passthrough and record_format(content_type) is None:
        raise RequestError(f"DataProcessing needs JSON or CSV records; ContentType is {content_type!r}: set it to "
                           "application/jsonlines, application/json or text/csv")
    client = request.get("ModelClientConfig") or {}
    return TransformSpec(
        name=name, model_name=request["ModelName"], input_uri=source["S3Uri"], content_type=content_type,
        gzip=transform_input.get("CompressionType", "None") == "Gzip", split_lines=split == "Line",
        output_uri=output["S3OutputPath"], accept=output.get("Accept"),
        line_per_answer=output.get("AssembleWith", "None") == "Line", processing=processing,
        batch_strategy=strategy, max_payload_mb=payload or None, max_concurrent=concurrent or None,
        invocation_timeout_s=client.get("InvocationsTimeoutInSeconds", DEFAULT_INVOCATION_TIMEOUT_S),
        invocation_retries=client.get("InvocationsMaxRetries", DEFAULT_INVOCATION_RETRIES),
        environment={str(k): str(v) for k, v in environment.items()})


@dataclass(frozen=True)
class Resolved:
    """The three settings a container may choose, as the job will use them."""

    batch_strategy: str
    max_payload_bytes: int
    max_concurrent: int


def resolve(spec: TransformSpec, execution_parameters: dict[str, Any]) -> Resolved:
    """The request's value, else the container's ``/execution-parameters``, else SageMaker's default."""
    suggested_strategy = {"MULTI_RECORD": "MultiRecord", "SINGLE_RECORD": "SingleRecord"}.get(
        str(execution_parameters.get("BatchStrategy", "")).upper())
    strategy = spec.batch_strategy or (suggested_strategy if spec.split_lines else None) or DEFAULT_BATCH_STRATEGY
    payload_mb = spec.max_payload_mb or _positive(execution_parameters.get("MaxPayloadInMB")) or DEFAULT_MAX_PAYLOAD_MB
    concurrent = spec.max_concurrent or _positive(execution_parameters.get("MaxConcurrentTransforms")) \
        or DEFAULT_MAX_CONCURRENT
    return Resolved(strategy, min(payload_mb, MAX_PAYLOAD_MB) * MEGABYTE, concurrent)


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
