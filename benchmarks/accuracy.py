"""Test accuracy and wall time of the whole job against TF-IDF and NBSVM baselines, in one run.

    .venv/bin/python benchmarks/accuracy.py --data DIR --profile cpu   # DIR: train.jsonl.gz, test.jsonl.gz
    .venv/bin/python benchmarks/accuracy.py --profile gpu     # on a GPU machine
    .venv/bin/python benchmarks/accuracy.py -- --param MaxLen=300   # extra arguments go to `sentiment-mlops run`

The baselines are linear models trained on the same train split and scored on the same 25,000
test reviews: a TF-IDF word+bigram logistic regression, and NBSVM with bigrams (Wang & Manning
2012: binarized word+bigram features scaled by their naive-Bayes log-count ratios, then a
logistic regression), the strongest linear model on this data set in the literature (0.912).  Ours is the real job (``sentiment-mlops run``): the
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
    "cpu": (0.915, ("Preprocess", "Train", "Evaluate"), 600.0),
    "gpu": (0.93, ("Train",), 90.0),
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


Split = tuple[list[str], list[int]]


def tfidf_baseline(train: Split, test: Split) -> tuple[float, float]:
    """Accuracy and seconds of a TF-IDF (1-2 grams) logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    (train_texts, train_labels), (test_texts, test_labels) = train, test
    started = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=200_000, sublinear_tf=True)
    classifier = LogisticRegression(C=4.0, max_iter=1000)
    classifier.fit(vectorizer.fit_transform(train_texts), train_labels)
    accuracy = float((classifier.predict(vectorizer.transform(test_texts)) == test_labels).mean())
    return accuracy, time.perf_counter() - started


def nbsvm_baseline(train: Split, test: Split) -> tuple[float, float]:
    """Accuracy and seconds of NBSVM-bi (naive-Bayes-scaled binarized 1-2 grams, logistic regression)."""
    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    (train_texts, train_labels), (test_texts, test_labels) = train, test
    started = time.perf_counter()
    vectorizer = CountVectorizer(ngram_range=(1, 2), min_df=2, binary=True, token_pattern=r"(?u)\b\w+\b")
    features, labels = vectorizer.fit_transform(train_texts), np.asarray(train_labels)
    positive = np.asarray(features[labels == 1].sum(axis=0)).ravel() + 1.0
    negative = np.asarray(features[labels == 0].sum(axis=0)).ravel() + 1.0
    ratio = np.log(positive / positive.sum()) - np.log(negative / negative.sum())
    classifier = LogisticRegression(C=0.1, max_iter=2000)
    classifier.fit(features.multiply(ratio).tocsr(), labels)
    predicted = classifier.predict(vectorizer.transform(test_texts).multiply(ratio).tocsr())
    return float((predicted == np.asarray(test_labels)).mean()), time.perf_counter() - started


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


def evaluation_report(home: Path, execution_id: str) -> dict:
    """The run's evaluation.json, from the local store (where the Evaluate step's output landed)."""
    found = sorted(home.glob(f"s3/**/executions/{execution_id}/Evaluate/evaluation/evaluation.json"))
    return json.loads(found[0].read_text(encoding="utf-8")) if found else {}


def print_slices(report: dict) -> None:
    """Accuracy by length, on sentences taken from the test reviews, and the calibration error."""
    slices = report.get("slices") or {}
    for row in slices.get("by_length", []):
        print(f"  {row['bucket']:<22} accuracy {row['accuracy']:.4f}  ({row['texts']:,} test reviews)")
    for kind, row in (slices.get("short_texts") or {}).items():
        print(f"  {kind:<22} accuracy {row['accuracy']:.4f}  ({row['texts']:,} sentences)")
    if slices.get("calibration"):
        print(f"  expected calibration error {slices['calibration']['expected_calibration_error']:.4f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True,
                        help="the IMDb reviews: a folder with train.jsonl.gz and test.jsonl.gz, or aclImdb_v1.tar.gz")
    parser.add_argument("--profile", choices=sorted(TARGETS), default="cpu")
    parser.add_argument("--home", type=Path, help="the local runtime's home for this run (default: a temporary folder)")
    parser.add_argument("extra", nargs="*", help="more arguments for `sentiment-mlops run`, after --, e.g. -- --param MaxLen=300")
    args = parser.parse_args()

    train, test = read_split(args.data, "train"), read_split(args.data, "test")  # read once, for both baselines
    baseline_accuracy, baseline_seconds = tfidf_baseline(train, test)
    nbsvm_accuracy, nbsvm_seconds = nbsvm_baseline(train, test)
    home = args.home or Path(tempfile.mkdtemp(prefix="accuracy-bench-"))
    summary = run_job(args.data, args.profile, home, args.extra)
    minimum, timed_steps, budget = TARGETS[args.profile]
    timed = sum(summary["steps"][step]["seconds"] for step in timed_steps)
    checks = {f"test accuracy >= {minimum}": summary["accuracy"] >= minimum,
              f"test accuracy above NBSVM-bi ({nbsvm_accuracy:.4f}) and TF-IDF": summary["accuracy"] > max(nbsvm_accuracy, baseline_accuracy),
              f"{' + '.join(timed_steps)} <= {budget:.0f} s": timed <= budget}
    if args.profile == "cpu":
        checks[f"the whole run <= {budget:.0f} s wall"] = summary["wall_seconds"] <= budget

    print(f"profile                  {args.profile}")
    print(f"tutorial LSTM (2020)     accuracy {TUTORIAL_ACCURACY:.3f}")
    print(f"TF-IDF baseline          accuracy {baseline_accuracy:.4f} in {baseline_seconds:.1f} s")
    print(f"NBSVM-bi baseline        accuracy {nbsvm_accuracy:.4f} in {nbsvm_seconds:.1f} s")
    print(f"this project             accuracy {summary['accuracy']:.4f}")
    print_slices(evaluation_report(home, summary["execution_id"]))
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
