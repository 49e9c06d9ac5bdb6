"""Processes the local runtime starts in their own sessions (jobs, model servers, the router),
and finds again by pid: starting a server and learning its address, whether one still lives
(and is still that program), and stopping its whole process group."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now, for a local process to listen on next."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def process_alive(pid: int | None) -> bool:
    """Whether a process with this pid exists and has not ended (a zombie has ended)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:  # no /proc (macOS), or it ended just now: the probe above is what we know
        return True


def process_identity(pid: int) -> str | None:
    """What tells this process from a later one given the same pid: the boot's id and the
    process's start time in clock ticks since boot (Linux's /proc). None where there is no
    /proc or the process is gone."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": comm may hold spaces
    return f"{boot}:{fields[19]}"  # field 22 of stat, starttime


def process_is(pid: int | None, identity: str | None) -> bool:
    """Whether ``pid`` is alive and is the process that ``identity`` recorded (a pid reused by
    a later process is not). An identity None, or none readable now, leaves the pid alone to decide."""
    if not process_alive(pid):
        return False
    now = process_identity(pid) if identity and pid else None
    return now is None or now == identity


class HeldInterrupts:
    """Holds Ctrl-C, SIGTERM and SIGHUP while a child process is being started, to hand them on
    once its pid is known (``deliver``).

    An interrupt that lands inside ``subprocess.Popen``, after the fork and before Popen returns,
    leaves a child running that nobody holds a handle to: the job would go on after its
    execution was stopped. Held, the interrupt arrives where the caller can stop the child.
    Only the main thread receives signals; elsewhere this holds nothing.
    """

    def __init__(self) -> None:
        self.pending: list[int] = []
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> HeldInterrupts:
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self.previous[number] = signal.signal(number, self._hold)
        return self

    def _hold(self, number: int, frame: FrameType | None) -> None:
        self.pending.append(number)

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def deliver(self) -> None:
        """Act on the held interrupts as their own handlers would have (KeyboardInterrupt, for
        the command line's); call it once the child can be stopped."""
        for number in self.pending:
            handler = self.previous.get(number)
            if callable(handler):
                handler(number, None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), number)
        self.pending.clear()


KILL_WAIT_S = 5.0  # after SIGKILL, the kernel takes the processes down at once; this is a bound


def stop_process_group(pid: int, timeout_s: float = 10.0) -> None:
    """Stop the process group ``pid`` leads, politely first (SIGTERM, then SIGKILL after
    ``timeout_s``), and return once no process of it is left. The leader is reaped when it is
    this process's child; otherwise init does."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    if _group_gone(pid, timeout_s):
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _group_gone(pid, KILL_WAIT_S)


def _group_runs(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (not a zombie); True where /proc cannot tell."""
    try:
        entries = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return True
    for entry in entries:
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (name) ": state, ppid, pgrp, ...
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def _group_gone(pid: int, timeout_s: float) -> bool:
    """Whether the group ``pid`` leads is gone within ``timeout_s`` (reaping the leader if it is ours)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        if not _group_runs(pid):  # only zombies left: ended, waiting for their parent (another process) to reap them
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def process_runs(pid: int | None, module: str) -> bool:
    """Whether ``pid`` is alive and still runs ``python -m module`` (a reused pid is another program)."""
    if not process_alive(pid):
        return False
    try:
        return module.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:  # no /proc (macOS): existence is the best we can check
        return True


def start_server(argv: list[str], log_path: Path, what: str, timeout_s: float,
                 env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """Start a server in a session of its own, its output appended to ``log_path``, and wait
    for the URL it writes to the ``--ready-file`` added to ``argv``. Returns its pid and URL.
    RuntimeError, naming ``what`` and the log, if it exits first or is not ready within
    ``timeout_s``; on that or an interrupt it is stopped, so no server is left without a record."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    ready = log_path.with_name(f"{log_path.stem}.{time.time_ns()}.url")
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen([*argv, "--ready-file", str(ready)], stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + timeout_s
        while not ready.exists():
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited with code {process.returncode}; see {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not answer within {timeout_s:g} s; see {log_path}")
            time.sleep(0.05)
        url = ready.read_text(encoding="utf-8").strip()
        ready.unlink()
        return process.pid, url
    except BaseException:
        if process.poll() is None:
            stop_process_group(process.pid)
        raise
