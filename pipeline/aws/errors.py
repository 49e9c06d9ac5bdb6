"""One error type for the SageMaker backend, with messages a user can act on.

Everything the backend expects to go wrong (no credentials, a missing bucket, a pipeline that
was never created, an unknown execution or model version, a bad parameter) becomes a
``BackendError`` whose message is one line saying what happened and what to do, so the CLI can
print it as is instead of a botocore traceback. Unexpected AWS errors are still turned into one
line (operation, error code, AWS's message) and keep the original exception as ``__cause__``.
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
    TokenRetrievalError,
)

from pipeline.errors import UserError

T = TypeVar("T")


class BackendError(UserError, RuntimeError):
    """An expected failure of the SageMaker backend; ``str()`` is one line that says what to do."""

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))


class ExecutionTimeout(BackendError):
    """The execution was still running when ``wait_for_execution`` gave up; it keeps running on AWS."""

    def __init__(self, message: str, description: dict):
        super().__init__(message)
        self.description = description


NO_CREDENTIALS = ("no AWS credentials found: set AWS_PROFILE (and run `aws sso login` if it uses SSO), "
                  "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run `aws configure`")
_EXPIRED = {"ExpiredToken", "ExpiredTokenException", "RequestExpired"}
_BAD_CREDENTIALS = {"InvalidClientTokenId", "UnrecognizedClientException", "InvalidAccessKeyId",
                    "SignatureDoesNotMatch", "InvalidToken"}
_DENIED = {"AccessDenied", "AccessDeniedException", "403", "Forbidden"}
_THROTTLED = {"Throttling", "ThrottlingException", "SlowDown", "TooManyRequestsException"}
_NOT_FOUND = {"ResourceNotFound", "ResourceNotFoundException", "NoSuchKey", "404", "NotFound"}
# SageMaker answers some look-ups of missing things with a ValidationException.
_NOT_FOUND_MESSAGE = re.compile(r"could not find|does not exist|not found|cannot be found", re.IGNORECASE)


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def error_message(error: ClientError) -> str:
    return " ".join(str(error.response.get("Error", {}).get("Message", "") or "").split())


def is_not_found(error: ClientError) -> bool:
    """Whether AWS said the thing asked about does not exist (by code, or SageMaker's wording)."""
    code = error_code(error)
    return code in _NOT_FOUND or (code == "ValidationException" and bool(_NOT_FOUND_MESSAGE.search(error_message(error))))


def unless_missing(call: Callable[..., T], **kwargs: Any) -> T | None:
    """``call(**kwargs)``, or None when AWS answers that the thing asked about does not exist
    (any other error goes on up)."""
    try:
        return call(**kwargs)
    except ClientError as error:
        if is_not_found(error):
            return None
        raise


def is_already_exists(error: ClientError) -> bool:
    """CreatePipeline's answer for a name in use: ResourceInUse, or a ValidationException saying so."""
    code, message = error_code(error), error_message(error).lower()
    return code in ("ResourceInUse", "ResourceInUseException") or (
        code == "ValidationException" and ("must be unique" in message or "already exists" in message))


def explain(error: Exception, doing: str) -> str:
    """A one-line message for an AWS failure while ``doing`` something."""
    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return NO_CREDENTIALS
    if isinstance(error, TokenRetrievalError):
        return f"the AWS SSO session has expired while {doing}: run `aws sso login` and try again"
    if isinstance(error, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)):
        return f"cannot reach AWS while {doing} ({error}): check the network and SENTIMENT_MLOPS_REGION"
    if isinstance(error, ClientError):
        code, message = error_code(error), error_message(error)
        operation = getattr(error, "operation_name", "") or "the call"
        if code in _EXPIRED:
            return f"the AWS credentials have expired while {doing}: refresh them (`aws sso login`, or new keys)"
        if code in _BAD_CREDENTIALS:
            return f"AWS rejected the credentials while {doing} ({code}): check AWS_PROFILE or the access keys"
        if code in _DENIED:
            return (f"access denied while {doing}: the caller's IAM identity needs permission for {operation}"
                    + (f" ({message})" if message else ""))
        if code in _THROTTLED:
            return f"AWS throttled {operation} while {doing}: wait a minute and try again"
        return f"{doing} failed: {operation} answered {code}: {message}"
    return f"{doing} failed: {type(error).__name__}: {error}"


@contextlib.contextmanager
def aws_errors(doing: str, not_found: str | None = None) -> Iterator[None]:
    """Turn botocore's exceptions inside the block into ``BackendError``.

    ``not_found`` is the message for "that does not exist", when the caller knows what the
    missing thing is and what to do about it.
    """
    try:
        yield
    except BackendError:
        raise
    except ClientError as error:
        if not_found is not None and is_not_found(error):
            raise BackendError(not_found) from error
        raise BackendError(explain(error, doing)) from error
    except (NoCredentialsError, PartialCredentialsError, TokenRetrievalError, EndpointConnectionError,
            ConnectTimeoutError, ReadTimeoutError) as error:
        raise BackendError(explain(error, doing)) from error
