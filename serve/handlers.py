"""The SageMaker PyTorch inference handlers: ``model_fn``, ``input_fn``, ``predict_fn``, ``output_fn``.

The same functions serve three callers: the SageMaker inference container, the project's own
HTTP server, and the evaluation step (which scores the test set through them, so what is
measured is what is deployed).
"""
from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from serve.artifact import LoadedModel, load_model
from serve.errors import BadRequest, NotAcceptable, PayloadTooLarge, UnsupportedMediaType
from serve.text import TextNormalizer, has_words
from serve.vocab import pad_batch

log = logging.getLogger(__name__)

# Below SageMaker's 6 MB invocation limit, so an oversize body is refused here with a clear 413.
MAX_BODY_BYTES = 5 * 1024 * 1024
# IMDb's longest review is under 14,000 characters; a review of this size is almost surely a mistake.
MAX_REVIEW_CHARS = 50_000
# The most reviews in one JSON request (the web's shape). JSON Lines and CSV, what a Batch
# Transform packs as many records into as MaxPayloadInMB allows, are bounded by the body's size.
MAX_BATCH_REVIEWS = 1_000
# Reviews in one forward pass. A request holds up to MAX_BODY_BYTES of reviews (a transform's
# MultiRecord batch holds hundreds); scoring them 64 at a time keeps the activations of a pass
# (at MaxLen 1,000) near 90 MB instead of 380 MB at 256, and is no slower on a CPU.
PREDICT_BATCH_SIZE = 64
JSON = "application/json"
TEXT = "text/plain"
CSV = "text/csv"
# One JSON value a line: what a Batch Transform with SplitType Line sends several of at once
# (BatchStrategy MultiRecord) and, answered one line per record, what AssembleWith Line joins.
JSONLINES = "application/jsonlines"
INPUT_TYPES = (TEXT, JSON, CSV, JSONLINES)
OUTPUT_TYPES = (JSON, TEXT, JSONLINES)
# An answer's scores are rounded to this many decimals (what a baseline of scores must match).
SCORE_DECIMALS = 6


@dataclass(frozen=True)
class Prediction:
    positive_probability: float

    @property
    def label(self) -> str:
        return "positive" if self.positive_probability >= 0.5 else "negative"

    @property
    def score(self) -> float:
        """Confidence in ``label``."""
        p = self.positive_probability
        return p if p >= 0.5 else 1.0 - p


class SentimentModel:
    """A loaded artifact plus the normalizer configured as it was at training time."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.normalizer = TextNormalizer(loaded.text)

    def positive_probabilities(self, reviews: list[str]) -> np.ndarray:
        """Score reviews in length-sorted batches so each batch pads little."""
        text = self.loaded.text
        ids = [self.loaded.vocab.encode(self.normalizer.tokens(r)) for r in reviews]
        order = np.argsort([min(len(s), text.max_len) for s in ids], kind="stable")
        probabilities = np.empty(len(reviews), dtype=np.float64)
        network, device = self.loaded.network, self.loaded.device
        with torch.inference_mode():
            for start in range(0, len(order), PREDICT_BATCH_SIZE):
                rows = order[start : start + PREDICT_BATCH_SIZE]
                batch, lengths = pad_batch([ids[i] for i in rows], text.max_len, text.truncate)
                logits = network(torch.from_numpy(batch).long().to(device), torch.from_numpy(lengths))
                probabilities[rows] = torch.sigmoid(logits.float()).cpu().numpy()
        return probabilities


def model_fn(model_dir: str) -> SentimentModel:
    return SentimentModel(load_model(Path(model_dir)))


def _base_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def _decode(body: bytes | str) -> str:
    if isinstance(body, str):
        return body
    try:
        return bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not valid UTF-8 (byte {exc.start}): send reviews as UTF-8 text") from exc


def input_fn(body: bytes | str, content_type: str) -> list[str]:
    """Parse a request into a list of reviews, refusing anything the model cannot score."""
    size = len(body.encode("utf-8")) if isinstance(body, str) else len(body)
    if size > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the body is {size:,} bytes; the limit is {MAX_BODY_BYTES:,}: send fewer or shorter reviews per request")
    kind = _base_type(content_type)
    if kind not in INPUT_TYPES:
        raise UnsupportedMediaType(f"content type {content_type!r} is not supported; use one of {', '.join(INPUT_TYPES)}")
    text = _decode(body)
    if kind == TEXT:
        return validate_reviews([text])
    if kind == JSON:
        return validate_reviews(_reviews_from_json(text))
    batch = _reviews_from_json_lines(text) if kind == JSONLINES else _reviews_from_csv(text)
    return validate_reviews(batch, max_reviews=None)


def _reviews_from_json(text: str) -> list[str]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from exc
    except RecursionError as exc:
        raise BadRequest("malformed JSON: nested too deeply") from exc
    shape_help = 'send {"review": "..."} or {"reviews": ["...", "..."]}'
    if not isinstance(data, dict):
        raise BadRequest(f"unexpected JSON {type(data).__name__}: {shape_help}")
    if "review" in data:
        if not isinstance(data["review"], str):
            raise BadRequest(f'"review" must be a string: {shape_help}')
        return [data["review"]]
    if "reviews" in data:
        reviews = data["reviews"]
        if not isinstance(reviews, list) or not all(isinstance(r, str) for r in reviews):
            raise BadRequest(f'"reviews" must be a list of strings: {shape_help}')
        return reviews
    raise BadRequest(f"no review in the JSON body: {shape_help}")


def _reviews_from_json_lines(text: str) -> list[str]:
    """One review a line: a JSON string, or an object with ``review`` (a record kept whole, as a
    transform's InputFilter may leave it). Blank lines between records are no records."""
    reviews = []
    # "\n" alone ends a line: str.splitlines() would also split inside a string at U+2028, U+0085
    # and other characters that JSON leaves unescaped.
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise BadRequest(f"line {number} is not JSON ({exc}): send one JSON string or "
                             '{"review": "..."} per line') from None
        review = record.get("review") if isinstance(record, dict) else record
        if not isinstance(review, str):
            raise BadRequest(f'line {number} holds no review: send one JSON string or {{"review": "..."}} per line')
        reviews.append(review)
    return reviews


def _reviews_from_csv(text: str) -> list[str]:
    """One review per line; RFC 4180 quoting is honoured and unquoted commas stay in the review."""
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise BadRequest(f"malformed CSV: {exc}") from exc
    return [",".join(row) for row in rows]


def validate_reviews(reviews: list[str], max_reviews: int | None = MAX_BATCH_REVIEWS) -> list[str]:
    if not reviews:
        raise BadRequest("no reviews in the request: send at least one review")
    if max_reviews is not None and len(reviews) > max_reviews:
        raise PayloadTooLarge(f"{len(reviews):,} reviews in one request; the limit is {max_reviews:,}: split the batch")
    for index, review in enumerate(reviews):
        where = "the review" if len(reviews) == 1 else f"review {index + 1}"
        if not review.strip():
            raise BadRequest(f"{where} is empty: send the text of a movie review")
        if len(review) > MAX_REVIEW_CHARS:
            raise PayloadTooLarge(f"{where} has {len(review):,} characters; the limit is {MAX_REVIEW_CHARS:,}")
        if not has_words(review):
            raise BadRequest(f"{where} has no words once its HTML markup is removed: send the text of a movie review")
    return reviews


def predict_fn(reviews: list[str], model: SentimentModel) -> list[Prediction]:
    return [Prediction(float(p)) for p in model.positive_probabilities(reviews)]


def _prediction_record(prediction: Prediction) -> dict[str, Any]:
    return {"label": prediction.label, "score": round(prediction.score, SCORE_DECIMALS),
            "positive_probability": round(prediction.positive_probability, SCORE_DECIMALS)}


def output_fn(predictions: list[Prediction], accept: str | None) -> tuple[str, str]:
    """Serialize as JSON (the default), as JSON Lines (one prediction a line, in the order of the
    reviews: what a Batch Transform assembles), or as the ``1``/``0`` lines the original web page read."""
    # An Accept header may list several types; answer in the first one we can produce.
    kinds = [_base_type(part) for part in (accept or "").split(",")]
    kind = next((k for k in kinds if k in ("", "*/*", JSON, "application/*", TEXT, JSONLINES)), None)
    if kind in ("", "*/*", JSON, "application/*"):
        body = {"predictions": [_prediction_record(p) for p in predictions]}
        return json.dumps(body), JSON
    if kind == JSONLINES:
        return "\n".join(json.dumps(_prediction_record(p)) for p in predictions), JSONLINES
    if kind == TEXT:
        return "\n".join("1" if p.label == "positive" else "0" for p in predictions), TEXT
    raise NotAcceptable(f"cannot answer in {accept!r}; accept one of {', '.join(OUTPUT_TYPES)}")
