"""Calibration on the validation split (never the test split): what makes the model's confidence honest.

A network trained to low loss is usually over-confident: "99 % sure" answers are wrong more
often than 1 in 100. Temperature scaling (Guo et al. 2017) divides every logit by one number,
which fixes most of that without changing a single prediction's side. A network with a bag
gets one more number, the bag's weight against the LSTM (``fit_branch_weights``): that one
does move predictions, towards whichever branch the validation split trusts more. Either way
the website's "NN % sure" becomes a frequency a person can trust.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.special import expit

from serve.network import SentimentLSTM

# The search interval for 1/temperature: from "almost no confidence" to ten times sharper.
MIN_SHARPNESS, MAX_SHARPNESS = 0.01, 10.0
SEARCH_STEPS = 60  # golden-section steps: the interval shrinks to 1e-12 of its width


@dataclass(frozen=True)
class Calibration:
    temperature: float
    loss_before: float  # validation log loss at temperature 1 (and the bag at weight 1)
    loss_after: float
    bag_weight: float = 1.0  # the bag's logit is multiplied by it before the sum is divided by the temperature

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def apply(self, branches: np.ndarray) -> np.ndarray:
        """The calibrated logits of ``[reviews, 2]`` branch logits: what ``SentimentLSTM.forward``
        computes once the two numbers are in its config."""
        return (branches[:, 0] + self.bag_weight * branches[:, 1]) / self.temperature


def log_loss(logits: np.ndarray, labels: np.ndarray, sharpness: float = 1.0) -> float:
    """Mean binary cross-entropy of ``sigmoid(sharpness · logits)``, computed stably."""
    z = sharpness * np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> Calibration:
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
    return Calibration(temperature=round(float(1.0 / sharpness), 6), loss_before=log_loss(logits, labels),
                       loss_after=log_loss(logits, labels, sharpness))


NEWTON_STEPS = 50  # the two-weight fit converges quadratically, in well under ten steps


def fit_branch_weights(branches: np.ndarray, labels: np.ndarray) -> Calibration:
    """The weights ``a`` (LSTM) and ``b`` (bag) that minimize the log loss of ``a·lstm + b·bag``,
    given as a temperature ``1/a`` and a bag weight ``b/a``: stacking on the validation split,
    which both calibrates the sum and lets each branch count as much as it earns there.

    The loss is convex in (a, b); Newton's method with step halving finds the minimum without
    any randomness. Where the optimum is no usable answer (separable or tiny validation data
    drive the weights towards infinity; a branch earns no positive weight), the result is the
    bounded one-number fit instead: the LSTM alone when the bag points the wrong way, the plain
    sum otherwise.
    """
    x = np.asarray(branches, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if len(y) == 0:
        raise ValueError("no validation examples to fit the branch weights on")
    weights = _newton_log_loss(x, y)
    before = log_loss(x.sum(axis=1), y)
    if MIN_SHARPNESS <= weights[0] <= MAX_SHARPNESS and 0.0 < weights[1] <= MAX_SHARPNESS:
        return Calibration(temperature=round(float(1.0 / weights[0]), 6), loss_before=before,
                           loss_after=log_loss(x @ weights, y), bag_weight=round(float(weights[1] / weights[0]), 6))
    if weights[0] > 0 >= weights[1]:
        alone = fit_temperature(x[:, 0], y)
        return Calibration(alone.temperature, before, alone.loss_after, bag_weight=0.0)
    summed = fit_temperature(x.sum(axis=1), y)
    return Calibration(summed.temperature, before, summed.loss_after)


def _newton_log_loss(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The logistic regression of ``y`` on the columns of ``x`` (no intercept), from all ones."""
    weights = np.ones(x.shape[1])
    loss = log_loss(x @ weights, y)
    for _ in range(NEWTON_STEPS):
        p = expit(x @ weights)
        gradient = x.T @ (p - y) / len(y)
        hessian = (x * (p * (1.0 - p))[:, None]).T @ x / len(y) + 1e-9 * np.eye(x.shape[1])
        step, scale = np.linalg.solve(hessian, gradient), 1.0
        while scale > 1e-6 and log_loss(x @ (weights - scale * step), y) > loss:
            scale /= 2.0
        if scale <= 1e-6:
            break
        weights = weights - scale * step
        loss = log_loss(x @ weights, y)
    return weights


def split_logits(network: SentimentLSTM, data: tuple, device: torch.device, batch_size: int,
                 autocast: dict, branches: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The network's logits for a split, in the split's order, with its labels; with ``branches``,
    the LSTM's and the bag's logits side by side (``[reviews, 2]``) instead."""
    ids, lengths, labels = data
    if branches and network.ngrams is None:
        raise ValueError("branch logits need a network with a bag")
    network.eval()
    logits = np.empty((len(labels), 2) if branches else len(labels), dtype=np.float64)
    order = np.argsort(lengths, kind="stable")
    with torch.inference_mode():
        for start in range(0, len(order), batch_size * 2):
            rows = order[start : start + batch_size * 2]
            row_lengths = lengths[rows]
            batch = torch.from_numpy(ids[rows, : int(row_lengths.max())].astype(np.int64)).to(device)
            batch_lengths = torch.from_numpy(row_lengths.astype(np.int64))
            with torch.autocast(**autocast):
                if branches:
                    recurrent, bag = network.branch_logits(batch, batch_lengths)
                    assert bag is not None  # checked above
                    outputs = torch.stack([recurrent.float(), bag.float()], dim=1)
                else:
                    outputs = network(batch, batch_lengths).float()
            logits[rows] = outputs.cpu().numpy()
    return logits, np.asarray(labels, dtype=np.float64)


def fit_calibration(network: SentimentLSTM, data: tuple, device: torch.device, batch_size: int,
                    autocast: dict) -> tuple[Calibration, np.ndarray, np.ndarray]:
    """The calibration of the network's current weights on a split (the temperature, and with a
    bag its weight too), with the calibrated logits and the labels of that split."""
    if network.ngrams is None:
        logits, labels = split_logits(network, data, device, batch_size, autocast)
        fitted = fit_temperature(logits, labels)
        return fitted, logits / fitted.temperature, labels
    branches, labels = split_logits(network, data, device, batch_size, autocast, branches=True)
    fitted = fit_branch_weights(branches, labels)
    return fitted, fitted.apply(branches), labels
