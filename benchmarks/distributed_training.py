"""Training on two local hosts under torchrun (gloo) against one host, in one run: test accuracy
and the Train step's time, with the same global batch, epochs and data.

    .venv/bin/python benchmarks/distributed_training.py --data IMDB [--profile cpu] [--home DIR]

Both runs are the real job (``sentiment-mlops run``), the second with ``TrainingInstanceCount=2``
and ``--no-cache`` (a training step's cache key leaves the instance count out, on SageMaker too). Each of the two local
hosts is told half of the machine's cores (``SM_NUM_CPUS``), one host all of them, so the ratio
says what the distributed path costs on the same cores; on a 2-core machine no speed-up is
expected. The point is that it is exact: the test accuracies should agree within 0.3 points.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.accuracy import evaluation_report, run_job  # noqa: E402

TARGET_POINTS = 0.3  # |accuracy with 2 ranks - accuracy with 1| in percentage points


def accuracy(home: Path, summary: dict) -> float:
    report = evaluation_report(home, summary["execution_id"])
    return float(report["binary_classification_metrics"]["accuracy"]["value"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the IMDb data (any layout the project reads)")
    parser.add_argument("--profile", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--home", type=Path, default=None, help="a scratch home (default: a temporary folder, removed)")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="distributed-training-"))
    try:
        results = {}
        for hosts in (1, 2):
            # SageMaker's cache key for a training step leaves ResourceConfig out (and so does the local
            # runtime's): without --no-cache the second run would reuse the first one's Train.
            extra = ["--param", f"TrainingInstanceCount={hosts}"] + (["--no-cache"] if hosts > 1 else [])
            summary = run_job([args.data], args.profile, home, extra)
            results[hosts] = {"accuracy": accuracy(home, summary), "train_seconds": summary["steps"]["Train"]["seconds"]}
            print(f"{hosts} host(s): test accuracy {results[hosts]['accuracy']:.4f}, "
                  f"Train {results[hosts]['train_seconds']:.1f} s", flush=True)
        points = 100 * abs(results[2]["accuracy"] - results[1]["accuracy"])
        ratio = results[2]["train_seconds"] / results[1]["train_seconds"]
        print(f"difference {points:.2f} points (target <= {TARGET_POINTS}); "
              f"Train time with 2 hosts / 1 host: {ratio:.2f}x")
        return 0 if points <= TARGET_POINTS else 1
    finally:
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
