"""Training curves a person can look at: loss and accuracy per epoch."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_training_curves(history: list[dict], path: Path) -> None:
    epochs = [h["epoch"] for h in history]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axis.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    loss_axis.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation")
    loss_axis.set(title="Loss per epoch", xlabel="epoch", ylabel="binary cross-entropy")
    loss_axis.legend()
    accuracy_axis.plot(epochs, [h["val_accuracy"] for h in history], marker="o", color="tab:green")
    accuracy_axis.set(title="Validation accuracy per epoch", xlabel="epoch", ylabel="accuracy")
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.set_xticks(epochs)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
