"""Test accuracy and wall time of the whole job against a TF-IDF baseline, in one run.

    .venv/bin/python benchmarks/accuracy.py --data DIR --profile cpu   # DIR: train.jsonl.gz, test.jsonl.gz
    .venv/bin/python benchmarks/accuracy.py --profile gpu     # on a GPU machine
    .venv/bin/python benchmarks/accuracy.py -- --param MaxLen=300   # extra arguments go to `sentiment-mlops run`

The baseline is a TF-IDF word+bigram logistic regression trained on the same train split and
scored on the same 25,000 test reviews.  Ours is the real job (``sentiment-mlops run``): the
pipeline definition executed by the local runtime, accuracy taken from the evaluation step's
``evaluation.json`` (scored through the artifact's own handlers).
"""
from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = {
    # profile: (minimum test accuracy, the step times that must fit, their budget in seconds)
    "cpu": (0.88, ("Preprocess", "Train", "Evaluate"), 600.0),
    "gpu": (0.91, ("Train",), 60.0),
}
TUTORIAL_ACCURACY = 0.848


def read_split(data: Path, name: str) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    with gzip.open(data / f"{name}.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            texts.append(record["text"])
            labels.append(int(record["label"]))
    return texts, labels


def tfidf_baseline(data: Path) -> tuple[float, float]:
    """Accuracy and seconds of a TF-IDF (1-2 grams) logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    train_texts, train_labels = read_split(data, "train")
    test_texts, test_labels = read_split(data, "test")
    started = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=200_000, sublinear_tf=True)
    classifier = LogisticRegression(C=4.0, max_iter=1000)
    classifier.fit(vectorizer.fit_transform(train_texts), train_labels)
    accuracy = float((classifier.predict(vectorizer.transform(test_texts)) == test_labels).mean())
    return accuracy, time.perf_counter() - started


def run_job(data: Path, profile: str, home: Path, extra: list[str]) -> dict:
    command = [str(REPO / ".venv" / "bin" / "sentiment-mlops"), "--home", str(home), "run", "--data", str(data),
               "--param", f"TrainingProfile={profile}", "--param", "AccuracyThreshold=0.0", "--json", *extra]
    started = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise SystemExit(f"the job failed (exit {result.returncode}); see `sentiment-mlops --home {home} executions list`")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    summary["wall_seconds"] = time.perf_counter() - started
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True,
                        help="the IMDb reviews: a folder with train.jsonl.gz and test.jsonl.gz, or aclImdb_v1.tar.gz")
    parser.add_argument("--profile", choices=sorted(TARGETS), default="cpu")
    parser.add_argument("--home", type=Path, help="the local runtime's home for this run (default: a temporary folder)")
    parser.add_argument("extra", nargs="*", help="more arguments for `sentiment-mlops run`, after --, e.g. -- --param MaxLen=300")
    args = parser.parse_args()

    baseline_accuracy, baseline_seconds = tfidf_baseline(args.data)
    home = args.home or Path(tempfile.mkdtemp(prefix="accuracy-bench-"))
    summary = run_job(args.data, args.profile, home, args.extra)
    minimum, timed_steps, budget = TARGETS[args.profile]
    timed = sum(summary["steps"][step]["seconds"] for step in timed_steps)
    checks = {f"test accuracy >= {minimum}": summary["accuracy"] >= minimum,
              f"{' + '.join(timed_steps)} <= {budget:.0f} s": timed <= budget}

    print(f"profile                  {args.profile}")
    print(f"tutorial LSTM (2020)     accuracy {TUTORIAL_ACCURACY:.3f}")
    print(f"TF-IDF baseline          accuracy {baseline_accuracy:.4f} in {baseline_seconds:.1f} s")
    print(f"this project             accuracy {summary['accuracy']:.4f}")
    for step, figures in summary["steps"].items():
        if figures["seconds"] is not None:
            print(f"  {step:<22} {figures['seconds']:>7.1f} s  {figures['status']}")
    print(f"  {'whole run':<22} {summary['total_seconds']:>7.1f} s  ({summary['total_seconds'] / baseline_seconds:.1f}x the baseline's time)")
    print(f"outputs                  {home} (execution {summary['execution_id']})")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
