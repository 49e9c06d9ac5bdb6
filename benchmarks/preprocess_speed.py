"""Preprocessing speed and memory against the original tutorial's preprocessing, in one run.

    .venv/bin/python benchmarks/preprocess_speed.py --data DIR   # DIR: train.jsonl.gz, test.jsonl.gz

The baseline is the 2020 tutorial's ``review_to_words`` (BeautifulSoup on every review,
``stopwords.words("english")`` looked up for every word, a new PorterStemmer per word), timed on
a seeded sample because it is far too slow for all 50,000 reviews.  Ours runs the real
preprocessing step as a subprocess on every labeled review, twice: once doing what the tutorial
did (clean, tokenize, stem, vocabulary, encode, pad: ``--embedding-dim 0``), which the targets
are about, and once as the pipeline runs it by default, which also reads the 50,000 unlabeled
reviews and learns word vectors from them.  Peak memory is the largest sum of the resident
sizes of the step's process and its workers, sampled every 20 ms.
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 20.0
TARGET_RATIO = 300.0
TARGET_MEMORY_MB = 2048.0


def tutorial_baseline(texts: list[str], stopwords_file: Path) -> float:
    """Reviews per second of the tutorial's preprocessing, with NLTK's real stopword corpus reader."""
    import nltk
    from bs4 import BeautifulSoup
    from nltk.stem.porter import PorterStemmer

    data_dir = Path(tempfile.mkdtemp(prefix="nltk-data-"))
    (data_dir / "corpora" / "stopwords").mkdir(parents=True)
    shutil.copy(stopwords_file, data_dir / "corpora" / "stopwords" / "english")
    nltk.data.path.insert(0, str(data_dir))
    from nltk.corpus import stopwords

    def review_to_words(review: str) -> list[str]:  # the tutorial's function, minus its per-call nltk.download
        text = BeautifulSoup(review, "html.parser").get_text()
        text = re.sub(r"[^a-zA-Z0-9]", " ", text.lower())
        words = [w for w in text.split() if w not in stopwords.words("english")]
        return [PorterStemmer().stem(w) for w in words]

    started = time.perf_counter()
    for text in texts:
        review_to_words(text)
    seconds = time.perf_counter() - started
    shutil.rmtree(data_dir, ignore_errors=True)
    return len(texts) / seconds


def run_ours(data: Path, workdir: Path, *options: str) -> tuple[float, float]:
    """Wall seconds and peak memory (MB, process tree) of the real preprocessing step."""
    started = time.perf_counter()
    process = psutil.Popen([sys.executable, str(REPO / "steps" / "preprocess.py"), "--input-dir", str(data),
                            "--output-dir", str(workdir), *options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while process.poll() is None:
        try:
            tree = [process, *process.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"the preprocessing step failed with exit code {process.returncode}")
    return seconds, peak / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a folder with train.jsonl.gz and test.jsonl.gz")
    parser.add_argument("--stopwords", type=Path, required=True,
                        help="NLTK's English stopwords file (corpora/stopwords/english), for the tutorial's baseline")
    parser.add_argument("--baseline-sample", type=int, default=500, help="reviews the slow baseline is timed on")
    args = parser.parse_args()

    texts: list[str] = []
    for name in ("train.jsonl.gz", "test.jsonl.gz"):
        with gzip.open(args.data / name, "rt", encoding="utf-8") as handle:
            texts.extend(json.loads(line)["text"] for line in handle)
    sample = random.Random(0).sample(texts, args.baseline_sample)
    baseline_rate = tutorial_baseline(sample, args.stopwords)

    workdir = Path(tempfile.mkdtemp(prefix="preprocess-bench-"))
    try:
        seconds, peak_mb = run_ours(args.data, workdir / "core", "--embedding-dim", "0")
        full_seconds, full_peak_mb = run_ours(args.data, workdir / "default")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rate = len(texts) / seconds
    ratio = rate / baseline_rate
    checks = {
        f"wall <= {TARGET_SECONDS:.0f} s": seconds <= TARGET_SECONDS,
        f"speed >= {TARGET_RATIO:.0f}x tutorial": ratio >= TARGET_RATIO,
        f"peak memory < {TARGET_MEMORY_MB:.0f} MB": peak_mb < TARGET_MEMORY_MB,
    }
    print(f"reviews                 {len(texts):,}")
    print(f"tutorial baseline       {baseline_rate:,.1f} reviews/s (on {len(sample)} sampled reviews)")
    print(f"preprocessing step      {seconds:.2f} s wall, {rate:,.0f} reviews/s (whole step: read, tokenize, vocabulary, encode, write)")
    print(f"speed-up                {ratio:,.0f}x")
    print(f"peak memory             {peak_mb:,.0f} MB (process and workers)")
    print(f"default step            {full_seconds:.2f} s wall, {full_peak_mb:,.0f} MB peak (also 50,000 unlabeled reviews "
          f"tokenized and word vectors learned)")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
