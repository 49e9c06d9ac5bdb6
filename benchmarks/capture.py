"""Data capture under load: what capturing every invocation costs the endpoint, and whether every
answered request is captured whole.

    .venv/bin/python benchmarks/capture.py --home .mlops --version 1

In a scratch home it serves ``--version``'s artifact from ``--home`` as two endpoints, one without
data capture and one capturing 100 % (SageMaker's DataCaptureConfig, written by the local
runtime), and sends ``wrk`` (``apt-get install wrk``) at each in turn, ``--rounds`` times, for
``--seconds`` each, with real test reviews of 100-200 tokens through the endpoints' stable
addresses. The figure is the captured endpoint's throughput against the other's, round by round
(the same machine, the same moment). Then it stops the runtime (which writes what is buffered) and
reads every capture file back: every line must be a whole record (``read_capture_line``), and there
must be one for each answer the runtime counted for that endpoint.

Target (issue 20): ≥ 90 % of the throughput without capture; 0 lost or torn records.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.scratch import fleet_counts, remove_scratch_home  # noqa: E402
from benchmarks.serving import _test_reviews, _wrk, _wrk_script, require_wrk  # noqa: E402
from mlops_rules.capture import CAPTURE_FOLDER, CaptureLineError, capture_config, read_capture_line  # noqa: E402
from pipeline.local.services.hosting import LocalHosting  # noqa: E402
from pipeline.local.services.runtime import stop_runtime  # noqa: E402
from pipeline.local.state.db import open_state  # noqa: E402
from pipeline.local.state.registry import ModelRegistry  # noqa: E402
from pipeline.local.state.store import ArtifactStore  # noqa: E402
from pipeline.settings import Settings  # noqa: E402

ROLE = "arn:aws:iam::000000000000:role/benchmark"


def _serve_twice(source: Settings, version: int, home: Path) -> tuple[LocalHosting, str]:
    """Two endpoints on one artifact, ``plain`` and ``captured``; the capture destination."""
    package = ModelRegistry(open_state(source.home)).get(source.model_package_group, version)
    uri = "s3://bucket/models/benchmark/model.tar.gz"
    ArtifactStore(home).upload_file(ArtifactStore(source.home).path(package.artifact_uri), uri)
    hosting = LocalHosting(home, open_state(home))
    container = {**package.inference_specification["Containers"][0], "ModelDataUrl": uri}
    hosting.create_model(ModelName="benchmark", ExecutionRoleArn=ROLE, PrimaryContainer=container)
    destination = f"s3://bucket/{CAPTURE_FOLDER}"
    for name, capture in (("plain", None), ("captured", capture_config(destination, 100))):
        variants = [{"VariantName": "AllTraffic", "ModelName": "benchmark", "InstanceType": "ml.m5.large",
                     "InitialInstanceCount": 1, "InitialVariantWeight": 1.0}]
        hosting.create_endpoint_config(EndpointConfigName=name, ProductionVariants=variants, DataCaptureConfig=capture)
        hosting.create_endpoint(EndpointName=name, EndpointConfigName=name)
    return hosting, destination


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path(".mlops"))
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    require_wrk()
    source = Settings(home=args.home)
    reviews, _ = _test_reviews(source, args.version, 500)
    home = Path(tempfile.mkdtemp(prefix="bench-capture-"))
    try:
        hosting, destination = _serve_twice(source, args.version, home)
        script = _wrk_script([r["text"] for r in reviews], home)
        urls = {name: hosting.describe_endpoint(name)["Url"] + "/invocations" for name in ("plain", "captured")}
        print(f"{len(reviews)} real test reviews; wrk at {args.connections} connections, {args.seconds} s a run")
        ratios = []
        for round_number in range(1, args.rounds + 1):
            if round_number % 2:  # which goes first alternates: a machine that slows down favours neither
                plain = _wrk(urls["plain"], args.connections, args.seconds, script)
                captured = _wrk(urls["captured"], args.connections, args.seconds, script)
            else:
                captured = _wrk(urls["captured"], args.connections, args.seconds, script)
                plain = _wrk(urls["plain"], args.connections, args.seconds, script)
            ratios.append(captured["rps"] / plain["rps"])
            print(f"  round {round_number}: without capture {plain['rps']:.0f} req/s, capturing 100 % "
                  f"{captured['rps']:.0f} req/s: {ratios[-1]:.2f}×; failed {plain['non_2xx'] + plain['socket_errors']} "
                  f"and {captured['non_2xx'] + captured['socket_errors']}")
        time.sleep(2.0)  # the requests wrk left in flight when it stopped are answered (and captured) still
        answered = sum(requests - errors for requests, errors in fleet_counts(home, "captured").values())
        stop_runtime(home)  # a graceful stop writes what is buffered
        folder = ArtifactStore(home).path(f"{destination}/captured")
        records = torn = 0
        for path in sorted(folder.rglob("*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    read_capture_line(line)
                    records += 1
                except CaptureLineError:
                    torn += 1
        files = len(list(folder.rglob("*.jsonl")))
        print(f"captured throughput: median {statistics.median(ratios):.2f}× the same endpoint without capture "
              f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}; target ≥ 0.90)")
        print(f"records: {records} in {files} files for {answered} answers the runtime counted: "
              f"{answered - records} lost, {torn} torn (target 0 and 0)")
    finally:
        remove_scratch_home(home)
    return 0


if __name__ == "__main__":
    sys.exit(main())
