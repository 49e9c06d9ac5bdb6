"""How the model does on the inputs web users type, not only on whole IMDb reviews.

The website's users write a sentence or two; the test set's reviews average 230 words. Three
views, all from the test split (nothing from outside the project's data):

- **by length**: the test reviews' accuracy per length bucket (in words);
- **short texts**: the first and the last sentence of each test review (3 to 40 words), with
  the review's label. Reviewers open with the film's premise as often as with their verdict,
  so not every sentence says what the review does: these figures compare models with one
  another, they are not a ceiling of 1.0. The last sentence is most often the verdict;
- **calibration**: the expected calibration error of "NN % sure", over equal-width bins.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from serve.text import BREAK_TAG

# Upper bounds of the length buckets, in words; the last bucket is open.
LENGTH_BUCKETS = (10, 25, 50, 100, 250, 500)
SHORT_MIN_WORDS, SHORT_MAX_WORDS = 3, 40
SHORT_SAMPLE = 5_000  # per kind of sentence: enough for ±1.4 % at 95 %, cheap to score
CALIBRATION_BINS = 15
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[^\W_]+")  # what the tokenizer keeps: "..." or ":)" is no word


def words(text: str) -> list[str]:
    return BREAK_TAG.sub(" ", text).split()


def bucket_name(index: int) -> str:
    low = 1 if index == 0 else LENGTH_BUCKETS[index - 1] + 1
    return f"{low}+ words" if index == len(LENGTH_BUCKETS) else f"{low}-{LENGTH_BUCKETS[index]} words"


def accuracy_by_length(texts: Sequence[str], labels: np.ndarray, probabilities: np.ndarray) -> list[dict]:
    """One row per non-empty length bucket: its name, how many texts, their accuracy."""
    counts = np.array([len(words(t)) for t in texts])
    buckets = np.searchsorted(np.array(LENGTH_BUCKETS), counts, side="left")
    right = (np.asarray(probabilities) >= 0.5).astype(int) == np.asarray(labels)
    return [{"bucket": bucket_name(b), "texts": int((buckets == b).sum()), "accuracy": round(float(right[buckets == b].mean()), 4)}
            for b in range(len(LENGTH_BUCKETS) + 1) if (buckets == b).any()]


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(" ".join(words(text))) if s.strip()]


def short_texts(texts: Sequence[str], labels: np.ndarray, seed: int = 0) -> dict[str, tuple[list[str], np.ndarray]]:
    """``{"first sentence": (texts, labels), "last sentence": ...}``: each review's first and last
    sentence of ``SHORT_MIN_WORDS``–``SHORT_MAX_WORDS`` words with the review's label, at most
    ``SHORT_SAMPLE`` of each (a seeded sample, the same for every model on the same test set)."""
    found: dict[str, tuple[list[str], list[int]]] = {"first sentence": ([], []), "last sentence": ([], [])}
    for text, label in zip(texts, labels):
        split = sentences(text)
        if len(split) < 2:  # a one-sentence review is not a short text taken from a longer one
            continue
        for kind, sentence in (("first sentence", split[0]), ("last sentence", split[-1])):
            if SHORT_MIN_WORDS <= len(_WORD.findall(sentence)) and len(sentence.split()) <= SHORT_MAX_WORDS:
                found[kind][0].append(sentence)
                found[kind][1].append(int(label))
    rng = np.random.default_rng(seed)
    sampled = {}
    for kind, (kept, kept_labels) in found.items():
        rows = np.sort(rng.permutation(len(kept))[:SHORT_SAMPLE])
        sampled[kind] = ([kept[r] for r in rows], np.asarray(kept_labels, dtype=int)[rows])
    return sampled


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS) -> dict:
    """The gap between how sure the model says it is and how often it is right, averaged over
    equal-width bins of confidence (weighted by their size); with the bins, for a reliability plot."""
    probabilities = np.asarray(probabilities, dtype=float)
    predicted = (probabilities >= 0.5).astype(int)
    confidence = np.where(predicted == 1, probabilities, 1.0 - probabilities)
    right = (predicted == np.asarray(labels)).astype(float)
    edges = np.linspace(0.5, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    rows, error = [], 0.0
    for b in range(bins):
        chosen = index == b
        if not chosen.any():
            continue
        gap = abs(float(confidence[chosen].mean()) - float(right[chosen].mean()))
        error += chosen.mean() * gap
        rows.append({"from": round(float(edges[b]), 4), "to": round(float(edges[b + 1]), 4), "texts": int(chosen.sum()),
                     "confidence": round(float(confidence[chosen].mean()), 4), "accuracy": round(float(right[chosen].mean()), 4)})
    return {"expected_calibration_error": round(float(error), 4), "bins": rows}
