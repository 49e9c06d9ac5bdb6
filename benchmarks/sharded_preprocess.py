"""Preprocess of a million reviews on one local host and on two, in one run: speed, peak memory per
host, and whether the arrays are the same.

    .venv/bin/python benchmarks/sharded_preprocess.py --imdb IMDB [--reviews 1000000] [--work DIR]

IMDB is a folder with IMDb's train.jsonl.gz, test.jsonl.gz and unsup.jsonl.gz. The corpus is
resampled from it with replacement (seed 7): half the reviews drawn from IMDb's 25,000 labelled
training reviews (with their labels), a quarter from its 25,000 test reviews, a quarter from its
50,000 unlabeled ones, written as the shards staging writes (2,000 texts each). A second corpus of
50,000 reviews, drawn the same way, is the memory baseline.

Each host is the real preprocessing script with its own ``resourceconfig.json`` and its share of
the shards (round-robin, as the local runtime deals ``ShardedByS3Key``), started directly so that
each can be pinned to a core with ``taskset``. Four runs on the big corpus: one host on one core
(one worker) against two hosts on a core each; one host using both cores (two workers) against two
hosts sharing both (one worker each). Peak memory is each host's resident maximum, its workers
included (``/usr/bin/time``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.local.engine.hosts import deal, host_names, resource_config  # noqa: E402
from pipeline.local.processes import free_port  # noqa: E402
from steps.shards import SHARD_ROWS, shard_files, write_shards  # noqa: E402
from steps.sources import load_reviews  # noqa: E402

TARGETS = {"one core each": 1.7, "sharing both cores": 0.9, "memory": 1.2}
SEED = 7


def build_corpus(imdb: Path, reviews: int, folder: Path) -> None:
    data = load_reviews(imdb)
    rng = np.random.default_rng(SEED)
    draws = {"train": reviews // 2, "test": reviews // 4, "unsup": reviews - reviews // 2 - reviews // 4}
    sources = {"train": data.train, "test": data.test}
    for split, count in draws.items():
        if split == "unsup":
            rows = rng.integers(0, len(data.unlabeled), count)
            records = ({"text": data.unlabeled[i]} for i in rows)
        else:
            source = sources[split]
            rows = rng.integers(0, len(source), count)
            records = ({"text": source.texts[i], "label": source.labels[i]} for i in rows)
        write_shards(folder, split, records, SHARD_ROWS)


def run_hosts(corpus: Path, work: Path, hosts: int, cores: list[list[int]] | None, workers: int) -> dict:
    """Preprocess ``corpus`` on ``hosts`` hosts; ``cores[i]``: host i's CPUs (None: unpinned)."""
    names = host_names(hosts)
    shares = deal([key for key, _ in shard_files(corpus)], names, source=str(corpus), count_name="hosts")
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "PYTHONUNBUFFERED": "1"}
    processes = []
    if work.exists():
        shutil.rmtree(work)
    for index, host in enumerate(names):
        folder = work / host
        (folder / "input").mkdir(parents=True)
        for key in shares[host]:
            (folder / "input" / key).symlink_to(corpus / key)
        (folder / "resourceconfig.json").write_text(json.dumps(resource_config(host, names)))
        command = ["/usr/bin/time", "-f", "PEAK_KB %M", sys.executable, str(REPO / "steps" / "preprocess.py"),
                   "--input-dir", str(folder / "input"), "--output-dir", str(folder / "output"),
                   "--workers", str(workers), "--resource-config", str(folder / "resourceconfig.json")]
        if cores is not None:
            command = ["taskset", "-c", ",".join(map(str, cores[index]))] + command
        log = open(folder / "log", "wb")
        processes.append((folder, log, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)))
    started = time.perf_counter()
    codes = [process.wait() for _, _, process in processes]
    seconds = time.perf_counter() - started
    peaks = []
    for folder, log, _ in processes:
        log.close()
        text = (folder / "log").read_text(errors="replace")
        peaks += [int(line.split()[1]) * 1024 for line in text.splitlines() if line.startswith("PEAK_KB")]
    if any(codes):
        raise SystemExit(f"a host failed (exit codes {codes}); see {work}/algo-*/log")
    return {"seconds": seconds, "peak_bytes": max(peaks), "output": work / "algo-1" / "output"}


def same_arrays(first: Path, second: Path) -> bool:
    for split in ("train", "validation", "test"):
        with np.load(first / split / "data.npz") as a, np.load(second / split / "data.npz") as b:
            if a.files != b.files or not all(np.array_equal(a[name], b[name]) for name in a.files):
                return False
    return (first / "train" / "vocab.json").read_bytes() == (second / "train" / "vocab.json").read_bytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--imdb", type=Path, required=True)
    parser.add_argument("--reviews", type=int, default=1_000_000)
    parser.add_argument("--baseline", type=int, default=50_000, help="reviews of the memory baseline")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one, removed)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="sharded-preprocess-"))
    try:
        big, small = work / f"corpus-{args.reviews}", work / f"corpus-{args.baseline}"
        started = time.perf_counter()
        for size, folder in ((args.reviews, big), (args.baseline, small)):
            if not folder.exists():
                build_corpus(args.imdb, size, folder)
        print(f"corpus: {args.reviews:,} reviews in {len(shard_files(big))} shards, built in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        runs = {
            "baseline, 1 host, 1 core": run_hosts(small, work / "run-small", 1, [[0]], 1),
            "1 host, 1 core": run_hosts(big, work / "run-1x1", 1, [[0]], 1),
            "2 hosts, 1 core each": run_hosts(big, work / "run-2x1", 2, [[0], [1]], 1),
            "1 host, 2 cores": run_hosts(big, work / "run-1x2", 1, None, 2),
            "2 hosts, sharing 2 cores": run_hosts(big, work / "run-2x2", 2, None, 1),
        }
        for name, run in runs.items():
            print(f"{name:<26} {run['seconds']:8.1f} s   peak {run['peak_bytes'] / 2**20:8.0f} MiB per host", flush=True)
        pinned = runs["1 host, 1 core"]["seconds"] / runs["2 hosts, 1 core each"]["seconds"]
        shared = runs["1 host, 2 cores"]["seconds"] / runs["2 hosts, sharing 2 cores"]["seconds"]
        memory = max(r["peak_bytes"] for k, r in runs.items() if k.startswith("2 hosts")) / runs["baseline, 1 host, 1 core"]["peak_bytes"]
        equal = same_arrays(runs["1 host, 1 core"]["output"], runs["2 hosts, 1 core each"]["output"])
        print(f"2 hosts on a core each vs 1 host on one core: {pinned:.2f}x (target >= {TARGETS['one core each']})")
        print(f"2 hosts sharing both cores vs 1 host using both: {shared:.2f}x (target >= {TARGETS['sharing both cores']})")
        print(f"peak memory per host, 2 hosts on {args.reviews:,} vs 1 host on {args.baseline:,}: {memory:.2f}x "
              f"(target <= {TARGETS['memory']})")
        print(f"arrays and vocabulary identical for 1 and 2 hosts: {equal}")
        return 0 if equal else 1
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
