"""Which of a job's instances this container is, from the file SageMaker writes for it.

A processing container reads ``/opt/ml/config/resourceconfig.json`` (``current_host``, ``hosts``;
processing sets no ``SM_HOSTS``), a training container ``/opt/ml/input/config/resourceconfig.json``.
Run by hand, there is no such file: the script is the one host of a job of one.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from steps.sources import DataError

HOST_PREFIX = "algo-"  # SageMaker names a job's instances algo-1 ... algo-N
SINGLE_HOST = f"{HOST_PREFIX}1"


@dataclass(frozen=True)
class Instances:
    current: str = SINGLE_HOST
    hosts: tuple[str, ...] = (SINGLE_HOST,)

    @property
    def count(self) -> int:
        return len(self.hosts)

    @property
    def rank(self) -> int:
        """This host's place in ``hosts`` (the order SageMaker lists them)."""
        return self.hosts.index(self.current)


def read_instances(path: Path | None) -> Instances:
    """The job's instances as ``path`` describes them; one host when there is no file."""
    if path is None or not Path(path).is_file():
        return Instances()
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
        current, hosts = str(config["current_host"]), tuple(str(h) for h in config["hosts"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is not a SageMaker resource config ({exc}): expected current_host and hosts") from exc
    if current not in hosts:
        raise DataError(f"{path}: current_host {current!r} is not among hosts {list(hosts)}")
    return Instances(current, hosts)


def host_cpus() -> int:
    """The cores this host may use: ``SM_NUM_CPUS`` where the job says (the training toolkit sets
    it; the local runtime gives each of several hosts its share of the machine), else all of them."""
    return int(os.environ.get("SM_NUM_CPUS") or 0) or os.cpu_count() or 1
