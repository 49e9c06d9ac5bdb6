"""The baseline a monitoring job compares live traffic with, computed by the Evaluate step on the
test texts with the model being registered, and registered with it (DriftCheckBaselines):

- ``statistics.json``: what the test texts looked like to this model: how many, their length in
  tokens, the share the vocabulary does not know (out-of-vocabulary rate), the model's scores,
  and the accuracy the evaluation measured;
- ``constraints.json``: what counts as a violation: the p-value under which a drift test fails,
  how much the out-of-vocabulary rate may rise, how many labels live quality needs and how far
  live accuracy may fall below the evaluation's before it is a violation;
- ``reference.npz``: a seeded sample of the test texts' features (lengths, scores and the model's
  representation), the reference side of the two-sample tests. Plain arrays: loaded with
  ``allow_pickle=False``, never unpickled.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.outputs import BASELINE_CONSTRAINTS_FILE as CONSTRAINTS_FILE
from evaluation.outputs import BASELINE_REFERENCE_FILE as REFERENCE_FILE
from evaluation.outputs import BASELINE_STATISTICS_FILE as STATISTICS_FILE
from monitor.features import TextFeatures, describe, token_counts
from serve.artifact import LoadedModel
from serve.handlers import SCORE_DECIMALS

SAMPLE_SIZE = 500
DEFAULT_CONSTRAINTS: dict[str, Any] = {
    "version": 1,
    "p_value": 0.01,  # a drift test with a p-value below this is a violation
    "max_oov_rate_increase": 0.05,  # out-of-vocabulary tokens may rise this much (absolute share) before it is one
    "min_labels": 100,  # live quality is judged from this many labelled answers on
    "max_accuracy_drop": 0.05,  # a violation when live accuracy's 95 % interval lies wholly this far below the evaluation's
}


class BaselineError(ValueError):
    """A baseline that cannot be read; the message says which file and why."""


def summary(values: np.ndarray) -> dict[str, float]:
    values = np.asarray(values, dtype=float)
    if not len(values):
        return {"mean": 0.0, "p05": 0.0, "p50": 0.0, "p95": 0.0}
    p05, p50, p95 = np.percentile(values, [5, 50, 95])
    return {"mean": round(float(values.mean()), 6), "p05": round(float(p05), 6), "p50": round(float(p50), 6),
            "p95": round(float(p95), 6)}


def oov_rate(features: TextFeatures) -> float:
    total = int(features.tokens.sum())
    return float(features.unknown.sum()) / total if total else 0.0


def make_baseline(texts: list[str], probabilities: np.ndarray, model: LoadedModel, folder: Path,
                  accuracy: float | None = None, sample_size: int = SAMPLE_SIZE, seed: int = 0) -> dict[str, Any]:
    """Write the three files into ``folder`` for ``texts`` (the test texts) and the scores the
    model gave them, and return the statistics. Lengths and the out-of-vocabulary rate count every
    text; the model's representation is computed for the seeded sample only."""
    tokens, unknown = token_counts(texts, model)
    worded = tokens > 0
    scores = np.asarray(probabilities, dtype=float).round(SCORE_DECIMALS)
    generator = np.random.default_rng(seed)
    candidates = np.flatnonzero(worded)
    chosen = np.sort(generator.choice(candidates, size=min(sample_size, len(candidates)), replace=False)) \
        if len(candidates) else np.array([], dtype=np.int64)
    sample = describe([texts[i] for i in chosen], model)
    statistics = {"version": 1, "texts": len(texts), "no_words": int((~worded).sum()), "tokens": summary(tokens[worded]),
                  "oov_rate": round(float(unknown.sum()) / max(int(tokens.sum()), 1), 6), "scores": summary(scores[worded]),
                  "accuracy": accuracy, "sample": len(chosen), "seed": seed}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / REFERENCE_FILE, tokens=tokens[chosen], probabilities=scores[chosen],
             representation=sample.representation)
    (folder / CONSTRAINTS_FILE).write_text(json.dumps(DEFAULT_CONSTRAINTS, indent=2), encoding="utf-8")
    (folder / STATISTICS_FILE).write_text(json.dumps(statistics, indent=2), encoding="utf-8")
    return statistics


def read_baseline(folder: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
    """The statistics, the constraints and the reference sample in ``folder``; BaselineError otherwise."""
    folder = Path(folder)
    try:
        statistics = json.loads((folder / STATISTICS_FILE).read_text(encoding="utf-8"))
        constraints = {**DEFAULT_CONSTRAINTS, **json.loads((folder / CONSTRAINTS_FILE).read_text(encoding="utf-8"))}
        with np.load(folder / REFERENCE_FILE, allow_pickle=False) as arrays:
            reference = {name: arrays[name] for name in ("tokens", "probabilities", "representation")}
        missing = [key for key in ("oov_rate", "tokens", "scores") if not isinstance(statistics, dict) or key not in statistics]
        if missing:
            raise ValueError(f"{STATISTICS_FILE} lacks {', '.join(missing)}")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BaselineError(f"the baseline in {folder} cannot be read ({error}): it is written by the Evaluate step; "
                            "run the pipeline again to make one") from None
    return statistics, constraints, reference
