"""The bag's weights: an NBSVM (Wang & Manning 2012) fitted to convergence before the LSTM trains.

A bag of a million hashed words and word pairs trained by Adam beside the LSTM memorizes the
training set within an epoch and tops out near 0.90 on IMDb. The same features in NBSVM's
form (each present once per review, scaled by their Naive Bayes log-count ratio, weighed by an
L2-regularized logistic regression solved to its optimum) reach 0.908: a strong linear model whose
errors differ from the LSTM's. The fit is convex, so it needs no schedule and gives the same
weights on every run; the LSTM then trains on its own, and the calibration step weighs the two
on the validation split (``train.calibration.fit_branch_weights``).

The result is folded into one weight per bucket (ratio × coefficient), which is what the
network's binary bag sums at serving time: the artifact needs nothing new to reproduce it.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from scipy import optimize, sparse
from scipy.special import expit

from serve.network import binary_features, ngram_ids

log = logging.getLogger(__name__)

CHUNK = 1024  # reviews hashed at a time
SMOOTHING = 1.0  # add-one counts in the Naive Bayes ratios
MAX_ITERATIONS = 500  # L-BFGS iterations: the fit converges in about a hundred on IMDb


def review_features(ids: np.ndarray, lengths: np.ndarray, buckets: int, vocab_size: int,
                    order: int) -> sparse.csr_matrix:
    """A ``[reviews, buckets]`` sparse 0/1 matrix: which words and runs each review holds."""
    rows, cols = [], []
    for start in range(0, len(lengths), CHUNK):
        row_lengths = torch.from_numpy(lengths[start : start + CHUNK].astype(np.int64))
        batch = torch.from_numpy(ids[start : start + CHUNK, : int(row_lengths.max())].astype(np.int64))
        features = binary_features(ngram_ids(batch, row_lengths, buckets, vocab_size, order))
        row, col = features.nonzero(as_tuple=True)
        rows.append((row + start).numpy())
        cols.append(features[row, col].numpy())
    row_index, col_index = np.concatenate(rows), np.concatenate(cols)
    return sparse.csr_matrix((np.ones(len(row_index)), (row_index, col_index)), shape=(len(lengths), buckets))


def naive_bayes_ratios(features: sparse.csr_matrix, labels: np.ndarray) -> np.ndarray:
    """``log(p / |p|₁) − log(q / |q|₁)``, p and q the smoothed counts of reviews holding each
    feature among the positive and the negative reviews."""
    positive = (np.asarray(labels) > 0).astype(np.float64)
    p = features.T @ positive + SMOOTHING
    q = features.T @ (1.0 - positive) + SMOOTHING
    return np.log(p / p.sum()) - np.log(q / q.sum())


def fit_nbsvm(data: tuple, buckets: int, vocab_size: int, order: int, c: float) -> torch.Tensor:
    """One weight per bucket: the NB ratio times the coefficient of a logistic regression on the
    ratio-scaled features, L2-regularized like scikit-learn's ``C`` (no intercept: the classes are
    balanced, and the network's bag has none). Bucket 0, the padding, weighs nothing."""
    if not c > 0:
        raise ValueError(f"ngram_c must be positive (the inverse strength of the L2 penalty), got {c}")
    ids, lengths, labels = data
    features = review_features(ids, lengths, buckets, vocab_size, order)
    ratios = naive_bayes_ratios(features, labels)
    ratios[0] = 0.0
    scaled = (features @ sparse.diags(ratios)).tocsr()
    scaled_by_feature = scaled.T.tocsr()
    targets = (np.asarray(labels) > 0).astype(np.float64)
    penalty = 1.0 / (2.0 * c * len(targets))

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        logits = scaled @ w
        loss = float(np.mean(np.logaddexp(0.0, logits) - targets * logits) + penalty * w @ w)
        residual = (expit(logits) - targets) / len(targets)
        return loss, scaled_by_feature @ residual + 2.0 * penalty * w

    result = optimize.minimize(objective, np.zeros(buckets), jac=True, method="L-BFGS-B",
                               options={"maxiter": MAX_ITERATIONS, "gtol": 1e-9, "ftol": 1e-12})
    if not result.success:
        log.warning("the NBSVM fit stopped before converging (%s): its weights are used as they are", result.message)
    log.info("NBSVM bag fitted on %d reviews (%d word and run occurrences) in %d iterations: objective %.4f",
             len(targets), features.nnz, result.nit, result.fun)
    return torch.from_numpy(ratios * result.x).float()
