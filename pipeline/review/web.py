"""The registry page: ``/registry`` on the server ``sentiment-mlops api`` runs.

An aiohttp application mounted under ``/registry`` ahead of the API's catch-all route:

- ``/registry``: every version, its status, metrics, registration, approval history, and what
  the endpoint serves now;
- ``/registry/versions/N``: one version: plots, most confident mistakes, lineage, and the
  approve / reject form;
- ``/registry/versions/N/plots/NAME``: one of the version's plots, by a known name only
  (``evidence.PLOTS``), from that version's own evaluation folder;
- ``/registry/compare?challenger=N[&champion=M]``: champion against challenger (the serving
  version is the champion unless another is named);
- ``POST /registry/versions/N/decision``: approve or reject with a comment, through
  ``decisions.decide`` (the path the CLI takes); the answer shows the deployment's outcome.

A page that changes state is an attack surface, even on 127.0.0.1: any web site the user visits
can make the browser send requests there. So:

- **Host.** Every request must name the server by one of its own names (``127.0.0.1:PORT``,
  ``localhost:PORT``, ``[::1]:PORT`` and the ``--host`` it listens on); any other Host is refused
  with 403. That defeats DNS rebinding (a site whose name is made to resolve to 127.0.0.1 sends
  its own name as Host). Listening on all interfaces (``0.0.0.0`` or ``::``), the machine's host
  name, its fully qualified name and any IP address literal are allowed too: a rebinding
  attacker cannot make the browser send an address literal as Host for a page of its own.
- **Origin.** A state-changing request that carries an ``Origin`` must come from an allowed
  Host of this same server (``null`` is refused); a request without one (curl, scripts) is
  judged by the token alone.
- **Token.** The decision form carries a per-process random token (``secrets``), compared with
  ``hmac.compare_digest``; a POST without it, or with another, is refused with 403 before
  anything is read from the registry. Pages are never cached, are not framed, send no Referer to
  other sites, and run no script at all (``Content-Security-Policy`` allows none).
- **Bodies.** A decision form is at most ``MAX_FORM_BYTES``; the comment at most
  ``decisions.MAX_COMMENT_CHARS`` characters.
- **Text.** Every value reaches the page through Jinja2 with autoescaping: a review holding
  ``<script>`` is shown as that text.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import re
import secrets
import socket
import sqlite3
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from mlops_rules.approvals import MAX_COMMENT_CHARS, VERBS
from pipeline.local.services.api import Mount
from pipeline.local.state.registry import RegistryError
from pipeline.review import compare as comparing
from pipeline.review import versions
from pipeline.review.decisions import DecisionError, decide
from pipeline.review.evidence import PLOTS, reading
from pipeline.settings import Settings
from serve.server.http import BodyRefused, read_body, refuse

PREFIX = "/registry"
PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"
STATIC_FILES = {"registry.css": "text/css"}
TOKEN_FIELD = "csrf_token"
MAX_FORM_BYTES = 16 * 1024
WORKERS = 4  # registry reads and decisions block (SQLite, the store, the deploy handler)
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    # same-origin: our own form posts carry a real Origin; other sites learn nothing of our URLs
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Cross-Origin-Resource-Policy": "same-origin",
}
LINE_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
HOST_TEXT = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")  # name[:port] or [v6][:port]
T = TypeVar("T")


def is_wildcard(host: str) -> bool:
    return host.strip("[]") in WILDCARD_HOSTS


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` keeps the server to this machine."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    """A host as it appears in a Host header: IPv6 literals in brackets, lower case."""
    name = host.strip("[]").lower()
    return f"[{name}]" if ":" in name else name


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        return False


class Guard:
    """Which Host and Origin headers name this server, and the per-process form token."""

    def __init__(self, url: str, listen_host: str | None = None) -> None:
        parts = urlsplit(url)
        self.port = parts.port or 80
        listen = listen_host if listen_host is not None else (parts.hostname or "127.0.0.1")
        self.names = set(LOOPBACK_NAMES)
        self.any_address = is_wildcard(listen)
        if self.any_address:
            self.names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        else:
            self.names.add(_host_name(listen))
        self.token = secrets.token_urlsafe(32)

    def host_allowed(self, host: str | None) -> bool:
        """Whether a Host header (``name[:port]``) names this server."""
        if not host or not HOST_TEXT.match(host):
            return False
        try:
            parts = urlsplit(f"http://{host}")
            port = parts.port or 80
        except ValueError:  # a port that is not a number
            return False
        name = parts.hostname or ""
        if port != self.port or parts.username is not None or parts.path or not name:
            return False
        return _host_name(name) in self.names or (self.any_address and _is_ip_literal(name))

    def origin_allowed(self, origin: str | None) -> bool:
        """Whether an Origin header is this server's own; a request without one is left to the token."""
        if origin is None:
            return True
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        return parts.scheme == "http" and not parts.path and self.host_allowed(parts.netloc)

    def token_matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode("utf-8"), self.token.encode("utf-8"))


def _paragraphs(text: str) -> list[str]:
    """A review's text split where IMDb put ``<br />`` line breaks, so the page can show them as
    line breaks; every part is still escaped when it is written out."""
    return LINE_BREAK.split(text)


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES_DIR)), autoescape=select_autoescape(default=True,
                      default_for_string=True), undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["paragraphs"] = _paragraphs
    env.filters["number"] = lambda value, digits=4: "—" if value is None else f"{value:.{digits}f}"
    env.filters["signed"] = lambda value: "—" if value is None else f"{value:+.4f}"
    env.filters["thousands"] = lambda value: f"{value:,}"
    env.filters["percent"] = lambda value: "—" if value is None else f"{100 * value:.1f} %"
    return env


class RegistryPages:
    """The registry page for ``settings``' model package group and endpoint, served at ``url``."""

    def __init__(self, settings: Settings, url: str, listen_host: str | None = None) -> None:
        self.settings = settings
        self.guard = Guard(url, listen_host)
        self.env = _environment()
        self.executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="registry")

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guarded])
        app.router.add_get("", self.overview)
        app.router.add_get("/", self.overview)
        app.router.add_get(r"/versions/{version:\d{1,9}}", self.version)
        app.router.add_get(r"/versions/{version:\d{1,9}}/plots/{name}", self.plot)
        app.router.add_post(r"/versions/{version:\d{1,9}}/decision", self.decision)
        app.router.add_get("/compare", self.compare)
        app.router.add_get("/static/{name}", self.static)
        app.router.add_route("*", "/{tail:.*}", self.not_found)
        app.on_response_prepare.append(self._headers)
        app.on_cleanup.append(self._close)
        return app

    def mount(self) -> Mount:
        return Mount(PREFIX, self.app(), {"registryUrl": PREFIX})

    async def _close(self, app: web.Application) -> None:
        self.executor.shutdown(wait=True)

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(SECURITY_HEADERS)

    @web.middleware
    async def _guarded(self, request: web.Request,
                       handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if not self.guard.host_allowed(request.headers.get("Host")):
            return self._page(403, "error.html", title="Refused",
                              message="This page answers only at its own address (for example "
                                      f"http://127.0.0.1:{self.guard.port}{PREFIX}); the request named another host.")
        if request.method not in ("GET", "HEAD") and not self.guard.origin_allowed(request.headers.get("Origin")):
            return self._page(403, "error.html", title="Refused",
                              message="A change to the registry must come from the registry page itself; this "
                                      "request came from another site.")
        try:
            return await handler(request)
        except RegistryError as error:  # a version that does not exist
            return self._page(404, "error.html", title="No such version", message=str(error))
        except (comparing.ComparisonError, DecisionError) as error:
            return self._page(400, "error.html", title="Cannot do that", message=str(error))
        except sqlite3.OperationalError as error:
            return self._page(503, "error.html", title="Busy",
                              message=f"the state database could not be read ({error}); try again in a moment")

    # --- rendering ----------------------------------------------------------------------------------
    def _page(self, status: int, template: str, **context: Any) -> web.Response:
        context.setdefault("serving", None)
        html = self.env.get_template(template).render(root=PREFIX, token=self.guard.token, token_field=TOKEN_FIELD,
                                                       max_comment=MAX_COMMENT_CHARS, **context)
        return web.Response(status=status, text=html, content_type="text/html", charset="utf-8")

    async def _blocking(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, partial(function, *args))

    def _read(self, view: Callable[..., T], *args: Any) -> T:
        with reading(self.settings) as evidence:
            return view(evidence, *args)

    # --- pages --------------------------------------------------------------------------------------
    async def overview(self, request: web.Request) -> web.StreamResponse:
        found = await self._blocking(self._read, versions.overview)
        return self._page(200, "list.html", overview=found, serving=found.serving)

    async def version(self, request: web.Request) -> web.StreamResponse:
        found = await self._blocking(self._read, versions.detail, int(request.match_info["version"]))
        others = await self._blocking(self._read, lambda evidence: [p.version for p in evidence.packages()])
        return self._page(200, "version.html", detail=found, serving=found.serving, plots=PLOTS,
                          others=[v for v in others if v != found.summary.version])

    async def plot(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in PLOTS:  # only known names: nothing from the request becomes a path
            return await self.not_found(request)
        version = int(request.match_info["version"])
        data = await self._blocking(self._read, lambda evidence: evidence.plot(evidence.package(version), name))
        if data is None:
            return self._page(404, "error.html", title="No such plot",
                              message=f"version {version} has no {name} in its evaluation folder")
        return web.Response(body=data, content_type="image/png")

    async def compare(self, request: web.Request) -> web.StreamResponse:
        try:
            challenger = int(request.query.get("challenger", ""))
            champion = int(request.query["champion"]) if request.query.get("champion") else None
        except ValueError:
            return self._page(400, "error.html", title="Cannot compare",
                              message="name the versions as numbers: /registry/compare?challenger=2&champion=1")
        found = await self._blocking(self._read, comparing.compare, champion, challenger)
        others = await self._blocking(self._read, lambda evidence: [p.version for p in evidence.packages()])
        return self._page(200, "compare.html", comparison=found, serving=found.serving,
                          others=[v for v in others if v != challenger])

    async def decision(self, request: web.Request) -> web.StreamResponse:
        version = int(request.match_info["version"])
        try:
            body = await read_body(request, MAX_FORM_BYTES)
        except BodyRefused as refused:
            return await refuse(request, refused)
        if request.content_type != "application/x-www-form-urlencoded":
            return self._page(415, "error.html", title="Cannot do that", message="send the registry page's form")
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=8)
        except (UnicodeDecodeError, ValueError):
            return self._page(400, "error.html", title="Cannot do that", message="send the registry page's form")
        tokens = fields.get(TOKEN_FIELD) or []
        if len(tokens) != 1 or not self.guard.token_matches(tokens[0]):
            return self._page(403, "error.html", title="Refused",
                              message="the form is not this page's (its token is missing or stale): open the "
                                      "version again and decide from there")
        actions, comments = fields.get("action") or [], fields.get("comment") or [""]
        if len(actions) != 1 or actions[0] not in VERBS or len(comments) != 1:
            return self._page(400, "error.html", title="Cannot do that",
                              message=f"choose one of: {', '.join(VERBS)}")
        problem = await self._blocking(self._stop_serving_problem, version, actions[0])
        if problem and fields.get("stop_serving") != ["yes"]:
            return self._page(409, "error.html", title="Confirm first",
                              message=f"{problem}: tick \"stop serving\" on the version's page to reject it anyway")
        made = await self._blocking(decide, self.settings, version, actions[0], comments[0])
        now = await self._blocking(self._read, versions.serving)
        return self._page(200, "decision.html", decision=made, serving=now)

    def _stop_serving_problem(self, version: int, verb: str) -> str | None:
        from pipeline.registries import stop_serving_problem
        from pipeline.review.local_registry import LocalRegistry

        return stop_serving_problem(LocalRegistry(self.settings), version, verb)

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            return await self.not_found(request)
        return web.Response(body=(STATIC_DIR / name).read_bytes(), content_type=STATIC_FILES[name], charset="utf-8")

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        return self._page(404, "error.html", title="Not found",
                          message=f"nothing at {request.path}; the registry is at {PREFIX}")


def registry_mount(settings: Settings, url: str, listen_host: str | None = None) -> Mount:
    """The registry page for ``sentiment-mlops api`` at ``url`` (listening on ``listen_host``)."""
    return RegistryPages(settings, url, listen_host).mount()
