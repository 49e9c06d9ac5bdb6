"""Tests for serve.network: shapes, padding invariance and exactness against a packed-sequence LSTM."""
from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from serve.network import NetworkConfig, SentimentLSTM, ngram_ids
from serve.vocab import PAD_ID, pad_batch

VOCAB = 50


def _seed(seed: int = 0) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _model(bidirectional=True, num_layers=1, seed=0, dropout=0.3) -> SentimentLSTM:
    _seed(seed)
    model = SentimentLSTM(NetworkConfig(VOCAB, embedding_dim=8, hidden_dim=8, num_layers=num_layers,
                                        bidirectional=bidirectional, dropout=dropout))
    return model.eval()


def _reviews(count: int, seed: int = 0, low: int = 1, high: int = 30) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(2, VOCAB) for _ in range(rng.randint(low, high))] for _ in range(count)]


def _logits(model: SentimentLSTM, sequences: list[list[int]], max_len: int = 64) -> torch.Tensor:
    ids, lengths = pad_batch(sequences, max_len)
    with torch.no_grad():
        return model(torch.from_numpy(ids).long(), torch.from_numpy(lengths))


ARCHITECTURES = [(True, 1), (False, 1), (True, 2), (False, 2), (True, 3)]


def test_output_has_one_logit_per_review():
    model = _model()
    out = _logits(model, _reviews(5))
    assert out.shape == (5,)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_single_review_batch_shape():
    assert _logits(_model(), [[3, 4, 5]]).shape == (1,)


@pytest.mark.parametrize("bidirectional, num_layers", ARCHITECTURES)
def test_logit_does_not_depend_on_right_padding(bidirectional, num_layers):
    model = _model(bidirectional, num_layers)
    short, long_ = [5, 9, 12, 7], list(range(2, 40))
    alone = _logits(model, [short])
    batched = _logits(model, [short, long_])
    assert torch.allclose(alone[0], batched[0], atol=1e-5), (alone, batched)
    # Extra padding columns beyond the longest review change nothing either.
    ids, lengths = pad_batch([short], 100)
    with torch.no_grad():
        wide = model(torch.from_numpy(ids).long(), torch.from_numpy(lengths))
    assert torch.allclose(alone, wide, atol=1e-5)


@pytest.mark.parametrize("bidirectional, num_layers", ARCHITECTURES)
def test_batched_logits_equal_one_at_a_time(bidirectional, num_layers):
    model = _model(bidirectional, num_layers, seed=1)
    reviews = _reviews(12, seed=7)
    batched = _logits(model, reviews)
    singles = torch.cat([_logits(model, [r]) for r in reviews])
    assert torch.allclose(batched, singles, atol=1e-5)


@pytest.mark.parametrize("bidirectional, num_layers", ARCHITECTURES)
def test_garbage_in_padding_positions_is_ignored(bidirectional, num_layers):
    """Whatever sits past a review's length (here: real word ids, not padding) must not leak in."""
    model = _model(bidirectional, num_layers, seed=2)
    reviews = _reviews(4, seed=3, low=2, high=10)
    ids, lengths = pad_batch(reviews + [list(range(2, 30))], 40)
    ids_t, lengths_t = torch.from_numpy(ids).long(), torch.from_numpy(lengths)
    noisy = ids_t.clone()
    for row, length in enumerate(lengths):
        noisy[row, length:] = torch.randint(2, VOCAB, (40 - length,))
    with torch.no_grad():
        assert torch.allclose(model(ids_t, lengths_t), model(noisy, lengths_t), atol=1e-5)


def _reference_logits(model: SentimentLSTM, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The same network computed with torch's own (bi)directional LSTM over packed sequences."""
    config = model.config
    lstm = nn.LSTM(config.embedding_dim, config.hidden_dim, num_layers=config.num_layers, batch_first=True,
                   bidirectional=config.bidirectional)
    with torch.no_grad():
        for layer in range(config.num_layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(lstm, f"{name}_l{layer}").copy_(getattr(model.forward_layers[layer], f"{name}_l0"))
                if config.bidirectional:
                    assert model.backward_layers is not None
                    getattr(lstm, f"{name}_l{layer}_reverse").copy_(getattr(model.backward_layers[layer], f"{name}_l0"))
    lstm.eval()
    with torch.no_grad():
        embedded = model.embedding(ids)
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        outputs, _ = lstm(packed)
        x, _ = pad_packed_sequence(outputs, batch_first=True)
        pooled_max, pooled_mean = [], []
        for row, length in enumerate(lengths.tolist()):
            valid = x[row, :length]
            pooled_max.append(valid.max(0).values)
            pooled_mean.append(valid.mean(0))
        features = torch.cat([torch.stack(pooled_max), torch.stack(pooled_mean)], dim=1)
        return model.head(features).squeeze(1)


@pytest.mark.parametrize("bidirectional, num_layers", ARCHITECTURES)
def test_matches_packed_sequence_lstm(bidirectional, num_layers):
    """The hand-made reversal must equal what torch's bidirectional LSTM computes on packed input."""
    model = _model(bidirectional, num_layers, seed=4)
    reviews = _reviews(9, seed=11)
    ids, lengths = pad_batch(reviews, 64)
    ids_t, lengths_t = torch.from_numpy(ids).long(), torch.from_numpy(lengths)
    with torch.no_grad():
        ours = model(ids_t, lengths_t)
    reference = _reference_logits(model, ids_t, lengths_t)
    assert torch.allclose(ours, reference, atol=1e-5), (ours, reference)


def test_backward_direction_reads_each_review_reversed():
    """The backward LSTM's first output of a review must be its state after reading the review end to start."""
    model = _model(True, 1, seed=5)
    captured = {}
    model.backward_layers[0].register_forward_hook(lambda module, args, out: captured.update(inputs=args[0], outputs=out[0]))
    review, other = [3, 17, 42, 8, 25], list(range(2, 12))
    ids, lengths = pad_batch([review, other], 16)
    with torch.no_grad():
        model(torch.from_numpy(ids).long(), torch.from_numpy(lengths))
        fed = captured["inputs"][0, : len(review)]
        expected = model.embedding(torch.tensor(review[::-1]))
    assert torch.equal(fed, expected)


def test_bidirectional_differs_from_unidirectional():
    """With the same forward weights, adding the backward direction changes the features and so the logit."""
    uni, bi = _model(False, 1, seed=6), _model(True, 1, seed=6)
    with torch.no_grad():
        bi.embedding.weight.copy_(uni.embedding.weight)
        bi.forward_layers[0].load_state_dict(uni.forward_layers[0].state_dict())
    reviews = _reviews(6, seed=8, low=3)
    assert not torch.allclose(_logits(uni, reviews), _logits(bi, reviews), atol=1e-3)
    assert bi.head.in_features == 2 * uni.head.in_features


def test_word_order_matters():
    model = _model(True, 1, seed=9)
    review = [3, 10, 20, 30, 40, 45]
    logits = _logits(model, [review, review[::-1]])
    assert not torch.allclose(logits[0], logits[1], atol=1e-6)


def test_padding_embedding_is_zero():
    model = _model()
    assert model.embedding.padding_idx == PAD_ID
    assert torch.count_nonzero(model.embedding.weight[PAD_ID]) == 0


def test_parameter_layout():
    model = _model(True, 2)
    assert len(model.forward_layers) == 2 and len(model.backward_layers) == 2
    assert model.forward_layers[1].input_size == 16  # both directions of layer 1 feed layer 2
    assert model.head.in_features == 2 * 2 * 8  # max+mean of both directions
    assert _model(False, 2).backward_layers is None


def test_eval_mode_is_deterministic_and_train_mode_uses_dropout():
    model = _model(dropout=0.5)
    reviews = _reviews(4, seed=1)
    first, second = _logits(model, reviews), _logits(model, reviews)
    assert torch.equal(first, second)
    model.train()
    _seed(0)
    noisy = _logits(model, reviews)
    assert not torch.allclose(first, noisy, atol=1e-6)


def test_int32_ids_are_accepted():
    model = _model()
    ids, lengths = pad_batch(_reviews(3), 32)
    with torch.no_grad():
        as_int32 = model(torch.from_numpy(ids), torch.from_numpy(lengths))
        as_int64 = model(torch.from_numpy(ids).long(), torch.from_numpy(lengths).long())
    assert torch.allclose(as_int32, as_int64, atol=1e-6)


def test_gradients_reach_every_parameter():
    model = _model(True, 2, dropout=0.0).train()
    ids, lengths = pad_batch(_reviews(4), 32)
    loss = model(torch.from_numpy(ids).long(), torch.from_numpy(lengths)).sum()
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        if name != "embedding.weight":
            assert torch.count_nonzero(param.grad) > 0, name


def test_network_config_round_trip():
    config = NetworkConfig(vocab_size=123, embedding_dim=7, hidden_dim=5, num_layers=3, bidirectional=False, dropout=0.1)
    data = config.to_dict()
    assert data == {"vocab_size": 123, "embedding_dim": 7, "hidden_dim": 5, "num_layers": 3, "bidirectional": False,
                    "dropout": 0.1, "ngram_buckets": 0, "ngram_order": 2, "ngram_binary": False, "bag_weight": 1.0,
                    "temperature": 1.0}
    assert NetworkConfig.from_dict(data) == config
    assert NetworkConfig.from_dict({**data, "unknown": 1}) == config
    assert NetworkConfig.from_dict({"vocab_size": 9}) == NetworkConfig(9)


def test_network_config_needs_vocab_size():
    with pytest.raises(TypeError):
        NetworkConfig.from_dict({"embedding_dim": 8})


def test_model_rebuilt_from_config_dict_gives_same_logits():
    model = _model(True, 2, seed=12)
    clone = SentimentLSTM(NetworkConfig.from_dict(model.config.to_dict())).eval()
    clone.load_state_dict(model.state_dict())
    reviews = _reviews(5, seed=2)
    assert torch.equal(_logits(model, reviews), _logits(clone, reviews))


# --- the word-pair bag and the temperature -------------------------------------------------------

def test_ngram_ids_keep_words_and_hash_pairs_above_the_vocabulary():
    ids = torch.tensor([[5, 7, 9, 0], [5, 7, 0, 0]])
    features = ngram_ids(ids, torch.tensor([3, 2]), buckets=1000, vocab_size=50)
    assert features.shape == (2, 4 + 3)
    assert features[0, :4].tolist() == [5, 7, 9, 0] and features[1, :4].tolist() == [5, 7, 0, 0]
    pairs = features[:, 4:]
    assert pairs[0, 0] == pairs[1, 0]  # the same pair (5, 7) lands in the same bucket wherever it is
    assert bool(((pairs[0, :2] >= 50) & (pairs[0, :2] < 1000)).all())
    assert pairs[0, 2] == 0 and pairs[1, 1:].tolist() == [0, 0]  # no pair reaches into the padding


def test_the_bag_sees_word_pairs_the_padding_does_not_change():
    torch.manual_seed(0)
    model = SentimentLSTM(NetworkConfig(vocab_size=60, embedding_dim=8, hidden_dim=8, ngram_buckets=500, dropout=0.0)).eval()
    with torch.no_grad():
        model.ngrams.weights.weight.normal_()
    ids, lengths = pad_batch(_reviews(3), 32)
    padded, padded_lengths = pad_batch(_reviews(3), 40)
    first = model(torch.from_numpy(ids).long(), torch.from_numpy(lengths))
    assert torch.allclose(first, model(torch.from_numpy(padded).long(), torch.from_numpy(padded_lengths)), atol=1e-5)
    without = SentimentLSTM(replace(model.config, ngram_buckets=0)).eval()
    without.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("ngrams.")})
    assert not torch.allclose(first, without(torch.from_numpy(ids).long(), torch.from_numpy(lengths)))


def test_the_temperature_divides_the_logits_and_an_old_config_has_none():
    torch.manual_seed(0)
    model = SentimentLSTM(NetworkConfig(vocab_size=60, embedding_dim=8, hidden_dim=8, dropout=0.0)).eval()
    ids, lengths = pad_batch(_reviews(3), 32)
    plain = model(torch.from_numpy(ids).long(), torch.from_numpy(lengths))
    model.config = replace(model.config, temperature=2.0)
    assert torch.allclose(model(torch.from_numpy(ids).long(), torch.from_numpy(lengths)), plain / 2.0)
    old = {"vocab_size": 60, "embedding_dim": 8, "hidden_dim": 8}  # an artifact's config from before both
    assert NetworkConfig.from_dict(old).ngram_buckets == 0 and NetworkConfig.from_dict(old).temperature == 1.0


@pytest.mark.parametrize("changes, message", [({"ngram_buckets": 60}, "must exceed vocab_size"),
                                              ({"ngram_order": 4}, "ngram_order must be 1, 2 or 3"),
                                              ({"temperature": 0.0}, "temperature must be positive")])
def test_a_config_that_cannot_work_is_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        NetworkConfig(vocab_size=60, **changes)
