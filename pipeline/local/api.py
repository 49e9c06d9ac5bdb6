"""The website and its API on this machine: the local stand-in for S3 website hosting + API
Gateway + the predict Lambda + SageMaker's runtime.

One HTTP server (``sentiment-mlops api``, port 3000 by default) does what the AWS stack does:

- ``/``, ``/app.js``, ``/style.css``: the static site from ``website/``, and ``/config.json``,
  which tells the page where its API is (on AWS the deploy writes it next to the page: nobody
  pastes an address into the HTML any more);
- ``/predict``, ``/health`` and any other API path: the request becomes an API Gateway
  payload-2.0 event, which goes to ``lambda/predict.py``'s ``handle`` (the code that runs in
  Lambda), whose ``invoke_endpoint`` calls reach ``LocalRuntime``: the local endpoint's model
  server, found through ``LocalHosting`` as SageMaker's runtime finds an endpoint.

Like API Gateway, the server refuses a body over 10 MB before reading it (and a chunked one, or
one that trickles in for longer than 30 s); the handler's own, smaller limit applies to the rest.
"""
from __future__ import annotations

import base64
import http.client
import io
import json
import logging
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import ClientError
from botocore.response import StreamingBody

from pipeline.local.db import ACCOUNT, open_state
from pipeline.local.hosting import LocalHosting
from pipeline.local.lambdas import load_lambda
from pipeline.settings import WEBSITE_DIR, Settings
from serve.server import BodyRefused, BoundedThreadingHTTPServer, printable, read_body

log = logging.getLogger(__name__)

STATIC_FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/index.html": ("index.html", "text/html; charset=utf-8"),
                "/app.js": ("app.js", "text/javascript; charset=utf-8"), "/style.css": ("style.css", "text/css; charset=utf-8")}
API_GATEWAY_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_PORT = 3000
INVOKE_TIMEOUT_S = 60.0


class LocalRuntime:
    """``invoke_endpoint`` of boto3's sagemaker-runtime client, answered by the local endpoint."""

    def __init__(self, home: Path | str) -> None:
        self.home = Path(home)

    def _endpoint_url(self, name: str) -> str:
        conn = open_state(self.home)
        try:
            endpoint = LocalHosting(self.home, conn).describe_endpoint(name)
        except ClientError:
            raise ClientError({"Error": {"Code": "ValidationError",
                                         "Message": f"Endpoint {name} of account {ACCOUNT} not found."}},
                              "InvokeEndpoint") from None
        finally:
            conn.close()
        if endpoint["EndpointStatus"] != "InService" or not endpoint.get("Url"):
            raise ClientError({"Error": {"Code": "ValidationError", "Message": f"Endpoint {name} is "
                                         f"{endpoint['EndpointStatus']}: {endpoint.get('FailureReason', '')}"}},
                              "InvokeEndpoint")
        return endpoint["Url"]

    def invoke_endpoint(self, EndpointName: str, ContentType: str, Accept: str, Body: bytes) -> dict[str, Any]:  # noqa: N803
        parts = urlsplit(self._endpoint_url(EndpointName))
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=INVOKE_TIMEOUT_S)
        try:
            connection.request("POST", "/invocations", body=Body, headers={"Content-Type": ContentType, "Accept": Accept})
            response = connection.getresponse()
            data = response.read()
        except OSError as error:
            raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": str(error)}}, "InvokeEndpoint") from None
        finally:
            connection.close()
        if response.status != 200:  # SageMaker's runtime reports the container's answer as a ModelError
            raise ClientError({"Error": {"Code": "ModelError", "Message": f"Received client error ({response.status})"},
                               "OriginalStatusCode": response.status, "OriginalMessage": data.decode("utf-8", "replace")},
                              "InvokeEndpoint")
        return {"Body": StreamingBody(io.BytesIO(data), len(data)), "ContentType": response.getheader("Content-Type")}


def proxy_event(method: str, path: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event, as API Gateway builds one."""
    return {"version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
            "headers": {k.lower(): v for k, v in headers.items()},
            "requestContext": {"http": {"method": method, "path": path}, "stage": "$default"},
            "body": base64.b64encode(body).decode("ascii") if body else None, "isBase64Encoded": bool(body)}


class _Handler(BaseHTTPRequestHandler):
    server: "ApiServer"
    protocol_version = "HTTP/1.1"
    timeout = 30.0
    server_version = "sentiment-mlops-api"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        if path in STATIC_FILES:
            name, content_type = STATIC_FILES[path]
            self._send(200, (WEBSITE_DIR / name).read_bytes(), content_type)
        elif path == "/config.json":
            self._send(200, json.dumps({"apiUrl": self.server.url}).encode(), "application/json")
        else:
            self._api()

    def do_POST(self) -> None:  # noqa: N802
        self._api()

    def do_OPTIONS(self) -> None:  # noqa: N802
        self._api()

    def _api(self) -> None:
        try:
            body = read_body(self, API_GATEWAY_MAX_BYTES, length_required=False)
        except BodyRefused as refused:  # answered as API Gateway answers, before any function runs
            self.close_connection = True
            self._send(refused.status, json.dumps({"message": refused.message}).encode(), "application/json")
            return
        event = proxy_event(self.command, urlsplit(self.path).path, dict(self.headers.items()), body)
        answer = self.server.predict.handle(event, self.server.config, self.server.runtime)
        self._send(answer["statusCode"], answer["body"].encode("utf-8"), answer["headers"].get("Content-Type"),
                   answer["headers"])

    def _send(self, status: int, body: bytes, content_type: str | None, headers: dict | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            if name.lower() not in ("content-type", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Type", content_type or "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        log.info("%s %s", self.address_string(), printable(format % args))


class ApiServer(BoundedThreadingHTTPServer):
    def __init__(self, settings: Settings, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
        super().__init__((host, port), _Handler)
        self.predict = load_lambda("predict")
        self.runtime = LocalRuntime(settings.home)
        host_name, bound_port = self.server_address[:2]
        self.url = f"http://{host_name}:{bound_port}"
        # The page is served from this same origin here; on AWS the API allows the site's origin.
        self.config = self.predict.PredictConfig(settings.endpoint_name, self.url)
