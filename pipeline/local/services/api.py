"""The website and its API on this machine: the local stand-in for S3 website hosting + API
Gateway + the predict Lambda.

One HTTP server (``sentiment-mlops api``, port 3000 by default) does what the AWS stack does:

- ``/``, ``/app.js``, ``/style.css``: the static site from ``website/``, and ``/config.json``,
  which tells the page where its API is (on AWS the deploy writes it next to the page: nobody
  pastes an address into the HTML any more);
- ``/predict``, ``/feedback``, ``/health`` and any other API path: the request becomes an API Gateway
  payload-2.0 event, which goes to ``lambda/predict.py``'s ``handle`` (the code that runs in
  Lambda) with a real boto3 ``sagemaker-runtime`` client. The client's ``endpoint_url`` is the
  home's local SageMaker runtime (``pipeline/local/services/runtime.py``), which routes the invocation to
  the endpoint's current model server, as SageMaker's runtime does on AWS. Feedback is written
  into the store under ``s3://BUCKET/PREFIX/groundtruth/`` (``LocalS3``), its answers signed with
  a key made once for the home (``<home>/secrets/feedback.key``, readable by its owner only),
  as the stack's secret signs them on AWS.

Other applications can be served by the same server: each ``Mount`` (a path prefix, an aiohttp
application, and what ``config.json`` says about it) is added ahead of the API's catch-all route,
since aiohttp resolves routes in the order they were added. ``sentiment-mlops api`` mounts the
registry page (``pipeline/review/web.py``) this way; this module does not know it.

Handlers run on a pool of ``HANDLER_THREADS`` threads (boto3 blocks), as Lambda runs concurrent
invocations side by side. Like API Gateway, the server refuses a body over 10 MB before reading
it (and a chunked one, or one that trickles in for longer than 30 s); the handler's own,
smaller limit applies to the rest.
"""
from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from mlops_rules.feedback import GROUND_TRUTH_FOLDER
from pipeline.lambdas import load_lambda
from pipeline.local.aws_identity import REGION
from pipeline.local.services.runtime import INVOKE_TIMEOUT_S, ensure_runtime
from pipeline.local.services.s3 import LocalS3
from pipeline.local.state.secret_keys import write_secret_key
from pipeline.settings import WEBSITE_DIR, Settings
from serve.server.http import BodyRefused, json_response, name_server, read_body, refuse

STATIC_FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/index.html": ("index.html", "text/html; charset=utf-8"),
                "/app.js": ("app.js", "text/javascript; charset=utf-8"), "/style.css": ("style.css", "text/css; charset=utf-8")}
API_GATEWAY_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_PORT = 3000
HANDLER_THREADS = 64
# The local runtime checks no signature, but botocore signs every request and needs a key to
# sign with. These name no account; real credentials are never sent to it.
LOCAL_ACCESS_KEY = "local-runtime"


def runtime_client(runtime_url: str, pool_size: int = HANDLER_THREADS):
    """A real boto3 ``sagemaker-runtime`` client that talks to the local runtime."""
    import boto3
    from botocore.config import Config

    config = Config(max_pool_connections=pool_size, read_timeout=INVOKE_TIMEOUT_S + 5,
                    retries={"mode": "standard", "max_attempts": 3})
    return boto3.session.Session().client("sagemaker-runtime", endpoint_url=runtime_url, region_name=REGION,
                                          aws_access_key_id=LOCAL_ACCESS_KEY, aws_secret_access_key=LOCAL_ACCESS_KEY,
                                          config=config)


def proxy_event(method: str, path: str, headers: dict[str, str], body: bytes, source_ip: str = "") -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event, as API Gateway builds one."""
    return {"version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
            "headers": {k.lower(): v for k, v in headers.items()},
            "requestContext": {"http": {"method": method, "path": path, "sourceIp": source_ip}, "stage": "$default"},
            "body": base64.b64encode(body).decode("ascii") if body else None, "isBase64Encoded": bool(body)}


@dataclass(frozen=True)
class Mount:
    """An application served under ``prefix`` (``/registry`` answers ``/registry`` and everything
    below it) ahead of the API's catch-all route, and the keys it adds to ``config.json``."""

    prefix: str
    app: web.Application
    config: Mapping[str, str] = field(default_factory=dict)


class ApiApp:
    """The site and the API for ``settings``' endpoint, answering at ``url``, with ``mounts``
    served by the same server."""

    def __init__(self, settings: Settings, url: str, runtime_url: str, mounts: Sequence[Mount] = ()) -> None:
        self.url = url
        self.mounts = tuple(mounts)
        self.predict = load_lambda("predict")
        # The page is served from this same origin here; on AWS the API allows the site's origin.
        self.config = self.predict.PredictConfig(settings.endpoint_name, url, settings.s3_uri(GROUND_TRUTH_FOLDER),
                                                 write_secret_key(Path(settings.home) / "secrets" / "feedback.key"))
        self.client = runtime_client(runtime_url)
        self.s3, self.limiter = LocalS3(settings.home), self.predict.FeedbackLimiter()
        self.executor = ThreadPoolExecutor(HANDLER_THREADS, thread_name_prefix="predict")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=API_GATEWAY_MAX_BYTES)
        for mount in self.mounts:  # before the catch-all: aiohttp resolves in the order routes were added
            app.add_subapp(mount.prefix, mount.app)
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        app.on_response_prepare.append(name_server)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, app: web.Application) -> None:
        self.executor.shutdown(wait=True)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.method in ("GET", "HEAD") and request.path in STATIC_FILES:
            name, content_type = STATIC_FILES[request.path]
            return web.Response(body=(WEBSITE_DIR / name).read_bytes(), headers={"Content-Type": content_type})
        if request.method in ("GET", "HEAD") and request.path == "/config.json":
            config: dict[str, str] = {}
            for mount in self.mounts:
                config.update(mount.config)
            return json_response(200, {**config, "apiUrl": self.url})
        return await self.api(request)

    async def api(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await read_body(request, API_GATEWAY_MAX_BYTES, length_required=False)
        except BodyRefused as refused:  # answered as API Gateway answers, before any function runs
            return await refuse(request, refused, key="message")
        event = proxy_event(request.method, request.path, dict(request.headers), body, request.remote or "")
        answer = await asyncio.get_running_loop().run_in_executor(
            self.executor, lambda: self.predict.handle(event, self.config, self.client, s3=self.s3, limiter=self.limiter))
        headers = {k: v for k, v in answer["headers"].items() if k.lower() not in ("content-length",)}
        headers.setdefault("Content-Type", "application/octet-stream")
        return web.Response(status=answer["statusCode"], body=answer["body"].encode("utf-8"), headers=headers)


def api_app(settings: Settings, url: str, mounts: Sequence[Mount] = ()) -> web.Application:
    """The application for ``sentiment-mlops api`` at ``url``, with ``mounts`` ahead of the API;
    starts the home's runtime if needed."""
    home = Path(settings.home)
    home.mkdir(parents=True, exist_ok=True)
    return ApiApp(settings, url, ensure_runtime(home, settings.runtime_port), mounts).app()
