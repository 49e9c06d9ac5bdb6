"""Running an aiohttp application on sockets this process already holds: in the foreground until
SIGTERM or SIGINT (a worker process), or on a background thread (tests, benchmarks).

Stopping is graceful in both: the listening sockets close first, requests in flight get their
answers (up to ``SHUTDOWN_TIMEOUT_S``), idle keep-alive connections are closed, and only then
does the application's cleanup run.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

SHUTDOWN_TIMEOUT_S = 30.0
BACKLOG = 1024


def listening_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound and listening; port 0 picks a free one. ``reuse_port`` lets other
    sockets bind the same port, and the kernel then spreads new connections across them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def write_whole(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader finds the whole file or none (a ready file that
    tells the starting process where a server listens, a record read by other processes)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


async def _serve(app: web.Application, sockets: list[socket.socket], stop: asyncio.Event,
                 on_ready: Callable[[], None]) -> None:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        for sock in sockets:
            await web.SockSite(runner, sock).start()
        on_ready()
        await stop.wait()
    finally:
        await runner.cleanup()


def serve_forever(app: web.Application, sockets: list[socket.socket], on_ready: Callable[[], None] = lambda: None,
                  lifeline_fd: int | None = None) -> None:
    """Serve in the foreground until SIGTERM or SIGINT, then stop gracefully. With
    ``lifeline_fd`` (the read end of a pipe whose write end the parent holds), also stop when
    the parent is gone, killed outright or not: a worker never outlives its supervisor."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(number, stop.set)
        if lifeline_fd is not None:
            def parent_gone() -> None:
                if not os.read(lifeline_fd, 1):  # end of file: the write end's holder has exited
                    loop.remove_reader(lifeline_fd)
                    stop.set()

            loop.add_reader(lifeline_fd, parent_gone)
        await _serve(app, sockets, stop, on_ready)

    asyncio.run(main())


class BackgroundServer:
    """An application served from a thread of this process, on 127.0.0.1 (tests, benchmarks)::

        with BackgroundServer(app) as server:
            requests.get(server.url + "/ping")
    """

    def __init__(self, app: web.Application | Callable[[str], web.Application], host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.socket = listening_socket(host, port)
        self.url = url_of(self.socket)
        self.app = app if isinstance(app, web.Application) else app(self.url)  # a factory is given the URL
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=f"server {self.url}", daemon=True)

    def _main(self) -> None:
        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            await _serve(self.app, [self.socket], self._stop, self._ready.set)

        try:
            asyncio.run(main())
        except BaseException as error:  # noqa: BLE001 (reported by start())
            self._error = error
            self._ready.set()

    def start(self) -> BackgroundServer:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def close(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()
        self.socket.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
