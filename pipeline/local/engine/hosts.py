"""A job's instances, locally: N host processes, as SageMaker runs N containers for one job.

SageMaker names a job's instances ``algo-1`` ... ``algo-N`` and tells each container which it is
in ``resourceconfig.json`` (``/opt/ml/config/`` for processing, ``/opt/ml/input/config/`` for
training; processing sets no ``SM_HOSTS``). The local runtime gives each host a folder of its own
that mirrors ``/opt/ml`` and runs every host's command at once under one supervisor process
(``python -m pipeline.local.engine.hosts SPEC``), so that the engine still holds one job process
(one pid, one process group) whatever N is: stopping that group stops every host.

The supervisor fails fast, as SageMaker does: the first host to exit non-zero ends the job. It
writes that host's reason (what the host left in its own failure file, else its exit code) to the
job's failure file and exits 1; the engine then stops the rest of the group. Each host's output
goes into the job's one log, every line prefixed with its host's name.

``ShardedByS3Key`` is dealt here too: SageMaker gives each instance "approximately 1/n of the
objects" without saying which; locally the objects, in S3's listing order, go round-robin
(object i to host i mod N), which is the split that keeps shares of equal-sized shards equal.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from steps.instances import HOST_PREFIX

log = logging.getLogger(__name__)


# What the local hosts report as their instance type and network interface: SDK v3's container
# driver reads both without a default, so a host config must carry them.
LOCAL_INSTANCE_TYPE, LOCAL_INTERFACE = "local", "lo"


class HostsError(ValueError):
    """A multi-host request that cannot run as asked (a host with no data); says why and what to change."""


def host_names(count: int) -> list[str]:
    """``algo-1`` ... ``algo-N``, in the order SageMaker lists them."""
    if count < 1:
        raise HostsError(f"an instance count must be 1 or more, not {count}")
    return [f"{HOST_PREFIX}{i}" for i in range(1, count + 1)]


def resource_config(current: str, hosts: Sequence[str], instance_type: str = LOCAL_INSTANCE_TYPE) -> dict[str, Any]:
    """``resourceconfig.json`` as a training job's hosts read it (processing's has the first two
    keys and, in the SDK's local mode, the instance type and interface too)."""
    return {"current_host": current, "hosts": list(hosts), "current_instance_type": instance_type,
            "current_group_name": "homogeneousCluster",
            "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": instance_type,
                                 "hosts": list(hosts)}],
            "network_interface_name": LOCAL_INTERFACE}


def deal(keys: Sequence[str], hosts: Sequence[str], *, source: str, count_name: str) -> dict[str, list[str]]:
    """``ShardedByS3Key``: each host's objects (round-robin in listing order). A host left with
    nothing is refused: SageMaker's text says only that "some nodes won't get any data", and a
    host that reads an empty folder either fails on it or, worse, writes an empty share."""
    if len(keys) < len(hosts):
        raise HostsError(f"{count_name} is {len(hosts)}, but {source} holds {len(keys)} object(s): with "
                         f"ShardedByS3Key each instance needs one at least; lower {count_name} to {max(len(keys), 1)} "
                         "or stage the data as more shards")
    return {host: list(keys[index::len(hosts)]) for index, host in enumerate(hosts)}


@dataclass(frozen=True)
class HostCommand:
    """One host's process: what it runs, where, with which variables beyond the supervisor's own,
    and the file it leaves its failure reason in."""

    host: str
    command: list[str]
    cwd: str
    env: dict[str, str]
    failure_file: str


def write_spec(path: Path, hosts: Sequence[HostCommand], failure_file: Path) -> Path:
    """The supervisor's instructions. Holds only what the engine sets per host, never the
    caller's whole environment (which the supervisor inherits)."""
    path.write_text(json.dumps({"failure_file": str(failure_file), "hosts": [asdict(h) for h in hosts]}), encoding="utf-8")
    return path


def supervisor_command(spec: Path) -> list[str]:
    return [sys.executable, "-m", __name__, str(spec)]


# --- the supervisor (a process of its own) ---------------------------------------------------

def _relay(host: str, stream: IO[bytes], sink: IO[bytes], lock: threading.Lock) -> None:
    """Copy one host's output into the job's log, a line at a time with the host's name before it."""
    prefix = f"[{host}] ".encode()
    for line in iter(stream.readline, b""):
        with lock:
            sink.write(prefix + line)
            sink.flush()
    stream.close()


def _reason(host: HostCommand, code: int) -> str:
    failure = Path(host.failure_file)
    text = failure.read_text(encoding="utf-8", errors="replace").strip() if failure.is_file() else ""
    detail = f"exited with code {code}" + (f": {text}" if text else "")
    return f"host {host.host} {detail}"


def supervise(hosts: Sequence[HostCommand], failure_file: Path, sink: IO[bytes]) -> int:
    """Run every host at once; 0 when all exit 0, else 1 with the first failure's reason written.

    The hosts stay in this process's group: whoever stops the group (the engine, on a failure, a
    timeout or Ctrl-C) stops them all, and their children in the group. torchrun starts its workers
    in sessions of their own; it stops them when it is stopped (SIGTERM), which the engine's stop
    sends first."""
    lock = threading.Lock()
    processes: dict[int, tuple[HostCommand, subprocess.Popen]] = {}
    relays = []
    for host in hosts:
        with lock:
            sink.write(f"[{host.host}] $ {' '.join(host.command)}\n".encode())
            sink.flush()
        process = subprocess.Popen(host.command, cwd=host.cwd, env={**os.environ, **host.env},
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        processes[process.pid] = (host, process)
        assert process.stdout is not None
        relay = threading.Thread(target=_relay, args=(host.host, process.stdout, sink, lock), daemon=True)
        relay.start()
        relays.append(relay)
    while processes:
        pid, status = os.wait()
        if pid not in processes:
            continue
        host, process = processes.pop(pid)
        process.returncode = code = os.waitstatus_to_exitcode(status)
        if code != 0:
            relays[hosts.index(host)].join(timeout=2)  # the host's last lines (its traceback) into the log first
            reason = _reason(host, code)
            failure_file.write_text(reason[:1024], encoding="utf-8")
            with lock:
                sink.write(f"[supervisor] {reason}; stopping the other hosts\n".encode())
                sink.flush()
            return 1
    for relay in relays:
        relay.join(timeout=5)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    spec: Mapping[str, Any] = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    hosts = [HostCommand(**item) for item in spec["hosts"]]
    return supervise(hosts, Path(spec["failure_file"]), sys.stdout.buffer)


if __name__ == "__main__":
    sys.exit(main())
