"""Short windows of training reviews, so the model also learns from inputs of a sentence or two.

The website's users type a sentence; every training review is a whole IMDb review (230 words on
average). With probability ``probability`` a review in a batch is replaced, for that step only,
by a random window of ``min_tokens`` to ``max_tokens`` of its own tokens, keeping its label: the
window is usually still the reviewer's opinion, and the model learns not to wait for the end of
a long text before it commits. The windows come from ``seed`` and the epoch alone, so a resumed
job crops exactly as an uninterrupted one would.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Crops:
    probability: float
    min_tokens: int
    max_tokens: int
    seed: int

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"crop_probability must be between 0 and 1, got {self.probability}")
        if not 1 <= self.min_tokens <= self.max_tokens:
            raise ValueError(f"need 1 <= crop_min_tokens <= crop_max_tokens, got {self.min_tokens} and {self.max_tokens}")

    def generator(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, 7])

    def apply(self, ids: np.ndarray, lengths: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``ids`` (rows right-padded with 0) and ``lengths`` with some rows cut to a window; new arrays."""
        ids, lengths = ids.copy(), lengths.copy()
        if self.probability == 0.0:
            return ids, lengths
        for row in np.flatnonzero(rng.random(len(lengths)) < self.probability):
            length = int(lengths[row])
            if length <= self.min_tokens:
                continue
            size = int(rng.integers(self.min_tokens, min(self.max_tokens, length) + 1))
            start = int(rng.integers(0, length - size + 1))
            window = ids[row, start : start + size].copy()
            ids[row, :] = 0
            ids[row, :size] = window
            lengths[row] = size
        return ids, lengths
