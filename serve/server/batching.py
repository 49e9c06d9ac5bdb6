"""Dynamic batching: requests that arrive together are scored in one forward pass.

A forward pass over 64 reviews costs little more than over one, so a server that scores one
request at a time leaves the cores idle between tiny passes. The batcher keeps a bounded queue
of requests. Whenever the model is free it takes the queued requests, up to ``batch_size``
reviews, waiting at most ``max_delay_s`` for more to arrive, scores them in one call on its own
thread (the event loop goes on reading requests meanwhile), and hands each request its own
slice of the answers, in order. A request is never split across batches: one with more
reviews than ``batch_size`` is scored alone.

Past ``queue_size`` waiting requests, ``submit`` raises ``Overloaded`` at once: the caller
answers 503 with ``Retry-After`` instead of letting latency grow without bound.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Overloaded(Exception):
    """The queue is full (or the server is stopping): try again shortly."""


@dataclass
class _Job(Generic[T]):
    reviews: list[str]
    future: asyncio.Future = field(repr=False)


class Batcher(Generic[T]):
    """Scores queued requests in batches with ``score(reviews) -> answers`` (one answer per review)."""

    def __init__(self, score: Callable[[list[str]], Sequence[T]], *, batch_size: int, max_delay_s: float,
                 queue_size: int) -> None:
        self._score_fn = score
        self.batch_size, self.max_delay_s, self.queue_size = batch_size, max_delay_s, queue_size
        self._jobs: deque[_Job] = deque()
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="scoring")
        self._task: asyncio.Task | None = None
        self._closing = False
        self.batches = 0  # how many forward passes ran (the tests read it)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    def full(self) -> bool:
        return self._closing or len(self._jobs) >= self.queue_size

    async def submit(self, reviews: list[str]) -> list[T]:
        """The answers for ``reviews``, once their batch has been scored."""
        if self._closing:
            raise Overloaded("the server is shutting down: try again in a second")
        if len(self._jobs) >= self.queue_size:
            raise Overloaded(f"the server is busy ({len(self._jobs)} requests waiting): try again in a second")
        job: _Job[T] = _Job(reviews, asyncio.get_running_loop().create_future())
        self._jobs.append(job)
        self._arrived.set()
        return await job.future

    async def close(self) -> None:
        """Refuse new requests, score the queued ones, then stop."""
        self._closing = True
        while self._jobs:
            await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        while True:
            batch = [job for job in await self._next_batch() if not job.future.done()]
            if batch:
                await self._score(batch)

    async def _next_batch(self) -> list[_Job]:
        while not self._jobs:
            self._arrived.clear()
            await self._arrived.wait()
        loop = asyncio.get_running_loop()
        batch = [self._jobs.popleft()]
        count, deadline = len(batch[0].reviews), loop.time() + self.max_delay_s
        while count < self.batch_size:
            if self._jobs:
                if count + len(self._jobs[0].reviews) > self.batch_size:
                    break
                batch.append(self._jobs.popleft())
                count += len(batch[-1].reviews)
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
            except TimeoutError:
                break
        return batch

    async def _score(self, batch: list[_Job]) -> None:
        reviews = [review for job in batch for review in job.reviews]
        try:
            answers = await asyncio.get_running_loop().run_in_executor(self._executor, self._score_fn, reviews)
            if len(answers) != len(reviews):
                raise RuntimeError(f"scoring returned {len(answers)} answers for {len(reviews)} reviews")
        except Exception as error:
            if len(batch) > 1:  # one request's trouble stays its own: score each alone
                for job in batch:
                    await self._score([job])
                return
            if not batch[0].future.done():
                batch[0].future.set_exception(error)
            return
        self.batches += 1
        start = 0
        for job in batch:
            if not job.future.done():
                job.future.set_result(list(answers[start:start + len(job.reviews)]))
            start += len(job.reviews)
