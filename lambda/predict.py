"""The predict handler: API Gateway (Lambda proxy integration) → the SageMaker endpoint.

``POST /predict`` with ``{"review": "..."}`` (or ``{"reviews": [...]}``, or the review as
``text/plain``) answers ``{"predictions": [{"label", "score", "positive_probability"}],
"inference_id": "..."}``: the endpoint's own JSON, with the ``InferenceId`` this function gave
the invocation. SageMaker's data capture records that id with the request and the answer (and
with a shadow variant's answer to the same request), so that whatever comes back about this
answer later (a web user's "right" or "wrong") can be joined to it. ``GET /health`` answers whether the endpoint is reachable
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

Runs in AWS Lambda with the standard library and boto3. Settings from the environment:
``ENDPOINT_NAME`` and ``ALLOWED_ORIGIN`` (the website's origin for CORS; default ``*``).
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("predict")
log.setLevel(logging.INFO)

# A page sends one review or a few; the endpoint itself accepts up to 5 MiB.
MAX_BODY_BYTES = 1024 * 1024
CONTENT_TYPES = ("application/json", "text/plain")
PREDICT_PATH = "/predict"
HEALTH_PATH = "/health"
# The most of a model's refusal that is passed on: a sentence, not a document.
MAX_MESSAGE_CHARS = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class PredictConfig:
    endpoint_name: str
    allowed_origin: str = "*"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> PredictConfig:
        if not environ.get("ENDPOINT_NAME"):
            raise RuntimeError("the function's environment lacks ENDPOINT_NAME: set it in the template")
        return cls(environ["ENDPOINT_NAME"], environ.get("ALLOWED_ORIGIN") or "*")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


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
    return Request(method, path.rstrip("/") or "/", headers, raw)


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
    return 200, {**parsed, "inference_id": inference_id} if isinstance(parsed, dict) else parsed


def handle(event: Any, config: PredictConfig, runtime,
           new_inference_id: Callable[[], str] = lambda: str(uuid.uuid4())) -> dict[str, Any]:
    """The handler's answer, with its dependencies given (what the tests and the local API call)."""
    try:
        request = parse_request(event)
        if request.method == "OPTIONS":
            return _response(204, "", config, "text/plain")
        if request.path == HEALTH_PATH:
            if request.method != "GET":
                raise ApiError(405, f"{request.method} {HEALTH_PATH} is not supported; use GET")
            return _response(200, {"status": "ok", "endpoint": config.endpoint_name}, config)
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


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """AWS Lambda's entry point (``predict.handler``)."""
    import boto3

    return handle(event, PredictConfig.from_env(), boto3.client("sagemaker-runtime"))
