"""One worker's HTTP application: ``GET /ping`` and ``POST /invocations`` over a loaded model.

Like the SageMaker PyTorch inference container, it calls the handlers (``input_fn``,
``predict_fn``, ``output_fn``) of the artifact's own ``code/inference.py``, so a model answers
here exactly as on its endpoint: same content types, limits and statuses. Each request is
parsed on its own; the scoring of requests that arrive together goes through the batcher as
one ``predict_fn`` call.

A handler's error is answered as the container answers it (``sagemaker_inference``'s
``Transformer.handle_error``): the error's status (a refusal's 4xx ``status``, else 500) and a
plain-text body, the message on the first line and the traceback after it. That is what
SageMaker Runtime hands the predict function as ``OriginalMessage``; answering it here too is
what lets a local test catch a caller that expects JSON. The server's own refusals (busy, too
large, no length) are JSON, ``{"error": "..."}``, as the container's model server answers its own.

``GET /execution-parameters`` is what a Batch Transform asks a container before it sends records,
for the settings the CreateTransformJob request left out: requests at once (two per worker),
records per request (many: the handlers take JSON Lines and CSV batches) and the largest
request (the handlers' own body limit, in whole MB).
"""
from __future__ import annotations

import asyncio
import logging
import traceback
from http import HTTPStatus
from types import ModuleType
from typing import Any

from aiohttp import web

from serve.handlers import MAX_BODY_BYTES
from serve.server.batching import Batcher, Overloaded
from serve.server.http import (
    BodyRefused,
    error_response,
    json_response,
    name_server,
    ping,
    printable,
    read_body,
    refuse,
)
from serve.server.settings import ServerSettings

log = logging.getLogger(__name__)

BATCHER = web.AppKey("batcher", Batcher)
HANDLERS = web.AppKey("handlers", ModuleType)
# Bodies up to this size are parsed on the event loop; bigger ones on a thread, so that one
# large CSV does not hold up every other connection.
PARSE_INLINE_BYTES = 64 * 1024
RETRY_AFTER_S = "1"
SETTINGS = web.AppKey("settings", ServerSettings)
MEGABYTE = 1024 * 1024


def build_app(handlers: ModuleType, model: Any, settings: ServerSettings) -> web.Application:
    """The application for one worker; the batcher starts and stops with it."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[HANDLERS] = handlers
    app[SETTINGS] = settings
    app[BATCHER] = Batcher(lambda reviews: handlers.predict_fn(reviews, model), batch_size=settings.batch_size,
                           max_delay_s=settings.max_batch_delay_ms / 1000, queue_size=settings.queue_size)
    app.router.add_get("/ping", ping)
    app.router.add_post("/invocations", invocations)
    app.router.add_get("/execution-parameters", execution_parameters)
    app.router.add_route("*", "/{tail:.*}", not_found)
    app.on_startup.append(_start_batcher)
    app.on_cleanup.append(_stop_batcher)  # after in-flight requests have their answers
    app.on_response_prepare.append(name_server)
    return app


async def _start_batcher(app: web.Application) -> None:
    app[BATCHER].start()


async def _stop_batcher(app: web.Application) -> None:
    await app[BATCHER].close()


async def execution_parameters(request: web.Request) -> web.Response:
    return json_response(HTTPStatus.OK, transform_parameters(request.app[SETTINGS]))


def transform_parameters(settings: ServerSettings) -> dict[str, object]:
    """What this server tells a Batch Transform: SageMaker's names and values. Two requests at
    once per worker: one scored while the next is parsed, and, since the kernel spreads
    connections over the workers' sockets at random, fewer idle workers than with one each."""
    return {"MaxConcurrentTransforms": 2 * settings.workers, "BatchStrategy": "MULTI_RECORD",
            "MaxPayloadInMB": MAX_BODY_BYTES // MEGABYTE}


async def not_found(request: web.Request) -> web.Response:
    return error_response(HTTPStatus.NOT_FOUND,
                          f"no such path {printable(request.method)} {printable(request.path)!r}: "
                          "use GET /ping, POST /invocations or GET /execution-parameters")


async def invocations(request: web.Request) -> web.StreamResponse:
    batcher = request.app[BATCHER]
    try:
        if batcher.full():  # shed load before a body is read and held in memory
            raise BodyRefused(HTTPStatus.SERVICE_UNAVAILABLE, "the server is busy: try again in a second")
        body = await read_body(request, MAX_BODY_BYTES)
    except BodyRefused as refused:
        retry = {"Retry-After": RETRY_AFTER_S} if refused.status == HTTPStatus.SERVICE_UNAVAILABLE else None
        return await refuse(request, refused, headers=retry)
    handlers = request.app[HANDLERS]
    content_type, accept = request.headers.get("Content-Type", ""), request.headers.get("Accept")
    try:
        if len(body) <= PARSE_INLINE_BYTES:
            reviews = handlers.input_fn(body, content_type)
        else:
            reviews = await asyncio.get_running_loop().run_in_executor(None, handlers.input_fn, body, content_type)
        predictions = await batcher.submit(reviews)
        text, answer_type = handlers.output_fn(predictions, accept)
    except Overloaded as busy:
        log.warning("refused a request: %s", busy)
        return error_response(HTTPStatus.SERVICE_UNAVAILABLE, str(busy), {"Retry-After": RETRY_AFTER_S})
    except Exception as error:
        return handler_error(error)
    return web.Response(status=200, body=text.encode("utf-8"), headers={"Content-Type": answer_type})


def handler_error(error: Exception) -> web.Response:
    """The SageMaker inference toolkit's answer to a handler's error: its status, then
    ``"{message}\n{traceback}"`` as text. Call it inside the ``except`` block."""
    status = getattr(error, "status", None)  # the artifact's InferenceError (its own class)
    if not (isinstance(status, int) and 400 <= status < 500):
        status = HTTPStatus.INTERNAL_SERVER_ERROR
        log.exception("invocation failed")  # a bug, not the client's fault
    return web.Response(status=status, text=f"{error}\n{traceback.format_exc()}", content_type="text/plain")
