"""Errors a request can cause, each carrying the HTTP status a server should answer with.

Inside the SageMaker PyTorch inference container, the toolkit turns a
``GenericInferenceToolkitError`` into a response with its status code; deriving from it there
means a bad review gets a 400 with our message instead of a 500.  Elsewhere (our own server,
the evaluation step) the plain base class carries the same status.
"""
from __future__ import annotations

try:  # pragma: no cover - only inside the SageMaker inference container
    from sagemaker_inference.errors import GenericInferenceToolkitError as _ToolkitError
except ImportError:  # the usual case outside the container
    _ToolkitError = None


class InferenceError(_ToolkitError or Exception):  # type: ignore[misc]
    """A request the model cannot answer; ``status`` is the HTTP status to return."""

    status = 400

    def __init__(self, message: str) -> None:
        if _ToolkitError is not None:  # pragma: no cover
            super().__init__(self.status, message)
        else:
            super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BadRequest(InferenceError):
    status = 400


class PayloadTooLarge(InferenceError):
    status = 413


class UnsupportedMediaType(InferenceError):
    status = 415


class NotAcceptable(InferenceError):
    status = 406
