"""Temperature scaling (Guo et al. 2017): one number that makes the model's confidence honest.

A network trained to low loss is usually over-confident: "99 % sure" answers are wrong more
often than 1 in 100. Dividing every logit by one temperature, fitted on the validation split
(never the test split), fixes most of that without changing a single prediction's side: the
accuracy stays the same, the website's "NN % sure" becomes a frequency a person can trust.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

# The search interval for 1/temperature: from "almost no confidence" to ten times sharper.
MIN_SHARPNESS, MAX_SHARPNESS = 0.01, 10.0
SEARCH_STEPS = 60  # golden-section steps: the interval shrinks to 1e-12 of its width


@dataclass(frozen=True)
class Temperature:
    temperature: float
    loss_before: float  # validation log loss at temperature 1
    loss_after: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def log_loss(logits: np.ndarray, labels: np.ndarray, sharpness: float = 1.0) -> float:
    """Mean binary cross-entropy of ``sigmoid(sharpness · logits)``, computed stably."""
    z = sharpness * np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> Temperature:
    """The temperature that minimizes the log loss of ``labels`` under ``logits / T``.

    The loss is convex in 1/T, so a golden-section search finds its minimum without any
    randomness or learning rate.
    """
    if len(logits) == 0:
        raise ValueError("no validation examples to fit a temperature on")
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    low, high = MIN_SHARPNESS, MAX_SHARPNESS
    for _ in range(SEARCH_STEPS):
        left, right = high - ratio * (high - low), low + ratio * (high - low)
        if log_loss(logits, labels, left) <= log_loss(logits, labels, right):
            high = right
        else:
            low = left
    sharpness = (low + high) / 2.0
    return Temperature(temperature=round(1.0 / sharpness, 6), loss_before=log_loss(logits, labels),
                       loss_after=log_loss(logits, labels, sharpness))


def split_logits(network: nn.Module, data: tuple, device: torch.device, batch_size: int,
                      autocast: dict) -> tuple[np.ndarray, np.ndarray]:
    """The network's logits for a split, in the split's order, with its labels."""
    ids, lengths, labels = data
    network.eval()
    logits = np.empty(len(labels), dtype=np.float64)
    order = np.argsort(lengths, kind="stable")
    with torch.inference_mode():
        for start in range(0, len(order), batch_size * 2):
            rows = order[start : start + batch_size * 2]
            row_lengths = lengths[rows]
            batch = torch.from_numpy(ids[rows, : int(row_lengths.max())].astype(np.int64)).to(device)
            with torch.autocast(**autocast):
                logits[rows] = network(batch, torch.from_numpy(row_lengths.astype(np.int64))).float().cpu().numpy()
    return logits, np.asarray(labels, dtype=np.float64)
