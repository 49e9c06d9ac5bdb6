"""Several datasets in one run (steps/datasets.py and the preprocessing step): how a data folder
names them, how each is split, and what Preprocess writes for each."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from serve.text import TextConfig
from steps.arrays import load_split_arrays, load_split_datasets
from steps.datasets import DATASET_FILE, dataset_folders, describe_dataset, load_corpus
from steps.preprocess import PreprocessOptions, run
from steps.sources import DataError
from tests.synthetic import make_reviews, make_sentences, write_jsonl, write_sst

OPTIONS = PreprocessOptions(vocab_size=2_000, min_count=1, validation_fraction=0.2, seed=3, workers=1, embedding_dim=8,
                            text=TextConfig(stem=False, remove_stopwords=False, max_len=48, truncate="tail"))


def mixed(folder: Path) -> Path:
    """A prefix with a folder per dataset: IMDb-like reviews as JSON Lines and SST-2's files with a dev split."""
    write_jsonl(folder / "imdb", make_reviews(120, seed=1), make_reviews(40, seed=2), unlabeled=make_reviews(30, seed=5))
    write_sst(folder / "sst2", make_sentences(80, seed=3), make_sentences(30, seed=4), dev=make_sentences(20, seed=6))
    return folder


def test_a_folder_holding_one_dataset_is_that_dataset(tmp_path):
    folder = write_jsonl(tmp_path / "only", make_reviews(20), make_reviews(10))
    assert dataset_folders(folder) == [(None, folder)]
    assert describe_dataset(folder) == ("imdb", "reviews")


def test_a_folder_of_folders_is_one_dataset_each_named_by_its_folder(tmp_path):
    folder = mixed(tmp_path / "data")
    assert dataset_folders(folder) == [("imdb", folder / "imdb"), ("sst2", folder / "sst2")]
    assert describe_dataset(folder / "sst2") == ("sst2", "sentences")


def test_a_sub_folder_without_data_is_named_not_skipped(tmp_path):
    folder = mixed(tmp_path / "data")
    (folder / "notes").mkdir()
    (folder / "notes" / "readme.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(DataError, match=r"dataset folder .*notes holds no accepted layout"):
        dataset_folders(folder)


def test_a_dataset_folder_name_must_be_usable_as_a_name(tmp_path):
    folder = mixed(tmp_path / "data")
    (folder / "sst2").rename(folder / "My Sentences")
    with pytest.raises(DataError, match="dataset name 'My Sentences' must be"):
        dataset_folders(folder)


def test_dataset_json_names_a_dataset_and_its_kind(tmp_path):
    folder = write_jsonl(tmp_path / "mine", make_sentences(40), make_sentences(20))
    (folder / DATASET_FILE).write_text(json.dumps({"name": "tweets", "kind": "sentences"}), encoding="utf-8")
    assert describe_dataset(folder) == ("tweets", "sentences")
    corpus = load_corpus(folder, 0.25)
    assert [(d.name, d.kind) for d in corpus.datasets] == [("tweets", "sentences")]


@pytest.mark.parametrize("content, message", [("{", "is not JSON"), ('{"kind": "tweets"}', 'a "kind" of reviews or sentences'),
                                              ('{"name": "x", "colour": "red"}', "must be an object")])
def test_a_bad_dataset_json_is_refused_naming_the_file(tmp_path, content, message):
    folder = write_jsonl(tmp_path / "mine", make_reviews(20), make_reviews(10))
    (folder / DATASET_FILE).write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message) as error:
        load_corpus(folder, 0.25)
    assert DATASET_FILE in str(error.value)


def test_under_a_prefix_the_folder_names_the_dataset_whatever_dataset_json_says(tmp_path):
    folder = mixed(tmp_path / "data")
    (folder / "imdb" / DATASET_FILE).write_text(json.dumps({"name": "sst2"}), encoding="utf-8")
    assert [d.name for d in load_corpus(folder, 0.25).datasets] == ["imdb", "sst2"]


def test_each_dataset_keeps_its_splits_and_uses_its_own_validation(tmp_path):
    corpus = load_corpus(mixed(tmp_path / "data"), 0.25)
    imdb, sst = corpus.datasets
    assert (imdb.name, imdb.kind, imdb.validation_from) == ("imdb", "reviews", "carved from its training split")
    assert (sst.name, sst.kind, sst.validation_from) == ("sst2", "sentences", "its own validation split")
    assert len(corpus.train) == 90 + 80 and len(corpus.validation) == 30 + 20 and len(corpus.test) == 40 + 30
    assert corpus.test.dataset == [0] * 40 + [1] * 30
    assert corpus.validation.dataset == [0] * 30 + [1] * 20
    assert len(corpus.unlabeled) == 30


def test_one_dataset_keeps_the_fingerprint_it_had_before_several_were_possible(tmp_path):
    folder = write_jsonl(tmp_path / "only", make_reviews(20), make_reviews(10))
    from steps.sources import load_reviews

    data = load_reviews(folder)
    assert load_corpus(folder, 0.25).data_sha256() == {"train": data.train.sha256(), "test": data.test.sha256()}
    several = load_corpus(mixed(tmp_path / "data"), 0.25).data_sha256()
    assert several != load_corpus(tmp_path / "data" / "imdb", 0.25).data_sha256()


def test_preprocess_writes_each_text_with_its_dataset_and_kind(tmp_path):
    stats = run(mixed(tmp_path / "data"), tmp_path / "out", OPTIONS)
    assert [(d["name"], d["kind"]) for d in stats["datasets"]] == [("imdb", "reviews"), ("sst2", "sentences")]
    assert {d["name"]: d["splits"]["test"]["reviews"] for d in stats["datasets"]} == {"imdb": 40, "sst2": 30}
    assert stats["splits"]["test"]["reviews"] == 70
    for split in ("train", "validation", "test"):  # each dataset's figures add up to the split's
        parts = [d["splits"][split] for d in stats["datasets"]]
        assert sum(p["tokens"] for p in parts) == stats["splits"][split]["tokens"]
        unknown = sum(p["unknown_token_rate"] * p["tokens"] for p in parts) / stats["splits"][split]["tokens"]
        assert unknown == pytest.approx(stats["splits"][split]["unknown_token_rate"], abs=1e-4)
    lines = [json.loads(line) for line in (tmp_path / "out" / "test" / "reviews.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["dataset"], r["kind"]) for r in lines] == [("imdb", "reviews")] * 40 + [("sst2", "sentences")] * 30
    assert lines[-1]["text"].endswith(" .") is False  # SST-2's sentences are detokenized: "... word."
    for split, expected in (("train", [0] * 96 + [1] * 80), ("validation", [0] * 24 + [1] * 20), ("test", [0] * 40 + [1] * 30)):
        rows = len(load_split_arrays(tmp_path / "out" / split)[2])
        assert load_split_datasets(tmp_path / "out" / split, rows).tolist() == expected


def test_a_split_written_before_several_datasets_reads_as_one(tmp_path):
    from steps.arrays import ARRAYS_FILE

    folder = tmp_path / "old"
    folder.mkdir()
    np.savez(folder / ARRAYS_FILE, ids=np.ones((3, 4), dtype=np.uint16), lengths=np.full(3, 4, dtype=np.int32),
             labels=np.array([0, 1, 0], dtype=np.int8))
    assert load_split_datasets(folder, 3).tolist() == [0, 0, 0]


@pytest.mark.parametrize("beside", ["jsonl", "archive"])
def test_a_dataset_beside_a_dataset_folder_is_refused_not_half_read(tmp_path, beside):
    """The download cache holds aclImdb_v1.tar.gz beside sst2/: reading either alone would drop the other unsaid."""
    from tests.synthetic import write_archive

    folder = tmp_path / "cache"
    if beside == "jsonl":
        write_jsonl(folder, make_reviews(20), make_reviews(10))
    else:
        write_archive(folder / "aclImdb_v1.tar.gz", make_reviews(20), make_reviews(10))
    write_sst(folder / "sst2", make_sentences(20), make_sentences(10))
    with pytest.raises(DataError, match=r"holds a dataset \(.*\) and another in its folder sst2/"):
        dataset_folders(folder)


def test_the_aclimdb_tree_is_one_dataset_with_its_own_folders(tmp_path):
    from tests.synthetic import write_tree

    root = write_tree(tmp_path / "data", make_reviews(20), make_reviews(10)).parent
    assert dataset_folders(root) == [(None, root)]


def test_json_lines_may_ship_their_own_validation_split(tmp_path):
    folder = write_jsonl(tmp_path / "mine", make_reviews(40, seed=1), make_reviews(20, seed=2), gz=False)
    (folder / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in make_reviews(12, seed=3)), encoding="utf-8")
    corpus = load_corpus(folder, 0.25)
    assert (len(corpus.train), len(corpus.validation), len(corpus.test)) == (40, 12, 20)
    assert corpus.datasets[0].validation_from == "its own validation split"
