"""The monitoring job on real data: does it see drift where there is drift, and only there; does
live quality from feedback equal the accuracy computed directly; does its memory stay flat.

    .venv/bin/python benchmarks/monitor.py --home .mlops --data IMDB --sst2 SST2

It takes ``--version`` (default: the newest) from ``--home``'s registry, with the baseline its
Evaluate step registered (DriftCheckBaselines) and its artifact, and writes, in a scratch folder,
windows of captured traffic in SageMaker's capture format (the endpoint's own capture rules), each
invocation one real test text with the model's real answer:

1. ``--texts`` IMDb test reviews (a seeded sample), with every one's true label sent back as
   web users' feedback (ground-truth records): the drift checks and live quality;
2. as many SST-2 test sentences: the drift checks;
3. the IMDb window copied until it holds ``--big-mb`` MB, run in a child process beside a run of
   the small window: peak memory of each (``ru_maxrss``), the ratio, and the time.

Targets (issue 20): IMDb reviews against an IMDb baseline, no violation at p < 0.01; SST-2
sentences, a violation; live accuracy from the replayed feedback equal to the accuracy computed
directly on the same answers; memory flat over a 1 GB window. A baseline from a run on IMDb and
SST-2 together describes that mix, so IMDb reviews alone differ from it: the figures say which
baseline they were judged against.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mlops_rules.capture import CaptureRules, capture_config  # noqa: E402
from mlops_rules.feedback import ground_truth_record  # noqa: E402
from monitor import job  # noqa: E402
from pipeline.local.state.db import open_state  # noqa: E402
from pipeline.local.state.registry import ModelRegistry  # noqa: E402
from pipeline.local.state.store import ArtifactStore  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from serve.artifact import resolve_model_dir  # noqa: E402
from steps.sources import load_reviews  # noqa: E402

START = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)
BATCH = 64


def _window(folder: Path, texts: list[str], labels: list[int], handlers, with_feedback: bool) -> float:
    """Capture ``texts`` as one invocation each into ``folder``/capture (and their true labels into
    ``folder``/groundtruth); returns the accuracy of the model's answers, computed directly."""
    served, loaded = handlers
    rules = CaptureRules.of(capture_config("s3://bench/datacapture", 100))
    assert rules is not None
    capture = folder / "capture" / f"{START:%Y/%m/%d/%H}" / "answers.jsonl"
    truth = folder / "groundtruth" / f"{START + timedelta(hours=1):%Y/%m/%d/%H}" / "feedback.jsonl"
    capture.parent.mkdir(parents=True)
    truth.parent.mkdir(parents=True)
    right = 0
    with open(capture, "w", encoding="utf-8") as captured, open(truth, "w", encoding="utf-8") as feedback:
        for first in range(0, len(texts), BATCH):
            batch = texts[first:first + BATCH]
            for i, (text, prediction) in enumerate(zip(batch, served.predict_fn(batch, loaded)), first):
                body, content_type = served.output_fn([prediction], "application/json")
                inference_id = str(uuid.UUID(int=random.Random(i).getrandbits(128)))
                record = rules.record(("application/json", json.dumps({"review": text}).encode()),
                                      (content_type, body.encode()), str(uuid.UUID(int=i)),
                                      START + timedelta(seconds=i % 3600), inference_id)
                captured.write(json.dumps(record) + "\n")
                right += int(prediction.label == "positive") == labels[i]
                if with_feedback:
                    feedback.write(json.dumps(ground_truth_record(inference_id, labels[i])) + "\n")
    return right / len(texts)


def _settings(folder: Path, baseline: Path, model: Path, truth: bool) -> job.JobSettings:
    return job.JobSettings(folder / "capture", folder / "report", START, START + timedelta(hours=1),
                           baseline / "statistics.json", baseline / "constraints.json", model,
                           folder / "groundtruth" if truth else None)


def _report(name: str, found: dict, violations: list) -> None:
    print(f"{name}: {found['invocations']:,} invocations")
    for check in found["checks"]:
        figure = f"p = {check['p_value']:.4g}" if "p_value" in check else \
            f"{check['current']:.4f} vs baseline {check['baseline']:.4f}"
        print(f"  {check['name']:<20} {check['test']:<28} {figure:<30} {'VIOLATED' if check['violated'] else 'ok'}")
    print(f"  violations: {len(violations)}" + "".join(f"\n    - {v['description']}" for v in violations))


def _child_run(settings: job.JobSettings) -> tuple[float, float, int]:
    """The job in a fresh process (as the container runs it): its peak memory in MB, its seconds,
    and the invocations it counted."""
    environ = {**os.environ, "dataset_source": str(settings.dataset_source), "output_path": str(settings.output_path),
               "start_time": settings.start.isoformat(), "end_time": settings.end.isoformat(),
               "baseline_statistics": str(settings.baseline_statistics),
               "baseline_constraints": str(settings.baseline_constraints), "model_source": str(settings.model_source),
               "PYTHONPATH": f"{REPO}:{REPO / 'lambda'}"}
    code = ("import resource, sys; from monitor import job; code = job.main(); "
            "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the job failed: {done.stderr[-2000:]}")
    peak_kb = next(int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("PEAK"))
    counted = next(json.loads(line)["invocations"] for line in done.stdout.splitlines() if line.startswith("{"))
    return peak_kb / 1024, seconds, counted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path(".mlops"))
    parser.add_argument("--version", type=int, help="default: the newest registered")
    parser.add_argument("--data", type=Path, required=True, help="IMDb (the folder with test.jsonl.gz)")
    parser.add_argument("--sst2", type=Path, required=True, help="SST-2 (the folder with stsa.binary.test)")
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--big-mb", type=int, default=1024, help="the large window's size (0: skip it)")
    args = parser.parse_args()
    from serve import handlers as served

    settings = Settings(home=args.home)
    registry = ModelRegistry(open_state(args.home))
    versions = [p.version for p in registry.list_packages(settings.model_package_group)]
    package = registry.get(settings.model_package_group, args.version or max(versions))
    quality = package.drift_check_baselines.get("ModelDataQuality")
    if not quality:
        raise SystemExit(f"version {package.version} has no DriftCheckBaselines: run the pipeline again")
    store = ArtifactStore(args.home)
    baseline = store.path(quality["Statistics"]["S3Uri"]).parent
    statistics = json.loads((baseline / "statistics.json").read_text(encoding="utf-8"))
    print(f"version {package.version}; its baseline: {statistics['texts']:,} test texts, median "
          f"{statistics['tokens']['p50']:.0f} tokens, out-of-vocabulary rate {statistics['oov_rate']:.4f}")
    scratch = Path(tempfile.mkdtemp(prefix="bench-monitor-"))
    try:
        model = resolve_model_dir(store.path(package.artifact_uri), scratch / "model")
        handlers = (served, served.model_fn(str(model)))
        rng = random.Random(0)
        windows = {}
        for name, source in (("imdb", args.data), ("sst2", args.sst2)):
            test = load_reviews(source, unlabeled=False).test
            chosen = rng.sample(range(len(test)), min(args.texts, len(test)))
            texts, labels = [test.texts[i] for i in chosen], [test.labels[i] for i in chosen]
            windows[name] = scratch / name
            direct = _window(windows[name], texts, labels, handlers, with_feedback=name == "imdb")
            started = time.perf_counter()
            found, violations = job.run(_settings(windows[name], baseline, model, truth=name == "imdb"),
                                        metrics_folder=scratch / "metrics")
            _report(f"{name} test texts ({time.perf_counter() - started:.1f} s)", found, violations)
            if name == "imdb":
                live = found["live_quality"]["accuracy"]
                print(f"  live accuracy from {found['live_quality']['labels']:,} feedback records {live['value']:.4f} "
                      f"(95 % {live['interval'][0]:.4f} to {live['interval'][1]:.4f}); computed directly {direct:.4f}; "
                      f"equal: {abs(live['value'] - direct) < 1e-6}")
        if args.big_mb:
            source = windows["imdb"] / "capture" / f"{START:%Y/%m/%d/%H}" / "answers.jsonl"
            big = scratch / "big"
            hour = big / "capture" / f"{START:%Y/%m/%d/%H}"
            hour.mkdir(parents=True)
            copies = max(1, args.big_mb * 2**20 // source.stat().st_size)
            for copy in range(copies):
                shutil.copyfile(source, hour / f"{copy:05d}.jsonl")
            size_mb = copies * source.stat().st_size / 2**20
            small_peak, small_s, small_n = _child_run(_settings(windows["imdb"], baseline, model, truth=False))
            big_peak, big_s, big_n = _child_run(_settings(big, baseline, model, truth=False))
            print(f"memory: a {source.stat().st_size / 2**20:.1f} MB window ({small_n:,} invocations read) peaks at "
                  f"{small_peak:.0f} MB ({small_s:.1f} s); a {size_mb:,.0f} MB window ({big_n:,} invocations read) at "
                  f"{big_peak:.0f} MB ({big_s:.1f} s): {big_peak / small_peak:.2f}×")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
