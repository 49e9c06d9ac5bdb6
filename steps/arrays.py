"""The on-disk form of an encoded split, shared by the preprocessing step, the training job, the
evaluation step and the registry page.

One ``data.npz`` per split: ``ids`` (right-padded token ids), ``lengths`` and ``labels``.  It is read
with ``allow_pickle=False``: a data channel can never smuggle in code.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

ARRAYS_FILE = "data.npz"
# Optional, in the train/ folder: pretrained word vectors, one row per vocabulary id.
EMBEDDINGS_FILE = "embeddings.npy"
# In the test/ folder: the raw test reviews, one {text, label} per line, in the arrays' order (the
# evaluation scores them through the artifact's own code, and its predictions follow this order).
REVIEWS_FILE = "reviews.jsonl"


class SplitFormatError(ValueError):
    """A split folder that the preprocessing step did not write."""


def save_split_arrays(folder: Path, ids: np.ndarray, lengths: np.ndarray, labels: np.ndarray, vocab_size: int,
                      datasets: np.ndarray | None = None) -> None:
    """``datasets``: each row's index into stats.json's ``datasets`` (several datasets in one run; all 0 if not given)."""
    dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
    datasets = np.zeros(len(labels), dtype=np.int16) if datasets is None else datasets
    np.savez(Path(folder) / ARRAYS_FILE, ids=ids.astype(dtype), lengths=lengths.astype(np.int32), labels=labels.astype(np.int8),
             datasets=datasets.astype(np.int16))


def load_split_datasets(folder: Path, rows: int) -> np.ndarray:
    """Each row's dataset index; all zeros for a split written before several datasets were possible."""
    path = Path(folder) / ARRAYS_FILE
    try:
        with np.load(path, allow_pickle=False) as arrays:
            datasets = arrays["datasets"] if "datasets" in arrays.files else np.zeros(rows, dtype=np.int16)
    except (ValueError, OSError) as exc:
        raise SplitFormatError(f"{path} is not a preprocessing output ({exc})") from exc
    if datasets.shape != (rows,) or (datasets < 0).any():
        raise SplitFormatError(f"{path} has {datasets.shape} dataset indices for {rows} rows")
    return datasets.astype(np.int64)


def load_split_arrays(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, lengths, labels) of one split, checked for consistent shapes."""
    path = Path(folder) / ARRAYS_FILE
    if not path.is_file():
        raise SplitFormatError(f"{folder} has no {ARRAYS_FILE}: point it at a folder written by the preprocessing step")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            ids, lengths, labels = arrays["ids"], arrays["lengths"], arrays["labels"]
    except (KeyError, ValueError, OSError) as exc:
        raise SplitFormatError(f"{path} is not a preprocessing output ({exc})") from exc
    if ids.ndim != 2 or len(ids) != len(lengths) or len(ids) != len(labels) or len(ids) == 0:
        raise SplitFormatError(f"{path} has inconsistent arrays: ids {ids.shape}, lengths {lengths.shape}, labels {labels.shape}")
    return ids, lengths, labels


def load_embeddings(folder: Path, vocab_size: int) -> np.ndarray | None:
    """The pretrained vectors saved beside the training split, or None when there are none."""
    path = Path(folder) / EMBEDDINGS_FILE
    if not path.is_file():
        return None
    try:
        vectors = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise SplitFormatError(f"{path} is not a saved array: {exc}") from exc
    if vectors.ndim != 2 or vectors.shape[0] != vocab_size or not np.isfinite(vectors).all():
        raise SplitFormatError(f"{path} holds {vectors.shape} values; expected finite vectors for {vocab_size} vocabulary ids")
    return vectors.astype(np.float32, copy=False)
