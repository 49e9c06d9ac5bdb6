"""What a job's instances tell each other: an all-gather of bytes through torch's ``TCPStore``.

Preprocess on N instances must agree on things only all of them together know (the split of a
dataset whose shards they share, the vocabulary counted over every share). The first instance
hosts a small key-value store; each instance puts its part under its rank and reads everyone's.
Bytes only (JSON, ``np.save``/``savez`` without pickle): nothing an instance receives can run code.

Where: the first host of ``resourceconfig.json`` at port 7777 (the training toolkit's
``MASTER_PORT``), as SageMaker's processing instances reach each other by host name. The local
runtime runs every host on one machine and names the address itself (``MASTER_ADDR``,
``MASTER_PORT``, as torchrun's convention), which the exchange prefers when set.
"""
from __future__ import annotations

import logging
import os
from datetime import timedelta

from steps.instances import Instances

log = logging.getLogger(__name__)

EXCHANGE_PORT = 7777
# How long an instance waits for the others' part: the slowest instance's read and tokenize of its
# share, or its start (SageMaker starts a job's instances together; a host may still lag minutes).
DEFAULT_TIMEOUT = timedelta(minutes=30)


class ExchangeError(RuntimeError):
    """Another instance did not deliver its part in time: it failed, or it never started."""


class Exchange:
    """All-gather among a job's instances; a job of one exchanges nothing."""

    def __init__(self, instances: Instances, timeout: timedelta = DEFAULT_TIMEOUT) -> None:
        self.instances, self.timeout = instances, timeout
        self._store = None
        if instances.count > 1:
            from torch.distributed import TCPStore  # only a job of several instances needs torch here

            address = os.environ.get("MASTER_ADDR") or instances.hosts[0]
            port = int(os.environ.get("MASTER_PORT") or EXCHANGE_PORT)
            log.info("instance %s of %d: exchanging through %s:%d", instances.current, instances.count, address, port)
            try:
                self._store = TCPStore(address, port, instances.count, instances.rank == 0, timeout=timeout,
                                       wait_for_workers=True)
            except RuntimeError as exc:
                raise ExchangeError(f"instance {instances.current} could not reach the others at {address}:{port} "
                                    f"within {timeout.total_seconds():.0f} s: {exc}") from exc

    @property
    def main(self) -> bool:
        """The first instance: the one that writes the job's outputs."""
        return self.instances.rank == 0

    def all_gather(self, name: str, data: bytes) -> list[bytes]:
        """Every instance's ``data`` for ``name``, in host order."""
        if self._store is None:
            return [data]
        self._store.set(f"{name}/{self.instances.rank}", data)  # type: ignore[arg-type]  # bytes, which the stub omits
        return [self._get(f"{name}/{rank}") for rank in range(self.instances.count)]

    def gather(self, name: str, data: bytes) -> list[bytes] | None:
        """Every instance's ``data`` on the first instance (None on the others)."""
        if self._store is None:
            return [data]
        self._store.set(f"{name}/{self.instances.rank}", data)  # type: ignore[arg-type]  # bytes, which the stub omits
        return [self._get(f"{name}/{rank}") for rank in range(self.instances.count)] if self.main else None

    def finish(self) -> None:
        """Wait until every instance is done with the store before its host (the first) goes away."""
        if self._store is None:
            return
        self._store.set(f"finished/{self.instances.rank}", b"")  # type: ignore[arg-type]  # acknowledged by the store before it returns
        if self.main:
            for rank in range(1, self.instances.count):
                self._get(f"finished/{rank}")

    def _get(self, key: str) -> bytes:
        assert self._store is not None
        try:
            return bytes(self._store.get(key))
        except RuntimeError as exc:
            host = self.instances.hosts[int(key.rsplit("/", 1)[1])]
            raise ExchangeError(f"instance {host} did not deliver {key.rsplit('/', 1)[0]!r} within "
                                f"{self.timeout.total_seconds():.0f} s ({exc}); see its log") from exc
