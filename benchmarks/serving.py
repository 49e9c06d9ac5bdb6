"""Serving a real registered model under load: the model server, the endpoint's stable address,
the website's API, and a blue/green update in the middle of a load.

    .venv/bin/python benchmarks/serving.py --home .mlops --version 1 --update-version 2

Needs ``wrk`` (Debian: ``apt-get install wrk``): a load generator written in C, so that it does
not compete for the cores the way Python threads would. It sends single real test reviews of
typical length (100 to 200 tokens, the execution's own test split), rotating through them, on
keep-alive connections.

In the same run it measures the baseline: the artifact's own handlers called in this process
with batches of 64 reviews (no HTTP at all), after one warm-up pass, in reviews per second.
Then, each for ``--seconds``:

- the endpoint's model server (``POST /invocations``) at 1, 8 and 64 connections;
- the endpoint's stable address (``POST {Url}/invocations``, through the local runtime) at 64;
- the website's API (``POST /predict`` of ``sentiment-mlops api``: lambda/predict.py and a real
  boto3 client) at 64;
- the API at 64 connections for ``--swap-seconds`` while ``--update-version`` is approved a
  third of the way in: every failed request counts, and the Url must not change.

Last, it checks that the API's answers agree with the evaluation step's predictions.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.commands.registry import registry_store, set_status  # noqa: E402
from pipeline.definition import PREPROCESS  # noqa: E402
from pipeline.local.processes import free_port  # noqa: E402
from pipeline.local.services.hosting import LocalHosting  # noqa: E402
from pipeline.local.state.db import open_state  # noqa: E402
from pipeline.local.state.registry import ModelRegistry  # noqa: E402
from pipeline.local.state.store import ArtifactStore  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from serve.artifact import resolve_model_dir  # noqa: E402
from serve.artifact_code import load_artifact_handlers  # noqa: E402

AGREEMENT = 1e-5
BATCH = 64
TOKENS = re.compile(r"\w+")


def _test_reviews(settings: Settings, version: int, count: int) -> tuple[list[dict], list[float]]:
    """Reviews of 100 to 200 tokens from the execution's test split, with the evaluation's
    probability for each."""
    package = ModelRegistry(open_state(settings.home)).get(settings.model_package_group, version)
    if package.metrics_uri is None:
        raise SystemExit(f"version {version} has no evaluation metrics to take its test split from")
    store = ArtifactStore(settings.home)
    executions = package.metrics_uri.split("/executions/", 1)[0]
    reviews_uri = f"{executions}/executions/{package.execution_id}/{PREPROCESS}/test/reviews.jsonl"
    predictions_uri = package.metrics_uri.rsplit("/", 1)[0] + "/predictions.jsonl"
    chosen = []
    with open(store.path(reviews_uri), encoding="utf-8") as reviews, \
            open(store.path(predictions_uri), encoding="utf-8") as predictions:
        for line, predicted in zip(reviews, predictions):
            review = json.loads(line)
            if 100 <= len(TOKENS.findall(review["text"])) <= 200:
                chosen.append((review, json.loads(predicted)["positive_probability"]))
            if len(chosen) == count:
                break
    return [r for r, _ in chosen], [p for _, p in chosen]


def _baseline(settings: Settings, version: int, reviews: list[str]) -> float:
    """Reviews per second through the artifact's handlers in this process, batches of 64."""
    package = ModelRegistry(open_state(settings.home)).get(settings.model_package_group, version)
    scratch = Path(tempfile.mkdtemp(prefix="bench-model-"))
    try:
        model_dir = resolve_model_dir(ArtifactStore(settings.home).path(package.artifact_uri), scratch)
        handlers = load_artifact_handlers(model_dir)
        model = handlers.model_fn(str(model_dir))
        batches = [json.dumps({"reviews": reviews[i:i + BATCH]}) for i in range(0, len(reviews), BATCH)]

        def one_pass() -> float:
            started = time.perf_counter()
            for body in batches:
                handlers.output_fn(handlers.predict_fn(handlers.input_fn(body, "application/json"), model), None)
            return time.perf_counter() - started

        one_pass()  # warm-up: the stem cache, the allocator
        return len(reviews) / min(one_pass() for _ in range(3))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _wrk_script(reviews: list[str], folder: Path) -> Path:
    bodies = ",\n".join(f"[==[{json.dumps({'review': r})}]==]" for r in reviews)
    script = folder / "reviews.lua"
    script.write_text(f"""local bodies = {{
{bodies}
}}
local i = 0
local headers = {{["Content-Type"] = "application/json"}}
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", nil, headers, bodies[i])
end
""", encoding="utf-8")
    return script


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")


def _wrk(url: str, connections: int, seconds: int, script: Path) -> dict:
    done = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s",
                           "-s", str(script), url], capture_output=True, text=True, check=True)
    out = done.stdout

    def search(pattern: str, flags: int = 0) -> re.Match[str]:
        match = re.search(pattern, out, flags)
        if match is None:
            raise SystemExit(f"wrk's output has no match for {pattern!r}:\n{out}")
        return match

    def latency(percentile: str) -> float:
        value, unit = search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(search(r"Requests/sec:\s+([\d.]+)").group(1)),
            "requests": int(search(r"(\d+) requests in").group(1)),
            "p50": latency("50"), "p99": latency("99"),
            "socket_errors": sum(map(int, errors.groups())) if errors else 0,
            "non_2xx": int(non_2xx.group(1)) if non_2xx else 0}


def _start_api(settings: Settings) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "--home", str(settings.home), "api",
                                "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None  # stdout=PIPE
    line = process.stdout.readline()
    if not line.startswith("website and API on"):
        raise SystemExit(f"sentiment-mlops api did not start: {line!r}")
    return process, f"http://127.0.0.1:{port}"


def _ensure_deployed(settings: Settings, version: int) -> float | None:
    """Approve ``version`` (which deploys it) unless it is what the endpoint serves; seconds taken."""
    package = ModelRegistry(open_state(settings.home)).get(settings.model_package_group, version)
    hosting = LocalHosting(settings.home, open_state(settings.home))
    serving = {e["EndpointName"]: e for e in hosting.list_endpoints()}.get(settings.endpoint_name)
    if package.approval_status == "Approved" and serving and serving["EndpointStatus"] == "InService" \
            and serving["EndpointConfigName"].startswith(f"{settings.endpoint_name}-v{version}-"):
        return None
    if package.approval_status == "Approved":  # approved, but not what is served: approve again after a reject
        set_status(registry_store(settings, "local"), version, "reject", "benchmarks/serving.py")
    started = time.perf_counter()
    approval = set_status(registry_store(settings, "local"), version, "approve", "benchmarks/serving.py")
    if approval["deployment_error"]:
        raise SystemExit(f"deployment failed: {approval['deployment_error']}")
    return time.perf_counter() - started


def _agreement(api_url: str, reviews: list[dict], expected: list[float]) -> tuple[int, int, float]:
    import http.client

    parts = urlsplit(api_url)
    assert parts.hostname is not None, api_url
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    answers = []
    for review in reviews:
        connection.request("POST", "/predict", body=json.dumps({"review": review["text"]}),
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        body = json.loads(response.read())
        if response.status != 200:
            raise SystemExit(f"the API answered {response.status}: {body}")
        answers.append(body["predictions"][0]["positive_probability"])
    connection.close()
    differences = [abs(a - e) for a, e in zip(answers, expected)]
    same_label = sum((a >= 0.5) == (e >= 0.5) for a, e in zip(answers, expected))
    return sum(d <= AGREEMENT for d in differences), same_label, max(differences)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path(".mlops"))
    parser.add_argument("--version", type=int, default=1, help="the version to serve (approved if it is not)")
    parser.add_argument("--update-version", type=int, help="the version approved during the swap load")
    parser.add_argument("--reviews", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--swap-seconds", type=int, default=30)
    args = parser.parse_args()
    require_wrk()
    settings = Settings(home=args.home)
    reviews, expected = _test_reviews(settings, args.version, args.reviews)
    texts = [r["text"] for r in reviews]
    deploy_seconds = _ensure_deployed(settings, args.version)
    baseline = _baseline(settings, args.version, texts)

    hosting = LocalHosting(settings.home, open_state(settings.home))
    endpoint = hosting.describe_endpoint(settings.endpoint_name)
    server_url = open_state(settings.home).execute("SELECT url FROM endpoints WHERE name = ?",
                                                   (settings.endpoint_name,)).fetchone()["url"]
    folder = Path(tempfile.mkdtemp(prefix="bench-wrk-"))
    script = _wrk_script(texts, folder)
    rows = []

    def measure(label: str, url: str, connections: int, seconds: int = args.seconds) -> dict:
        result = _wrk(url, connections, seconds, script)
        rows.append((label, connections, result))
        print(f"  {label:<42} c={connections:<3} {result['rps']:8.0f} req/s ({result['rps'] / baseline:5.0%} of the "
              f"baseline)  p50 {result['p50']:7.2f} ms  p99 {result['p99']:7.2f} ms  non-2xx {result['non_2xx']}  "
              f"socket errors {result['socket_errors']}", flush=True)
        return result

    print(f"{len(texts)} real test reviews of 100-200 tokens (mean {statistics.mean(len(TOKENS.findall(t)) for t in texts):.0f})")
    if deploy_seconds is not None:
        print(f"approve → endpoint InService: {deploy_seconds:.1f} s")
    print(f"baseline, the artifact's handlers in-process, batches of {BATCH}: {baseline:.0f} reviews/s")
    for connections in (1, 8, 64):
        measure("model server POST /invocations", server_url + "/invocations", connections)
    measure("endpoint Url (local runtime) /invocations", endpoint["Url"] + "/invocations", 64)
    api, api_url = _start_api(settings)
    try:
        measure("website API POST /predict (boto3)", api_url + "/predict", 64)
        agree, same_label, largest = _agreement(api_url, reviews[:200], expected[:200])
        print(f"  API answers vs the evaluation step's: {agree}/200 within {AGREEMENT:g} (largest difference "
              f"{largest:.1e}); same label {same_label}/200")
        if args.update_version:
            swap: dict = {}

            def update() -> None:
                time.sleep(args.swap_seconds / 3)
                swap["seconds"] = _ensure_deployed(settings, args.update_version)

            updater = threading.Thread(target=update)
            updater.start()
            result = measure(f"API during an update to v{args.update_version}", api_url + "/predict", 64,
                             args.swap_seconds)
            updater.join()
            after = hosting.describe_endpoint(settings.endpoint_name)
            print(f"  update took {swap['seconds']:.1f} s under load; {result['requests']} requests, failed: "
                  f"{result['non_2xx'] + result['socket_errors']}; Url before {endpoint['Url']}, after {after['Url']} "
                  f"({'same' if after['Url'] == endpoint['Url'] else 'CHANGED'}); now serving "
                  f"{after['EndpointConfigName']}")
    finally:
        api.terminate()
        api.wait(30)
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
