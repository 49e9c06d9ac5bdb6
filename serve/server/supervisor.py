"""The model server's process tree: a supervisor and ``SAGEMAKER_MODEL_SERVER_WORKERS`` workers.

Python runs one thread of Python code at a time, so one process cannot keep two cores busy
parsing requests and tokenizing reviews. The supervisor binds the port, then starts each worker
as a fresh interpreter (``python -m serve.server --worker-fd N``; no fork of a process that has
touched PyTorch's thread pools) that inherits a listening socket of its own. On Linux each
worker gets its own socket on the same port (``SO_REUSEPORT``), and the kernel spreads new
connections evenly across them; elsewhere the workers share one socket.

Each worker loads the model, then reports ``ready`` (or the error that stopped it) through a
pipe. The supervisor writes the server's URL to ``--ready-file`` only once every worker is
ready, so "ready" means every worker answers. A worker that dies later is started again.
SIGTERM or SIGINT stops the workers gracefully: each finishes the requests it holds first.
"""
from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from serve.server.run import listening_socket, url_of, write_whole
from serve.server.settings import ServerSettings, SettingsError

log = logging.getLogger(__name__)

DEFAULT_PORT = 8080  # SageMaker sends /ping and /invocations to port 8080
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 35.0
RESTART_PAUSE_S = 1.0  # a worker's own graceful shutdown takes at most 30 s
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


class WorkerFailed(RuntimeError):
    """A worker could not start; the message is the worker's own reason."""


REUSE_PORT = sys.platform == "linux"  # elsewhere SO_REUSEPORT does not spread connections


def bind_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """One listening socket per worker on one port where the kernel balances them (Linux);
    otherwise one socket that every worker shares."""
    if not REUSE_PORT:
        return [listening_socket(host, port)] * count
    sockets = [listening_socket(host, port, reuse_port=True)]
    try:
        for _ in range(count - 1):
            sockets.append(listening_socket(host, sockets[0].getsockname()[1], reuse_port=True))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen


class Supervisor:
    """Starts, watches and stops the workers that serve ``model_dir`` on ``sockets``."""

    def __init__(self, model_dir: Path, sockets: list[socket.socket], settings: ServerSettings) -> None:
        self.model_dir, self.sockets, self.settings = Path(model_dir), sockets, settings
        self.url = url_of(sockets[0])
        self.address = sockets[0].getsockname()[:2]
        self.workers: list[_Worker] = []
        self._stopping = False
        # Workers watch the read end; the write end closes only when this process ends.
        self._lifeline_read, self._lifeline_write = os.pipe()

    def start(self) -> None:
        """Start every worker and wait until each has loaded the model; WorkerFailed if one cannot."""
        try:
            pending = [self._spawn(index) for index in range(len(self.sockets))]
            for worker, ready_fd in pending:
                self._wait_ready(worker, ready_fd)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, index: int) -> tuple[_Worker, int]:
        """Start worker ``index`` on its socket. With one socket per worker, this process then
        closes its copy: when the worker stops listening (or dies), its socket closes with it,
        and the kernel sends new connections to the other workers instead of queueing them on a
        socket nobody serves."""
        if self.sockets[index].fileno() < 0:  # a replacement: a fresh socket on the same port
            self.sockets[index] = listening_socket(*self.address, reuse_port=True)
        read_fd, write_fd = os.pipe()
        listen_fd = self.sockets[index].fileno()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "serve.server", "--model-dir", str(self.model_dir),
                 "--worker-fd", str(listen_fd), "--ready-fd", str(write_fd), "--lifeline-fd", str(self._lifeline_read)],
                pass_fds=(listen_fd, write_fd, self._lifeline_read), stdin=subprocess.DEVNULL)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        if REUSE_PORT:
            self.sockets[index].close()
        worker = _Worker(index, process)
        self.workers.append(worker)
        return worker, read_fd

    def _wait_ready(self, worker: _Worker, ready_fd: int) -> None:
        deadline, message = time.monotonic() + READY_TIMEOUT_S, b""
        try:
            while time.monotonic() < deadline and not message.endswith(b"\n") and not self._stopping:
                readable, _, _ = select.select([ready_fd], [], [], 0.2)
                if readable:
                    chunk = os.read(ready_fd, 4096)
                    if not chunk:
                        break
                    message += chunk
        finally:
            os.close(ready_fd)
        text = message.decode("utf-8", "replace").strip()
        if text == "ready":
            return
        if text:
            raise WorkerFailed(text)
        if worker.process.poll() is not None:
            raise WorkerFailed(f"a worker exited with code {worker.process.returncode} while loading the model")
        raise WorkerFailed(f"a worker did not load the model within {READY_TIMEOUT_S:g} s")

    def watch(self) -> None:
        """Until SIGTERM or SIGINT: start again any worker that dies; then stop them all."""
        def request_stop(signum: int, frame: object) -> None:
            self._stopping = True

        previous = {number: signal.signal(number, request_stop) for number in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not self._stopping:
                for worker in list(self.workers):
                    if worker.process.poll() is not None and not self._stopping:
                        self._replace(worker)
                time.sleep(0.2)
        finally:
            self.stop()
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _replace(self, worker: _Worker) -> None:
        log.warning("worker %d (pid %d) exited with code %s; starting another", worker.index, worker.process.pid,
                    worker.process.returncode)
        self.workers.remove(worker)
        replacement, ready_fd = self._spawn(worker.index)
        try:
            self._wait_ready(replacement, ready_fd)
        except WorkerFailed as error:
            log.error("worker %d could not start again: %s; trying again in %g s", worker.index, error, RESTART_PAUSE_S)
            replacement.process.kill()
            replacement.process.wait()
            time.sleep(RESTART_PAUSE_S)

    def stop(self) -> None:
        """Ask every worker to finish what it holds and exit; kill the ones that do not in time."""
        self._stopping = True
        for sock in set(self.sockets):  # a socket this process still holds must not take connections
            sock.close()
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for worker in self.workers:
            try:
                worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %d (pid %d) did not stop in time; killing it", worker.index, worker.process.pid)
                worker.process.kill()
                worker.process.wait()
        for name in ("_lifeline_read", "_lifeline_write"):  # once: a closed fd's number may be reused
            if getattr(self, name) >= 0:
                os.close(getattr(self, name))
                setattr(self, name, -1)


def serve_model(model_path: Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
                settings: ServerSettings | None = None, on_ready: Callable[[str], None] = lambda url: None) -> None:
    """Serve the model at ``model_path`` (a model dir or a ``model.tar.gz``) until SIGTERM or
    SIGINT. Raises ArtifactError, SettingsError, OSError (the port) or WorkerFailed."""
    from serve.artifact import resolve_model_dir

    settings = settings or ServerSettings.from_env()
    model_dir = resolve_model_dir(Path(model_path))
    supervisor = Supervisor(model_dir, bind_sockets(host, port, settings.workers), settings)
    supervisor.start()
    log.info("serving %s on %s: %d workers, batches of up to %d reviews, up to %g ms wait, queue %d",
             model_path, supervisor.url, settings.workers, settings.batch_size, settings.max_batch_delay_ms,
             settings.queue_size)
    on_ready(supervisor.url)
    supervisor.watch()


def _worker_main(args: argparse.Namespace) -> int:
    """One worker: load the model, say so through the ready pipe, serve until told to stop."""
    import torch

    from serve.artifact_code import load_artifact_handlers
    from serve.server.app import build_app
    from serve.server.run import serve_forever

    settings = ServerSettings.from_env()
    torch.set_num_threads(settings.threads_per_worker())
    sock = socket.socket(fileno=args.worker_fd)
    sock.setblocking(False)
    try:
        handlers = load_artifact_handlers(Path(args.model_dir))
        model = handlers.model_fn(str(args.model_dir))
    except Exception as error:  # noqa: BLE001 (any reason the model cannot load goes to the supervisor)
        os.write(args.ready_fd, f"cannot load the model: {error}\n".encode("utf-8", "replace"))
        return 2

    def ready() -> None:
        os.write(args.ready_fd, b"ready\n")
        os.close(args.ready_fd)

    serve_forever(build_app(handlers, model, settings), [sock], on_ready=ready, lifeline_fd=args.lifeline_fd)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve.server",
                                     description="Serve a model on /ping and /invocations, as a SageMaker endpoint does.")
    parser.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR", "/opt/ml/model"),
                        help="the model directory or model.tar.gz (default $SM_MODEL_DIR or /opt/ml/model)")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SAGEMAKER_BIND_TO_PORT", DEFAULT_PORT)),
                        help="0 picks a free port")
    parser.add_argument("--ready-file", type=Path,
                        help="once every worker is ready, write the server's URL here (how a supervisor learns the port)")
    parser.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--lifeline-fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    if args.worker_fd is not None:
        return _worker_main(args)

    def announce(url: str) -> None:
        if args.ready_file:
            write_whole(args.ready_file, url)

    from serve.artifact import ArtifactError

    try:
        serve_model(Path(args.model_dir), args.host, args.port, on_ready=announce)
    except (ArtifactError, SettingsError, WorkerFailed, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
