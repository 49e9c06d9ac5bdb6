"""A SageMaker-compatible model server: ``GET /ping`` and ``POST /invocations`` on port 8080.

It plays the part of the SageMaker PyTorch inference container: like the container, it imports
the handlers (``model_fn``, ``input_fn``, ``predict_fn``, ``output_fn``) from the artifact's own
``code/inference.py`` (``serve/artifact_code.py`` keeps them apart from this process's copy), so
a model answers here exactly as on its endpoint: same content types, limits and statuses. The
standard library's threading HTTP server is enough for one model on one machine; scoring is
serialized by a lock (PyTorch already uses every core for one batch).

Bad requests never reach the handlers unchecked: a body without ``Content-Length`` gets 411, one
over the limit gets 413 before it is read, a slow client is dropped after ``REQUEST_TIMEOUT_S``.
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
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from types import ModuleType

from serve.artifact import ArtifactError, resolve_model_dir
from serve.artifact_code import load_artifact_handlers
from serve.errors import PayloadTooLarge
from serve.handlers import MAX_BODY_BYTES

log = logging.getLogger(__name__)

DEFAULT_PORT = 8080  # SageMaker sends /ping and /invocations to port 8080
REQUEST_TIMEOUT_S = 30.0
SERVER_NAME = "sentiment-mlops"


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
        body = self._read_body()
        if body is None:
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

    def _read_body(self) -> bytes | None:
        """The body, or None after answering why it was refused (it is then not read at all)."""
        length = self.headers.get("Content-Length")
        if length is None or self.headers.get("Transfer-Encoding"):
            self._error(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length header (no chunked encoding)")
            return None
        if not length.isdigit():
            self._error(HTTPStatus.BAD_REQUEST, f"Content-Length {length!r} is not a number of bytes")
            return None
        if int(length) > MAX_BODY_BYTES:
            error = PayloadTooLarge(f"the body is {int(length):,} bytes; the limit is {MAX_BODY_BYTES:,}: "
                                    "send fewer or shorter reviews per request")
            self._error(error.status, str(error))
            return None
        return self.rfile.read(int(length))

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
        log.info("%s %s", self.address_string(), format % args)


class ModelServer(ThreadingHTTPServer):
    """One loaded model behind ``/ping`` and ``/invocations``, scored by the artifact's handlers."""

    daemon_threads = True

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
