"""What the monitoring job measures of each text, with the model that serves it: how many tokens
it has after the model's own cleaning, how many of them the model's vocabulary does not know, the
model's score, and the model's own representation of it (the pooled LSTM state its head reads),
in which a drift test sees what the model sees."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from serve.artifact import LoadedModel
from serve.handlers import SCORE_DECIMALS
from serve.text import TextNormalizer
from serve.vocab import UNK_ID, pad_batch

BATCH_SIZE = 256


@dataclass(frozen=True)
class TextFeatures:
    tokens: np.ndarray  # per text: tokens after cleaning (before truncation)
    unknown: np.ndarray  # per text: of those, how many the vocabulary does not know
    probabilities: np.ndarray  # per text: the model's positive probability, as an answer gives it (rounded)
    representation: np.ndarray  # per text: the vector the model's head reads (n × d)


def token_counts(texts: list[str], model: LoadedModel) -> tuple[np.ndarray, np.ndarray]:
    """Per text: tokens after the model's cleaning, and how many of them its vocabulary does not know
    (no network: cheap enough for every test text)."""
    normalizer = TextNormalizer(model.text)
    ids = [model.vocab.encode(normalizer.tokens(text)) for text in texts]
    return (np.array([len(row) for row in ids], dtype=np.int64), np.array([row.count(UNK_ID) for row in ids], dtype=np.int64))


def describe(texts: list[str], model: LoadedModel) -> TextFeatures:
    """The features of ``texts``, scored in length-sorted batches so that each pads little."""
    normalizer = TextNormalizer(model.text)
    ids = [model.vocab.encode(normalizer.tokens(text)) for text in texts]
    tokens = np.array([len(row) for row in ids], dtype=np.int64)
    unknown = np.array([row.count(UNK_ID) for row in ids], dtype=np.int64)
    probabilities = np.zeros(len(texts))
    width = model.network.head.in_features
    representation = np.zeros((len(texts), width), dtype=np.float32)
    seen: list[torch.Tensor] = []
    hook = model.network.head.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach()))
    try:
        order = np.argsort([min(len(row), model.text.max_len) for row in ids], kind="stable")
        with torch.inference_mode():
            for start in range(0, len(order), BATCH_SIZE):
                rows = [int(i) for i in order[start : start + BATCH_SIZE] if ids[i]]  # a text with no token is not scored
                if not rows:
                    continue
                batch, lengths = pad_batch([ids[i] for i in rows], model.text.max_len, model.text.truncate)
                seen.clear()
                logits = model.network(torch.from_numpy(batch).long().to(model.device), torch.from_numpy(lengths))
                probabilities[rows] = torch.sigmoid(logits.float()).cpu().numpy()
                representation[rows] = seen[-1].float().cpu().numpy()
    finally:
        hook.remove()
    return TextFeatures(tokens, unknown, probabilities.round(SCORE_DECIMALS), representation)
