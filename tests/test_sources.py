"""Reading reviews from every accepted layout (steps/sources.py)."""
from __future__ import annotations

import copy
import csv
import gzip
import io
import json
import logging
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from steps.sources import ACCEPTED_LAYOUTS, DataError, ReviewData, Split, check_dataset, load_reviews, stratified_split
from tests.synthetic import make_reviews, write_archive, write_csv, write_jsonl, write_tree

TRAIN_N, TEST_N = 120, 80


@pytest.fixture(scope="module")
def records() -> tuple[list[dict], list[dict]]:
    reviews = make_reviews(TRAIN_N + TEST_N, seed=7)
    return reviews[:TRAIN_N], reviews[TRAIN_N:]


def neg_first(records: list[dict]) -> list[dict]:
    """The order the aclImdb layouts give: every negative review, then every positive one, each in file order."""
    return [r for r in records if r["label"] == 0] + [r for r in records if r["label"] == 1]


def as_pairs(split: Split) -> list[tuple[str, int]]:
    return list(zip(split.texts, split.labels))


def pairs(records: list[dict]) -> list[tuple[str, int]]:
    return [(r["text"], r["label"]) for r in records]


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def jl(text, label) -> bytes:
    return json.dumps({"text": text, "label": label}).encode("utf-8")


# --- JSON Lines -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_jsonl_reads_every_record_in_file_order(tmp_path, records, gz):
    train, test = records
    folder = write_jsonl(tmp_path / "data", train, test, gz=gz)
    data = load_reviews(folder)
    assert as_pairs(data.train) == pairs(train)
    assert as_pairs(data.test) == pairs(test)
    assert data.layout == "JSON Lines"
    assert data.undecodable == 0 and data.empty == 0
    suffix = ".jsonl.gz" if gz else ".jsonl"
    assert data.sources == [str(folder / f"train{suffix}"), str(folder / f"test{suffix}")]
    again = load_reviews(folder)
    assert as_pairs(again.train) == as_pairs(data.train) and as_pairs(again.test) == as_pairs(data.test)


def test_jsonl_plain_and_gzip_give_the_same_data(tmp_path, records):
    train, test = records
    plain = load_reviews(write_jsonl(tmp_path / "plain", train, test, gz=False))
    packed = load_reviews(write_jsonl(tmp_path / "packed", train, test, gz=True))
    assert plain.train.sha256() == packed.train.sha256()
    assert plain.test.sha256() == packed.test.sha256()


def test_jsonl_accepts_every_label_spelling(tmp_path):
    spellings = [(0, 0), (1, 1), ("0", 0), ("1", 1), ("neg", 0), ("pos", 1), ("negative", 0), ("positive", 1),
                 (" Positive ", 1), ("NEG", 0), (True, 1), (False, 0)]
    train = [jl(f"review number {i}", raw) for i, (raw, _) in enumerate(spellings)]
    write_lines(tmp_path / "train.jsonl", train)
    write_lines(tmp_path / "test.jsonl", [jl("fine film", "pos"), jl("bad film", "negative")])
    data = load_reviews(tmp_path)
    assert data.train.labels == [want for _, want in spellings]
    assert data.train.texts == [f"review number {i}" for i in range(len(spellings))]
    assert data.test.labels == [1, 0]


def test_jsonl_blank_lines_are_ignored(tmp_path):
    write_lines(tmp_path / "train.jsonl", [jl("a good one", 1), b"", b"   ", jl("a bad one", 0)])
    write_lines(tmp_path / "test.jsonl", [jl("meh", 0), jl("yay", 1)])
    data = load_reviews(tmp_path)
    assert as_pairs(data.train) == [("a good one", 1), ("a bad one", 0)]
    assert data.empty == 0


def test_jsonl_bad_labels_are_counted_and_shown(tmp_path):
    bad = ["maybe", 2, None, "", 0.5, "good", "n/a"]
    lines = [jl("fine", 1), jl("poor", 0)] + [jl(f"text {i}", label) for i, label in enumerate(bad)]
    lines.append(json.dumps({"text": "no label at all"}).encode())
    write_lines(tmp_path / "train.jsonl", lines)
    write_lines(tmp_path / "test.jsonl", [jl("x", 0), jl("y", 1)])
    with pytest.raises(DataError) as error:
        load_reviews(tmp_path)
    message = str(error.value)
    assert "8 records have a missing or unknown label" in message
    assert "train.jsonl line 3: 'maybe'" in message
    assert "train.jsonl line 4: 2" in message
    assert message.count("train.jsonl line") == 5  # examples are capped, the count is not
    assert "0/1" in message and "neg/pos" in message


def test_jsonl_bad_labels_in_both_files_are_counted_together(tmp_path):
    write_lines(tmp_path / "train.jsonl", [jl("a", 1), jl("b", "yes")])
    write_lines(tmp_path / "test.jsonl", [jl("c", 0), jl("d", "no")])
    with pytest.raises(DataError, match=r"^2 records") as error:
        load_reviews(tmp_path)
    assert "train.jsonl line 2: 'yes'" in str(error.value) and "test.jsonl line 2: 'no'" in str(error.value)


def test_jsonl_line_that_is_not_json_names_file_and_line(tmp_path):
    write_lines(tmp_path / "train.jsonl", [jl("one", 1), jl("two", 0), b'{"text": "three", "label": 1'])
    write_lines(tmp_path / "test.jsonl", [jl("x", 0), jl("y", 1)])
    with pytest.raises(DataError, match=r"train\.jsonl line 3 is not JSON"):
        load_reviews(tmp_path)


def test_jsonl_line_without_text_is_an_error(tmp_path):
    write_lines(tmp_path / "train.jsonl", [jl("one", 1), json.dumps({"review": "two", "label": 0}).encode()])
    write_lines(tmp_path / "test.jsonl", [jl("x", 0), jl("y", 1)])
    with pytest.raises(DataError, match=r'train\.jsonl line 2 has no "text"'):
        load_reviews(tmp_path)


def test_jsonl_undecodable_line_is_skipped_and_counted(tmp_path, caplog):
    lines = [jl("good one", 1), b'{"text": "caf\xe9 \xff broken", "label": 0}', jl("bad one", 0)]
    write_lines(tmp_path / "train.jsonl", lines)
    write_lines(tmp_path / "test.jsonl", [jl("x", 0), b'{"text": "\xc3\x28", "label": 1}', jl("y", 1)])
    with caplog.at_level(logging.WARNING, logger="steps.sources"):
        data = load_reviews(tmp_path)
    assert data.undecodable == 2
    assert as_pairs(data.train) == [("good one", 1), ("bad one", 0)]
    assert as_pairs(data.test) == [("x", 0), ("y", 1)]
    assert any("2 reviews that are not valid UTF-8" in r.getMessage() for r in caplog.records)


def test_empty_and_whitespace_reviews_are_dropped_and_counted(tmp_path, caplog):
    write_lines(tmp_path / "train.jsonl", [jl("kept", 1), jl("", 0), jl("  \n\t ", 1), jl("also kept", 0)])
    write_lines(tmp_path / "test.jsonl", [jl(" ", 0), jl("test kept", 1), jl("and this", 0)])
    with caplog.at_level(logging.WARNING, logger="steps.sources"):
        data = load_reviews(tmp_path)
    assert data.empty == 3
    assert as_pairs(data.train) == [("kept", 1), ("also kept", 0)]
    assert as_pairs(data.test) == [("test kept", 1), ("and this", 0)]
    assert any("3 empty reviews" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("empty_split", ["train", "test"])
def test_a_split_with_nothing_usable_is_an_error(tmp_path, empty_split):
    good = [jl("fine", 1), jl("poor", 0)]
    useless = [jl("   ", 1), jl("", 0)]
    write_lines(tmp_path / "train.jsonl", useless if empty_split == "train" else good)
    write_lines(tmp_path / "test.jsonl", useless if empty_split == "test" else good)
    with pytest.raises(DataError, match=rf"the {empty_split} split .* holds no usable reviews"):
        load_reviews(tmp_path)


def test_only_undecodable_reviews_is_an_error(tmp_path):
    write_lines(tmp_path / "train.jsonl", [jl("fine", 1), jl("poor", 0)])
    write_lines(tmp_path / "test.jsonl", [b'{"text": "\xff", "label": 1}'])
    with pytest.raises(DataError, match="the test split"):
        load_reviews(tmp_path)


def test_truncated_jsonl_gz_is_a_data_error(tmp_path, records):
    folder = write_jsonl(tmp_path, *records, gz=True)
    raw = (folder / "train.jsonl.gz").read_bytes()
    (folder / "train.jsonl.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"cannot read .*train\.jsonl\.gz"):
        load_reviews(folder)


def test_corrupt_jsonl_gz_is_a_data_error(tmp_path, records):
    """Flipped bytes inside the compressed stream (a damaged download or disk) must be reported as bad data,
    not escape as a raw ``zlib.error``."""
    folder = write_jsonl(tmp_path, *records, gz=True)
    raw = bytearray((folder / "train.jsonl.gz").read_bytes())
    start = len(raw) // 3
    raw[start : start + 40] = bytes(b ^ 0x5A for b in raw[start : start + 40])
    (folder / "train.jsonl.gz").write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"train\.jsonl\.gz"):
        load_reviews(folder)


def test_only_one_jsonl_file_is_not_a_layout(tmp_path, records):
    write_jsonl(tmp_path, *records, gz=False)
    (tmp_path / "test.jsonl").unlink()
    with pytest.raises(DataError, match="no review data layout recognised"):
        load_reviews(tmp_path)


# --- aclImdb tree and archive --------------------------------------------------------------------------


def test_tree_at_the_folder_and_at_aclimdb(tmp_path, records):
    train, test = records
    root = write_tree(tmp_path / "input", train, test)
    assert root == tmp_path / "input" / "aclImdb"
    outer = load_reviews(tmp_path / "input")
    inner = load_reviews(root)
    for data in (outer, inner):
        assert as_pairs(data.train) == pairs(neg_first(train))
        assert as_pairs(data.test) == pairs(neg_first(test))
        assert "aclImdb directory tree" in data.layout
        assert data.sources == [str(root)]
    assert Counter(outer.train.labels) == Counter(r["label"] for r in train)


def test_tree_orders_files_by_number_not_by_name(tmp_path):
    root = tmp_path / "aclImdb"
    for split in ("train", "test"):
        for label in ("neg", "pos"):
            (root / split / label).mkdir(parents=True)
            for number in (10, 2, 1):  # "10_7.txt" sorts before "2_7.txt" by name
                (root / split / label / f"{number}_7.txt").write_text(f"{split} {label} {number}", encoding="utf-8")
    (root / "train" / "pos" / "README.txt").write_text("not a review", encoding="utf-8")
    data = load_reviews(tmp_path)
    assert data.train.texts == [f"train {label} {n}" for label in ("neg", "pos") for n in (1, 2, 10)]
    assert data.train.labels == [0, 0, 0, 1, 1, 1]
    assert data.test.texts == [f"test {label} {n}" for label in ("neg", "pos") for n in (1, 2, 10)]


def test_tree_undecodable_file_is_skipped_and_counted(tmp_path, records):
    train, test = records
    root = write_tree(tmp_path, train, test)
    (root / "train" / "pos" / "9999_9.txt").write_bytes(b"caf\xe9 is \xff not utf-8")
    (root / "test" / "neg" / "9999_1.txt").write_bytes(b"\x80\x81")
    data = load_reviews(tmp_path)
    assert data.undecodable == 2
    assert len(data.train) == len(train) and len(data.test) == len(test)
    assert as_pairs(data.train) == pairs(neg_first(train))


def test_tree_blank_review_file_is_dropped_and_counted(tmp_path, records):
    train, test = records
    root = write_tree(tmp_path, train, test)
    (root / "train" / "neg" / "9999_1.txt").write_bytes(b" \n ")
    data = load_reviews(tmp_path)
    assert data.empty == 1
    assert len(data.train) == len(train)


@pytest.mark.parametrize("given", ["folder", "file"])
def test_archive_in_a_folder_or_given_as_the_file(tmp_path, records, given):
    train, test = records
    archive = write_archive(tmp_path / "in" / "aclImdb_v1.tar.gz", train, test)
    data = load_reviews(archive.parent if given == "folder" else archive)
    assert as_pairs(data.train) == pairs(neg_first(train))
    assert as_pairs(data.test) == pairs(neg_first(test))
    assert data.layout == "archive aclImdb_v1.tar.gz"
    assert data.sources == [str(archive)]
    assert data.undecodable == 0


def test_uncompressed_tar_archive(tmp_path, records):
    train, test = records
    gz = write_archive(tmp_path / "tmp" / "a.tar.gz", train, test)
    plain = tmp_path / "in" / "reviews.tar"
    plain.parent.mkdir()
    plain.write_bytes(gzip.decompress(gz.read_bytes()))
    data = load_reviews(plain.parent)
    assert as_pairs(data.train) == pairs(neg_first(train))


def test_archive_undecodable_member_is_counted(tmp_path, records):
    train, test = records
    archive = tmp_path / "a.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for split, recs in (("train", train), ("test", test)):
            for i, r in enumerate(recs):
                blob = r["text"].encode()
                info = tarfile.TarInfo(f"aclImdb/{split}/{'pos' if r['label'] else 'neg'}/{i}_5.txt")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
        info = tarfile.TarInfo("aclImdb/train/pos/99999_9.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"\xff\xfe\xfd"))
    data = load_reviews(archive)
    assert data.undecodable == 1
    assert len(data.train) == len(train) and len(data.test) == len(test)


def test_archive_without_reviews_is_an_error(tmp_path):
    archive = tmp_path / "other.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("project/README.md")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    with pytest.raises(DataError, match="holds no train"):
        load_reviews(archive)


def test_truncated_archive_is_a_data_error(tmp_path, records):
    raw = write_archive(tmp_path / "good" / "aclImdb_v1.tar.gz", *records).read_bytes()
    bad = tmp_path / "bad" / "aclImdb_v1.tar.gz"
    bad.parent.mkdir()
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="cannot read archive"):
        load_reviews(bad.parent)


def test_garbage_archive_is_a_data_error(tmp_path):
    bad = tmp_path / "aclImdb_v1.tar.gz"
    bad.write_bytes(b"<html>404 Not Found</html>" * 50)
    with pytest.raises(DataError, match="cannot read archive"):
        load_reviews(tmp_path)


def test_corrupt_archive_is_a_data_error_not_a_partial_dataset(tmp_path, records):
    """Bytes flipped in the middle of the compressed stream: reading must fail, never silently keep the
    members before the damage (a model trained on part of the data with no warning)."""
    raw = bytearray(write_archive(tmp_path / "good" / "aclImdb_v1.tar.gz", *records).read_bytes())
    start = len(raw) // 2
    raw[start : start + 40] = bytes(b ^ 0x5A for b in raw[start : start + 40])
    bad = tmp_path / "bad" / "aclImdb_v1.tar.gz"
    bad.parent.mkdir()
    bad.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="cannot read archive"):
        load_reviews(bad.parent)


def test_split_sha256_is_the_same_whatever_layout_carried_the_records(tmp_path, records):
    train, test = records
    from_jsonl = load_reviews(write_jsonl(tmp_path / "jsonl", neg_first(train), neg_first(test)))
    from_tree = load_reviews(write_tree(tmp_path / "tree", train, test))
    from_archive = load_reviews(write_archive(tmp_path / "archive" / "aclImdb_v1.tar.gz", train, test))
    for name in ("train", "test"):
        digests = {getattr(d, name).sha256() for d in (from_jsonl, from_tree, from_archive)}
        assert len(digests) == 1, name
    assert from_jsonl.train.sha256() != from_jsonl.test.sha256()


def test_split_sha256_changes_with_any_text_or_label():
    base = Split(["good film", "bad film"], [1, 0])
    assert base.sha256() == Split(["good film", "bad film"], [1, 0]).sha256()
    assert base.sha256() != Split(["good film", "bad film"], [1, 1]).sha256()
    assert base.sha256() != Split(["good film", "bad  film"], [1, 0]).sha256()
    assert base.sha256() != Split(["bad film", "good film"], [0, 1]).sha256()
    # record boundaries count: the same characters split differently are different records
    assert Split(["ab", "c"], [1, 1]).sha256() != Split(["a", "bc"], [1, 1]).sha256()
    assert len(base.sha256()) == 64


# --- CSV ------------------------------------------------------------------------------------------------


def tricky_records() -> list[dict]:
    reviews = make_reviews(200, seed=11)
    reviews[0]["text"] = 'Great, really great: "the best", I said,\nthen again,\r\nand again.'
    reviews[1]["text"] = "Bad,, bad, bad\n\nand a line with a \"quote\" and a comma, here"
    reviews[2]["text"] = "plain one"
    return reviews


@pytest.mark.parametrize("given", ["folder", "file"])
def test_csv_reads_quoted_commas_and_newlines(tmp_path, given):
    reviews = tricky_records()
    path = write_csv(tmp_path / "in" / "IMDB Dataset.csv", reviews)
    data = load_reviews(path.parent if given == "folder" else path, csv_test_fraction=0.5, seed=3)
    everything = sorted(as_pairs(data.train) + as_pairs(data.test))
    assert everything == sorted(pairs(reviews))
    assert data.layout.startswith("CSV IMDB Dataset.csv")
    assert data.sources == [str(path)]
    assert data.undecodable == 0


@pytest.mark.parametrize("fraction", [0.2, 0.5])
def test_csv_test_split_is_stratified_seeded_and_disjoint(tmp_path, fraction):
    reviews = make_reviews(200, seed=5)  # 100 of each label
    path = write_csv(tmp_path / "reviews.csv", reviews)
    data = load_reviews(tmp_path, csv_test_fraction=fraction, seed=9)
    assert Counter(data.test.labels) == {0: round(100 * fraction), 1: round(100 * fraction)}
    assert Counter(data.train.labels) == {0: 100 - round(100 * fraction), 1: 100 - round(100 * fraction)}
    assert not set(data.train.texts) & set(data.test.texts)
    again = load_reviews(path, csv_test_fraction=fraction, seed=9)
    assert as_pairs(again.test) == as_pairs(data.test) and as_pairs(again.train) == as_pairs(data.train)
    other = load_reviews(path, csv_test_fraction=fraction, seed=10)
    assert set(other.test.texts) != set(data.test.texts)
    assert f"test split {fraction:.0%}" in data.layout


def test_csv_keeps_the_file_order_inside_each_split(tmp_path):
    reviews = make_reviews(100, seed=2)
    write_csv(tmp_path / "reviews.csv", reviews)
    data = load_reviews(tmp_path, csv_test_fraction=0.3, seed=1)
    position = {r["text"]: i for i, r in enumerate(reviews)}
    for split in (data.train, data.test):
        order = [position[t] for t in split.texts]
        assert order == sorted(order)


def test_csv_label_spellings_and_column_names(tmp_path):
    rows = [("text", "label")] + [(f"film {i}", spelling) for i, spelling in
                                  enumerate(["1", "0", "pos", "neg", "Positive", "NEGATIVE", "1", "0"])]
    (tmp_path / "x.csv").write_text("\n".join(",".join(r) for r in rows) + "\n", encoding="utf-8")
    data = load_reviews(tmp_path, csv_test_fraction=0.5, seed=0)
    labels = dict(as_pairs(data.train) + as_pairs(data.test))
    assert labels == {f"film {i}": want for i, want in enumerate([1, 0, 1, 0, 1, 0, 1, 0])}


def test_csv_missing_columns_names_the_header(tmp_path):
    (tmp_path / "x.csv").write_text("body,score\nnice film,positive\n", encoding="utf-8")
    with pytest.raises(DataError) as error:
        load_reviews(tmp_path)
    message = str(error.value)
    assert "x.csv" in message and "'body'" in message and "'score'" in message
    assert "review" in message and "sentiment" in message


def test_csv_bad_labels_are_counted(tmp_path):
    reviews = make_reviews(20, seed=1)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["review", "sentiment"])
    for i, r in enumerate(reviews):
        writer.writerow([r["text"], "unsure" if i in (3, 7, 8) else r["label"]])
    (tmp_path / "x.csv").write_text(buffer.getvalue(), encoding="utf-8")
    with pytest.raises(DataError, match=r"^3 records") as error:
        load_reviews(tmp_path)
    assert "x.csv row 5: 'unsure'" in str(error.value)


def test_csv_short_row_is_an_error(tmp_path):
    (tmp_path / "x.csv").write_text("review,sentiment\ngood,positive\nno label here\n", encoding="utf-8")
    with pytest.raises(DataError, match="row 3 has 1 columns"):
        load_reviews(tmp_path)


def test_csv_undecodable_review_is_skipped_and_counted(tmp_path):
    body = b"review,sentiment\n" + b"".join(f"film {i} fine,{'positive' if i % 2 else 'negative'}\n".encode() for i in range(20))
    body += b"caf\xe9 \xff,positive\n"
    (tmp_path / "x.csv").write_bytes(body)
    data = load_reviews(tmp_path, csv_test_fraction=0.5, seed=0)
    assert data.undecodable == 1
    assert len(data.train) + len(data.test) == 20


def test_csv_with_only_a_header_is_a_data_error(tmp_path):
    (tmp_path / "x.csv").write_text("review,sentiment\n", encoding="utf-8")
    with pytest.raises(DataError):
        load_reviews(tmp_path)


def test_empty_csv_is_a_data_error(tmp_path):
    (tmp_path / "x.csv").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        load_reviews(tmp_path)


def test_csv_saved_with_a_byte_order_mark(tmp_path):
    """Spreadsheet programs save "CSV UTF-8" with a BOM; the header must still be recognised."""
    reviews = make_reviews(40, seed=4)
    path = write_csv(tmp_path / "x.csv", reviews)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    data = load_reviews(tmp_path, csv_test_fraction=0.5, seed=0)
    assert len(data.train) + len(data.test) == 40


# --- layout detection -----------------------------------------------------------------------------------


def test_unknown_layout_lists_the_accepted_layouts(tmp_path):
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    (tmp_path / "reviews.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataError) as error:
        load_reviews(tmp_path)
    message = str(error.value)
    assert "no review data layout recognised" in message
    assert "notes.txt" in message and "reviews.parquet" in message
    for layout in ACCEPTED_LAYOUTS:
        assert layout in message


def test_empty_folder_says_it_found_nothing(tmp_path):
    with pytest.raises(DataError, match=r"found: nothing"):
        load_reviews(tmp_path)


def test_two_archives_are_ambiguous(tmp_path, records):
    write_archive(tmp_path / "a.tar.gz", *records)
    write_archive(tmp_path / "b.tar.gz", *records)
    with pytest.raises(DataError, match="no review data layout recognised"):
        load_reviews(tmp_path)


def test_missing_path_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="input not found"):
        load_reviews(tmp_path / "does-not-exist")


def test_hidden_files_are_not_layouts(tmp_path, records):
    write_jsonl(tmp_path, *records, gz=False)
    write_archive(tmp_path / ".cache.tar.gz", *records)  # hidden: ignored, so JSON Lines is not ambiguous
    data = load_reviews(tmp_path)
    assert data.layout == "JSON Lines"


# --- stratified_split and sample ------------------------------------------------------------------------


def labels_70_30() -> np.ndarray:
    labels = np.array([0] * 70 + [1] * 30)
    np.random.default_rng(0).shuffle(labels)
    return labels


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5, 0.9])
def test_stratified_split_properties(fraction):
    labels = labels_70_30()
    kept, carved = stratified_split(labels, fraction, seed=1)
    assert not set(kept.tolist()) & set(carved.tolist())
    assert sorted(kept.tolist() + carved.tolist()) == list(range(len(labels)))
    assert list(kept) == sorted(kept) and list(carved) == sorted(carved)
    for label, total in ((0, 70), (1, 30)):
        assert int((labels[carved] == label).sum()) == int(round(total * fraction))
        assert int((labels[kept] == label).sum()) == total - int(round(total * fraction))


def test_stratified_split_is_seeded():
    labels = labels_70_30()
    first = stratified_split(labels, 0.3, seed=5)
    second = stratified_split(labels, 0.3, seed=5)
    other = stratified_split(labels, 0.3, seed=6)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_stratified_split_rejects_bad_fractions(fraction):
    with pytest.raises(DataError, match="split fraction must be between 0 and 1"):
        stratified_split(np.array([0, 1, 0, 1]), fraction, seed=0)


def loaded(tmp_path: Path, train_n: int = 200, test_n: int = 100) -> ReviewData:
    reviews = make_reviews(train_n + test_n, seed=12)
    return load_reviews(write_jsonl(tmp_path, reviews[:train_n], reviews[train_n:]))


def test_sample_is_stratified_seeded_and_a_subset(tmp_path):
    data = loaded(tmp_path)
    original_train = set(as_pairs(data.train))
    first, second = copy.deepcopy(data), copy.deepcopy(data)
    first.sample(40, seed=3)
    second.sample(40, seed=3)
    assert len(first.train) == 40 and len(first.test) == 40
    assert Counter(first.train.labels) == {0: 20, 1: 20}
    assert Counter(first.test.labels) == {0: 20, 1: 20}
    assert set(as_pairs(first.train)) <= original_train
    assert as_pairs(first.train) == as_pairs(second.train) and as_pairs(first.test) == as_pairs(second.test)
    third = copy.deepcopy(data)
    third.sample(40, seed=4)
    assert set(third.train.texts) != set(first.train.texts)


def test_sample_larger_than_a_split_keeps_it_whole(tmp_path):
    data = loaded(tmp_path, train_n=200, test_n=60)
    before_test = as_pairs(data.test)
    data.sample(100, seed=0)
    assert len(data.train) == 100
    assert as_pairs(data.test) == before_test


@pytest.mark.parametrize("per_split", [10, 25, 51])
def test_sample_keeps_exactly_n_per_split(tmp_path, per_split):
    """``--sample N`` promises N reviews per split, odd N included (50/50 labels cannot both round up)."""
    data = loaded(tmp_path)
    data.sample(per_split, seed=0)
    assert len(data.train) == per_split
    assert len(data.test) == per_split
    assert abs(data.train.labels.count(1) - data.train.labels.count(0)) <= 1


# --- check_dataset: the cheap refusal before a run starts ----------------------------------------------


@pytest.mark.parametrize("layout", ["jsonl", "jsonl.gz", "tree", "archive", "csv"])
def test_check_dataset_accepts_every_layout(tmp_path, records, layout):
    train, test = records
    path = {"jsonl": lambda: write_jsonl(tmp_path, train, test, gz=False),
            "jsonl.gz": lambda: write_jsonl(tmp_path, train, test, gz=True),
            "tree": lambda: write_tree(tmp_path, train, test),
            "archive": lambda: write_archive(tmp_path / "aclImdb_v1.tar.gz", train, test),
            "csv": lambda: write_csv(tmp_path / "IMDB Dataset.csv", train + test)}[layout]()
    assert check_dataset(path) is None
    assert check_dataset(tmp_path) is None


def _no_layout(tmp_path: Path, records) -> Path:
    (tmp_path / "notes.txt").write_text("not reviews", encoding="utf-8")
    return tmp_path


def _csv_without_review_column(tmp_path: Path, records) -> Path:
    (tmp_path / "x.csv").write_text("body,sentiment\nnice film,positive\n", encoding="utf-8")
    return tmp_path


def _csv_header_only(tmp_path: Path, records) -> Path:
    (tmp_path / "x.csv").write_text("review,sentiment\n\n", encoding="utf-8")
    return tmp_path


def _empty_csv(tmp_path: Path, records) -> Path:
    (tmp_path / "x.csv").write_text("", encoding="utf-8")
    return tmp_path


def _empty_test_jsonl(tmp_path: Path, records) -> Path:
    write_jsonl(tmp_path, records[0], [], gz=False)
    return tmp_path


def _first_line_not_json(tmp_path: Path, records) -> Path:
    write_lines(tmp_path / "train.jsonl", [b"review,sentiment", jl("fine", 1)])
    write_lines(tmp_path / "test.jsonl", [jl("poor", 0)])
    return tmp_path


def _tree_without_test_reviews(tmp_path: Path, records) -> Path:
    root = write_tree(tmp_path, *records)
    for file in (root / "test").rglob("*.txt"):
        file.unlink()
    return tmp_path


def _archive_without_reviews(tmp_path: Path, records) -> Path:
    with tarfile.open(tmp_path / "other.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("project/README.md")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    return tmp_path


def _garbage_archive(tmp_path: Path, records) -> Path:
    (tmp_path / "aclImdb_v1.tar.gz").write_bytes(b"<html>404 Not Found</html>" * 50)
    return tmp_path


def _missing(tmp_path: Path, records) -> Path:
    return tmp_path / "nowhere"


@pytest.mark.parametrize("make, says", [
    (_no_layout, "no review data layout recognised"),
    (_csv_without_review_column, "x.csv needs a review column"),
    (_csv_header_only, "holds no labeled reviews below its header"),
    (_empty_csv, "x.csv is empty"),
    (_empty_test_jsonl, "the test split"),
    (_first_line_not_json, "train.jsonl line 1 is not JSON"),
    (_tree_without_test_reviews, "the test split"),
    (_archive_without_reviews, "holds no train|test/pos|neg/*.txt reviews"),
    (_garbage_archive, "cannot read archive"),
    (_missing, "input not found"),
])
def test_check_dataset_refuses_with_the_readers_own_message(tmp_path, records, make, says):
    path = make(tmp_path, records)
    with pytest.raises(DataError) as checked:
        check_dataset(path)
    with pytest.raises(DataError) as read:
        load_reviews(path)
    assert says in str(checked.value)
    assert str(checked.value) == str(read.value)


def test_check_dataset_reads_only_the_first_records(tmp_path, records):
    """What only a full read finds is the step's to report: the check stops at each split's first review."""
    train, test = records
    write_jsonl(tmp_path / "jsonl", train, test, gz=False)
    with open(tmp_path / "jsonl" / "train.jsonl", "ab") as handle:
        handle.write(b"not json\n")
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "x.csv").write_text("review,sentiment\ngood,positive\nno label here\n", encoding="utf-8")
    write_archive(tmp_path / "archive" / "aclImdb_v1.tar.gz", train, [])  # no test split
    for folder in ("jsonl", "csv", "archive"):
        assert check_dataset(tmp_path / folder) is None
        with pytest.raises(DataError):
            load_reviews(tmp_path / folder)
