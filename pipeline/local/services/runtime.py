"""SageMaker Runtime on this machine: endpoints reached by name at an address that does not change.

On AWS a client calls ``POST https://runtime.sagemaker.REGION.amazonaws.com/endpoints/NAME/invocations``
and SageMaker's runtime forwards the call to whichever variant serves the endpoint now. This
process plays that part locally: one per home, on 127.0.0.1, speaking the same wire format, so
``boto3.client("sagemaker-runtime", endpoint_url=...)`` and ``aws sagemaker-runtime
invoke-endpoint --endpoint-url ...`` work against it unchanged. It answers as SageMaker does:

- 200 with the container's body, ``Content-Type`` and ``X-Amzn-Invoked-Production-Variant``;
- ``ModelError`` (424) when the container answers anything else, with ``OriginalStatusCode`` and
  ``OriginalMessage`` as botocore parses them;
- ``ValidationError`` (400) for an endpoint that does not exist or is not serving.

Routes come from the state database: the endpoints table holds each endpoint's current model
server and, while a guarded update shifts traffic (``pipeline/local/services/rollout.py``), the
candidate server and its share of the requests, dealt exactly (a share of 0.1 sends every tenth
request). Each answer is counted per endpoint config, the way SageMaker publishes a fleet's
metrics (``Invocations``, ``Invocation5XXErrors``, ``ModelLatency`` in microseconds), and
``GET /_local/metrics/NAME`` hands the last minutes of them to whoever judges the alarms. An
endpoint config with a shadow variant has its share of the requests copied to the shadow's server
once the production answer is sent: the shadow's answer is never returned, its failures never
reach the client, its metrics are kept apart (a shadow does not trip the production alarms), and
when the config captures, both answers to a copied request are captured whatever the sampling
percentage (the shadow's under its own variant), so each has its pair. The runtime re-reads the
routes whenever another process has committed a change (SQLite's
``data_version``), so a blue/green update takes effect for the very next request. A request
that finds no server listening (the old variant stopping, a pooled connection it closed) is
sent again, to the route read afresh: an invocation only scores, so sending it twice is safe.

``ensure_runtime(home)`` starts it if it is not running, and keeps its port across restarts.
"""
from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import logging
import sqlite3
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import TypeGuard

import aiohttp
from aiohttp import web

from mlops_rules.capture import CaptureRules, capture_prefix
from mlops_rules.hosting import VARIANT_NAME, shadow_share
from pipeline.local.aws_identity import ACCOUNT, endpoint_log_group_arn
from pipeline.local.processes import process_runs, start_server, stop_process_group
from pipeline.local.services.capture import CaptureWriter
from pipeline.local.state.db import connect, state_path
from pipeline.local.state.store import ArtifactStore
from serve.server.http import BodyRefused, json_response, name_server, ping, printable, read_body, refuse
from serve.server.run import listening_socket, serve_forever, url_of, write_whole

log = logging.getLogger(__name__)

# Local hosting's folder under the home: the endpoints' logs and model servers' models
# (pipeline/local/services/hosting.py), and this runtime's record, lock and log.
HOSTING_DIR = "hosting"
RECORD_FILE = "runtime.json"
# SageMaker's limit for a real-time invocation's payload.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
INVOKE_TIMEOUT_S = 60.0
# How long a request keeps looking for a listening server (an update in progress, say).
RETRY_WINDOW_S = 5.0
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 45.0
SERVING_STATUSES = ("InService", "Updating", "RollingBack")
# InvokeEndpoint's InferenceId, as botocore sends it: kept in the captured record's eventMetadata.
INFERENCE_ID_HEADER = "X-Amzn-SageMaker-Inference-Id"
# Copies to a shadow variant waiting for its answer at once; more are dropped (and counted), so a
# slow shadow never holds the router's memory or the production answers.
MAX_SHADOW_IN_FLIGHT = 64
# How long the per-second metrics are kept (the longest alarm window a rollout judges: 10 periods of 60 s).
METRICS_KEPT_S = 600
ERROR_TYPE_HEADER = "x-amzn-ErrorType"


@dataclass(frozen=True)
class Route:
    status: str
    url: str | None
    variant: str
    config: str = ""
    candidate_url: str | None = None  # a guarded update's new server, while it takes a share
    candidate_config: str | None = None
    share: float = 0.0  # the candidate's share of the requests
    capture: CaptureRules | None = None  # the endpoint config's DataCaptureConfig, if it captures
    candidate_capture: CaptureRules | None = None
    shadow_url: str | None = None  # the config's shadow variant's server, copied ``shadow_share`` of the requests
    shadow_variant: str = ""
    shadow_share: float = 0.0


class FleetMetrics:
    """Per endpoint and endpoint config, per second: requests, 5xx answers, and the latency's
    sum, maximum and minimum in microseconds (``cloudwatch.Bucket``)."""

    def __init__(self) -> None:
        self._series: dict[str, dict[str, dict[int, list[float]]]] = {}

    def record(self, endpoint: str, config: str, error: bool, latency_us: float, now: float) -> None:
        seconds = self._series.setdefault(endpoint, {}).setdefault(config, {})
        second = int(now)
        bucket = seconds.get(second)
        if bucket is None:
            bucket = seconds[second] = [second, 0, 0, 0.0, latency_us, latency_us]
            for old in [s for s in seconds if s <= second - METRICS_KEPT_S]:
                del seconds[old]
        bucket[1] += 1
        bucket[2] += int(error)
        bucket[3] += latency_us
        bucket[4], bucket[5] = max(bucket[4], latency_us), min(bucket[5], latency_us)

    def of(self, endpoint: str) -> dict[str, list[list[float]]]:
        return {config: sorted(seconds.values()) for config, seconds in self._series.get(endpoint, {}).items()}


def _deal(credits: dict[str, float], name: str, share: float) -> bool:
    """Whether this one of ``name``'s requests falls to a share of them, dealt evenly and exactly:
    a running credit grows by ``share`` a request and pays 1 for each one it takes (at 0.1, every
    tenth)."""
    credit = credits.get(name, 0.0) + share
    taken = credit >= 1.0 - 1e-9
    credits[name] = credit - 1.0 if taken else credit
    return taken


def read_runtime_metrics(runtime: str, endpoint: str, timeout_s: float = 2.0) -> dict:
    """What ``GET /_local/metrics/NAME`` answers for an endpoint: ``fleets`` and ``shadow``, each
    endpoint config → per-second buckets (``FleetMetrics``), and the capture's and shadow copies'
    counts. OSError or ValueError if the runtime cannot be asked."""
    with urllib.request.urlopen(f"{runtime}/_local/metrics/{endpoint}", timeout=timeout_s) as answer:
        metrics = json.loads(answer.read())
    if not isinstance(metrics, dict) or not isinstance(metrics.get("fleets"), dict):
        raise ValueError(f"the runtime at {runtime} answered no fleets for {endpoint}")
    return metrics


def read_fleet_metrics(runtime: str, endpoint: str, timeout_s: float = 2.0) -> dict[str, list[list[float]]]:
    """The production fleets' part of ``read_runtime_metrics``: what the rollback alarms judge."""
    return read_runtime_metrics(runtime, endpoint, timeout_s)["fleets"]


class Routes:
    """Each endpoint's current model server, read from the state database, read again only after
    another connection has committed (``PRAGMA data_version`` changes)."""

    def __init__(self, home: Path) -> None:
        self.conn = connect(state_path(home))
        self._version: int | None = None
        self._routes: dict[str, Route] = {}

    def get(self, name: str) -> Route | None:
        version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version:
            self._routes, self._version = self._read(), version
        return self._routes.get(name)

    def _read(self) -> dict[str, Route]:
        rows = self.conn.execute("SELECT e.*, c.production_variants, c.data_capture_config, c.shadow_variants, "
                                 "n.data_capture_config AS candidate_capture FROM endpoints e "
                                 "LEFT JOIN endpoint_configs c ON c.name = e.config_name "
                                 "LEFT JOIN endpoint_configs n ON n.name = e.candidate_config").fetchall()
        routes = {}
        for row in rows:
            variants = json.loads(row["production_variants"] or "[]")
            production = variants[0] if variants else {}
            shadow = (json.loads(row["shadow_variants"] or "[]") or [{}])[0]
            routes[row["name"]] = Route(row["status"], row["url"], production.get("VariantName", VARIANT_NAME),
                                        row["config_name"], row["candidate_url"],
                                        row["candidate_config"], row["candidate_share"] or 0.0,
                                        CaptureRules.of(json.loads(row["data_capture_config"] or "null")),
                                        CaptureRules.of(json.loads(row["candidate_capture"] or "null")),
                                        row["shadow_url"] if shadow else None, shadow.get("VariantName", ""),
                                        shadow_share(shadow, production) if shadow else 0.0)
        return routes


def aws_error(status: int, code: str, message: str, **fields: object) -> web.Response:
    """An error as SageMaker's runtime sends it: the type in ``x-amzn-ErrorType``, the rest in the body."""
    return json_response(status, {"message": message, **fields}, {ERROR_TYPE_HEADER: code})


def model_error(name: str, status: int, original: str, log_path: Path) -> web.Response:
    kind = "client" if 400 <= status < 500 else "server"
    message = (f"Received {kind} error ({status}) from primary with message \"{original}\". "
               f"See {log_path} for more information.")
    return aws_error(HTTPStatus.FAILED_DEPENDENCY, "ModelError", message, OriginalStatusCode=status,
                     OriginalMessage=original, LogStreamArn=endpoint_log_group_arn(name))


class Runtime:
    """The router: one aiohttp application, one client session to the model servers."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.routes = Routes(self.home)
        self.metrics = FleetMetrics()
        self._credit: dict[str, float] = {}  # each endpoint's running count toward its candidate's next request
        self.capture = CaptureWriter(ArtifactStore(self.home))
        self._capture_credit: dict[str, float] = {}  # the same toward the next invocation captured
        self.session: aiohttp.ClientSession | None = None
        self.shadow_metrics = FleetMetrics()  # the shadow variants' answers, apart from the production alarms
        self._shadow_credit: dict[str, float] = {}  # the same toward the next request copied to a shadow
        self._shadow_tasks: set[asyncio.Task] = set()
        self.shadow_dropped = 0  # copies not sent: MAX_SHADOW_IN_FLIGHT were waiting

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_PAYLOAD_BYTES)
        app.router.add_get("/ping", ping)
        app.router.add_post("/endpoints/{name}/invocations", self.invoke)
        app.router.add_get("/_local/metrics/{name}", self.fleet_metrics)
        app.router.add_route("*", "/{tail:.*}", self.unknown)
        app.on_response_prepare.append(name_server)
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        return app

    async def _open(self, app: web.Application) -> None:
        self.capture.start()
        connector = aiohttp.TCPConnector(limit=512, keepalive_timeout=30)
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                             timeout=aiohttp.ClientTimeout(total=INVOKE_TIMEOUT_S))

    async def _close(self, app: web.Application) -> None:
        for task in list(self._shadow_tasks):  # copies only: nobody waits for their answers
            task.cancel()
        await asyncio.gather(*self._shadow_tasks, return_exceptions=True)
        if self.session is not None:
            await self.session.close()
        await asyncio.get_running_loop().run_in_executor(None, self.capture.close)

    async def unknown(self, request: web.Request) -> web.Response:
        return aws_error(HTTPStatus.NOT_FOUND, "UnknownOperationException",
                         f"no operation at {printable(request.method)} {printable(request.path)!r}: "
                         "use POST /endpoints/NAME/invocations")

    async def fleet_metrics(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return json_response(200, {"endpoint": name, "now": time.time(), "fleets": self.metrics.of(name),
                                   "shadow": self.shadow_metrics.of(name), "shadow_dropped": self.shadow_dropped,
                                   "capture": self.capture.stats})

    def _target(self, name: str, route: Route) -> tuple[str | None, str]:
        """The server (and its endpoint config) that takes this request: the candidate for its
        share of them, dealt evenly, else the endpoint's own."""
        if not route.candidate_url or route.share <= 0:
            return route.url, route.config
        chosen = _deal(self._credit, name, route.share)
        return (route.candidate_url, route.candidate_config or "") if chosen else (route.url, route.config)

    async def invoke(self, request: web.Request) -> web.StreamResponse:
        request_id = str(uuid.uuid4())
        try:
            body = await read_body(request, MAX_PAYLOAD_BYTES)
        except BodyRefused as refused:
            return await refuse(request, refused, key="message", headers={ERROR_TYPE_HEADER: "ValidationError"})
        name = request.match_info["name"]
        headers = {"Content-Type": request.headers.get("Content-Type", "application/octet-stream")}
        for header in ("Accept", "X-Amzn-SageMaker-Custom-Attributes"):
            if header in request.headers:
                headers[header] = request.headers[header]
        answer = await self._forward(name, body, headers, request.headers.get(INFERENCE_ID_HEADER))
        answer.headers["x-amzn-RequestId"] = request_id
        return answer

    def _captured(self, name: str, route: Route, config: str, request: tuple[str, bytes],
                  answer: tuple[str, bytes], inference_id: str | None, whole: bool = False) -> bool:
        """Hand a served invocation to the capture writer if its config captures and it is sampled
        (dealt evenly: at 20 %, every fifth), or ``whole``: a request copied to the shadow is
        captured whatever the sampling, so each shadow answer has its production pair. Whether it
        was; never raises into the request."""
        rules = route.capture if config == route.config else route.candidate_capture
        if rules is None:
            return False
        if not whole and not _deal(self._capture_credit, name, rules.percent / 100):
            return False
        return self._capture_one(name, rules, route.variant, request, answer, inference_id)

    def _capture_one(self, name: str, rules: CaptureRules, variant: str, request: tuple[str, bytes],
                     answer: tuple[str, bytes], inference_id: str | None) -> bool:
        now = datetime.now(UTC)
        try:
            record = rules.record(request, answer, str(uuid.uuid4()), now, inference_id)
            self.capture.add(capture_prefix(rules.destination, name, variant, now), record)
            return True
        except Exception:  # noqa: BLE001 (capture must never fail a request)
            log.exception("endpoint %s: an invocation could not be captured", name)
            return False

    def _copies_to_shadow(self, name: str, route: Route, config: str) -> bool:
        """Whether this request goes to the shadow variant too: its share of the requests the
        production config serves, dealt evenly (during a canary, the candidate's are not the
        production variant's answers, so they are not compared), while fewer than
        MAX_SHADOW_IN_FLIGHT copies wait (else dropped and counted)."""
        if not route.shadow_url or route.shadow_share <= 0 or config != route.config:
            return False
        if not _deal(self._shadow_credit, name, route.shadow_share):
            return False
        if len(self._shadow_tasks) >= MAX_SHADOW_IN_FLIGHT:
            self.shadow_dropped += 1
            return False
        return True

    def _copy_to_shadow(self, name: str, route: Route, body: bytes, headers: dict[str, str],
                        inference_id: str | None, pair_captured: bool) -> None:
        """Send the copy after the production answer, without waiting for the shadow's; its answer
        is captured when the production answer it pairs with was."""
        task = asyncio.create_task(self._shadow(name, route, body, headers, inference_id, pair_captured))
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow(self, name: str, route: Route, body: bytes, headers: dict[str, str],
                      inference_id: str | None, pair_captured: bool) -> None:
        assert self.session is not None, "the client session starts with the application"
        started = time.perf_counter()
        try:
            async with self.session.post(f"{route.shadow_url}/invocations", data=body, headers=headers) as response:
                data = await response.read()
                status, content_type = response.status, response.headers.get("Content-Type", "application/octet-stream")
        except (TimeoutError, aiohttp.ClientError) as error:
            log.warning("endpoint %s: the shadow variant did not answer: %r", name, error)
            status, data, content_type = 503, b"", ""
        self.shadow_metrics.record(name, route.config, status >= 500, (time.perf_counter() - started) * 1e6, time.time())
        if pair_captured and status == 200 and route.capture is not None:
            self._capture_one(name, route.capture, route.shadow_variant, (headers["Content-Type"], body),
                              (content_type, data), inference_id)

    async def _forward(self, name: str, body: bytes, headers: dict[str, str],
                       inference_id: str | None = None) -> web.Response:
        deadline, pause = time.monotonic() + RETRY_WINDOW_S, 0.01
        while True:
            route = self.routes.get(name)
            if route is None:
                return aws_error(HTTPStatus.BAD_REQUEST, "ValidationError",
                                 f"Endpoint {name} of account {ACCOUNT} not found.")
            if route.status not in SERVING_STATUSES or not route.url:
                return aws_error(HTTPStatus.BAD_REQUEST, "ValidationError",
                                 f"Endpoint {name} is {route.status}: it is not serving. "
                                 "See sentiment-mlops endpoints show for the reason.")
            assert self.session is not None, "the client session starts with the application"
            url, config = self._target(name, route)
            started = time.perf_counter()
            try:
                async with self.session.post(f"{url}/invocations", data=body, headers=headers) as response:
                    data = await response.read()
                    self.metrics.record(name, config, response.status >= 500, (time.perf_counter() - started) * 1e6,
                                        time.time())
                    # SageMaker copies a request to the shadow whatever the production answer;
                    # the pair is captured only when the production answer is.
                    shadowed = self._copies_to_shadow(name, route, config)
                    captured = response.status == 200 and self._captured(
                        name, route, config, (headers["Content-Type"], body),
                        (response.headers.get("Content-Type", "application/octet-stream"), data),
                        inference_id, whole=shadowed)
                    if shadowed:
                        self._copy_to_shadow(name, route, body, headers, inference_id, captured)
                    return self._answer(name, route, response, data)
            except (TimeoutError, aiohttp.ClientConnectionError) as error:
                if url == route.candidate_url and route.share > 0:
                    # A candidate that drops connections is failing, even though the request is sent
                    # again (to whichever server the route deals next): its fleet counts a 5xx.
                    self.metrics.record(name, config, True, (time.perf_counter() - started) * 1e6, time.time())
                if isinstance(error, asyncio.TimeoutError) or time.monotonic() + pause > deadline:
                    log.warning("endpoint %s: the model server at %s did not answer: %r", name, url, error)
                    if url != route.candidate_url:  # (a candidate's failure is counted above)
                        self.metrics.record(name, config, True, (time.perf_counter() - started) * 1e6, time.time())
                    return aws_error(HTTPStatus.SERVICE_UNAVAILABLE, "ServiceUnavailable",
                                     f"Endpoint {name}'s model server is not answering; try again, or see "
                                     "sentiment-mlops endpoints show")
                await asyncio.sleep(pause)  # the variant is changing: read the route again
                pause = min(pause * 2, 0.2)

    def _answer(self, name: str, route: Route, response: aiohttp.ClientResponse, data: bytes) -> web.Response:
        if response.status != 200:
            return model_error(name, response.status, data.decode("utf-8", "replace"), endpoint_log(self.home, name))
        answer = web.Response(status=200, body=data, headers={
            "Content-Type": response.headers.get("Content-Type", "application/octet-stream"),
            "X-Amzn-Invoked-Production-Variant": route.variant})
        attributes = response.headers.get("X-Amzn-SageMaker-Custom-Attributes")
        if attributes:
            answer.headers["X-Amzn-SageMaker-Custom-Attributes"] = attributes
        return answer


# --- the process, started once per home ---------------------------------------------------------
def hosting_folder(home: Path) -> Path:
    return (Path(home) / HOSTING_DIR).resolve()


def endpoint_log(home: Path, name: str) -> Path:
    """Where an endpoint's model server writes its log."""
    return hosting_folder(home) / "endpoints" / f"{name}.log"


@contextmanager
def _locked(home: Path) -> Iterator[None]:
    """One process at a time decides whether the runtime must be started."""
    folder = hosting_folder(home)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "runtime.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_record(home: Path) -> dict | None:
    """``{"pid", "url", "port"}`` of the home's runtime as last started, or None."""
    try:
        return json.loads((hosting_folder(home) / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _running(record: dict | None) -> TypeGuard[dict]:
    return record is not None and process_runs(record.get("pid"), "pipeline.local.services.runtime")


def runtime_url(home: Path) -> str | None:
    """The URL of the home's runtime if it is running, else None."""
    record = read_record(home)
    return record["url"] if _running(record) else None


def ensure_runtime(home: Path, port: int = 0) -> str:
    """The URL of the home's runtime, started first if it is not running. It comes back on the
    port it had before, so endpoint URLs survive a reboot; ``port`` applies to a first start."""
    with _locked(home):
        record = read_record(home)
        if _running(record):
            return record["url"]
        wanted = record["port"] if record else port
        try:
            return _start(home, wanted)
        except RuntimeError:
            if not wanted:
                raise
            log.warning("the local runtime's port %d is taken; endpoints move to a new port", wanted)
            return _start(home, 0)


def _start(home: Path, port: int) -> str:
    pid, url = start_server([sys.executable, "-m", "pipeline.local.services.runtime", "--home", str(Path(home).resolve()),
                             "--port", str(port)], hosting_folder(home) / "runtime.log",
                            f"the local SageMaker runtime (port {port or 'any'})", READY_TIMEOUT_S)
    write_whole(hosting_folder(home) / RECORD_FILE, json.dumps({"pid": pid, "url": url, "port": int(url.rsplit(":", 1)[1])}))
    log.info("local SageMaker runtime on %s (pid %d)", url, pid)
    return url


def stop_runtime(home: Path) -> None:
    """Stop the home's runtime, if it runs; its port stays recorded for the next start."""
    with _locked(home):
        record = read_record(home)
        if _running(record):  # it finishes its requests (up to 30 s) and writes its buffered capture first
            stop_process_group(record["pid"], STOP_TIMEOUT_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.local.services.runtime", description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        sock = listening_socket(args.host, args.port)
        runtime = Runtime(args.home)
    except (OSError, sqlite3.Error) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    url = url_of(sock)

    def announce() -> None:
        log.info("routing invocations for the endpoints of %s on %s", args.home, url)
        if args.ready_file:
            write_whole(args.ready_file, url)

    serve_forever(runtime.app(), [sock], on_ready=announce)
    return 0


if __name__ == "__main__":
    sys.exit(main())
