"""The sentiment network: embedding → LSTM → max+mean pooling → dropout → one logit, plus a
bag of words and hashed word pairs whose logit, times a fitted weight, is added to it, and a
temperature that calibrates the sum."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from serve.vocab import PAD_ID


@dataclass(frozen=True)
class NetworkConfig:
    """Everything needed to rebuild the network before loading its weights."""

    vocab_size: int
    embedding_dim: int = 64
    hidden_dim: int = 64
    num_layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.3
    # Buckets of the word-and-word-pair bag (0: no bag, as in artifacts made before it existed).
    ngram_buckets: int = 0
    # The longest run of adjacent words the bag weighs: 2 (words and pairs, as artifacts made
    # before this field had) or 3 (triples too).
    ngram_order: int = 2
    # How the bag reads a review: False sums every occurrence and divides by √length (artifacts
    # whose bag trained beside the LSTM); True counts each word or run once and sums plainly,
    # the form of the NBSVM that training now fits (train.nbsvm).
    ngram_binary: bool = False
    # The bag's logit is multiplied by it before it is added to the LSTM's: fitted on the
    # validation split with the temperature, so that each branch counts as much as it earns.
    bag_weight: float = 1.0
    # The logits are divided by it: fitted on the validation split after training, so that a
    # "90 % sure" answer is right about 90 % of the time. 1.0 leaves the logits as trained.
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.ngram_buckets and self.ngram_buckets <= self.vocab_size:
            raise ValueError(f"ngram_buckets ({self.ngram_buckets:,}) must exceed vocab_size ({self.vocab_size:,}): "
                             "word ids keep their own buckets below it")
        if self.ngram_order not in (1, 2, 3):
            raise ValueError(f"ngram_order must be 1, 2 or 3, got {self.ngram_order}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> NetworkConfig:
        known = {f: data[f] for f in cls.__dataclass_fields__ if f in data}
        return cls(**known)


PAIR_MULTIPLIER = 1_000_003  # a prime above any vocabulary size: (a, b) → a·P + b never collides before the modulo


def ngram_ids(ids: torch.Tensor, lengths: torch.Tensor, buckets: int, vocab_size: int, order: int = 2) -> torch.Tensor:
    """Each review's words and hashed runs of up to ``order`` adjacent words, as bucket ids (0 where
    there is none).

    Words keep their own id (below ``vocab_size``); a run goes to one of the buckets above it.
    The hash is plain integer arithmetic on the ids, so training, evaluation and serving compute
    it identically from the artifact alone.
    """
    steps = ids.size(1)
    valid = torch.arange(steps, device=ids.device)[None, :] < lengths[:, None]
    features = [torch.where(valid, ids, 0)]
    key = ids.long()
    for n in range(2, order + 1):
        if steps < n:
            break
        key = key[:, :-1] * PAIR_MULTIPLIER + ids[:, n - 1 :].long()  # below 2^63 for runs of three
        hashed = key % (buckets - vocab_size) + vocab_size
        features.append(torch.where(valid[:, n - 1 :], hashed, 0))
    return torch.cat(features, dim=1)


def binary_features(features: torch.Tensor) -> torch.Tensor:
    """The same bucket ids with every repeat within a review replaced by 0 (the padding bucket):
    a review that says "great" five times holds the feature once, as NBSVM's features do."""
    ordered, _ = features.sort(dim=1)
    repeated = torch.zeros_like(ordered, dtype=torch.bool)
    repeated[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    return ordered.masked_fill(repeated, 0)


class NgramBag(nn.Module):
    """One weight per word and per hashed run of words, summed over the review: a linear model of
    the NBSVM kind inside the network. Binary (each feature once, a plain sum) is the NBSVM that
    training fits; otherwise every occurrence counts and the sum is divided by √length, as in
    artifacts whose bag trained beside the LSTM.

    It sees every word pair with the same weight wherever it stands, which the LSTM, reading in
    order, learns slowly; the LSTM brings what a bag cannot (negation scope, order, long-range
    contrast). Their logits add.
    """

    def __init__(self, buckets: int, binary: bool = False) -> None:
        super().__init__()
        self.binary = binary
        self.weights = nn.Embedding(buckets, 1, padding_idx=PAD_ID)
        nn.init.zeros_(self.weights.weight)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.binary:
            features = binary_features(features)
        # Summed in float64: a float32 sum's rounding depends on the padded width, so a review
        # would score a hair differently alone and in a batch; in float64 it does not, once
        # rounded back to float32.
        total = self.weights(features).squeeze(2).double().sum(dim=1).float()
        if self.binary:
            return total
        return total / lengths.to(torch.float32).clamp(min=1).sqrt()


class SentimentLSTM(nn.Module):
    """An LSTM classifier that reads right-padded id batches with their true lengths.

    The backward direction runs as its own LSTM over each review reversed within its length, so
    padding never reaches either direction's state and every call has a plain fixed shape.
    That is exact like packed sequences, yet several times faster on CPU, where oneDNN rebuilds
    its kernels for every new packed batch layout.  Max and mean pooling over all steps keep the
    early evidence of long reviews instead of trusting only the last state.
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        hidden, directions = config.hidden_dim, 2 if config.bidirectional else 1
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=PAD_ID)
        inputs = [config.embedding_dim] + [directions * hidden] * (config.num_layers - 1)
        self.forward_layers = nn.ModuleList(nn.LSTM(n, hidden, batch_first=True) for n in inputs)
        self.backward_layers = nn.ModuleList(nn.LSTM(n, hidden, batch_first=True) for n in inputs) if config.bidirectional else None
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(2 * directions * hidden, 1)
        self.ngrams = NgramBag(config.ngram_buckets, config.ngram_binary) if config.ngram_buckets else None

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Return one logit per review (positive sentiment)."""
        recurrent, bag = self.branch_logits(ids, lengths)
        logits = recurrent if bag is None else recurrent + self.config.bag_weight * bag
        return logits / self.config.temperature

    def branch_logits(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The LSTM's logit and the bag's (None without a bag), before they are weighed, added and
        calibrated: the calibration fits their weights from these."""
        recurrent = self.recurrent_logit(ids, lengths)
        if self.ngrams is None:
            return recurrent, None
        lengths = lengths.to(ids.device)
        steps = int(lengths.max())
        features = ngram_ids(ids[:, :steps], lengths, self.config.ngram_buckets, self.config.vocab_size, self.config.ngram_order)
        return recurrent, self.ngrams(features, lengths)

    def recurrent_logit(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The LSTM branch alone: what training optimizes once the bag is fitted."""
        lengths = lengths.to(ids.device)
        steps = int(lengths.max())
        positions = torch.arange(steps, device=ids.device)[None, :]
        mask = positions < lengths[:, None]
        x = self.dropout(self.embedding(ids[:, :steps]))
        reverse = torch.where(mask, lengths[:, None] - 1 - positions, positions)[:, :, None]  # its own inverse
        for layer, forward_lstm in enumerate(self.forward_layers):
            outputs, _ = forward_lstm(x)
            if self.backward_layers is not None:
                backward, _ = self.backward_layers[layer](x.gather(1, reverse.expand(-1, -1, x.size(2))))
                outputs = torch.cat([outputs, backward.gather(1, reverse.expand(-1, -1, backward.size(2)))], dim=2)
            x = self.dropout(outputs) if layer + 1 < len(self.forward_layers) else outputs
        x = x.float()
        mask3 = mask.unsqueeze(-1)
        mean = (x * mask3).sum(1) / lengths.to(x.dtype)[:, None]
        maxed = x.masked_fill(~mask3, float("-inf")).max(1).values
        return self.head(self.dropout(torch.cat([maxed, mean], dim=1))).squeeze(1)
