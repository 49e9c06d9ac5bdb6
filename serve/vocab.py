"""The vocabulary and the fixed-length encoding shared by preprocessing and serving."""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

PAD_ID = 0
UNK_ID = 1
VOCAB_FORMAT = "sentiment-mlops/vocab"
TRUNCATE_SIDES = ("head", "tail")


class _UnknownToOne(dict):
    def __missing__(self, key: str) -> int:
        return UNK_ID


class Vocabulary:
    """Token ↔ id map with 0 reserved for padding and 1 for unknown tokens."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens = list(tokens)
        self._ids = _UnknownToOne((tok, i + 2) for i, tok in enumerate(self.tokens))
        if len(self._ids) != len(self.tokens):
            raise ValueError("vocabulary tokens must be unique")

    def __len__(self) -> int:
        """Number of ids, padding and unknown included: the embedding table's size."""
        return len(self.tokens) + 2

    @classmethod
    def build(cls, counts: Counter, max_size: int, min_count: int = 1) -> Vocabulary:
        """Most frequent tokens first; ties broken alphabetically so the same data gives the same ids."""
        if max_size < 3:
            raise ValueError(f"vocabulary size must be at least 3 (padding, unknown, one word), got {max_size}")
        kept = sorted((item for item in counts.items() if item[1] >= min_count), key=lambda kv: (-kv[1], kv[0]))
        return cls([tok for tok, _ in kept[: max_size - 2]])

    def encode(self, tokens: Iterable[str]) -> list[int]:
        return list(map(self._ids.__getitem__, tokens))

    def to_dict(self) -> dict:
        return {"format": VOCAB_FORMAT, "version": 1, "pad_id": PAD_ID, "unk_id": UNK_ID, "tokens": self.tokens}

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read vocabulary {path}: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != VOCAB_FORMAT or not isinstance(data.get("tokens"), list):
            raise ValueError(f"{path} is not a sentiment-mlops vocabulary (expected format {VOCAB_FORMAT!r})")
        return cls(data["tokens"])


def pad_batch(sequences: Sequence[Sequence[int]], max_len: int, truncate: str = "tail") -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id sequences into an ``[n, max_len]`` array and return it with the true lengths.

    ``truncate`` says which end of a long review survives: reviews often end on their verdict,
    so keeping the tail is the default.  Empty sequences become a single unknown token so that the
    network always sees at least one step.
    """
    if truncate not in TRUNCATE_SIDES:
        raise ValueError(f"truncate must be one of {TRUNCATE_SIDES}, got {truncate!r}")
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    ids = np.zeros((len(sequences), max_len), dtype=np.int32)
    lengths = np.empty(len(sequences), dtype=np.int32)
    for row, seq in enumerate(sequences):
        if not seq:
            seq = (UNK_ID,)
        kept = seq[-max_len:] if truncate == "tail" else seq[:max_len]
        ids[row, : len(kept)] = kept
        lengths[row] = len(kept)
    return ids, lengths
