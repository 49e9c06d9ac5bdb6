"""Processes the local runtime starts in their own sessions (jobs, model servers), and finds
again by pid: whether one still lives, and stopping its whole process group."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path


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


def stop_process_group(pid: int, timeout_s: float = 10.0) -> None:
    """Stop the process group ``pid`` leads, politely first (SIGTERM, then SIGKILL after
    ``timeout_s``). The leader is reaped when it is this process's child; otherwise init does."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
