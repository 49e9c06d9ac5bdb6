"""Binary-classification quality in SageMaker's model-quality format (what Studio draws).

Outer confusion-matrix keys are the actual label, inner keys the predicted one; every scalar
metric carries a ``standard_deviation`` from a seeded bootstrap over the test reviews.
"""
from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

BOOTSTRAP_ROUNDS = 200
CURVE_POINTS = 200  # enough to draw a smooth curve, small enough for the model registry


def _scalars(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    predicted = (probabilities >= 0.5).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    positives, negatives = tp + fn, tn + fp
    majority = 1 if positives >= negatives else 0
    constant = np.full_like(labels, majority)
    both_classes = 0 < positives < len(labels)
    return {
        "accuracy": skm.accuracy_score(labels, predicted),
        "precision": skm.precision_score(labels, predicted, zero_division=0),
        "recall": skm.recall_score(labels, predicted, zero_division=0),
        "f0_5": skm.fbeta_score(labels, predicted, beta=0.5, zero_division=0),
        "f1": skm.f1_score(labels, predicted, zero_division=0),
        "f2": skm.fbeta_score(labels, predicted, beta=2, zero_division=0),
        "auc": skm.roc_auc_score(labels, probabilities) if both_classes else float("nan"),
        "true_positive_rate": tp / positives if positives else float("nan"),
        "true_negative_rate": tn / negatives if negatives else float("nan"),
        "false_positive_rate": fp / negatives if negatives else float("nan"),
        "false_negative_rate": fn / positives if positives else float("nan"),
        "accuracy_best_constant_classifier": skm.accuracy_score(labels, constant),
        "precision_best_constant_classifier": skm.precision_score(labels, constant, zero_division=0),
        "recall_best_constant_classifier": skm.recall_score(labels, constant, zero_division=0),
        "f1_best_constant_classifier": skm.f1_score(labels, constant, zero_division=0),
    }


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
    report = {
        name: {"value": _json_number(value), "standard_deviation": _json_number(np.nanstd([s[name] for s in samples]))}
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
