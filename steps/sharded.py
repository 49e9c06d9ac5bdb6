"""Preprocess over shards on one instance or several, with the same outputs whatever their number.

Each instance reads only its share of the shards (``ShardedByS3Key``) and tokenizes only those
reviews, the work that grows with the data. What needs every share is agreed through the exchange
(``steps.exchange``), in three rounds:

1. **The plan.** Each instance reports its shards without their texts (key, labels, fingerprint).
   From all the reports, every instance computes the same plan: each dataset's rows in key order,
   the seeded stratified ``--sample`` and validation carve over those rows (as one instance reading
   everything would), and the place of every row in the output arrays.
2. **The vocabulary.** Each instance counts the tokens of its training rows; every instance merges
   all the counts (integer sums: the order does not matter) and builds the same vocabulary, ties
   broken alphabetically. Instances disagreeing on it is impossible by construction.
3. **The outputs.** Each instance encodes its rows and sends them, with their places, to the
   first instance, which puts them in order and writes the outputs as one instance would. The
   co-occurrence counts for the word vectors are summed there too.

So the arrays, the vocabulary, stats.json and the word vectors (co-occurrence counts are whole
numbers in float64, which any order of addition sums alike) are the same for N = 1, 2 or 4. The
first instance holds the encoded arrays of every row (2 × MaxLen bytes a row, filled in place as
each instance's part arrives) and the test texts, not the other texts.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from serve.text import REVIEWS
from serve.vocab import Vocabulary
from steps.datasets import Corpus, DatasetInfo, Labelled, check_name
from steps.embeddings import embeddings_from_cooccurrence
from steps.exchange import Exchange
from steps.instances import host_cpus
from steps.preprocess import (
    SPLITS,
    EncodedSplit,
    PreprocessOptions,
    _cooccurrences,
    _duplicates,
    _encode,
    _init_encoder,
    _init_tokenizer,
    _stats,
    _tokenize,
    _worker_pool,
    _write_outputs,
    check_output_dir,
)
from steps.shards import LABELLED_SPLITS, LAYOUT, Shard, declarations, other_files, read_shards, report_labels
from steps.sources import DEFAULT_NAME, DataError, stratified_sample, stratified_split

log = logging.getLogger("preprocess")

CODES = {name: code for code, name in enumerate(SPLITS)}  # each row's output split; -1: left out by --sample


@dataclass
class Plan:
    """What every instance agrees on: the datasets, and for each shard each row's output split and place."""

    datasets: list[DatasetInfo]
    dataset_index: dict[str, int]  # dataset folder -> index
    codes: dict[str, np.ndarray] = field(default_factory=dict)  # shard key -> split code per row
    places: dict[str, np.ndarray] = field(default_factory=dict)  # shard key -> place in its split's arrays
    sizes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    unlabeled_kept: dict[str, int] = field(default_factory=dict)  # unsup shard key -> rows kept (its first ones)


def _digest(shards: list[dict[str, Any]]) -> str:
    """A split's fingerprint over shards: the shards' own, in key order (independent of the instance count)."""
    return hashlib.sha256("".join(f"{s['key']}\t{s['sha256']}\n" for s in shards).encode()).hexdigest()


def make_plan(reports: list[dict[str, Any]], declared: dict[str, dict[str, str]], options: PreprocessOptions) -> Plan:
    """The plan every instance computes from every instance's reports (the same inputs, the same plan)."""
    folders = sorted({r["dataset"] for r in reports})
    if not folders:
        raise DataError("no shards in the input: expected train-NNNNN.jsonl.gz and test-NNNNN.jsonl.gz files")
    if "" in folders and len(folders) > 1:
        raise DataError("shards at the input's top and in dataset folders beside them: put each dataset's shards in one place")
    plan = Plan([], {})
    for folder in folders:
        plan.dataset_index[folder] = len(plan.datasets)
        plan.datasets.append(_plan_dataset(plan, folder, [r for r in reports if r["dataset"] == folder],
                                           declared.get(folder, {}), options))
    return plan


def _plan_dataset(plan: Plan, folder: str, reports: list[dict[str, Any]], declared: dict[str, str],
                  options: PreprocessOptions) -> DatasetInfo:
    name = check_name(folder or declared.get("name", DEFAULT_NAME), folder or "the input")
    by_split = {split: sorted((r for r in reports if r["split"] == split), key=lambda r: r["key"])
                for split in (*LABELLED_SPLITS, "unsup")}
    labels = {split: np.concatenate([report_labels(r) for r in by_split[split]] or [np.zeros(0, np.int64)])
              for split in LABELLED_SPLITS}
    for split in ("train", "test"):
        if not len(labels[split]):
            raise DataError(f"dataset {name!r} has no {split} rows: its shards need a {split}-NNNNN.jsonl.gz with reviews")
    kept = {split: _sampled(labels[split], options) for split in LABELLED_SPLITS}
    if len(np.unique(labels["train"][kept["train"]])) < 2:
        raise DataError(f"the training data of dataset {name!r} holds only one label: a classifier needs positive "
                        "and negative examples")
    codes = {split: np.full(len(labels[split]), -1, dtype=np.int64) for split in LABELLED_SPLITS}
    places = {split: np.full(len(labels[split]), -1, dtype=np.int64) for split in LABELLED_SPLITS}
    if by_split["validation"]:
        chosen = {"train": ("train", kept["train"]), "validation": ("validation", kept["validation"])}
        validation_from = "its own validation split"
    else:
        train_rows, validation_rows = stratified_split(labels["train"][kept["train"]], options.validation_fraction, options.seed)
        if not len(train_rows) or not len(validation_rows):
            raise DataError(f"{len(kept['train'])} training texts of dataset {name!r} are too few for a "
                            f"{options.validation_fraction:.1%} validation split: use more or change --validation-fraction")
        chosen = {"train": ("train", kept["train"][train_rows]), "validation": ("train", kept["train"][validation_rows])}
        validation_from = "carved from its training split"
    chosen["test"] = ("test", kept["test"])
    for output, (source, rows) in chosen.items():
        codes[source][rows] = CODES[output]
        places[source][rows] = plan.sizes[output] + np.arange(len(rows))
        plan.sizes[output] += len(rows)
    for split in LABELLED_SPLITS:
        bounds = np.cumsum([0] + [r["rows"] for r in by_split[split]])
        for report, start, end in zip(by_split[split], bounds[:-1], bounds[1:]):
            plan.codes[report["key"]], plan.places[report["key"]] = codes[split][start:end], places[split][start:end]
    left = options.sample or None
    for report in by_split["unsup"]:
        plan.unlabeled_kept[report["key"]] = report["rows"] if left is None else min(report["rows"], left)
        left = None if left is None else left - plan.unlabeled_kept[report["key"]]
    return DatasetInfo(name, declared.get("kind", REVIEWS), LAYOUT, sorted(r["key"] for r in reports),
                       _digest(by_split["train"]), _digest(by_split["test"]), validation_from,
                       sum(r["undecodable"] for r in reports), sum(r["empty"] for r in reports),
                       sum(plan.unlabeled_kept.get(r["key"], 0) for r in by_split["unsup"]))


def _sampled(labels: np.ndarray, options: PreprocessOptions) -> np.ndarray:
    """The rows ``--sample`` keeps of a split (all of them without it), as ``ReviewData.sample`` chooses."""
    if options.sample and options.sample < len(labels):
        return stratified_sample(labels, options.sample, options.seed)
    return np.arange(len(labels))


@dataclass
class OwnRows:
    """This instance's rows, in the order it tokenizes them: its labelled rows, then its unlabeled ones."""

    texts: list[str] = field(default_factory=list)
    codes: list[int] = field(default_factory=list)  # -2: unlabeled
    places: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    datasets: list[int] = field(default_factory=list)

    def add(self, shard: Shard, plan: Plan) -> None:
        if shard.split == "unsup":
            kept = plan.unlabeled_kept[shard.key]
            self.texts += shard.texts[:kept]
            self.codes += [-2] * kept
            self.places += [-1] * kept
            self.labels += [0] * kept
            self.datasets += [plan.dataset_index[shard.dataset]] * kept
            return
        rows = np.flatnonzero(plan.codes[shard.key] >= 0)
        self.texts += [shard.texts[i] for i in rows]
        self.codes += plan.codes[shard.key][rows].tolist()
        self.places += plan.places[shard.key][rows].tolist()
        self.labels += [shard.labels[i] for i in rows]
        self.datasets += [plan.dataset_index[shard.dataset]] * len(rows)

    def rows(self, code: int) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.codes, dtype=np.int64) == code)


def _to_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def _from_bytes(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return {name: arrays[name] for name in arrays.files}


def _text_digests(texts: list[str]) -> list[str]:
    return [hashlib.sha1(text.encode("utf-8")).hexdigest()[:16] for text in texts]


def run_sharded(input_dir: Path, output_dir: Path, options: PreprocessOptions, exchange: Exchange,
                overwrite: bool = False, data_version: str | None = None) -> dict:
    """Preprocess this instance's share of the shards with the others; the first instance writes
    the outputs and returns the stats (the others return a summary of their share)."""
    started = time.perf_counter()
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    strays = other_files(input_dir)
    if strays:
        raise DataError(f"{input_dir} holds shards and other files ({', '.join(strays[:5])}): data in another layout "
                        "cannot be shared among instances; stage every dataset as shards (sentiment-mlops run --data does)")
    check_output_dir(output_dir, overwrite)
    plan, own = _plan_together(input_dir, options, exchange)
    workers = options.workers or host_cpus()
    with _worker_pool(workers, _init_tokenizer, (options.text,)) as pool:
        joined, counts = _tokenize(own.texts, own.rows(CODES["train"]), pool)
    vocab, coverage = _vocabulary_together(counts, options, exchange)
    labels, datasets = np.asarray(own.labels, dtype=np.int64), np.asarray(own.datasets, dtype=np.int64)
    with _worker_pool(workers, _init_encoder, (vocab, options.text)) as pool:
        encoded = {name: _encode(joined, own.rows(CODES[name]), labels, datasets, pool, name) for name in SPLITS}
        vector_rows = np.concatenate([own.rows(CODES["train"]), own.rows(-2)])
        cooccurrence = _cooccurrences(joined, vector_rows, len(vocab), options, pool) if options.embedding_dim else None
    del joined
    shares = {name: len(split.labels) for name, split in encoded.items()}
    gathered = _gather_outputs(exchange, plan, encoded, own, cooccurrence, len(vocab), options.text.max_len)
    if gathered is None:
        exchange.finish()
        return {"seconds": round(time.perf_counter() - started, 2), "instance": exchange.instances.current,
                "splits": {name: {"reviews": count} for name, count in shares.items()}}  # its share
    splits, test_texts, digests, total = gathered.result()
    vectors = embeddings_from_cooccurrence(total, options.embedding_dim, options.seed) if total is not None else None
    corpus = _corpus(plan, splits, test_texts, digests)
    duplicates = _duplicates(digests["train"] + digests["validation"], digests["test"])
    stats = _stats(corpus, splits, vocab, options, coverage, vectors, data_version, duplicates=duplicates)
    stats["instances"] = exchange.instances.count
    _write_outputs(output_dir, corpus, splits, vocab, stats, vectors)
    exchange.finish()
    stats["seconds"] = round(time.perf_counter() - started, 2)
    log.info("preprocessing done in %.1fs on %d instance(s): %s", stats["seconds"], exchange.instances.count,
             {n: stats["splits"][n]["reviews"] for n in SPLITS})
    return stats


def _plan_together(input_dir: Path, options: PreprocessOptions, exchange: Exchange) -> tuple[Plan, OwnRows]:
    """Round 1: every instance's shard reports, the plan, and this instance's rows in it."""
    shards = list(read_shards(input_dir, unlabeled=bool(options.embedding_dim and options.unlabeled)))
    mine = {"shards": [s.report() for s in shards], "declared": declarations(input_dir)}
    everyone = [json.loads(part) for part in exchange.all_gather("shards", json.dumps(mine).encode())]
    declared: dict[str, dict[str, str]] = {}
    for part in everyone:
        declared.update(part["declared"])
    plan = make_plan([r for part in everyone for r in part["shards"]], declared, options)
    own = OwnRows()
    for shard in shards:
        own.add(shard, plan)
    labelled = sum(len(own.rows(CODES[name])) for name in SPLITS)
    log.info("this instance (%s): %d of the %s rows planned, %d unlabeled", exchange.instances.current, labelled,
             f"{sum(plan.sizes.values()):,}", len(own.rows(-2)))
    return plan, own


def _vocabulary_together(counts: Counter, options: PreprocessOptions, exchange: Exchange) -> tuple[Vocabulary, float]:
    """Round 2: every instance's token counts, merged (integer sums), and the one vocabulary."""
    merged: Counter = Counter()
    for part in exchange.all_gather("counts", json.dumps(counts).encode()):
        merged.update(json.loads(part))
    vocab = Vocabulary.build(merged, options.vocab_size, options.min_count)
    coverage = sum(merged[t] for t in vocab.tokens) / max(sum(merged.values()), 1)
    log.info("vocabulary: %d ids covering %.1f%% of training tokens, counted over %d instance(s)",
             len(vocab), 100 * coverage, exchange.instances.count)
    return vocab, coverage


class Assembly:
    """The first instance's outputs, filled in place as each instance's part arrives: one array
    per field at its final size, no copy of the parts kept."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.fields: dict[str, dict[str, np.ndarray]] = {name: {} for name in SPLITS}
        self.filled = {name: np.zeros(size, dtype=bool) for name, size in plan.sizes.items()}
        self.test_texts: list[str | None] = [None] * plan.sizes["test"]
        self.digests: dict[str, list[str]] = {name: [] for name in SPLITS}
        self.cooccurrence: sparse.csr_matrix | None = None

    def add_rows(self, name: str, data: bytes) -> None:
        part = _from_bytes(data)
        places = part.pop("places")
        if len(places) and (places.min() < 0 or places.max() >= len(self.filled[name]) or self.filled[name][places].any()
                            or len(np.unique(places)) != len(places)):
            raise DataError(f"an instance sent {name} rows for places outside the plan or already filled: "
                            "it read other shards than it reported")
        for key, values in part.items():
            target = self.fields[name].get(key)
            if target is None:
                target = self.fields[name][key] = np.zeros((len(self.filled[name]), *values.shape[1:]), dtype=values.dtype)
            target[places] = values
        self.filled[name][places] = True

    def add_texts(self, data: bytes) -> None:
        for place, text in json.loads(data):
            self.test_texts[place] = text

    def add_digests(self, data: bytes) -> None:
        for name, found in json.loads(data).items():
            self.digests[name] += found

    def add_cooccurrence(self, data: bytes) -> None:
        part = _sparse_from(data)
        self.cooccurrence = part if self.cooccurrence is None else self.cooccurrence + part  # whole numbers: exact

    def result(self) -> tuple[dict[str, EncodedSplit], list[str], dict[str, list[str]], sparse.csr_matrix | None]:
        for name, filled in self.filled.items():
            if not filled.all():
                raise DataError(f"{int((~filled).sum()):,} of the {len(filled):,} planned {name} rows never arrived: "
                                "an instance read other shards than it reported")
        splits = {name: EncodedSplit(f["ids"], f["lengths"], f["full"], f["unknown"], f["labels"], f["datasets"])
                  for name, f in self.fields.items()}
        return splits, [text or "" for text in self.test_texts], self.digests, self.cooccurrence


def _gather_outputs(exchange: Exchange, plan: Plan, encoded: dict[str, EncodedSplit], own: OwnRows,
                    cooccurrence: sparse.csr_matrix | None, vocab_size: int, max_len: int) -> Assembly | None:
    """Round 3: every instance's encoded rows (ids in the type the arrays are saved in), test texts,
    text digests and co-occurrence counts, into the first instance's assembly (None elsewhere).
    Each split is let go once it is sent."""
    assembly = Assembly(plan) if exchange.main else None

    def into(method: str, *before: str) -> Callable[[int, bytes], None]:
        """Hand each part to ``assembly.method(*before, part)``, on the first instance."""
        def receive(_rank: int, data: bytes) -> None:
            if assembly is not None:
                getattr(assembly, method)(*before, data)
        return receive

    id_type = np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
    places = np.asarray(own.places, dtype=np.int64)
    for name in SPLITS:
        split, rows = encoded.pop(name), own.rows(CODES[name])
        data = _to_bytes(ids=split.ids.astype(id_type), lengths=split.lengths, full=split.full_lengths,
                         unknown=split.unknown, labels=split.labels, datasets=split.datasets, places=places[rows])
        del split
        exchange.gather(f"encoded/{name}", data, into("add_rows", name))
    test_rows = own.rows(CODES["test"])
    exchange.gather("test-texts", json.dumps([[int(places[i]), own.texts[i]] for i in test_rows]).encode(), into("add_texts"))
    exchange.gather("digests", json.dumps({name: _text_digests([own.texts[i] for i in own.rows(CODES[name])])
                                           for name in SPLITS}).encode(), into("add_digests"))
    own.texts.clear()
    if cooccurrence is not None:
        exchange.gather("cooccurrence", _sparse_bytes(cooccurrence), into("add_cooccurrence"))
    return assembly


def _sparse_bytes(matrix: sparse.csr_matrix) -> bytes:
    buffer = io.BytesIO()
    sparse.save_npz(buffer, matrix.tocsr())
    return buffer.getvalue()


def _sparse_from(data: bytes) -> sparse.csr_matrix:
    return sparse.load_npz(io.BytesIO(data)).tocsr()


def _corpus(plan: Plan, splits: dict[str, EncodedSplit], test_texts: list[str], digests: dict[str, list[str]]) -> Corpus:
    """The corpus as stats.json and the writer read it: real texts for the test split (its reviews
    file), the texts' digests for the others (stats count them, never read them)."""
    def labelled(name: str, texts: list[str]) -> Labelled:
        return Labelled(texts, splits[name].labels.tolist(), splits[name].datasets.tolist())

    return Corpus(plan.datasets, labelled("train", digests["train"]), labelled("validation", digests["validation"]),
                  labelled("test", test_texts), [""] * sum(d.unlabeled for d in plan.datasets))
