"""Single-review latency of a model artifact against a baseline artifact, in-process, same run.

Each review goes through the artifact's own handlers (``input_fn`` → ``predict_fn`` →
``output_fn``), one at a time, the way a web user's request reaches the endpoint; the two models
take turns review by review, so the machine's other load falls on both alike::

    .venv/bin/python benchmarks/latency.py --model NEW_MODEL_DIR --baseline OLD_MODEL_DIR --data DIR

Model folders are what the training job writes (or an unpacked ``model.tar.gz``). The figure the
project holds itself to: the median may grow by at most 20 % over the baseline.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from serve import handlers
from steps.sources import load_reviews

WARMUP = 20
MAX_GROWTH = 1.2  # issue 17: a model that is right on sentences may not cost more than 20 % per review


def one_review_seconds(model: handlers.SentimentModel, review: str) -> float:
    """One request's worth of work, as the model server does it: JSON in, JSON out."""
    started = time.perf_counter()
    handlers.output_fn(handlers.predict_fn(handlers.input_fn(json.dumps({"review": review}), "application/json"), model),
                       "application/json")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="the model folder to measure")
    parser.add_argument("--baseline", type=Path, required=True, help="the model folder to compare with")
    parser.add_argument("--data", type=Path, required=True, help="a dataset folder (any accepted layout): its test texts are the requests")
    parser.add_argument("--count", type=int, default=1000, help="reviews, each scored once by each model")
    args = parser.parse_args()
    if args.count <= WARMUP:
        parser.error(f"--count must exceed the {WARMUP} warm-up reviews")

    torch.set_num_threads(1)  # a model server worker's setting: one thread per worker
    models = {"baseline": handlers.model_fn(str(args.baseline)), "model": handlers.model_fn(str(args.model))}
    reviews = load_reviews(args.data, unlabeled=False).test.texts[: args.count]
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for index, review in enumerate(reviews):
        for name, model in models.items():
            elapsed = one_review_seconds(model, review)
            if index >= WARMUP:
                seconds[name].append(elapsed)
    for name, values in seconds.items():
        ordered = sorted(values)
        print(f"{name:<9} median {statistics.median(values) * 1e3:.2f} ms  p90 {ordered[int(0.9 * len(ordered))] * 1e3:.2f} ms  "
              f"p99 {ordered[int(0.99 * len(ordered))] * 1e3:.2f} ms  mean {statistics.mean(values) * 1e3:.2f} ms  ({len(values)} reviews)")
    growth = statistics.median(seconds["model"]) / statistics.median(seconds["baseline"])
    print(f"{'PASS' if growth <= MAX_GROWTH else 'FAIL'}  median latency {growth:.2f}x the baseline's (at most {MAX_GROWTH}x)")
    return 0 if growth <= MAX_GROWTH else 1


if __name__ == "__main__":
    sys.exit(main())
