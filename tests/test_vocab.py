"""Tests for serve.vocab: building, encoding, saving and loading the vocabulary, and pad_batch."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from serve.text import TextNormalizer
from serve.vocab import PAD_ID, UNK_ID, VOCAB_FORMAT, Vocabulary, pad_batch
from tests.synthetic import make_reviews


def test_reserved_ids():
    assert PAD_ID == 0 and UNK_ID == 1
    vocab = Vocabulary(["good", "bad"])
    assert vocab.encode(["good", "bad"]) == [2, 3]
    assert len(vocab) == 4  # padding and unknown included


def test_build_orders_by_frequency_then_alphabetically():
    counts = Counter({"b": 5, "a": 5, "c": 7, "d": 1, "e": 5})
    vocab = Vocabulary.build(counts, max_size=100)
    assert vocab.tokens == ["c", "a", "b", "e", "d"]
    assert vocab.encode(["c", "a", "b", "e", "d"]) == [2, 3, 4, 5, 6]


def test_build_is_independent_of_insertion_order():
    items = [("zeta", 3), ("alpha", 3), ("mid", 3), ("top", 9), ("low", 1)]
    forward = Vocabulary.build(Counter(dict(items)), max_size=10)
    backward = Vocabulary.build(Counter(dict(reversed(items))), max_size=10)
    assert forward.tokens == backward.tokens == ["top", "alpha", "mid", "zeta", "low"]


def test_build_respects_max_size_counting_reserved_ids():
    counts = Counter({"a": 4, "b": 3, "c": 2, "d": 1})
    vocab = Vocabulary.build(counts, max_size=4)
    assert vocab.tokens == ["a", "b"]
    assert len(vocab) == 4
    assert Vocabulary.build(counts, max_size=3).tokens == ["a"]


def test_build_applies_min_count():
    counts = Counter({"often": 5, "twice": 2, "once": 1, "alsoonce": 1})
    assert Vocabulary.build(counts, max_size=100, min_count=2).tokens == ["often", "twice"]
    assert Vocabulary.build(counts, max_size=100, min_count=6).tokens == []


@pytest.mark.parametrize("max_size", [2, 1, 0, -5])
def test_build_rejects_max_size_below_three(max_size):
    with pytest.raises(ValueError, match="at least 3"):
        Vocabulary.build(Counter({"a": 1}), max_size=max_size)


def test_build_from_real_tokens():
    normalizer = TextNormalizer()
    counts = Counter(tok for r in make_reviews(50, seed=0) for tok in normalizer.tokens(r["text"]))
    vocab = Vocabulary.build(counts, max_size=20)
    assert len(vocab) == 20
    frequencies = [counts[t] for t in vocab.tokens]
    assert frequencies == sorted(frequencies, reverse=True)
    assert min(frequencies) >= max(counts[t] for t in counts if t not in vocab.tokens)


def test_duplicate_tokens_are_rejected():
    with pytest.raises(ValueError, match="unique"):
        Vocabulary(["a", "b", "a"])


def test_encode_maps_unknown_tokens_to_one():
    vocab = Vocabulary(["good", "bad"])
    assert vocab.encode(["good", "never-seen", "bad", ""]) == [2, UNK_ID, 3, UNK_ID]
    assert vocab.encode([]) == []
    assert vocab.encode(iter(["bad"])) == [3]


def test_encode_does_not_grow_the_vocabulary():
    vocab = Vocabulary(["good"])
    vocab.encode(["x", "y", "z"])
    assert len(vocab) == 3
    assert vocab.encode(["x"]) == [UNK_ID]


def test_save_load_round_trip(tmp_path):
    vocab = Vocabulary(["film", "don't", "café", "naïve", "10"])
    path = tmp_path / "vocab.json"
    vocab.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["format"] == VOCAB_FORMAT
    assert data["pad_id"] == PAD_ID and data["unk_id"] == UNK_ID
    loaded = Vocabulary.load(path)
    assert loaded.tokens == vocab.tokens
    probe = ["naïve", "film", "unknown", "don't"]
    assert loaded.encode(probe) == vocab.encode(probe)


def test_load_accepts_str_path(tmp_path):
    path = tmp_path / "v.json"
    Vocabulary(["a"]).save(path)
    assert Vocabulary.load(str(path)).tokens == ["a"]


@pytest.mark.parametrize(
    "content",
    [
        json.dumps({"tokens": ["a", "b"]}),  # no format marker
        json.dumps({"format": "something-else", "tokens": ["a"]}),
        json.dumps({"format": VOCAB_FORMAT, "tokens": "a b"}),  # tokens not a list
        json.dumps(["a", "b"]),  # a bare list
        json.dumps({"format": VOCAB_FORMAT}),
    ],
)
def test_load_of_a_foreign_json_file_is_a_clear_value_error(tmp_path, content):
    path = tmp_path / "config.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match="not a sentiment-mlops vocabulary") as info:
        Vocabulary.load(path)
    assert str(path) in str(info.value)


def test_load_of_a_non_json_file_is_a_clear_value_error(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_bytes(b"\x80\x81 not json at all")
    with pytest.raises(ValueError, match="cannot read vocabulary") as info:
        Vocabulary.load(path)
    assert str(path) in str(info.value)


def test_load_of_a_missing_file_is_a_clear_value_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read vocabulary"):
        Vocabulary.load(tmp_path / "nope.json")


# --- pad_batch ---------------------------------------------------------------------------------------


def test_pad_batch_right_pads_and_reports_lengths():
    ids, lengths = pad_batch([[5, 6, 7], [8], [9, 10]], max_len=5)
    assert ids.shape == (3, 5)
    assert ids.tolist() == [[5, 6, 7, 0, 0], [8, 0, 0, 0, 0], [9, 10, 0, 0, 0]]
    assert lengths.tolist() == [3, 1, 2]


def test_pad_batch_tail_truncation_keeps_the_end():
    ids, lengths = pad_batch([[1, 2, 3, 4, 5, 6]], max_len=4, truncate="tail")
    assert ids.tolist() == [[3, 4, 5, 6]]
    assert lengths.tolist() == [4]


def test_pad_batch_head_truncation_keeps_the_start():
    ids, lengths = pad_batch([[1, 2, 3, 4, 5, 6]], max_len=4, truncate="head")
    assert ids.tolist() == [[1, 2, 3, 4]]
    assert lengths.tolist() == [4]


def test_pad_batch_default_is_tail():
    assert pad_batch([[2, 3, 4]], max_len=2)[0].tolist() == [[3, 4]]


def test_pad_batch_exact_length_is_untouched():
    for side in ("head", "tail"):
        ids, lengths = pad_batch([[7, 8, 9]], max_len=3, truncate=side)
        assert ids.tolist() == [[7, 8, 9]] and lengths.tolist() == [3]


def test_pad_batch_empty_sequence_becomes_one_unknown():
    for side in ("head", "tail"):
        ids, lengths = pad_batch([[], [4, 5]], max_len=3, truncate=side)
        assert ids.tolist() == [[UNK_ID, 0, 0], [4, 5, 0]]
        assert lengths.tolist() == [1, 2]


def test_pad_batch_max_len_one():
    ids, lengths = pad_batch([[3, 4, 5], [6]], max_len=1, truncate="tail")
    assert ids.tolist() == [[5], [6]] and lengths.tolist() == [1, 1]
    ids, _ = pad_batch([[3, 4, 5], [6]], max_len=1, truncate="head")
    assert ids.tolist() == [[3], [6]]


def test_pad_batch_dtypes_and_empty_batch():
    ids, lengths = pad_batch([[2]], max_len=3)
    assert ids.dtype == np.int32 and lengths.dtype == np.int32
    ids, lengths = pad_batch([], max_len=3)
    assert ids.shape == (0, 3) and lengths.shape == (0,)


def test_pad_batch_accepts_tuples():
    ids, lengths = pad_batch([(2, 3), (4,)], max_len=2)
    assert ids.tolist() == [[2, 3], [4, 0]] and lengths.tolist() == [2, 1]


def test_pad_batch_rejects_unknown_truncate_side():
    with pytest.raises(ValueError, match="truncate"):
        pad_batch([[1]], max_len=2, truncate="middle")


def test_pad_batch_round_trips_through_encode():
    vocab = Vocabulary(["great", "film", "bad"])
    sequences = [vocab.encode("great film".split()), vocab.encode("bad bad unseen film great".split()), vocab.encode([])]
    ids, lengths = pad_batch(sequences, max_len=4, truncate="tail")
    assert ids.tolist() == [[2, 3, 0, 0], [4, 1, 3, 2], [1, 0, 0, 0]]
    assert lengths.tolist() == [2, 4, 1]
    # Nothing beyond a row's length is anything but padding.
    for row, length in zip(ids, lengths):
        assert (row[length:] == PAD_ID).all()
        assert (row[:length] != PAD_ID).all()
