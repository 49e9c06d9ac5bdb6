"""Evaluation plots a person can look at: the confusion matrix, the ROC and precision-recall curves,
accuracy by input length, and calibration."""
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


def plot_accuracy_by_length(slices: dict, path: Path) -> None:
    """Accuracy per length bucket of the test reviews, and on the short texts taken from them."""
    rows = [(row["bucket"], row["accuracy"], row["texts"]) for row in slices["by_length"]]
    rows += [(kind, row["accuracy"], row["texts"]) for kind, row in slices["short_texts"].items()]
    figure, axis = plt.subplots(figsize=(10, 4.2))
    colours = ["tab:blue"] * len(slices["by_length"]) + ["tab:orange"] * len(slices["short_texts"])
    bars = axis.bar(range(len(rows)), [accuracy for _, accuracy, _ in rows], color=colours)
    for bar, (_, accuracy, texts) in zip(bars, rows):
        axis.text(bar.get_x() + bar.get_width() / 2, accuracy + 0.01, f"{accuracy:.3f}\n({texts:,})", ha="center", fontsize=8)
    axis.set_xticks(range(len(rows)), [name for name, _, _ in rows], rotation=20, ha="right")
    axis.set(ylim=(0.5, 1.05), ylabel="accuracy", title="Accuracy by length: test reviews (blue), sentences taken from them (orange)")
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_reliability(calibration: dict, path: Path, by_dataset: dict[str, dict] | None = None) -> None:
    """How sure the model said it was against how often it was right: on the diagonal is honest.
    With several test sets, each gets its own curve too: reviews and sentences can disagree."""
    figure, axis = plt.subplots(figsize=(5, 4.5))
    axis.plot([0.5, 1], [0.5, 1], linestyle="--", color="grey", label="honest")
    curves = {"model": calibration}
    if by_dataset is not None and len(by_dataset) > 1:
        curves = {"every test text": calibration, **by_dataset}
    for name, curve in curves.items():
        bins = curve["bins"]
        axis.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o",
                  label=f"{name} (ECE {curve['expected_calibration_error']:.3f})")
    axis.set(xlim=(0.5, 1), ylim=(0, 1.02), xlabel="confidence (\"NN % sure\")", ylabel="accuracy", title="Calibration (test set)")
    axis.legend(loc="lower right")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
