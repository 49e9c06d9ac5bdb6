"""How the local runtime starts and stops a job's process (pipeline/local/engine/jobs.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from pipeline.local.engine import jobs
from pipeline.local.processes import process_alive


def test_a_stop_that_lands_while_the_job_starts_stops_the_job_too(tmp_path, monkeypatch):
    """Ctrl-C (or the SIGTERM the command turns into it) inside ``Popen``, after the fork and
    before Popen returns, must not leave the job running with nobody holding its pid."""
    started: list[int] = []
    real_popen = subprocess.Popen

    def popen_then_interrupted(*args, **kwargs):
        process = real_popen(*args, **kwargs)
        started.append(process.pid)
        os.kill(os.getpid(), signal.SIGINT)  # arrives before Popen has returned to the caller
        return process

    monkeypatch.setattr(jobs.subprocess, "Popen", popen_then_interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            jobs._run([sys.executable, "-c", "import time; time.sleep(60)"], job_name="job", cwd=tmp_path,
                      env=dict(os.environ), log_path=tmp_path / "job.log", timeout_s=None)
        assert started and not process_alive(started[0])
    finally:
        for pid in started:
            if process_alive(pid):
                os.killpg(pid, signal.SIGKILL)


def _sleeping_job(tmp_path, seconds: float, timeout_s: float | None, watch: jobs.JobWatch) -> None:
    jobs._run([sys.executable, "-c", f"import time; time.sleep({seconds})"], job_name="job", cwd=tmp_path,
              env=dict(os.environ), log_path=tmp_path / "job.log", timeout_s=timeout_s, watch=watch)


def test_the_watch_is_told_the_pid_and_ticks_while_the_job_runs(tmp_path):
    """The executor renews its claim on the execution on each tick (a killed runner's end time)."""
    pids: list[int] = []
    ticks: list[None] = []
    _sleeping_job(tmp_path, 0.5, None, jobs.JobWatch(pids.append, lambda: ticks.append(None), interval_s=0.05))
    assert len(pids) == 1 and not process_alive(pids[0])
    assert 4 <= len(ticks) <= 15


def test_ticks_do_not_stretch_the_job_time_limit(tmp_path):
    ticks: list[None] = []
    with pytest.raises(jobs.JobFailed, match=r"ran past MaxRuntimeInSeconds \(0.3 s\)"):
        _sleeping_job(tmp_path, 30, 0.3, jobs.JobWatch(lambda pid: None, lambda: ticks.append(None), interval_s=0.1))
    assert 1 <= len(ticks) <= 3
