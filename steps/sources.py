"""Readers for the review data layouts users actually have.

Accepted, in the input directory (or given as the file itself):

- ``aclImdb_v1.tar.gz`` (any ``*.tar.gz``/``*.tgz``/``*.tar`` holding ``train|test/pos|neg/*.txt``);
- its unpacked ``aclImdb/`` tree (or a directory that has ``train/pos`` ... itself);
- ``train.jsonl[.gz]`` and ``test.jsonl[.gz]`` with ``text`` and ``label`` per line (and
  ``validation.jsonl[.gz]`` when the dataset ships its own validation split);
- SST-2's ``stsa.binary.train`` and ``stsa.binary.test`` (and ``stsa.binary.dev``), one labeled
  sentence per line (read by ``steps/sst.py``);
- one ``*.csv`` with a review column and a sentiment column (the 50k "IMDB Dataset.csv" shape);
  it has no split, so a seeded, stratified test split is carved from it.

Unlabeled reviews (``train/unsup/`` in the archive and tree, ``unsup.jsonl[.gz]`` beside the JSON
Lines) are read too when present: they only ever serve to learn word vectors.

``load_reviews`` reads them all; ``check_dataset`` only looks, cheaply, whether a path holds
reviews in one of these layouts, and refuses it with the message the readers would give.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import re
import tarfile
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serve.text import REVIEWS

log = logging.getLogger(__name__)

ACCEPTED_LAYOUTS = (
    "the official aclImdb_v1.tar.gz archive (or any .tar.gz/.tgz/.tar holding train|test/pos|neg/*.txt)",
    "its unpacked aclImdb/ directory",
    "JSON Lines shards train-NNNNN.jsonl.gz, test-NNNNN.jsonl.gz (and validation-, unsup-), as staging writes them",
    "train.jsonl[.gz] and test.jsonl[.gz] with 'text' and 'label' (0/1 or neg/pos) per line "
    "(and optionally validation.jsonl[.gz] alike, and unsup.jsonl[.gz] with unlabeled 'text')",
    "SST-2 as Yoon Kim prepared it: stsa.binary.train and stsa.binary.test (and optionally stsa.binary.dev), "
    "one 'LABEL sentence' per line, label 0 or 1",
    "one .csv file with a review column and a sentiment column (the 50k 'IMDB Dataset.csv' shape)",
)
# What a dataset is called unless its layout (SST-2's files), a dataset.json or a folder says otherwise.
DEFAULT_NAME = "imdb"
_LABELS = {"0": 0, "1": 1, "neg": 0, "pos": 1, "negative": 0, "positive": 1}
_TREE_MEMBER = re.compile(r"(?:^|/)(train|test)/(pos|neg|unsup)/(\d+)(?:_\d+)?\.txt$")
_CSV_TEXT_COLUMNS = ("review", "text")
_CSV_LABEL_COLUMNS = ("sentiment", "label")
_MAX_BAD_LABEL_EXAMPLES = 5
_JSONL_LAYOUT = "JSON Lines"


class DataError(ValueError):
    """Input data that cannot be used; the message says what is wrong and how to fix it."""


@dataclass
class Split:
    texts: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, text: str, label: int) -> None:
        self.texts.append(text)
        self.labels.append(label)

    def sha256(self) -> str:
        """A fingerprint of the records themselves, the same whatever layout carried them."""
        digest = hashlib.sha256()
        for text, label in zip(self.texts, self.labels):
            digest.update(f"{label}\t{len(text)}\t".encode())
            digest.update(text.encode("utf-8"))
        return digest.hexdigest()


@dataclass
class ReviewData:
    train: Split
    test: Split
    layout: str
    undecodable: int = 0
    sources: list[str] = field(default_factory=list)
    empty: int = 0
    # Reviews without a label (IMDb's train/unsup): used only to learn word vectors.
    unlabeled: list[str] = field(default_factory=list)
    # What one record is ("reviews", or "sentences" for SST-2) and which dataset it came from.
    kind: str = REVIEWS
    name: str = DEFAULT_NAME
    # A split the dataset ships for choosing epochs (SST-2's dev file); None: carve one from train.
    validation: Split | None = None

    def labeled_splits(self) -> list[tuple[str, Split]]:
        """The labeled splits by name: train, test, and validation when the dataset ships one."""
        splits = [("train", self.train), ("test", self.test)]
        return splits + ([("validation", self.validation)] if self.validation is not None else [])

    def drop_empty(self) -> None:
        """Blank reviews teach nothing and the serving side refuses them: drop and count them."""
        for _, split in self.labeled_splits():
            keep = [i for i, text in enumerate(split.texts) if text.strip()]
            self.empty += len(split) - len(keep)
            split.texts = [split.texts[i] for i in keep]
            split.labels = [split.labels[i] for i in keep]
        self.unlabeled = [text for text in self.unlabeled if text.strip()]

    def sample(self, per_split: int, seed: int) -> None:
        """Keep a seeded, stratified ``per_split`` reviews of each split (for quick looks and demos)."""
        for name, split in self.labeled_splits():
            if per_split < len(split):
                rows = stratified_sample(np.asarray(split.labels), per_split, seed)
                setattr(self, name, Split([split.texts[i] for i in rows], [split.labels[i] for i in rows]))
        self.unlabeled = self.unlabeled[:per_split]


class _LabelChecker:
    """Collects unparseable labels so that one error can list them all."""

    def __init__(self) -> None:
        self.bad: list[str] = []
        self.bad_count = 0

    def parse(self, value: object, where: str) -> int | None:
        key = str(value).strip().lower() if value is not None else ""
        if isinstance(value, bool):
            key = "1" if value else "0"
        label = _LABELS.get(key)
        if label is None:
            self.bad_count += 1
            if len(self.bad) < _MAX_BAD_LABEL_EXAMPLES:
                self.bad.append(f"{where}: {value!r}")
        return label

    def raise_if_bad(self) -> None:
        if self.bad_count:
            raise DataError(
                f"{self.bad_count:,} records have a missing or unknown label (accepted: 0/1, neg/pos, "
                f"negative/positive), for example {'; '.join(self.bad)}. Fix or remove those records."
            )


def load_reviews(path: Path, csv_test_fraction: float = 0.5, seed: int = 42, unlabeled: bool = True) -> ReviewData:
    """Find the layout under ``path`` and read every labeled review from it (and the unlabeled ones if asked)."""
    path = Path(path)
    layout = find_layout(path)
    if layout.kind == "tree":
        data = _read_tree(layout.paths[0], unlabeled)
    elif layout.kind == "jsonl":
        data = _read_jsonl(layout.paths[0], layout.paths[1], unlabeled)
    elif layout.kind == "sst":
        from steps.sst import read_sst  # steps.sst builds on this module's types

        data = read_sst(layout.paths[0], layout.paths[1], layout.paths[2] if len(layout.paths) > 2 else None)
    elif layout.kind == "archive":
        data = _read_archive(layout.paths[0], unlabeled)
    elif layout.kind == "shards":
        data = _read_shards(layout.paths[0], unlabeled)
    else:
        data = _read_csv(layout.paths[0], csv_test_fraction, seed)
    data.drop_empty()
    if data.empty:
        log.warning("skipped %d empty reviews", data.empty)
    for name, split in data.labeled_splits():
        if not len(split):
            raise _empty_split(name, path, data.layout)
    if data.undecodable:
        log.warning("skipped %d reviews that are not valid UTF-8", data.undecodable)
    return data


def check_dataset(path: Path) -> None:
    """Refuse ``path`` unless it holds reviews in an accepted layout, with the readers' own messages.

    Cheap, so that a command can refuse before it starts anything: it finds the layout as
    ``load_reviews`` does and looks no further than the first reviews (a review file of each
    split in the tree, the first record of each JSON Lines file, archive members up to the
    first review, a CSV's header and first row). What only a full read finds (a bad label far
    down a file, a truncated archive, an archive without a test split) is the step's to report.
    """
    path = Path(path)
    layout = find_layout(path)
    if layout.kind == "tree":
        root = layout.paths[0]
        for name in ("train", "test"):
            if not any(_TREE_MEMBER.search(f"{name}/{label}/{file.name}")
                       for label in ("neg", "pos") for file in (root / name / label).glob("*.txt")):
                raise _empty_split(name, path, _tree_layout(root))
    elif layout.kind == "jsonl":
        for name, file in zip(("train", "test"), layout.paths):
            if not _has_jsonl_record(file):
                raise _empty_split(name, path, _JSONL_LAYOUT)
    elif layout.kind == "sst":
        from steps.sst import LAYOUT, has_sentence  # steps.sst builds on this module's types

        for name, file in zip(("train", "test", "validation"), layout.paths):
            if not has_sentence(file):
                raise _empty_split(name, path, LAYOUT)
    elif layout.kind == "archive":
        _check_archive(layout.paths[0])
    elif layout.kind == "shards":
        from steps.shards import shard_files  # steps.shards builds on this module's readers

        splits = {key.rsplit("/", 1)[-1].split("-", 1)[0] for key, _ in shard_files(path)}
        for name in ("train", "test"):
            if name not in splits:
                raise DataError(f"the {name} split in {path} (JSON Lines shards) has no {name}-NNNNN.jsonl.gz shard")
    else:
        _check_csv(layout.paths[0])


@dataclass(frozen=True)
class Layout:
    kind: str  # "tree", "jsonl", "sst", "archive" or "csv"
    paths: tuple[Path, ...]  # the tree's root; train and test files; SST-2's train, test (and dev); the archive; the CSV

    def describe(self) -> str:
        """For messages: the kind and the files or folder it was found in."""
        return f"{self.kind}: {', '.join(p.name for p in self.paths)}"


def find_layout(path: Path) -> Layout:
    """Which accepted layout ``path`` holds (the first of tree, JSON Lines, SST-2, one archive, one CSV)."""
    if not path.exists():
        raise DataError(f"input not found: {path}. Pass the folder (or file) that holds the reviews.")
    candidates = [path] if path.is_file() else sorted(p for p in path.iterdir() if not p.name.startswith("."))
    archives = [p for p in candidates if p.is_file() and p.name.endswith((".tar.gz", ".tgz", ".tar"))]
    jsonl = {name: _first_existing(path, name) for name in ("train", "test")} if path.is_dir() else {}
    csvs = [p for p in candidates if p.is_file() and p.suffix.lower() == ".csv"]
    tree = _find_tree(path) if path.is_dir() else None

    if tree is not None:
        return Layout("tree", (tree,))
    if path.is_dir() and _has_shards(path):
        return Layout("shards", (path,))
    train_file, test_file = jsonl.get("train"), jsonl.get("test")
    if train_file and test_file:
        return Layout("jsonl", (train_file, test_file))
    sst = _find_sst(path) if path.is_dir() else None
    if sst is not None:
        return sst
    if len(archives) == 1:
        return Layout("archive", (archives[0],))
    if len(csvs) == 1:
        return Layout("csv", (csvs[0],))
    found = ", ".join(p.name for p in candidates[:10]) or "nothing"
    raise DataError(
        f"no review data layout recognised in {path} (found: {found}). Accepted layouts:\n  - "
        + "\n  - ".join(ACCEPTED_LAYOUTS)
    )


def _empty_split(name: str, path: Path, layout: str) -> DataError:
    return DataError(f"the {name} split in {path} ({layout}) holds no usable reviews")


def _find_sst(folder: Path) -> Layout | None:
    """SST-2's files in ``folder`` (None when it has neither train nor test); one of the two
    without the other is refused here, naming the missing file."""
    from steps.sst import LAYOUT, TEST_FILE, TRAIN_FILE, find_sst  # steps.sst builds on this module's types

    files = find_sst(folder)
    if files is None:
        return None
    if files.train is None or files.test is None:
        name, file_name = ("train", TRAIN_FILE) if files.train is None else ("test", TEST_FILE)
        raise DataError(f"{_empty_split(name, folder, LAYOUT)}: {file_name} is missing")
    return Layout("sst", (files.train, files.test) + ((files.dev,) if files.dev is not None else ()))


def _has_shards(folder: Path) -> bool:
    """Shards in ``folder`` itself (``steps.shards``): what staging writes, one dataset's worth."""
    from steps.shards import SHARD  # steps.shards builds on this module's readers

    return any(p.is_file() and SHARD.match(p.name) for p in folder.iterdir())


def _read_shards(folder: Path, unlabeled: bool) -> ReviewData:
    """One dataset's shards, read whole, in key order: the rows one instance would plan over."""
    from steps.shards import LAYOUT, read_shards

    data = ReviewData(Split(), Split(), LAYOUT)
    for shard in read_shards(folder, unlabeled):
        data.sources.append(shard.key)
        data.undecodable += shard.undecodable
        data.empty += shard.empty
        if shard.split == "unsup":
            data.unlabeled.extend(shard.texts)
            continue
        if shard.split == "validation" and data.validation is None:
            data.validation = Split()
        split = {"train": data.train, "test": data.test, "validation": data.validation}[shard.split]
        assert split is not None
        split.texts.extend(shard.texts)
        split.labels.extend(shard.labels)
    return data


def _first_existing(folder: Path, stem: str) -> Path | None:
    for suffix in (".jsonl", ".jsonl.gz"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def _find_tree(path: Path) -> Path | None:
    for root in (path, path / "aclImdb"):
        if (root / "train" / "pos").is_dir() and (root / "test" / "pos").is_dir():
            return root
    return None


def _decode(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _read_tree(root: Path, unlabeled: bool) -> ReviewData:
    records = []
    for split_name, label_name in (("train", "neg"), ("train", "pos"), ("train", "unsup"), ("test", "neg"), ("test", "pos")):
        if label_name == "unsup" and not unlabeled:
            continue
        folder = root / split_name / label_name
        for file in folder.glob("*.txt") if folder.is_dir() else ():
            match = _TREE_MEMBER.search(f"{split_name}/{label_name}/{file.name}")
            if match:
                records.append((split_name, label_name, int(match.group(3)), file.read_bytes()))
    return _records_to_data(records, _tree_layout(root), [str(root)])


def _tree_layout(root: Path) -> str:
    return f"aclImdb directory tree {root}"


def _read_archive(archive: Path, unlabeled: bool) -> ReviewData:
    records = []
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                match = _TREE_MEMBER.search(member.name)
                if match and member.isfile() and (unlabeled or match.group(2) != "unsup"):
                    handle = tar.extractfile(member)
                    if handle is not None:
                        records.append((match.group(1), match.group(2), int(match.group(3)), handle.read()))
            # tarfile stops quietly at a damaged header; reading to the end makes gzip check its CRC.
            while tar.fileobj is not None and tar.fileobj.read(1 << 20):
                pass
    except _ARCHIVE_ERRORS as exc:
        raise _unreadable_archive(archive, exc) from exc
    if not records:
        raise _archive_without_reviews(archive)
    return _records_to_data(records, _archive_layout(archive), [str(archive)])


def _check_archive(archive: Path) -> None:
    """The archive opens and holds a labeled review; its members are read up to the first one
    (a split missing from it is left to the reader: looking for both would read half the archive)."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                match = _TREE_MEMBER.search(member.name)
                if match and member.isfile() and match.group(2) != "unsup":
                    return
    except _ARCHIVE_ERRORS as exc:
        raise _unreadable_archive(archive, exc) from exc
    raise _archive_without_reviews(archive)


_ARCHIVE_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)


def _archive_layout(archive: Path) -> str:
    return f"archive {archive.name}"


def _unreadable_archive(archive: Path, exc: BaseException) -> DataError:
    return DataError(f"cannot read archive {archive}: {exc}. Download it again (sentiment-mlops download).")


def _archive_without_reviews(archive: Path) -> DataError:
    return DataError(f"archive {archive} holds no train|test/pos|neg/*.txt reviews: is it aclImdb_v1.tar.gz?")


def _records_to_data(records: list[tuple[str, str, int, bytes]], layout: str, sources: list[str]) -> ReviewData:
    data = ReviewData(Split(), Split(), layout, sources=sources)
    for split_name, label_name, _, raw in sorted(records, key=lambda r: (r[0], r[1] == "pos", r[2])):
        text = _decode(raw)
        if text is None:
            data.undecodable += 1
        elif label_name == "unsup":
            data.unlabeled.append(text)
        else:
            getattr(data, split_name).add(text, _LABELS[label_name])
    return data


def _open_lines(path: Path) -> Generator[bytes, None, None]:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            yield from handle
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def _jsonl_record(line: str, path: Path, number: int) -> dict:
    """One labeled JSON Lines record: an object with a "text" string."""
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise DataError(f"{path.name} line {number} is not JSON ({exc}); each line must be one object") from exc
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise DataError(f'{path.name} line {number} has no "text" string; expected {{"text": ..., "label": 0|1}}')
    return record


def _has_jsonl_record(path: Path) -> bool:
    """Whether ``path`` holds a record; reads up to its first one, which must be well formed."""
    lines = _open_lines(path)
    try:
        for number, raw in enumerate(lines, start=1):
            line = _decode(raw) if raw.strip() else None
            if line is not None:
                _jsonl_record(line, path, number)
                return True
        return False
    finally:
        lines.close()


def _read_jsonl(train_path: Path, test_path: Path, unlabeled: bool) -> ReviewData:
    data = ReviewData(Split(), Split(), _JSONL_LAYOUT, sources=[str(train_path), str(test_path)])
    validation_path = _first_existing(train_path.parent, "validation")  # optional: a split of its own for choosing epochs
    splits = [(data.train, train_path), (data.test, test_path)]
    if validation_path is not None:
        data.validation = Split()
        data.sources.append(str(validation_path))
        splits.append((data.validation, validation_path))
    labels = _LabelChecker()
    for split, path in splits:
        for number, raw in enumerate(_open_lines(path), start=1):
            if not raw.strip():
                continue
            line = _decode(raw)
            if line is None:
                data.undecodable += 1
                continue
            record = _jsonl_record(line, path, number)
            label = labels.parse(record.get("label"), f"{path.name} line {number}")
            if label is not None:
                split.add(record["text"], label)
    labels.raise_if_bad()
    unlabeled_path = _first_existing(train_path.parent, "unsup") if unlabeled else None
    if unlabeled_path is not None:
        data.sources.append(str(unlabeled_path))
        for number, raw in enumerate(_open_lines(unlabeled_path), start=1):
            line = _decode(raw) if raw.strip() else None
            if line is None:
                data.undecodable += bool(raw.strip())
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise DataError(f"{unlabeled_path.name} line {number} is not JSON ({exc})") from exc
            if isinstance(record, dict) and isinstance(record.get("text"), str):
                data.unlabeled.append(record["text"])
    return data


def _csv_columns(path: Path, reader: Iterator[list[str]]) -> tuple[list[str], int, int]:
    """The header read from ``reader``, and the review and sentiment columns' indices in it."""
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise DataError(f"{path.name} is empty") from None
    text_col = next((header.index(c) for c in _CSV_TEXT_COLUMNS if c in header), None)
    label_col = next((header.index(c) for c in _CSV_LABEL_COLUMNS if c in header), None)
    if text_col is None or label_col is None:
        raise DataError(
            f"{path.name} needs a review column ({'/'.join(_CSV_TEXT_COLUMNS)}) and a sentiment column "
            f"({'/'.join(_CSV_LABEL_COLUMNS)}); its header is {header}"
        )
    return header, text_col, label_col


def _check_csv(path: Path) -> None:
    """The CSV's header names its columns and a row follows it (only those are read)."""
    # Spreadsheets save "CSV UTF-8" with a BOM; undecodable bytes are the reader's to count.
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        reader = csv.reader(handle)
        try:
            _csv_columns(path, reader)
            if next((row for row in reader if row), None) is None:
                raise _csv_without_reviews(path)
        except csv.Error as exc:
            raise _invalid_csv(path, exc) from exc


def _invalid_csv(path: Path, exc: csv.Error) -> DataError:
    return DataError(f"{path.name} is not valid CSV: {exc}")


def _csv_without_reviews(path: Path) -> DataError:
    return DataError(f"{path.name} holds no labeled reviews below its header")


def _read_csv(path: Path, test_fraction: float, seed: int) -> ReviewData:
    raw = path.read_bytes()
    text = raw.decode("utf-8-sig", errors="surrogateescape")  # spreadsheets save "CSV UTF-8" with a BOM
    reader = csv.reader(io.StringIO(text, newline=""))
    header, text_col, label_col = _csv_columns(path, reader)
    everything = Split()
    labels = _LabelChecker()
    undecodable = 0
    try:
        for number, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) <= max(text_col, label_col):
                raise DataError(f"{path.name} row {number} has {len(row)} columns; expected {len(header)}")
            review = row[text_col]
            if _decode(review.encode("utf-8", errors="surrogateescape")) is None:
                undecodable += 1
                continue
            label = labels.parse(row[label_col], f"{path.name} row {number}")
            if label is not None:
                everything.add(review, label)
    except csv.Error as exc:
        raise _invalid_csv(path, exc) from exc
    labels.raise_if_bad()
    if not len(everything):
        raise _csv_without_reviews(path)
    train_rows, test_rows = stratified_split(np.asarray(everything.labels), test_fraction, seed)
    data = ReviewData(Split(), Split(), f"CSV {path.name} (test split {test_fraction:.0%}, seed {seed})", undecodable, [str(path)])
    for split, rows in ((data.train, train_rows), (data.test, test_rows)):
        for i in rows:
            split.add(everything.texts[i], everything.labels[i])
    return data


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, carved) with ``fraction`` of each label carved out, chosen by a seeded shuffle."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"split fraction must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    kept, carved = [], []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        rng.shuffle(rows)
        cut = int(round(len(rows) * fraction))
        carved.append(rows[:cut])
        kept.append(rows[cut:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(carved))


def stratified_sample(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Exactly ``count`` sorted indices, each label's share kept (largest remainders get the spare rows)."""
    rng = np.random.default_rng(seed)
    values, sizes = np.unique(labels, return_counts=True)
    exact = sizes * count / sizes.sum()
    quota = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - quota), kind="stable")[: count - int(quota.sum())]:
        quota[i] += 1
    rows = [rng.permutation(np.flatnonzero(labels == v))[:q] for v, q in zip(values, quota)]
    return np.sort(np.concatenate(rows))
