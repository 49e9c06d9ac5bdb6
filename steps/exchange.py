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
from collections.abc import Callable
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
    """All-gather among a job's instances; a job of one exchanges nothing.

    torch's store takes values of 8 MiB at most: a part is sent in pieces of ``PIECE`` bytes under
    ``name/rank/i`` with their count under ``name/rank``, and each piece is deleted once read, so
    the store (in the first instance's memory) never holds more than what is in flight."""

    PIECE = 4 * 2**20

    def __init__(self, instances: Instances, timeout: timedelta = DEFAULT_TIMEOUT) -> None:
        self.instances, self.timeout = instances, timeout
        self._store = None
        if instances.count > 1:
            from torch.distributed import TCPStore  # only a job of several instances needs torch here

            address = os.environ.get("MASTER_ADDR") or instances.hosts[0]
            port = int(os.environ.get("MASTER_PORT") or EXCHANGE_PORT)
            log.info("instance %s of %d: exchanging through %s:%d", instances.current, instances.count, address, port)
            # The first host's store listens on every interface: the containers' torch (2.5) takes
            # no socket of ours for its default backend, and the legacy backend aborted at exit
            # when given one. What it carries is bytes, never code, among a job's own instances.
            try:
                self._store = TCPStore(address, port, instances.count, self.main, timeout=timeout, wait_for_workers=True)
            except RuntimeError as exc:
                raise ExchangeError(f"instance {instances.current} could not meet the others at {address}:{port} "
                                    f"(waiting up to {timeout.total_seconds():.0f} s): {exc}") from exc

    @property
    def main(self) -> bool:
        """The first instance: the one that writes the job's outputs."""
        return self.instances.rank == 0

    def all_gather(self, name: str, data: bytes) -> list[bytes]:
        """Every instance's ``data`` for ``name``, in host order (small parts: each instance keeps them all)."""
        if self._store is None:
            return [data]
        self._put(f"{name}/{self.instances.rank}", data)
        return [self._take(f"{name}/{rank}", delete=False) for rank in range(self.instances.count)]

    def gather(self, name: str, data: bytes, receive: Callable[[int, bytes], None]) -> None:
        """Every instance's ``data`` to the first instance, handed to ``receive(rank, data)`` one at
        a time (in host order) and let go, so that it never holds all of them at once."""
        if self._store is None:
            receive(0, data)
            return
        if not self.main:
            self._put(f"{name}/{self.instances.rank}", data)
            return
        receive(0, data)
        del data
        for rank in range(1, self.instances.count):
            receive(rank, self._take(f"{name}/{rank}", delete=True))

    def finish(self) -> None:
        """Wait until every instance is done with the store before its host (the first) goes away."""
        if self._store is None:
            return
        self._put(f"finished/{self.instances.rank}", b"")
        if self.main:
            for rank in range(1, self.instances.count):
                self._take(f"finished/{rank}", delete=True)

    def _put(self, key: str, data: bytes) -> None:
        assert self._store is not None
        pieces = [data[i : i + self.PIECE] for i in range(0, len(data), self.PIECE)] or [b""]
        try:
            for index, piece in enumerate(pieces):
                self._store.set(f"{key}/{index}", piece)  # type: ignore[arg-type]  # bytes, which the stub omits
            self._store.set(key, str(len(pieces)))  # last: a reader that sees the count finds every piece
        except RuntimeError as exc:
            raise ExchangeError(f"instance {self.instances.current} could not hand over {key.rsplit('/', 1)[0]!r} "
                                f"({len(data):,} bytes): {exc}") from exc

    def _take(self, key: str, delete: bool) -> bytes:
        assert self._store is not None
        name, rank = key.rsplit("/", 1)
        host = self.instances.hosts[int(rank)]
        try:
            count = int(bytes(self._store.get(key)).decode())
            pieces = []
            for index in range(count):
                pieces.append(bytes(self._store.get(f"{key}/{index}")))
                if delete:
                    self._store.delete_key(f"{key}/{index}")
        except RuntimeError as exc:
            raise ExchangeError(f"instance {host} did not deliver {name!r} within "
                                f"{self.timeout.total_seconds():.0f} s ({exc}); see its log") from exc
        return b"".join(pieces)
