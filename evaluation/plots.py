"""Evaluation plots a person can look at: the confusion matrix and the ROC and precision-recall curves."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CLASS_NAMES = ("negative", "positive")


def plot_confusion_matrix(matrix: dict, path: Path) -> None:
    counts = [[matrix[str(a)][str(p)] for p in (0, 1)] for a in (0, 1)]
    figure, axis = plt.subplots(figsize=(4.5, 4))
    axis.imshow(counts, cmap="Blues")
    peak = max(max(row) for row in counts) or 1
    for a in (0, 1):
        for p in (0, 1):
            axis.text(p, a, f"{counts[a][p]:,}", ha="center", va="center", color="white" if counts[a][p] > peak / 2 else "black")
    axis.set(xticks=[0, 1], yticks=[0, 1], xticklabels=CLASS_NAMES, yticklabels=CLASS_NAMES,
             xlabel="predicted", ylabel="actual", title="Confusion matrix (test set)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_roc_and_pr(metrics: dict, path: Path) -> None:
    roc, pr = metrics["receiver_operating_characteristic_curve"], metrics["precision_recall_curve"]
    figure, (roc_axis, pr_axis) = plt.subplots(1, 2, figsize=(10, 4.2))
    roc_axis.plot(roc["false_positive_rates"], roc["true_positive_rates"], label=f"AUC {metrics['auc']['value']}")
    roc_axis.plot([0, 1], [0, 1], linestyle="--", color="grey")
    roc_axis.set(title="ROC curve", xlabel="false positive rate", ylabel="true positive rate")
    roc_axis.legend(loc="lower right")
    pr_axis.plot(pr["recalls"], pr["precisions"], color="tab:orange")
    pr_axis.set(title="Precision-recall curve", xlabel="recall", ylabel="precision", ylim=(0, 1.02))
    for axis in (roc_axis, pr_axis):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
