"""Word vectors from co-occurrences: the counting, the PPMI, the SVD, and their way into training."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from serve.network import NetworkConfig, SentimentLSTM
from steps.arrays import EMBEDDINGS_FILE, load_embeddings
from steps.embeddings import cooccurrence, embeddings_from_cooccurrence, ppmi
from steps.preprocess import PreprocessOptions
from steps.preprocess import run as preprocess
from steps.sources import load_reviews
from tests.conftest import train_args
from tests.synthetic import make_reviews, write_archive, write_jsonl, write_tree
from train.train import TrainingError, _initialise_embeddings
from train.train import main as train_main


def test_cooccurrence_counts_within_the_window_weighted_by_distance():
    counts = cooccurrence([[2, 3, 4]], vocab_size=6, window=2).toarray() / 2  # times lcm(1, 2): whole numbers
    assert counts[2, 3] == counts[3, 2] == 1.0
    assert counts[2, 4] == counts[4, 2] == 0.5
    assert counts[3, 4] == 1.0 and counts[5].sum() == 0


def test_cooccurrence_never_spans_two_reviews_and_ignores_padding_and_unknown():
    counts = cooccurrence([[2, 3], [4, 5]], vocab_size=6, window=3).toarray()
    assert counts[3, 4] == 0 and counts[2, 5] == 0
    counts = cooccurrence([[2, 1, 3, 0]], vocab_size=4, window=2).toarray()
    assert counts[:, :2].sum() == 0 and counts[2, 3] == 1.0  # 1/2, times lcm(1, 2)


def test_cooccurrence_sums_are_whole_numbers_that_no_order_of_addition_changes():
    rng = np.random.default_rng(0)
    reviews = [rng.integers(2, 50, size=rng.integers(3, 30)).tolist() for _ in range(60)]
    parts = [cooccurrence(reviews[i::3], vocab_size=50, window=5) for i in range(3)]
    forwards, backwards = parts[0] + parts[1] + parts[2], parts[2] + parts[1] + parts[0]
    assert (forwards != backwards).nnz == 0 and np.array_equal(forwards.data, np.round(forwards.data))
    assert (forwards != cooccurrence(reviews, vocab_size=50, window=5)).nnz == 0


def test_ppmi_keeps_only_positive_association():
    counts = cooccurrence([[2, 3]] * 20 + [[4, 5]] * 20 + [[2, 4]], vocab_size=6, window=1)
    matrix = ppmi(counts).toarray()
    assert (matrix >= 0).all()
    assert matrix[2, 3] > 0 and matrix[4, 5] > 0
    assert matrix[2, 4] < matrix[2, 3]


def test_words_sharing_contexts_end_up_close():
    rng = np.random.default_rng(0)
    # ids 2-4 appear among contexts 10-14, ids 5-7 among contexts 15-19
    sequences = []
    for _ in range(400):
        group = rng.integers(0, 2)
        words, contexts = (range(2, 5), range(10, 15)) if group == 0 else (range(5, 8), range(15, 20))
        sequences.append(list(rng.choice(list(contexts), 4)) + [int(rng.choice(list(words)))] + list(rng.choice(list(contexts), 4)))
    vectors = embeddings_from_cooccurrence(cooccurrence(sequences, vocab_size=20, window=2), dim=4)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-9)
    assert unit[2] @ unit[3] > unit[2] @ unit[6] + 0.3
    assert unit[5] @ unit[7] > unit[5] @ unit[3] + 0.3
    assert np.all(vectors[[0, 1, 8, 9]] == 0)  # padding, unknown, unseen
    assert vectors[vectors.any(axis=1)].std() == pytest.approx(1.0, rel=1e-3)
    assert np.array_equal(vectors, embeddings_from_cooccurrence(cooccurrence(sequences, vocab_size=20, window=2), dim=4))


def test_no_cooccurrence_at_all_is_a_clear_error():
    with pytest.raises(ValueError, match="no co-occurrences"):
        embeddings_from_cooccurrence(cooccurrence([[2], [3]], 5, 2), dim=2)


@pytest.mark.parametrize("writer", ["jsonl", "tree", "archive"])
def test_unlabeled_reviews_are_read_from_every_layout_that_has_them(tmp_path, writer):
    train, test, unlabeled = make_reviews(20, seed=1), make_reviews(10, seed=2), make_reviews(7, seed=3)
    if writer == "jsonl":
        path = write_jsonl(tmp_path, train, test, unlabeled=unlabeled)
    elif writer == "tree":
        path = write_tree(tmp_path, train, test, unlabeled=unlabeled)
    else:
        path = write_archive(tmp_path / "aclImdb_v1.tar.gz", train, test, unlabeled=unlabeled)
    data = load_reviews(path)
    assert sorted(data.unlabeled) == sorted(r["text"] for r in unlabeled)
    assert (len(data.train), len(data.test)) == (20, 10)


def test_preprocessing_writes_vectors_learned_from_train_and_unlabeled_reviews(tmp_path):
    unlabeled = [{"text": "great superb zzunlabeledonly " * 3, "label": 1}] * 30
    data = write_jsonl(tmp_path / "data", make_reviews(200, seed=1), make_reviews(50, seed=2), unlabeled=unlabeled)
    stats = preprocess(data, tmp_path / "out", PreprocessOptions(vocab_size=100, min_count=1, workers=1, embedding_dim=8))
    vocab = json.loads((tmp_path / "out" / "train" / "vocab.json").read_text())["tokens"]
    assert "zzunlabeledonli" not in vocab  # unlabeled reviews shape vectors, never the vocabulary
    vectors = load_embeddings(tmp_path / "out" / "train", len(vocab) + 2)
    assert vectors.shape == (len(vocab) + 2, 8) and np.all(vectors[0] == 0)
    assert stats["embeddings"] == {"dim": 8, "window": 5, "training_reviews": 180, "unlabeled_reviews": 30}

    without = preprocess(data, tmp_path / "plain", PreprocessOptions(vocab_size=100, min_count=1, workers=1, embedding_dim=0))
    assert without["embeddings"] is None and not (tmp_path / "plain" / "train" / EMBEDDINGS_FILE).exists()


def test_training_starts_from_the_pretrained_columns(prepared):
    vocab_size = len(json.loads((prepared / "train" / "vocab.json").read_text())["tokens"]) + 2
    vectors = load_embeddings(prepared / "train", vocab_size)
    for width in (8, vectors.shape[1] + 4):
        torch.manual_seed(0)
        network = SentimentLSTM(NetworkConfig(vocab_size, embedding_dim=width, hidden_dim=4))
        random_columns = network.embedding.weight.detach().clone()
        _initialise_embeddings(network, prepared / "train")
        weight = network.embedding.weight.detach()
        used = min(width, vectors.shape[1])
        assert torch.equal(weight[1:, :used], torch.from_numpy(vectors[1:, :used]))
        assert torch.equal(weight[:, used:], random_columns[:, used:])
        assert torch.all(weight[0] == 0)


def test_malformed_embeddings_fail_training_with_a_clear_message(prepared, tmp_path, caplog):
    import shutil

    shutil.copytree(prepared, tmp_path / "prepared")
    np.save(tmp_path / "prepared" / "train" / EMBEDDINGS_FILE, np.zeros((3, 4), dtype=np.float32))
    assert train_main(train_args(tmp_path / "prepared", tmp_path / "job")) == 2
    assert any("expected finite vectors" in r.getMessage() for r in caplog.records)
    with pytest.raises(TrainingError):
        _initialise_embeddings(SentimentLSTM(NetworkConfig(50, 4, 4)), tmp_path / "prepared" / "train")
