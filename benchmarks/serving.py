"""The serving loop on a real registered model: approve → local endpoint → the website's API.

    .venv/bin/python benchmarks/serving.py --home .mlops --version 1 --reviews 500

It approves the version (the deploy handler starts the local endpoint) and times that. Then it
sends the first N test reviews of the execution that registered the version, one request per
review as the web page does, through the local API. The path is HTTP, then an API Gateway event
to lambda/predict.py, then LocalRuntime, then the model server. Against the same reviews it
measures, in the same run:

- the baseline: the artifact's own handlers called in this process (no HTTP at all);
- agreement: each answer's probability against the evaluation step's predictions.jsonl, which
  was scored through the same handlers during the pipeline run.

Latencies are printed as p50/p95 and as a ratio to the baseline (this machine is shared and noisy).
"""
from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.definition import PREPROCESS  # noqa: E402
from pipeline.local.api import ApiServer  # noqa: E402
from pipeline.local.db import open_state  # noqa: E402
from pipeline.local.registry import ModelRegistry  # noqa: E402
from pipeline.local.store import ArtifactStore  # noqa: E402
from pipeline.registry_commands import set_status  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from serve.artifact import resolve_model_dir  # noqa: E402
from serve.artifact_code import load_artifact_handlers  # noqa: E402

AGREEMENT = 1e-5


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    ordered = sorted(seconds)
    return statistics.median(ordered) * 1000, ordered[int(0.95 * (len(ordered) - 1))] * 1000


def _reviews_and_expected(settings: Settings, version: int, count: int) -> tuple[list[dict], list[float]]:
    """The execution's test reviews (Preprocess output) and the evaluation's probabilities for them."""
    package = ModelRegistry(open_state(settings.home)).get(settings.model_package_group, version)
    store = ArtifactStore(settings.home)
    executions = package.metrics_uri.split("/executions/", 1)[0]
    reviews_uri = f"{executions}/executions/{package.execution_id}/{PREPROCESS}/test/reviews.jsonl"
    predictions_uri = package.metrics_uri.rsplit("/", 1)[0] + "/predictions.jsonl"
    with open(store.path(reviews_uri), encoding="utf-8") as handle:
        reviews = [json.loads(line) for _, line in zip(range(count), handle)]
    with open(store.path(predictions_uri), encoding="utf-8") as handle:
        expected = [json.loads(line)["positive_probability"] for _, line in zip(range(count), handle)]
    return reviews, expected


def _post(url: str, review: str) -> float:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request("POST", "/predict", body=json.dumps({"review": review}),
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        body = json.loads(response.read())
    finally:
        connection.close()
    if response.status != 200:
        raise SystemExit(f"the API answered {response.status}: {body}")
    return body["predictions"][0]["positive_probability"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path(".mlops"))
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--reviews", type=int, default=500)
    args = parser.parse_args()
    settings = Settings(home=args.home)
    reviews, expected = _reviews_and_expected(settings, args.version, args.reviews)

    current = ModelRegistry(open_state(settings.home)).get(settings.model_package_group, args.version)
    if current.approval_status == "Approved":
        raise SystemExit(f"version {args.version} is approved already, and this benchmark times approval → endpoint: "
                         f"reject it first (sentiment-mlops registry reject {args.version}), or pick a pending version")
    started = time.perf_counter()
    approval = set_status(settings, "local", args.version, "approve", "benchmarks/serving.py")
    deploy_seconds = time.perf_counter() - started
    if approval["deployment_error"]:
        raise SystemExit(f"deployment failed: {approval['deployment_error']}")

    package = ModelRegistry(open_state(settings.home)).get(settings.model_package_group, args.version)
    model_dir = resolve_model_dir(ArtifactStore(settings.home).path(package.artifact_uri))  # unpacked to a temp dir
    handlers = load_artifact_handlers(model_dir)
    model = handlers.model_fn(str(model_dir))
    baseline = []
    for review in reviews:
        tick = time.perf_counter()
        handlers.predict_fn(handlers.input_fn(json.dumps({"review": review["text"]}), "application/json"), model)
        baseline.append(time.perf_counter() - tick)

    server = ApiServer(settings, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    through_api, answers = [], []
    try:
        for review in reviews:
            tick = time.perf_counter()
            answers.append(_post(server.url, review["text"]))
            through_api.append(time.perf_counter() - tick)
    finally:
        server.shutdown()
        server.server_close()

    # The evaluation scored batches, the API one review at a time: float32 sums in another order
    # can move the sixth decimal, never the verdict.
    differences = [abs(a - e) for a, e in zip(answers, expected)]
    agree = sum(d <= AGREEMENT for d in differences)
    same_label = sum((a >= 0.5) == (e >= 0.5) for a, e in zip(answers, expected))
    correct = sum((a >= 0.5) == bool(r["label"]) for a, r in zip(answers, reviews))
    base50, base95 = _percentiles(baseline)
    api50, api95 = _percentiles(through_api)
    print(f"approve → endpoint InService: {deploy_seconds:.1f} s ({[d['status'] for d in approval['deployment']]})")
    print(f"{len(reviews)} real test reviews, one request each")
    print(f"  in-process handlers (baseline): p50 {base50:.1f} ms, p95 {base95:.1f} ms")
    print(f"  website API → predict.py → endpoint: p50 {api50:.1f} ms, p95 {api95:.1f} ms "
          f"({api50 / base50:.2f}x the baseline at p50)")
    print(f"  probabilities within {AGREEMENT:g} of the evaluation step's: {agree}/{len(reviews)} "
          f"(largest difference {max(differences):.1e}); same label: {same_label}/{len(reviews)}")
    print(f"  accuracy on these reviews: {correct / len(reviews):.4f}")
    return 0 if agree == same_label == len(reviews) else 1


if __name__ == "__main__":
    sys.exit(main())
