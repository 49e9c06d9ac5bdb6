"""The bag's NBSVM fit (train/nbsvm.py) and the binary bag that serves it (serve/network.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from serve.network import NetworkConfig, NgramBag, SentimentLSTM, binary_features, ngram_ids
from train.nbsvm import fit_nbsvm, naive_bayes_ratios, review_features

VOCAB, BUCKETS = 20, 400
GOOD, BAD, NOT = 5, 6, 7  # word ids of the toy language below; 8.. are neutral words


def _reviews(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positive reviews say "good" or "not bad", negative ones "bad" or "not good", among noise."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((count, 12), dtype=np.uint16)
    lengths = rng.integers(4, 13, count).astype(np.int32)
    labels = np.arange(count) % 2
    for row in range(count):
        words = list(rng.integers(8, VOCAB, lengths[row]))
        negated = rng.random() < 0.5
        cue = ([NOT, BAD] if negated else [GOOD]) if labels[row] else ([NOT, GOOD] if negated else [BAD])
        at = int(rng.integers(0, lengths[row] - len(cue) + 1))
        words[at : at + len(cue)] = cue
        ids[row, : lengths[row]] = words
    return ids, lengths, labels.astype(np.int8)


def _bag_logits(weights: torch.Tensor, ids: np.ndarray, lengths: np.ndarray) -> torch.Tensor:
    bag = NgramBag(BUCKETS, binary=True)
    with torch.no_grad():
        bag.weights.weight[:, 0] = weights
        batch, batch_lengths = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(lengths.astype(np.int64))
        return bag(ngram_ids(batch, batch_lengths, BUCKETS, VOCAB), batch_lengths)


def test_binary_features_keep_each_bucket_once_per_review():
    features = torch.tensor([[9, 3, 9, 9, 0, 3], [3, 0, 0, 0, 0, 0]])
    kept = binary_features(features)
    assert sorted(v for v in kept[0].tolist() if v) == [3, 9] and sorted(v for v in kept[1].tolist() if v) == [3]


def test_the_binary_bag_counts_a_repeated_word_once_and_does_not_divide_by_length():
    bag = NgramBag(BUCKETS, binary=True)
    with torch.no_grad():
        bag.weights.weight[GOOD, 0] = 1.5
    once = bag(torch.tensor([[GOOD, 9, 0, 0]]), torch.tensor([2]))
    thrice = bag(torch.tensor([[GOOD, GOOD, GOOD, 9]]), torch.tensor([4]))
    assert once.item() == thrice.item() == 1.5


def test_the_network_multiplies_the_bag_by_its_weight():
    torch.manual_seed(0)
    config = NetworkConfig(vocab_size=VOCAB, embedding_dim=4, hidden_dim=4, dropout=0.0, ngram_buckets=BUCKETS, ngram_binary=True)
    model = SentimentLSTM(config).eval()
    with torch.no_grad():
        model.ngrams.weights.weight.normal_()
    ids, lengths = torch.tensor([[GOOD, 9, 10, 0]]), torch.tensor([3])
    recurrent, bag = model.branch_logits(ids, lengths)
    model.config = NetworkConfig(**{**config.to_dict(), "bag_weight": 2.5, "temperature": 2.0})
    assert torch.allclose(model(ids, lengths), (recurrent + 2.5 * bag) / 2.0)


def test_naive_bayes_ratios_point_each_cue_to_its_class():
    ids, lengths, labels = _reviews(400, seed=0)
    ratios = naive_bayes_ratios(review_features(ids, lengths, BUCKETS, VOCAB, 2), labels)
    not_bad, not_good = (int(ngram_ids(torch.tensor([[NOT, word]]), torch.tensor([2]), BUCKETS, VOCAB)[0, 2]) for word in (BAD, GOOD))
    assert ratios[not_bad] > 2.0 and ratios[not_good] < -2.0  # pairs only one class uses
    assert abs(ratios[GOOD].item()) < 0.5 and abs(ratios[12].item()) < 0.5  # "good" is in "not good" too; a neutral word


def test_the_fit_learns_the_pairs_a_bag_of_words_cannot_and_is_deterministic():
    train, test = _reviews(600, seed=1), _reviews(300, seed=2)
    weights = fit_nbsvm(train, BUCKETS, VOCAB, order=2, c=1.0)
    assert torch.equal(weights, fit_nbsvm(train, BUCKETS, VOCAB, order=2, c=1.0))
    assert weights[0] == 0.0  # padding
    accuracy = float(((_bag_logits(weights, *test[:2]) > 0).numpy() == (test[2] > 0)).mean())
    words_only = fit_nbsvm(train, BUCKETS, VOCAB, order=1, c=1.0)
    accuracy_words = float(((_bag_logits(words_only, *test[:2]) > 0).numpy() == (test[2] > 0)).mean())
    assert accuracy > 0.95 and accuracy > accuracy_words + 0.1


@pytest.mark.parametrize("c", [0.01, 1.0])
def test_a_stronger_penalty_gives_smaller_weights(c):
    train = _reviews(300, seed=3)
    weak, strong = fit_nbsvm(train, BUCKETS, VOCAB, 2, c=100.0), fit_nbsvm(train, BUCKETS, VOCAB, 2, c=c)
    assert strong.abs().sum() < weak.abs().sum()


def test_runs_of_three_get_buckets_of_their_own_after_the_pairs():
    ids, lengths = torch.tensor([[5, 7, 9, 11]]), torch.tensor([3])
    features = ngram_ids(ids, lengths, BUCKETS, VOCAB, order=3)
    assert features.shape == (1, 4 + 3 + 2)
    assert features[0, :4].tolist() == [5, 7, 9, 0]  # words, the padding zeroed
    pairs, triples = features[0, 4:7], features[0, 7:]
    assert pairs.tolist() == ngram_ids(ids, lengths, BUCKETS, VOCAB, order=2)[0, 4:].tolist()  # order 3 keeps order 2's pairs
    assert VOCAB <= int(triples[0]) < BUCKETS and int(triples[1]) == 0  # (5, 7, 9), then none reaching into the padding
    assert int(triples[0]) not in pairs.tolist()


def test_the_legacy_bag_counts_every_occurrence_and_divides_by_the_root_of_the_length():
    """Artifacts whose bag trained beside the LSTM have no ``ngram_binary`` in their config: they
    must score exactly as they did."""
    config = NetworkConfig.from_dict({"vocab_size": VOCAB, "ngram_buckets": BUCKETS})
    assert not config.ngram_binary and config.bag_weight == 1.0
    bag = SentimentLSTM(config).ngrams
    with torch.no_grad():
        bag.weights.weight[GOOD, 0] = 1.5
    assert bag(torch.tensor([[GOOD, GOOD, GOOD, 9]]), torch.tensor([4])).item() == pytest.approx(3 * 1.5 / 2.0)


@pytest.mark.parametrize("c", [0.0, -1.0])
def test_a_penalty_strength_that_is_not_positive_is_refused(c):
    with pytest.raises(ValueError, match="ngram_c must be positive"):
        fit_nbsvm(_reviews(20, seed=4), BUCKETS, VOCAB, 2, c=c)
