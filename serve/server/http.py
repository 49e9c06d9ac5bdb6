"""What every HTTP server here shares (the model server, the local SageMaker runtime, the local
API): bodies read against a size limit and a deadline, refusals a client can read, JSON errors,
and client text made safe for logs.

A refusal (411, 413, 408) is answered as soon as the headers say so, with ``Connection: close``.
The client may still be sending the body it announced; closing at once would reset the
connection and the client would see a broken pipe instead of the answer. So what it sends is
read and thrown away, up to ``DRAIN_BYTES`` or ``DRAIN_SECONDS``, and only then is the socket
closed.
"""
from __future__ import annotations

import asyncio
import json
import re
from http import HTTPStatus

from aiohttp import web

SERVER_NAME = "sentiment-mlops"
REQUEST_TIMEOUT_S = 30.0
DRAIN_BYTES = 16 * 1024 * 1024
DRAIN_SECONDS = 5.0

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """A client's text made safe for a log line: control characters (terminal escapes, new
    lines that would forge entries) are written as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


async def name_server(request: web.Request, response: web.StreamResponse) -> None:
    """Say which server answered, not which versions of Python and aiohttp it runs."""
    response.headers["Server"] = SERVER_NAME


class BodyRefused(Exception):
    """A request body refused before (or while) it is read; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def json_response(status: int, payload: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=json.dumps(payload).encode("utf-8"), content_type="application/json",
                        headers=headers)


def error_response(status: int, message: str, headers: dict[str, str] | None = None, key: str = "error") -> web.Response:
    """``{"error": message}`` (API Gateway's own refusals use ``message`` as the key)."""
    return json_response(status, {key: message}, headers)


async def read_body(request: web.Request, limit: int, *, length_required: bool = True) -> bytes:
    """The request's body, read only when its declared length is within ``limit``, and only while
    it keeps arriving: the whole body must be in within ``REQUEST_TIMEOUT_S``, so a client
    trickling a byte at a time is cut off. (A Content-Length that is not a number never gets
    here: aiohttp's parser answers it with 400.)"""
    if request.headers.get("Transfer-Encoding"):
        raise BodyRefused(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length header (no chunked encoding)")
    size = request.content_length
    if size is None:
        if length_required:
            raise BodyRefused(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length header")
        return b""
    if size > limit:
        raise BodyRefused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                          f"the body is {size:,} bytes; the limit is {limit:,}: send fewer or shorter reviews per request")
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            return await request.content.readexactly(size)
    except TimeoutError:
        raise BodyRefused(HTTPStatus.REQUEST_TIMEOUT, f"the body did not arrive within {REQUEST_TIMEOUT_S:g} s") from None
    except asyncio.IncompleteReadError:
        raise BodyRefused(HTTPStatus.BAD_REQUEST, "the body ended before its Content-Length") from None


async def ping(request: web.Request) -> web.Response:
    """``GET /ping``: 200 once the process serves at all (SageMaker's health check)."""
    return web.Response(status=200, body=b"", content_type="text/plain")


async def refuse(request: web.Request, refused: BodyRefused, key: str = "error",
                 headers: dict[str, str] | None = None) -> web.StreamResponse:
    """Answer a refused body at once, then read (and drop) what the client goes on sending, up
    to a bound, so that it reads the answer instead of a reset connection; then close."""
    response = error_response(refused.status, refused.message, headers, key=key)
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    drained = 0
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            while drained <= DRAIN_BYTES and not request.content.at_eof():
                chunk = await request.content.readany()
                if not chunk:
                    break
                drained += len(chunk)
    except (TimeoutError, OSError, asyncio.IncompleteReadError):
        pass
    if not request.content.at_eof() and request.protocol is not None:
        request.protocol.force_close()  # past the bound: stop reading; the client has had its answer
    return response
