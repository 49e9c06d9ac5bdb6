"""The predict handler: API Gateway (Lambda proxy integration) → the SageMaker endpoint.

``POST /predict`` with ``{"review": "..."}`` (or ``{"reviews": [...]}``, or the review as
``text/plain``) answers ``{"predictions": [{"label", "score", "positive_probability"}],
"inference_id": "..."}``: the endpoint's own JSON, with the ``InferenceId`` this function gave
the invocation. SageMaker's data capture records that id with the request and the answer (and
with a shadow variant's answer to the same request), so that whatever comes back about this
answer later (a web user's "right" or "wrong") can be joined to it. With feedback turned on, a
one-review answer also carries ``feedback_token``, this function's signature of the id and the
label (``mlops_rules.feedback``).

``POST /feedback`` with ``{"inference_id", "label", "verdict": "right"|"wrong", "token"}`` records
the user's word as a Model Monitor ground-truth record under ``GROUND_TRUTH_URI`` (201). It is
refused when the token is not the one this function gave that answer (403: nobody labels an
answer that was never given), when the body is not a small JSON object (400; 415 for another
content type, which also keeps a cross-site form from posting one), and past
``FEEDBACK_PER_MINUTE`` from one client (429; each function instance counts its own clients, and
the stack's route throttle bounds them all). ``GET /health`` answers whether the endpoint is reachable
in principle (the function is up); ``OPTIONS`` answers CORS preflights.

Both API Gateway payload formats are read: REST APIs' 1.0 (``httpMethod``, ``path``) and HTTP
APIs' 2.0 (``requestContext.http``, ``rawPath``). What a caller gets wrong is answered here,
before the endpoint is paid for: a body over ``MAX_BODY_BYTES`` (413), bad base64 or UTF-8,
an unsupported content type (415), a method or path the API does not have (405/404). What the
endpoint refuses (an empty review, too many reviews) comes back with the endpoint's status and
``{"error": <the model's message>}``, whatever shape the container gave it: the SageMaker
inference toolkit answers a handler's error as plain text, the message and then its traceback
(``Transformer.handle_error``), and the model server's own refusals are JSON. Only the
message's first line is passed on; a traceback never is. An endpoint that is missing or failing is a 503 or a 502 with a message a web page can
show; the details go to the function's log, never the reviews themselves.

Runs in AWS Lambda with the standard library, boto3 and ``mlops_rules``. Settings from the
environment: ``ENDPOINT_NAME``, ``ALLOWED_ORIGIN`` (the website's origin for CORS; default ``*``),
and for feedback ``GROUND_TRUTH_URI`` (an s3:// prefix) and ``FEEDBACK_SECRET_ARN`` (the Secrets
Manager secret whose value signs the answers, read once per instance; never logged).
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlops_rules.feedback import (
    LABELS,
    FeedbackError,
    feedback_token,
    ground_truth_key,
    ground_truth_record,
    is_signed,
    parse_feedback,
)

log = logging.getLogger("predict")
log.setLevel(logging.INFO)

# A page sends one review or a few; the endpoint itself accepts up to 5 MiB.
MAX_BODY_BYTES = 1024 * 1024
CONTENT_TYPES = ("application/json", "text/plain")
PREDICT_PATH = "/predict"
HEALTH_PATH = "/health"
FEEDBACK_PATH = "/feedback"
# How many feedbacks one client may send a minute (a burst of as many, then one every 60/N s).
FEEDBACK_PER_MINUTE = 20
# The most clients one instance remembers for the limit (the oldest are forgotten first).
MAX_CLIENTS = 10_000
# The most of a model's refusal that is passed on: a sentence, not a document.
MAX_MESSAGE_CHARS = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class PredictConfig:
    endpoint_name: str
    allowed_origin: str = "*"
    ground_truth_uri: str = ""  # where feedback goes, an s3:// prefix ("": feedback is off)
    feedback_key: bytes = field(default=b"", repr=False)  # signs the answers; never printed

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, feedback_key: bytes = b"") -> PredictConfig:
        if not environ.get("ENDPOINT_NAME"):
            raise RuntimeError("the function's environment lacks ENDPOINT_NAME: set it in the template")
        uri = (environ.get("GROUND_TRUTH_URI") or "").rstrip("/")
        if uri and not uri.startswith("s3://"):
            raise RuntimeError(f"GROUND_TRUTH_URI {uri!r} is not an s3:// prefix")
        return cls(environ["ENDPOINT_NAME"], environ.get("ALLOWED_ORIGIN") or "*", uri, feedback_key)

    @property
    def takes_feedback(self) -> bool:
        return bool(self.ground_truth_uri and self.feedback_key)


class FeedbackLimiter:
    """A token bucket per client: ``per_minute`` at once, then one every 60/``per_minute`` s."""

    def __init__(self, per_minute: int = FEEDBACK_PER_MINUTE, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute, self.clock = per_minute, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client → (tokens, when)

    def allow(self, client: str) -> bool:
        now = self.clock()
        tokens, when = self._buckets.pop(client, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - when) * self.per_minute / 60)
        allowed = tokens >= 1
        self._buckets[client] = (tokens - 1 if allowed else tokens, now)
        while len(self._buckets) > MAX_CLIENTS:
            self._buckets.popitem(last=False)
        return allowed


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client: str = ""  # the caller's address, as API Gateway saw it


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def parse_request(event: Any) -> Request:
    """Method, path, lower-cased headers and raw body from either proxy payload format."""
    if not isinstance(event, Mapping):
        raise ApiError(400, "the request could not be read")
    http = (event.get("requestContext") or {}).get("http") or {}
    method = str(event.get("httpMethod") or http.get("method") or "").upper()
    path = str(event.get("rawPath") or event.get("path") or http.get("path") or "")
    stage = (event.get("requestContext") or {}).get("stage")
    if stage and stage != "$default" and path.startswith(f"/{stage}/"):
        path = path[len(stage) + 1:]
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "the body is marked base64 but is not valid base64") from None
    else:
        raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    context = event.get("requestContext") or {}
    client = (context.get("http") or {}).get("sourceIp") or (context.get("identity") or {}).get("sourceIp") or ""
    return Request(method, path.rstrip("/") or "/", headers, raw, str(client))


def _response(status: int, body: Any, config: PredictConfig, content_type: str = "application/json") -> dict[str, Any]:
    return {"statusCode": status,
            "headers": {"Content-Type": content_type, "Access-Control-Allow-Origin": config.allowed_origin,
                        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                        "Access-Control-Allow-Headers": "Content-Type", "Cache-Control": "no-store"},
            "body": body if isinstance(body, str) else json.dumps(body)}


def _error(status: int, message: str, config: PredictConfig) -> dict[str, Any]:
    return _response(status, {"error": message}, config)


def _check_body(request: Request) -> str:
    if len(request.body) > MAX_BODY_BYTES:
        raise ApiError(413, f"the request is {len(request.body):,} bytes; the limit is {MAX_BODY_BYTES:,}: "
                            "send shorter or fewer reviews")
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type not in CONTENT_TYPES:
        raise ApiError(415, f"content type {content_type!r} is not supported; send application/json or text/plain")
    try:
        request.body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ApiError(400, f"the body is not valid UTF-8 (byte {error.start}): send the review as UTF-8 text") from None
    return content_type


def model_message(original: str | None) -> str:
    """What a model's refusal says, in one line: a JSON body's ``error`` (or TorchServe's
    ``message``), else the first line of a text body (the toolkit's message, before its
    traceback). Never the traceback, never markup or control characters."""
    text = (original or "").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        found = parsed.get("error") or parsed.get("message")
        text = found if isinstance(found, str) else ""
    first = text.splitlines()[0] if text else ""
    if first.startswith("Traceback (most recent call last)"):
        first = ""
    first = _CONTROL.sub(" ", first).strip()
    if len(first) > MAX_MESSAGE_CHARS:
        first = first[:MAX_MESSAGE_CHARS - 1].rstrip() + "…"
    return first or "the model refused the request"


def _signed(answer: Any, config: PredictConfig) -> Any:
    """A one-review answer with the token that lets its reader give feedback on it."""
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    if not config.takes_feedback or not isinstance(predictions, list) or len(predictions) != 1 \
            or not isinstance(predictions[0], dict) or predictions[0].get("label") not in LABELS:
        return answer
    return {**answer, "feedback_token": feedback_token(config.feedback_key, answer["inference_id"],
                                                       predictions[0]["label"])}


def _record_feedback(request: Request, config: PredictConfig, s3, limiter: FeedbackLimiter | None) -> dict[str, Any]:
    """A web user's word on an answer, as a ground-truth record (201), or the reason it is refused."""
    if not config.takes_feedback or s3 is None:
        raise ApiError(404, "this API takes no feedback: set GROUND_TRUTH_URI and FEEDBACK_SECRET_ARN")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise ApiError(415, "send the feedback as application/json")
    if limiter is not None and not limiter.allow(request.client or "unknown"):
        raise ApiError(429, "too much feedback from this address: try again in a minute")
    try:
        feedback = parse_feedback(request.body)
    except FeedbackError as error:
        raise ApiError(400, str(error)) from None
    if not is_signed(config.feedback_key, feedback):
        raise ApiError(403, "this API gave no such answer (its token does not match): feedback can only label "
                            "an answer the API gave")
    bucket, _, prefix = config.ground_truth_uri.removeprefix("s3://").partition("/")
    key = ground_truth_key(prefix, datetime.now(UTC), feedback.inference_id)
    body = json.dumps(ground_truth_record(feedback.inference_id, feedback.true_label)) + "\n"
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body.encode("utf-8"), ContentType="application/jsonlines")
    except Exception:  # botocore's ClientError or a connection error: the user can try again
        log.exception("a feedback could not be recorded")
        raise ApiError(502, "the feedback could not be recorded: try again later") from None
    log.info("feedback recorded: %s", feedback.verdict)
    return {"recorded": True, "inference_id": feedback.inference_id, "label": LABELS[feedback.true_label]}


def _invoke(runtime, config: PredictConfig, content_type: str, body: bytes, inference_id: str) -> tuple[int, Any]:
    """The endpoint's answer, with the invocation's id; its refusals keep their status and message."""
    try:
        answer = runtime.invoke_endpoint(EndpointName=config.endpoint_name, ContentType=content_type,
                                         Accept="application/json", Body=body, InferenceId=inference_id)
    except Exception as error:  # botocore's ClientError; its classes live on each client
        response = getattr(error, "response", None) or {}
        code = response.get("Error", {}).get("Code")
        original = int(response.get("OriginalStatusCode", 500)) if code == "ModelError" else None
        if original is not None and 400 <= original < 500:
            return original, {"error": model_message(response.get("OriginalMessage"))}
        if original == 503:  # the model server's queue is full: load shedding, not a fault
            raise ApiError(503, "the model is busy: try again in a moment") from None
        if code == "ValidationError" and "not found" in str(error).lower():
            log.error("endpoint %s not found: %s", config.endpoint_name, error)
            raise ApiError(503, "the model is not deployed yet: approve a model version, then try again") from None
        if code in ("ThrottlingException", "ServiceUnavailable"):
            raise ApiError(503, "the model is busy: try again in a moment") from None
        log.exception("invoking %s failed", config.endpoint_name)
        raise ApiError(502, "the model could not answer: try again later") from None
    text = answer["Body"].read().decode("utf-8")
    try:
        parsed = json.loads(text)
    except ValueError:
        return 200, text
    return 200, _signed({**parsed, "inference_id": inference_id}, config) if isinstance(parsed, dict) else parsed


def handle(event: Any, config: PredictConfig, runtime, new_inference_id: Callable[[], str] = lambda: str(uuid.uuid4()),
           s3=None, limiter: FeedbackLimiter | None = None) -> dict[str, Any]:
    """The handler's answer, with its dependencies given (what the tests and the local API call):
    ``s3`` is where feedback is written (an S3 client's ``put_object``), ``limiter`` its per-client limit."""
    try:
        request = parse_request(event)
        if request.method == "OPTIONS":
            return _response(204, "", config, "text/plain")
        if request.path == HEALTH_PATH:
            if request.method != "GET":
                raise ApiError(405, f"{request.method} {HEALTH_PATH} is not supported; use GET")
            return _response(200, {"status": "ok", "endpoint": config.endpoint_name}, config)
        if request.path == FEEDBACK_PATH:
            if request.method != "POST":
                raise ApiError(405, f"{request.method} {FEEDBACK_PATH} is not supported; use POST")
            return _response(201, _record_feedback(request, config, s3, limiter), config)
        if request.path != PREDICT_PATH:
            raise ApiError(404, f"no route {request.path!r}: POST {PREDICT_PATH} with a review")
        if request.method != "POST":
            raise ApiError(405, f"{request.method} {PREDICT_PATH} is not supported; use POST")
        content_type = _check_body(request)
        status, body = _invoke(runtime, config, content_type, request.body, new_inference_id())
    except ApiError as error:
        log.info("refused: %d %s", error.status, error.message)
        return _error(error.status, error.message, config)
    log.info("answered %d for %d bytes", status, len(request.body))
    return _response(status, body, config)


_INSTANCE: dict[str, Any] = {}  # what one Lambda instance keeps between invocations


def _instance() -> dict[str, Any]:
    """The config (with the signing key read once from Secrets Manager), the clients and the limiter."""
    if not _INSTANCE:
        import boto3

        key = b""
        if os.environ.get("FEEDBACK_SECRET_ARN"):
            secret = boto3.client("secretsmanager").get_secret_value(SecretId=os.environ["FEEDBACK_SECRET_ARN"])
            key = secret["SecretString"].encode("utf-8")
        _INSTANCE.update(config=PredictConfig.from_env(feedback_key=key), runtime=boto3.client("sagemaker-runtime"),
                         s3=boto3.client("s3"), limiter=FeedbackLimiter())
    return _INSTANCE


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """AWS Lambda's entry point (``predict.handler``)."""
    found = _instance()
    return handle(event, found["config"], found["runtime"], s3=found["s3"], limiter=found["limiter"])
