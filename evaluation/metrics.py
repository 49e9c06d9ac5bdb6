"""Binary-classification quality in SageMaker's model-quality format (what Studio draws).

Outer confusion-matrix keys are the actual label, inner keys the predicted one; every scalar
metric carries a ``standard_deviation`` from a seeded bootstrap over the test reviews.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn import metrics as skm

BOOTSTRAP_ROUNDS = 200
CURVE_POINTS = 200  # enough to draw a smooth curve, small enough for the model registry


def _ratio(numerator: float, denominator: float, empty: float = 0.0) -> float:
    return numerator / denominator if denominator else empty


def _fbeta(precision: float, recall: float, beta: float) -> float:
    return _ratio((1 + beta**2) * precision * recall, beta**2 * precision + recall)


def _auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half): fast enough to bootstrap."""
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if not positives or not negatives:
        return float("nan")
    ranks = rankdata(probabilities)
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _scalars(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    predicted = probabilities >= 0.5
    actual = labels == 1
    tp, fp = int((predicted & actual).sum()), int((predicted & ~actual).sum())
    fn, tn = int((~predicted & actual).sum()), int((~predicted & ~actual).sum())
    positives, negatives, total = tp + fn, tn + fp, len(labels)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, positives)
    # The best constant classifier predicts the majority label for every review.
    constant_positive = positives >= negatives
    constant_precision = _ratio(positives, total) if constant_positive else 0.0
    constant_recall = 1.0 if constant_positive and positives else 0.0
    nan = float("nan")
    return {
        "accuracy": _ratio(tp + tn, total),
        "precision": precision,
        "recall": recall,
        "f0_5": _fbeta(precision, recall, 0.5),
        "f1": _fbeta(precision, recall, 1.0),
        "f2": _fbeta(precision, recall, 2.0),
        "auc": _auc(labels, probabilities),
        "true_positive_rate": _ratio(tp, positives, nan),
        "true_negative_rate": _ratio(tn, negatives, nan),
        "false_positive_rate": _ratio(fp, negatives, nan),
        "false_negative_rate": _ratio(fn, positives, nan),
        "accuracy_best_constant_classifier": _ratio(max(positives, negatives), total),
        "precision_best_constant_classifier": constant_precision,
        "recall_best_constant_classifier": constant_recall,
        "f1_best_constant_classifier": _fbeta(constant_precision, constant_recall, 1.0),
    }


def _spread(values: list[float]) -> float:
    finite = [v for v in values if v == v]
    return float(np.std(finite)) if finite else float("nan")


def _downsample(*curves: np.ndarray) -> list[list[float]]:
    """Keep at most CURVE_POINTS points, always including both ends."""
    size = len(curves[0])
    keep = np.unique(np.linspace(0, size - 1, min(size, CURVE_POINTS)).round().astype(int))
    return [[round(float(v), 6) for v in curve[keep]] for curve in curves]


def _json_number(value: float) -> float | str:
    """SageMaker's reports write undefined values as the string "NaN"."""
    return "NaN" if value != value else round(float(value), 6)


def binary_classification_report(labels: np.ndarray, probabilities: np.ndarray, seed: int = 0) -> dict:
    labels = np.asarray(labels, dtype=int)
    probabilities = np.asarray(probabilities, dtype=float)
    if len(labels) != len(probabilities) or len(labels) == 0:
        raise ValueError(f"need one probability per label, got {len(probabilities)} for {len(labels)}")
    values = _scalars(labels, probabilities)
    rng = np.random.default_rng(seed)
    samples = [_scalars(labels[rows], probabilities[rows]) for rows in (rng.integers(0, len(labels), len(labels)) for _ in range(BOOTSTRAP_ROUNDS))]
    report: dict[str, Any] = {
        name: {"value": _json_number(value), "standard_deviation": _json_number(_spread([s[name] for s in samples]))}
        for name, value in values.items()
    }
    predicted = (probabilities >= 0.5).astype(int)
    matrix = skm.confusion_matrix(labels, predicted, labels=[0, 1])
    report["confusion_matrix"] = {str(a): {str(p): int(matrix[a, p]) for p in (0, 1)} for a in (0, 1)}
    if 0 < labels.sum() < len(labels):
        fpr, tpr, _ = skm.roc_curve(labels, probabilities)
        precision, recall, _ = skm.precision_recall_curve(labels, probabilities)
        fpr, tpr = _downsample(fpr, tpr)
        precision, recall = _downsample(precision[::-1], recall[::-1])
        report["receiver_operating_characteristic_curve"] = {"false_positive_rates": fpr, "true_positive_rates": tpr}
        report["precision_recall_curve"] = {"precisions": precision, "recalls": recall}
    return {"binary_classification_metrics": report}
