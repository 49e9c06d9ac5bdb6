"""The dynamic batcher on its own: what goes into each forward pass, and what each caller gets back."""
from __future__ import annotations

import asyncio

import pytest

from serve.server.batching import Batcher, Overloaded


def _run(coroutine):
    return asyncio.run(coroutine)


class Recorder:
    """A scorer that answers each review with its upper-cased text and records each pass."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.passes: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, reviews: list[str]) -> list[str]:
        self.passes.append(list(reviews))
        if self.fail_on in reviews:
            raise ValueError(f"cannot score {self.fail_on}")
        return [review.upper() for review in reviews]


async def _submit_all(batcher: Batcher, requests: list[list[str]]) -> list:
    batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)
    finally:
        await batcher.close()


def test_requests_that_arrive_together_share_passes_and_each_gets_its_own_answers_in_order():
    scorer = Recorder()
    requests = [[f"r{i}a", f"r{i}b"] for i in range(10)]
    answers = _run(_submit_all(Batcher(scorer, batch_size=8, max_delay_s=0.05, queue_size=100), requests))
    assert answers == [[review.upper() for review in request] for request in requests]
    assert [len(p) for p in scorer.passes] == [8, 8, 4]  # whole requests, never more than the batch size


def test_a_request_bigger_than_the_batch_is_scored_whole_and_alone():
    scorer = Recorder()
    requests = [["a"], ["b1", "b2", "b3", "b4", "b5"], ["c"]]
    answers = _run(_submit_all(Batcher(scorer, batch_size=2, max_delay_s=0.05, queue_size=100), requests))
    assert answers == [["A"], ["B1", "B2", "B3", "B4", "B5"], ["C"]]
    assert ["b1", "b2", "b3", "b4", "b5"] in scorer.passes


def test_a_request_that_breaks_scoring_fails_alone():
    scorer = Recorder(fail_on="bad")
    answers = _run(_submit_all(Batcher(scorer, batch_size=8, max_delay_s=0.05, queue_size=100),
                               [["good"], ["bad"], ["fine"]]))
    assert answers[0] == ["GOOD"] and answers[2] == ["FINE"]
    assert isinstance(answers[1], ValueError) and "cannot score bad" in str(answers[1])


def test_past_the_queue_bound_submit_is_refused_at_once():
    async def scenario() -> tuple[list, list]:
        release = asyncio.Event()
        loop = asyncio.get_running_loop()

        def slow(reviews):
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result(10)
            return reviews

        batcher = Batcher(slow, batch_size=1, max_delay_s=0, queue_size=2)
        batcher.start()
        tasks = [asyncio.create_task(batcher.submit(["r0"]))]
        await asyncio.sleep(0.1)  # r0 is being scored
        tasks += [asyncio.create_task(batcher.submit([f"r{i}"])) for i in (1, 2)]  # the two queue slots
        await asyncio.sleep(0.1)
        with pytest.raises(Overloaded, match="busy"):
            await batcher.submit(["one too many"])
        release.set()
        answers = await asyncio.gather(*tasks)
        await batcher.close()
        with pytest.raises(Overloaded, match="shutting down"):
            await batcher.submit(["after close"])
        return answers, []

    answers, _ = _run(scenario())
    assert answers == [["r0"], ["r1"], ["r2"]]


def test_with_no_delay_a_lone_request_is_not_kept_waiting():
    async def scenario() -> float:
        batcher = Batcher(Recorder(), batch_size=64, max_delay_s=0, queue_size=10)
        batcher.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await batcher.submit(["alone"])
        elapsed = loop.time() - started
        await batcher.close()
        return elapsed

    assert _run(scenario()) < 1.0  # no wait for companions (a max delay of 0 means none)
