"""A SageMaker-compatible model server: ``GET /ping`` and ``POST /invocations`` on port 8080.

It plays the part of the SageMaker PyTorch inference container: like the container, it imports
the handlers (``model_fn``, ``input_fn``, ``predict_fn``, ``output_fn``) from the artifact's own
``code/inference.py`` (``serve/artifact_code.py`` keeps them apart from this process's copy), so
a model answers here exactly as on its endpoint: same content types, limits and statuses. The
standard library's threading HTTP server is enough for one model on one machine; scoring is
serialized by a lock (PyTorch already uses every core for one batch).

Bad requests never reach the handlers unchecked: a body without ``Content-Length`` gets 411, one
over the limit gets 413 before it is read, and one that has not arrived within
``REQUEST_TIMEOUT_S`` gets 408. At most ``MAX_CONNECTIONS`` connections are served at once; the
next one gets 503 with ``Retry-After``.
Errors are JSON, ``{"error": "..."}``; an unexpected failure is logged here with its traceback
and answered with a 500 that reveals nothing of the code.

Run it by hand::

    python -m serve.server --model-dir path/to/model  # or a model.tar.gz
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from types import ModuleType

from serve.artifact import ArtifactError, resolve_model_dir
from serve.artifact_code import load_artifact_handlers
from serve.handlers import MAX_BODY_BYTES

log = logging.getLogger(__name__)

DEFAULT_PORT = 8080  # SageMaker sends /ping and /invocations to port 8080
REQUEST_TIMEOUT_S = 30.0
SERVER_NAME = "sentiment-mlops"
# Connections served at once; each holds a thread for up to REQUEST_TIMEOUT_S while it is idle.
MAX_CONNECTIONS = 64


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """A client's text made safe for a log line: control characters (terminal escapes, new
    lines that would forge entries) are written as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class BodyRefused(Exception):
    """A request body refused before (or while) it is read; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def read_body(handler: BaseHTTPRequestHandler, limit: int, *, length_required: bool = True,
              deadline_s: float | None = None) -> bytes:
    """The request's body, read only when its declared length is a number within ``limit``,
    and only while it keeps arriving: the whole body must be in within ``deadline_s`` (the
    socket's own timeout bounds each read, not a client that trickles a byte at a time).
    ``deadline_s`` defaults to ``REQUEST_TIMEOUT_S``."""
    if handler.headers.get("Transfer-Encoding"):
        raise BodyRefused(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length header (no chunked encoding)")
    length = handler.headers.get("Content-Length")
    if length is None:
        if length_required:
            raise BodyRefused(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length header")
        return b""
    if not (length.isascii() and length.isdigit()):
        raise BodyRefused(HTTPStatus.BAD_REQUEST, f"Content-Length {printable(length)!r} is not a number of bytes")
    size = int(length)
    if size > limit:
        raise BodyRefused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                          f"the body is {size:,} bytes; the limit is {limit:,}: send fewer or shorter reviews per request")
    deadline_s = REQUEST_TIMEOUT_S if deadline_s is None else deadline_s
    chunks, remaining, deadline = [], size, time.monotonic() + deadline_s
    while remaining:
        if time.monotonic() > deadline:
            raise BodyRefused(HTTPStatus.REQUEST_TIMEOUT, f"the body did not arrive within {deadline_s:g} s")
        chunk = handler.rfile.read1(min(remaining, 65536))
        if not chunk:
            raise BodyRefused(HTTPStatus.BAD_REQUEST, "the body ended before its Content-Length")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class _Handler(BaseHTTPRequestHandler):
    server: "ModelServer"
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT_S
    server_version = SERVER_NAME
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 (the name http.server looks up)
        if self.path.split("?")[0] == "/ping":
            self._send(HTTPStatus.OK, b"", "text/plain")
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such path {self.path!r}: use GET /ping or POST /invocations")

    def do_POST(self) -> None:  # noqa: N802
        if self.path.split("?")[0] != "/invocations":
            self._error(HTTPStatus.NOT_FOUND, f"no such path {self.path!r}: use POST /invocations")
            return
        try:
            body = read_body(self, MAX_BODY_BYTES)
        except BodyRefused as refused:
            self._error(refused.status, refused.message)
            return
        handlers = self.server.handlers
        try:
            reviews = handlers.input_fn(body, self.headers.get("Content-Type", ""))
            with self.server.lock:
                predictions = handlers.predict_fn(reviews, self.server.model)
            text, content_type = handlers.output_fn(predictions, self.headers.get("Accept"))
        except Exception as error:
            status = getattr(error, "status", None)  # the artifact's InferenceError (its own class)
            if isinstance(status, int) and 400 <= status < 500:
                self._error(status, str(error))
                return
            log.exception("invocation failed")  # a bug, not the client's fault: details stay in the log
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "the model could not score this request; see the server log")
            return
        self._send(HTTPStatus.OK, text.encode("utf-8"), content_type)

    def _error(self, status: int, message: str) -> None:
        self.close_connection = True  # an unread body must not be taken for the next request
        self._send(status, json.dumps({"error": message}).encode("utf-8"), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
        log.info("%s %s", self.address_string(), printable(format % args))


class BoundedThreadingHTTPServer(ThreadingHTTPServer):
    """A threading server that serves at most ``max_connections`` connections at once.

    ``ThreadingHTTPServer`` starts a thread for every connection it accepts, so many idle or
    slow clients could exhaust threads and memory. Past the cap, a connection is answered at
    once with 503 and a ``Retry-After``, and closed: load shedding, as a busy endpoint does.
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, max_connections: int | None = None) -> None:
        self.slots = threading.BoundedSemaphore(max_connections or MAX_CONNECTIONS)
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            log.warning("refused a connection from %s: all connection slots are busy", client_address[0])
            body = json.dumps({"error": "the server is busy: try again in a second"}).encode("utf-8")
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Retry-After: 1\r\nConnection: close\r\n"
                                + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()  # the thread did not start: its slot is free
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class ModelServer(BoundedThreadingHTTPServer):
    """One loaded model behind ``/ping`` and ``/invocations``, scored by the artifact's handlers."""

    def __init__(self, handlers: ModuleType, model_dir: Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
        self.handlers = handlers
        self.model = handlers.model_fn(str(model_dir))  # loaded before the port opens: /ping means ready
        self.lock = threading.Lock()
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def load_server(model_path: Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> ModelServer:
    """A server for the model at ``model_path`` (a model dir or a ``model.tar.gz``); port 0 picks a free one."""
    model_dir = resolve_model_dir(Path(model_path))
    return ModelServer(load_artifact_handlers(model_dir), model_dir, host, port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve.server", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR", "/opt/ml/model"),
                        help="the model directory or model.tar.gz (default $SM_MODEL_DIR or /opt/ml/model)")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SAGEMAKER_BIND_TO_PORT", DEFAULT_PORT)),
                        help="0 picks a free port")
    parser.add_argument("--ready-file", type=Path,
                        help="once listening, write the server's URL here (how a supervisor learns the port)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        server = load_server(Path(args.model_dir), args.host, args.port)
    except (ArtifactError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    log.info("serving %s on %s", args.model_dir, server.url)
    if args.ready_file:
        partial = args.ready_file.with_name(args.ready_file.name + ".partial")
        partial.write_text(server.url, encoding="utf-8")
        partial.replace(args.ready_file)
    serve_until_interrupted(server)
    return 0


def serve_until_interrupted(server: ThreadingHTTPServer) -> None:
    """Serve until Ctrl-C (or SIGINT), then release the port."""
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
