"""Small, seeded, learnable review data in every layout the preprocessing step accepts.

Reviews mix sentiment words with filler, HTML line breaks and negated phrases; the label is
whichever sentiment dominates, so a real model can learn it in seconds.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import random
import tarfile
from collections.abc import Sequence
from pathlib import Path

POSITIVE = ["great", "wonderful", "superb", "moving", "brilliant", "delightful", "masterpiece", "loved", "charming", "excellent"]
NEGATIVE = ["awful", "boring", "terrible", "dull", "waste", "horrible", "worst", "poorly", "annoying", "mess"]
FILLER = ["the", "movie", "film", "plot", "actor", "scene", "story", "director", "camera", "music", "it", "was", "and",
          "a", "with", "ending", "character", "script", "this", "of", "cast", "time"]


def make_reviews(count: int, seed: int = 0) -> list[dict]:
    """``count`` reviews, half positive and half negative, as ``{"text", "label"}`` records."""
    rng = random.Random(seed)
    reviews = []
    for i in range(count):
        label = i % 2
        strong, weak = (POSITIVE, NEGATIVE) if label else (NEGATIVE, POSITIVE)
        words = rng.choices(FILLER, k=rng.randint(8, 40)) + rng.choices(strong, k=rng.randint(3, 6)) + rng.choices(weak, k=rng.randint(0, 1))
        rng.shuffle(words)
        text = " ".join(words).capitalize() + "."
        if rng.random() < 0.5:
            cut = len(text) // 2
            text = text[:cut] + " <br /><br />" + text[cut:]
        reviews.append({"text": text, "label": label})
    return reviews


def write_jsonl(folder: Path, train: list[dict], test: list[dict], gz: bool = True, unlabeled: Sequence[dict] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    named = [("train", train), ("test", test)] + ([("unsup", [{"text": r["text"]} for r in unlabeled])] if unlabeled else [])
    for name, records in named:
        payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
        if gz:
            (folder / f"{name}.jsonl.gz").write_bytes(gzip.compress(payload, mtime=0))
        else:
            (folder / f"{name}.jsonl").write_bytes(payload)
    return folder


def _tree_files(train: list[dict], test: list[dict], unlabeled: Sequence[dict] = ()) -> dict[str, bytes]:
    files = {f"aclImdb/train/unsup/{i}_0.txt": r["text"].encode("utf-8") for i, r in enumerate(unlabeled)}
    for split, records in (("train", train), ("test", test)):
        counters = {0: 0, 1: 0}
        for record in records:
            label = record["label"]
            rating = 8 if label else 2
            files[f"aclImdb/{split}/{'pos' if label else 'neg'}/{counters[label]}_{rating}.txt"] = record["text"].encode("utf-8")
            counters[label] += 1
    return files


def write_tree(folder: Path, train: list[dict], test: list[dict], unlabeled: Sequence[dict] = ()) -> Path:
    for name, data in _tree_files(train, test, unlabeled).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder / "aclImdb"


def write_archive(path: Path, train: list[dict], test: list[dict], unlabeled: Sequence[dict] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in sorted(_tree_files(train, test, unlabeled).items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_csv(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["review", "sentiment"])
    for record in records:
        writer.writerow([record["text"], "positive" if record["label"] else "negative"])
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def make_sentences(count: int, seed: int = 0) -> list[dict]:
    """``count`` short labelled sentences (5 to 12 words), half positive, half negative: SST-2's shape."""
    rng = random.Random(seed)
    sentences = []
    for i in range(count):
        label = i % 2
        strong = POSITIVE if label else NEGATIVE
        words = rng.choices(FILLER, k=rng.randint(3, 9)) + rng.choices(strong, k=rng.randint(1, 2))
        rng.shuffle(words)
        sentences.append({"text": " ".join(words) + " .", "label": label})
    return sentences


def write_sst(folder: Path, train: list[dict], test: list[dict], dev: Sequence[dict] = ()) -> Path:
    """SST-2's files as Yoon Kim wrote them: ``stsa.binary.{train,dev,test}``, ``LABEL sentence`` per line."""
    folder.mkdir(parents=True, exist_ok=True)
    named = [("train", train), ("test", test)] + ([("dev", dev)] if dev else [])
    for name, records in named:
        (folder / f"stsa.binary.{name}").write_text("".join(f"{r['label']} {r['text']}\n" for r in records), encoding="utf-8")
    return folder
