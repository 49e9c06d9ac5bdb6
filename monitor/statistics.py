"""The statistical tests the monitoring job runs, pure numpy and scipy: two-sample tests for a
distribution that moved, and intervals for a proportion measured on few labels.

Why these and not a library: Evidently (Apache-2.0) would bring pandas, plotly and its own report
machinery into a Processing container to run the same two tests; alibi-detect's MMD is under the
Business Source License since 2024. A kernel two-sample test with a permutation p-value is a page
of numpy, exact for any sample size, and needs nothing the jobs do not have already.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class TestResult:
    name: str  # which test
    statistic: float
    p_value: float
    reference_size: int
    current_size: int


def ks_test(reference: np.ndarray, current: np.ndarray) -> TestResult:
    """Kolmogorov-Smirnov: whether two samples of a number (a length, a score) come from one distribution."""
    found = stats.ks_2samp(np.asarray(reference, dtype=float), np.asarray(current, dtype=float))
    return TestResult("kolmogorov-smirnov", float(found.statistic), float(found.pvalue), len(reference), len(current))


def _squared_distances(points: np.ndarray) -> np.ndarray:
    norms = (points * points).sum(1)
    return np.maximum(norms[:, None] + norms[None, :] - 2 * points @ points.T, 0.0)


def mmd_test(reference: np.ndarray, current: np.ndarray, permutations: int = 500, seed: int = 0) -> TestResult:
    """Maximum mean discrepancy with a Gaussian kernel (bandwidth: the median distance, over both
    samples), its p-value by permutation: the share of random splits of the pooled sample whose
    MMD² is at least the observed one (with the observed split counted, so never 0)."""
    x, y = np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64)
    pooled = np.concatenate([x, y])
    distances = _squared_distances(pooled)
    positive = distances[np.triu_indices(len(pooled), 1)]
    positive = positive[positive > 0]
    bandwidth = float(np.median(positive)) if len(positive) else 1.0
    kernel = np.exp(-distances / bandwidth)
    n, total = len(x), len(pooled)

    def mmd2(order: np.ndarray) -> float:
        a, b = order[:n], order[n:]
        kaa, kbb, kab = kernel[np.ix_(a, a)], kernel[np.ix_(b, b)], kernel[np.ix_(a, b)]
        # the unbiased estimate: the diagonals (a point with itself) left out
        return float((kaa.sum() - np.trace(kaa)) / (n * (n - 1)) + (kbb.sum() - np.trace(kbb)) / ((total - n) * (total - n - 1))
                     - 2 * kab.mean())

    observed = mmd2(np.arange(total))
    generator = np.random.default_rng(seed)
    exceeded = sum(mmd2(generator.permutation(total)) >= observed for _ in range(permutations))
    return TestResult("maximum-mean-discrepancy", observed, (exceeded + 1) / (permutations + 1), n, total - n)


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (95 % by default): honest near 0 and 1 and for
    few trials, where the normal approximation is not. None with no trials."""
    if trials <= 0:
        return None
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


class Reservoir:
    """A uniform sample of at most ``size`` items from a stream of any length (Algorithm R, seeded):
    what keeps the job's memory flat however large the window."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size, self.seen = size, 0
        self.items: list[Any] = []
        self._generator = np.random.default_rng(seed)

    def add(self, item: Any) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
            return
        slot = int(self._generator.integers(0, self.seen))
        if slot < self.size:
            self.items[slot] = item
