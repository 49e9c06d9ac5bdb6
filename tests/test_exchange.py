"""The instances' all-gather (steps/exchange.py): bytes in host order, the first instance alone
receiving a gather, and an instance that never comes ending the wait with a message."""
from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from pipeline.local.processes import free_port
from steps.exchange import Exchange, ExchangeError
from steps.instances import Instances

HOSTS = ("algo-1", "algo-2")


def _both(instance) -> None:
    """Run ``instance(host)`` for both hosts at once, as two instances of one job."""
    threads = [threading.Thread(target=instance, args=(host,)) for host in HOSTS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


def test_two_instances_gather_each_others_bytes_in_host_order(monkeypatch):
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    results: dict[str, object] = {}

    def instance(host: str) -> None:
        exchange = Exchange(Instances(host, HOSTS), timeout=timedelta(seconds=20))
        received: list[tuple[int, bytes]] = []
        words = exchange.all_gather("words", host.encode() + b"\x00\xff")
        exchange.gather("rows", host.encode(), lambda rank, data: received.append((rank, data)))
        results[host] = (words, received or None)
        exchange.finish()

    _both(instance)
    everyone = [b"algo-1\x00\xff", b"algo-2\x00\xff"]
    assert results["algo-1"] == (everyone, [(0, b"algo-1"), (1, b"algo-2")])
    assert results["algo-2"] == (everyone, None)  # a gather lands on the first instance only


def test_parts_larger_than_the_stores_8_mib_go_in_pieces(monkeypatch):
    """torch's store refuses a value over 8 MiB; a million padded rows are hundreds of MB."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    big = {host: bytes(range(256)) * (40_000 + index) for index, host in enumerate(HOSTS)}  # about 10 MB each
    received: list[bytes] = []

    def instance(host: str) -> None:
        exchange = Exchange(Instances(host, HOSTS), timeout=timedelta(seconds=30))
        exchange.gather("big", big[host], lambda _rank, data: received.append(data))
        exchange.finish()

    _both(instance)
    assert received == [big["algo-1"], big["algo-2"]]


def test_a_job_of_one_exchanges_nothing():
    exchange = Exchange(Instances())
    received: list[bytes] = []
    exchange.gather("y", b"it", lambda _rank, data: received.append(data))
    assert exchange.all_gather("x", b"mine") == [b"mine"] and received == [b"it"]
    exchange.finish()


def test_an_instance_that_never_comes_ends_the_wait_with_its_reason(monkeypatch):
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    started = time.monotonic()
    with pytest.raises(ExchangeError, match=r"instance algo-1 could not meet the others at 127.0.0.1:\d+ \(waiting up to 2 s\)"):
        Exchange(Instances("algo-1", HOSTS), timeout=timedelta(seconds=2))
    assert time.monotonic() - started < 20
