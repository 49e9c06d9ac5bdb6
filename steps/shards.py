"""Datasets staged as many objects: JSON Lines shards that a job's instances can share.

A shard is one file named ``{split}-{NNNNN}.jsonl.gz`` (or ``.jsonl``), ``split`` one of
``train``, ``validation``, ``test`` or ``unsup`` (unlabeled, for the word vectors), holding
``{"text": ..., "label": 0|1}`` per line. The shards of one dataset sit in one folder: the input
folder itself (one dataset) or one sub-folder per dataset, with an optional ``dataset.json``
beside them, as for every other layout (``steps.datasets``).

SageMaker's ``ShardedByS3Key`` gives each instance a share of these objects, so an instance sees
only some shards (and perhaps not a dataset's ``dataset.json``). What the shards hold is read
here, one object at a time; what every instance must agree on (the split, the vocabulary) is
planned from what all of them report (``steps.sharded``).
"""
from __future__ import annotations

import base64
import gzip
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from steps.datasets import DATASET_FILE, declared
from steps.sources import DataError, Split, _decode, _jsonl_record, _LabelChecker, _open_lines

SHARD_ROWS = 2_000  # records per shard that staging writes: IMDb's 25,000 training reviews make 13 shards
SHARD = re.compile(r"^(?P<split>train|validation|test|unsup)-(?P<index>\d{5})\.jsonl(?:\.gz)?$")
LAYOUT = "JSON Lines shards"
LABELLED_SPLITS = ("train", "validation", "test")


def shard_files(root: Path) -> list[tuple[str, Path]]:
    """``[(key, path)]`` of every shard under ``root`` (its own folder and one level of dataset
    folders), by key: the path relative to ``root``, as S3 lists the objects."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_file() and SHARD.match(p.name)]
    found += [p for folder in root.iterdir() if folder.is_dir() and not folder.name.startswith(".")
              for p in folder.iterdir() if p.is_file() and SHARD.match(p.name)]
    return sorted((p.relative_to(root).as_posix(), p) for p in found)


def is_sharded(root: Path) -> bool:
    """Whether ``root`` holds datasets as shards (this instance's share of them, on SageMaker)."""
    return bool(shard_files(root))


def other_files(root: Path) -> list[str]:
    """Files beside the shards that are neither shards nor ``dataset.json``: another layout mixed in."""
    root = Path(root)
    if not root.is_dir():
        return [root.name]
    entries = [*root.iterdir(), *(q for f in root.iterdir() if f.is_dir() and not f.name.startswith(".") for q in f.iterdir())]
    return sorted(p.relative_to(root).as_posix() for p in entries
                  if p.is_file() and not p.name.startswith((".", "_")) and not SHARD.match(p.name) and p.name != DATASET_FILE)


@dataclass
class Shard:
    """One object's usable rows (blank and undecodable ones dropped and counted) and its fingerprint."""

    key: str
    dataset: str  # its folder under the input ("" when the input folder is the dataset)
    split: str
    texts: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    undecodable: int = 0
    empty: int = 0
    sha256: str = ""

    def report(self) -> dict[str, Any]:
        """What the other instances need to know of this shard: everything but its texts."""
        labels = np.asarray(self.labels, dtype=np.int8)
        return {"key": self.key, "dataset": self.dataset, "split": self.split, "rows": len(self.texts),
                "labels": base64.b64encode(labels.tobytes()).decode("ascii"), "undecodable": self.undecodable,
                "empty": self.empty, "sha256": self.sha256}


def report_labels(report: dict[str, Any]) -> np.ndarray:
    labels = np.frombuffer(base64.b64decode(report["labels"]), dtype=np.int8).astype(np.int64)
    if len(labels) != report["rows"]:
        raise DataError(f"shard {report['key']}: {len(labels)} labels reported for {report['rows']} rows")
    return labels


def read_shard(key: str, path: Path) -> Shard:
    """One shard's rows; a line that is not a JSON object with a "text" is refused by name and line."""
    match = SHARD.match(path.name)
    if match is None:
        raise DataError(f"{key} is not a shard name ({{split}}-NNNNN.jsonl.gz)")
    dataset = key.rsplit("/", 1)[0] if "/" in key else ""
    shard = Shard(key, dataset, match.group("split"))
    labels = _LabelChecker()
    for number, raw in enumerate(_open_lines(path), start=1):
        if not raw.strip():
            continue
        line = _decode(raw)
        if line is None:
            shard.undecodable += 1
            continue
        try:
            record = _jsonl_record(line, path, number)
        except DataError as exc:  # named by the file: add its dataset's folder, to say which
            raise DataError(f"{dataset}/{exc}" if dataset else str(exc)) from None
        if not record["text"].strip():
            shard.empty += 1
            continue
        label = 0 if shard.split == "unsup" else labels.parse(record.get("label"), f"{key} line {number}")
        if label is None:
            continue
        shard.texts.append(record["text"])
        shard.labels.append(label)
    labels.raise_if_bad()
    shard.sha256 = Split(shard.texts, shard.labels).sha256()  # the records' fingerprint, as every layout's
    return shard


def read_shards(root: Path, unlabeled: bool) -> Iterator[Shard]:
    """This instance's shards, one at a time, in key order (``unsup`` ones only if asked)."""
    for key, path in shard_files(root):
        if unlabeled or not key.rsplit("/", 1)[-1].startswith("unsup-"):
            yield read_shard(key, path)


def declarations(root: Path) -> dict[str, dict[str, str]]:
    """What each ``dataset.json`` this instance holds says, by dataset folder ("" for the root)."""
    root = Path(root)
    found = {"": declared(root)} if (root / DATASET_FILE).is_file() else {}
    for path in sorted(root.glob(f"*/{DATASET_FILE}")):
        found[path.parent.name] = declared(path.parent)
    return found


def write_shards(folder: Path, split: str, records: Iterable[dict[str, Any]], rows: int = SHARD_ROWS) -> list[Path]:
    """``records`` as ``{split}-00000.jsonl.gz``, ``{split}-00001.jsonl.gz``, ... of ``rows`` records
    each (the last one fewer), written byte for byte the same for the same records (gzip without
    a timestamp), so that the same data stages to the same objects."""
    if not SHARD.match(f"{split}-00000.jsonl.gz"):
        raise ValueError(f"{split!r} is not a shard split ({', '.join(LABELLED_SPLITS)} or unsup)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    batch: list[str] = []

    def flush() -> None:
        path = folder / f"{split}-{len(written):05d}.jsonl.gz"
        path.write_bytes(gzip.compress("".join(batch).encode("utf-8"), mtime=0))
        written.append(path)
        batch.clear()

    for record in records:
        batch.append(json.dumps(record, ensure_ascii=False) + "\n")
        if len(batch) == rows:
            flush()
    if batch:
        flush()
    return written


def shard_dataset(source: Path, folder: Path, sample: int = 0, seed: int = 42, rows: int = SHARD_ROWS) -> Path:
    """The dataset at ``source`` (any layout ``steps.sources`` reads) rewritten as shards in
    ``folder``, with a ``dataset.json`` keeping its name and kind; ``sample``: a stratified
    ``sample`` texts per split only (``ReviewData.sample``). Returns ``folder``."""
    from steps.datasets import DATASET_FILE
    from steps.sources import load_reviews

    reviews = load_reviews(Path(source))
    if sample:
        reviews.sample(sample, seed)
    folder = Path(folder)
    for name, split in reviews.labeled_splits():
        write_shards(folder, name, ({"text": t, "label": label} for t, label in zip(split.texts, split.labels)), rows)
    if reviews.unlabeled:
        write_shards(folder, "unsup", ({"text": t} for t in reviews.unlabeled), rows)
    (folder / DATASET_FILE).write_text(json.dumps({"name": reviews.name, "kind": reviews.kind}), encoding="utf-8")
    return folder
