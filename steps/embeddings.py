"""Word vectors learned from the reviews themselves: positive PMI of co-occurrences, reduced by SVD.

IMDb ships 50,000 unlabeled reviews next to the labeled ones.  Counting which words occur near
which (over the training and unlabeled reviews, never validation or test) and factorizing the
positive pointwise mutual information gives vectors in which "superb" sits near "excellent"
before the classifier has seen a single label.  It takes seconds on a CPU, so it belongs in the
processing job, and the GPU training job starts from good embeddings instead of random ones.
Columns come out in order of singular value, so a network with a smaller embedding keeps the
leading columns.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
from scipy import sparse
from sklearn.utils.extmath import randomized_svd

from serve.vocab import UNK_ID

log = logging.getLogger(__name__)

CONTEXT_SMOOTHING = 0.75  # raising context counts to 3/4 tempers PMI's bias towards rare words


def cooccurrence(sequences: Sequence[Sequence[int]], vocab_size: int, window: int) -> sparse.csr_matrix:
    """Symmetric co-occurrence counts within ``window`` tokens, weighted 1/distance, times the
    least common multiple of 1 ... ``window``: whole numbers in float64, so that matrices summed
    in any order (chunks, instances) give the same sum to the bit. PPMI does not see the scale.

    Reviews are joined with ``window`` padding ids between them, so no window spans two reviews;
    padding and unknown tokens count for nothing.
    """
    gap = np.zeros(window, dtype=np.int32)
    flat = np.concatenate([part for seq in sequences for part in (np.asarray(seq, dtype=np.int32), gap)] or [gap])
    counts = sparse.csr_matrix((vocab_size, vocab_size), dtype=np.float64)
    scale = math.lcm(*range(1, window + 1))
    for distance in range(1, window + 1):
        left, right = flat[:-distance], flat[distance:]
        keep = (left > UNK_ID) & (right > UNK_ID)
        left, right = left[keep], right[keep]
        weights = np.full(len(left), scale // distance, dtype=np.float64)
        counts = counts + sparse.csr_matrix((weights, (left, right)), shape=(vocab_size, vocab_size))
    return (counts + counts.T).tocsr()


def ppmi(counts: sparse.csr_matrix) -> sparse.csr_matrix:
    """Positive pointwise mutual information of a co-occurrence matrix (entries ≤ 0 dropped)."""
    counts = counts.tocoo()
    rows = np.asarray(counts.sum(axis=1)).ravel()
    contexts = np.asarray(counts.sum(axis=0)).ravel() ** CONTEXT_SMOOTHING
    contexts_total = contexts.sum()
    with np.errstate(divide="ignore"):
        pmi = np.log(counts.data * contexts_total / (rows[counts.row] * contexts[counts.col]))
    keep = pmi > 0
    return sparse.csr_matrix((pmi[keep].astype(np.float32), (counts.row[keep], counts.col[keep])), shape=counts.shape)


def embeddings_from_cooccurrence(counts: sparse.csr_matrix, dim: int, seed: int = 42) -> np.ndarray:
    """``[vocab_size, dim]`` float32 vectors scaled to unit standard deviation (like PyTorch's own
    embedding initialisation); padding, unknown and unseen words get zeros."""
    if dim < 1:
        raise ValueError(f"embedding dimension must be at least 1, got {dim}")
    dim = min(dim, counts.shape[0] - 1)
    matrix = ppmi(counts)
    if matrix.nnz == 0:
        raise ValueError("no co-occurrences to learn embeddings from: the reviews are too short or all unknown words")
    left, singular, _ = randomized_svd(matrix, n_components=dim, n_iter=4, random_state=seed)
    vectors = (left * np.sqrt(singular)).astype(np.float32)
    seen = np.asarray(matrix.getnnz(axis=1)).ravel() > 0
    vectors[~seen] = 0.0
    scale = vectors[seen].std()
    if scale > 0:
        vectors /= scale
    log.info("pretrained %d-dim embeddings for %d of %d ids from %d co-occurring pairs", dim, int(seen.sum()), counts.shape[0], matrix.nnz)
    return vectors
