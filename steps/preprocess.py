"""The preprocessing step: raw reviews and sentences → vocabulary and padded id arrays for training
and evaluation, from one dataset or a folder per dataset (``steps.datasets``).

Runs in a SageMaker processing container (input under ``/opt/ml/processing/input/data``,
outputs under ``/opt/ml/processing/output/{train,validation,test}``) or by hand::

    python steps/preprocess.py --input-dir DIR --output-dir DIR [options]
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import multiprocessing
import multiprocessing.pool
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from tqdm import tqdm

if __package__ in (None, ""):  # run as a script: make the sibling packages (serve/, steps/) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serve.text import TextConfig, TextNormalizer
from serve.vocab import PAD_ID, TRUNCATE_SIDES, UNK_ID, Vocabulary, pad_batch
from steps.arrays import EMBEDDINGS_FILE, REVIEWS_FILE, save_split_arrays
from steps.datasets import Corpus, load_corpus
from steps.embeddings import cooccurrence, embeddings_from_cooccurrence
from steps.exchange import ExchangeError
from steps.instances import read_instances
from steps.job_failure import PROCESSING_REASON_FILE, report_failures
from steps.shards import is_sharded
from steps.sources import DataError

log = logging.getLogger("preprocess")

SPLITS = ("train", "validation", "test")
VOCAB_FILE = "vocab.json"
STATS_FILE = "stats.json"
DEFAULT_INPUT = "/opt/ml/processing/input/data"
DEFAULT_OUTPUT = "/opt/ml/processing/output"
_CHUNK = 2_000


@dataclass(frozen=True)
class PreprocessOptions:
    vocab_size: int = 20_000
    min_count: int = 2
    validation_fraction: float = 0.1
    csv_test_fraction: float = 0.5
    seed: int = 42
    workers: int = 0  # 0: one per CPU core
    sample: int = 0  # 0: every review; N: a stratified N per split
    embedding_dim: int = 128  # pretrained word-vector size; 0 skips pretraining
    embedding_window: int = 5
    unlabeled: bool = True  # learn the word vectors from unlabeled reviews too, when the data has them
    text: TextConfig = TextConfig()


# Per-process state for the worker pools: set by the initializers, inherited by fork.
_worker_normalizer: TextNormalizer | None = None
_worker_vocab: Vocabulary | None = None
_worker_text: TextConfig | None = None


def _init_tokenizer(text: TextConfig) -> None:
    global _worker_normalizer
    _worker_normalizer = TextNormalizer(text)


def _tokenize_chunk(task: tuple[list[str], list[bool]]) -> tuple[list[str], Counter]:
    """Tokens of each review joined by spaces (one string pickles far faster than a list), and the
    token counts of the rows that build the vocabulary."""
    texts, counted = task
    assert _worker_normalizer is not None
    counts: Counter = Counter()
    joined = []
    for text, count in zip(texts, counted):
        tokens = _worker_normalizer.tokens(text)
        if count:
            counts.update(tokens)
        joined.append(" ".join(tokens))
    return joined, counts


def _init_encoder(vocab: Vocabulary, text: TextConfig) -> None:
    global _worker_vocab, _worker_text
    _worker_vocab, _worker_text = vocab, text


def _encode_chunk(joined: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Padded ids, kept lengths, full lengths and unknown-token counts of a chunk's rows."""
    assert _worker_vocab is not None and _worker_text is not None
    ids = [_worker_vocab.encode(j.split()) for j in joined]
    padded, lengths = pad_batch(ids, _worker_text.max_len, _worker_text.truncate)
    full = np.fromiter((len(s) for s in ids), dtype=np.int64, count=len(ids))
    return padded, lengths, full, np.fromiter((s.count(UNK_ID) for s in ids), dtype=np.int64, count=len(ids))


def _cooccurrence_chunk(joined: list[str], window: int) -> sparse.csr_matrix:
    assert _worker_vocab is not None
    return cooccurrence([_worker_vocab.encode(j.split()) for j in joined], len(_worker_vocab), window)


@contextlib.contextmanager
def _worker_pool(workers: int, initializer, initargs: tuple) -> Iterator[multiprocessing.pool.Pool | None]:
    """A forked pool of ``workers`` processes, or None (work inline) for one worker."""
    if workers <= 1:
        initializer(*initargs)
        yield None
        return
    pool = multiprocessing.get_context("fork").Pool(workers, initializer, initargs)
    try:
        yield pool
    finally:
        pool.close()
        pool.join()


def _imap(function, tasks: list, pool, desc: str, sizes: list[int]) -> Iterator:
    """Results in task order, with a progress bar counted in reviews."""
    mapped = map(function, tasks) if pool is None else pool.imap(function, tasks)
    with tqdm(total=sum(sizes), desc=desc, unit="review", mininterval=1.0, disable=None) as bar:
        for size, result in zip(sizes, mapped):
            bar.update(size)
            yield result


@dataclass
class EncodedSplit:
    ids: np.ndarray
    lengths: np.ndarray
    full_lengths: np.ndarray
    unknown: np.ndarray  # unknown tokens per row
    labels: np.ndarray
    datasets: np.ndarray  # each row's index into stats.json's "datasets"

    def subset(self, dataset: int) -> EncodedSplit:
        """The rows of one dataset."""
        rows = self.datasets == dataset
        return EncodedSplit(self.ids[rows], self.lengths[rows], self.full_lengths[rows], self.unknown[rows], self.labels[rows],
                            self.datasets[rows])


def _chunks(rows: np.ndarray) -> list[np.ndarray]:
    return [rows[i : i + _CHUNK] for i in range(0, len(rows), _CHUNK)]


def _percentiles(lengths: np.ndarray) -> dict:
    return {f"p{q}": int(np.percentile(lengths, q)) for q in (50, 90, 95, 99)} | {"max": int(lengths.max()), "mean": round(float(lengths.mean()), 1)}


def _duplicates(train: list[str], test: list[str]) -> dict:
    train_unique, test_unique = set(train), set(test)
    return {
        "train_extra_copies": len(train) - len(train_unique),
        "test_extra_copies": len(test) - len(test_unique),
        "texts_in_both_train_and_test": len(train_unique & test_unique),
    }


def _split_stats(split: EncodedSplit, max_len: int) -> dict:
    tokens = int(split.full_lengths.sum())
    return {
        "reviews": len(split.labels),
        "positive": int(split.labels.sum()),
        "negative": int(len(split.labels) - split.labels.sum()),
        "tokens": tokens,
        "unknown_token_rate": round(int(split.unknown.sum()) / max(tokens, 1), 5),
        "truncated_fraction": round(float((split.full_lengths > max_len).mean()), 5),
        "length_percentiles": _percentiles(split.full_lengths),
    }


def check_output_dir(output_dir: Path, overwrite: bool) -> None:
    """Refuse to mix a new run's results with an old one's unless told to replace them."""
    taken = [name for name in SPLITS if (output_dir / name).exists() and any((output_dir / name).iterdir())]
    if taken and not overwrite:
        raise DataError(
            f"{output_dir} already holds results ({', '.join(taken)}): choose an empty --output-dir or pass --overwrite"
        )


def run(input_dir: Path, output_dir: Path, options: PreprocessOptions, overwrite: bool = False,
        data_version: str | None = None) -> dict:
    """Read, split, tokenize, build the vocabulary, encode, learn word vectors and write; returns the stats.

    ``input_dir`` holds one dataset or a folder per dataset (``steps.datasets``); each is split on
    its own and the splits are joined, so one model learns from all and each test set is kept.
    ``data_version`` is what the caller calls this data (the pipeline's ``InputDataVersion``): it
    is recorded in stats.json as ``data_version`` (None when not given), so that training can
    write it into the model's config.json next to the content hashes.
    """
    started = time.perf_counter()
    output_dir = Path(output_dir)
    check_output_dir(output_dir, overwrite)
    workers = options.workers or os.cpu_count() or 1
    # The tokenizer workers start (and import NLTK) while this process reads the data.
    with _worker_pool(workers, _init_tokenizer, (options.text,)) as pool:
        corpus = load_corpus(Path(input_dir), options.validation_fraction, options.csv_test_fraction, options.seed,
                             unlabeled=bool(options.embedding_dim and options.unlabeled), sample=options.sample)
        log.info("read %s: %d train, %d validation, %d test and %d unlabeled texts in %.1fs", ", ".join(corpus.names),
                 len(corpus.train), len(corpus.validation), len(corpus.test), len(corpus.unlabeled),
                 time.perf_counter() - started)
        texts = corpus.train.texts + corpus.validation.texts + corpus.test.texts + corpus.unlabeled
        bounds = np.cumsum([0, len(corpus.train), len(corpus.validation), len(corpus.test), len(corpus.unlabeled)])
        rows = {name: np.arange(bounds[i], bounds[i + 1]) for i, name in enumerate((*SPLITS, "unlabeled"))}
        joined, counts = _tokenize(texts, rows["train"], pool)
    vocab = Vocabulary.build(counts, options.vocab_size, options.min_count)
    coverage = sum(counts[t] for t in vocab.tokens) / max(sum(counts.values()), 1)
    log.info("vocabulary: %d ids covering %.1f%% of training tokens", len(vocab), 100 * coverage)

    labels = np.asarray(corpus.train.labels + corpus.validation.labels + corpus.test.labels, dtype=np.int64)
    dataset_ids = np.asarray(corpus.train.dataset + corpus.validation.dataset + corpus.test.dataset, dtype=np.int64)
    vector_rows = np.concatenate([rows["train"], rows["unlabeled"]])
    with _worker_pool(workers, _init_encoder, (vocab, options.text)) as pool:
        encoded = {name: _encode(joined, rows[name], labels, dataset_ids, pool, name) for name in SPLITS}
        vectors = _learn_vectors(joined, vector_rows, len(vocab), options, pool) if options.embedding_dim else None

    stats = _stats(corpus, encoded, vocab, options, coverage, vectors, data_version)
    _write_outputs(output_dir, corpus, encoded, vocab, stats, vectors)
    stats["seconds"] = round(time.perf_counter() - started, 2)
    log.info("preprocessing done in %.1fs: %s", stats["seconds"], {n: stats["splits"][n]["reviews"] for n in SPLITS})
    return stats


def _stats(corpus: Corpus, encoded: dict[str, EncodedSplit], vocab: Vocabulary, options: PreprocessOptions,
           coverage: float, vectors: np.ndarray | None, data_version: str | None,
           duplicates: dict | None = None) -> dict[str, Any]:
    """stats.json: where the data came from, the options, the vocabulary and each split, overall
    and per dataset (``datasets`` lists them in the order of the arrays' dataset indices).
    ``duplicates``: the copies counted by a caller that holds the texts' digests, not the texts."""
    datasets = [{**info.to_dict(), "splits": {name: _split_stats(encoded[name].subset(index), options.text.max_len)
                                              for name in SPLITS}}
                for index, info in enumerate(corpus.datasets)]
    single = corpus.datasets[0] if len(corpus.datasets) == 1 else None
    return {
        "source": {"layout": single.layout if single else "one folder per dataset",
                   "files": [file for info in corpus.datasets for file in info.sources],
                   "undecodable_reviews_skipped": sum(d.undecodable for d in corpus.datasets),
                   "empty_reviews_skipped": sum(d.empty for d in corpus.datasets), "unlabeled_reviews": len(corpus.unlabeled)},
        "data_sha256": corpus.data_sha256(),
        "data_version": data_version or None,
        "datasets": datasets,
        "options": {**{k: v for k, v in options.__dict__.items() if k != "text"}, "text": options.text.to_dict()},
        "vocabulary": {"size": len(vocab), "pad_id": PAD_ID, "unk_id": UNK_ID, "min_count": options.min_count,
                       "training_token_coverage": round(coverage, 5)},
        "splits": {name: _split_stats(encoded[name], options.text.max_len) for name in SPLITS},
        "duplicates": duplicates or _duplicates(corpus.train.texts + corpus.validation.texts, corpus.test.texts),
        "embeddings": None if vectors is None else {
            "dim": int(vectors.shape[1]), "window": options.embedding_window,
            "training_reviews": len(corpus.train), "unlabeled_reviews": len(corpus.unlabeled)},
    }


def _tokenize(texts: list[str], vocabulary_rows: np.ndarray, pool) -> tuple[list[str], Counter]:
    """Every review's tokens (space-joined) and the token counts of the rows that build the vocabulary."""
    counted = np.zeros(len(texts), dtype=bool)
    counted[vocabulary_rows] = True  # the vocabulary sees the training rows only, never validation, test or unlabeled
    order = _chunks(np.arange(len(texts)))
    joined: list[str] = []
    counts: Counter = Counter()
    tasks = [([texts[i] for i in c], counted[c].tolist()) for c in order]
    for chunk_joined, chunk_counts in _imap(_tokenize_chunk, tasks, pool, "tokenize", [len(c) for c in order]):
        joined.extend(chunk_joined)
        counts.update(chunk_counts)
    return joined, counts


def _encode(joined: list[str], rows: np.ndarray, labels: np.ndarray, datasets: np.ndarray, pool, name: str) -> EncodedSplit:
    chunks = _chunks(rows)
    parts = list(_imap(_encode_chunk, [[joined[i] for i in c] for c in chunks], pool, f"encode {name}", [len(c) for c in chunks]))
    if not parts:  # an instance with no rows of this split (its share held none)
        parts = [_encode_chunk([]) if pool is None else pool.apply(_encode_chunk, ([],))]
    return EncodedSplit(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                        np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts]), labels[rows], datasets[rows])


def _cooccurrences(joined: list[str], rows: np.ndarray, vocab_size: int, options: PreprocessOptions, pool) -> sparse.csr_matrix:
    """The windowed co-occurrence counts of these rows (an all-zero matrix for none)."""
    chunks = _chunks(rows)
    counts = sparse.csr_matrix((vocab_size, vocab_size), dtype=np.float64)
    count_chunk = functools.partial(_cooccurrence_chunk, window=options.embedding_window)
    for part in _imap(count_chunk, [[joined[i] for i in c] for c in chunks], pool, "co-occurrences", [len(c) for c in chunks]):
        counts = counts + part  # summed as they come: one matrix in memory
    return counts


def _learn_vectors(joined: list[str], rows: np.ndarray, vocab_size: int, options: PreprocessOptions, pool) -> np.ndarray:
    started = time.perf_counter()
    counts = _cooccurrences(joined, rows, vocab_size, options, pool)
    vectors = embeddings_from_cooccurrence(counts, options.embedding_dim, options.seed)
    log.info("word vectors learned from %d reviews in %.1fs", len(rows), time.perf_counter() - started)
    return vectors


def _write_outputs(output_dir: Path, corpus: Corpus, encoded: dict[str, EncodedSplit], vocab: Vocabulary, stats: dict,
                   vectors: np.ndarray | None) -> None:
    """Write everything into a scratch folder first, then move it into place: no half-written output."""
    output_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".preprocess-", dir=output_dir))
    try:
        for name in SPLITS:
            (scratch / name).mkdir()
            split = encoded[name]
            save_split_arrays(scratch / name, split.ids, split.lengths, split.labels, len(vocab), split.datasets)
        vocab.save(scratch / "train" / VOCAB_FILE)
        if vectors is not None:
            np.save(scratch / "train" / EMBEDDINGS_FILE, vectors, allow_pickle=False)
        (scratch / "train" / STATS_FILE).write_text(json.dumps(stats, indent=2), encoding="utf-8")
        with open(scratch / "test" / REVIEWS_FILE, "w", encoding="utf-8") as handle:
            for review, label, index in zip(corpus.test.texts, corpus.test.labels, corpus.test.dataset):
                info = corpus.datasets[index]
                record = {"text": review, "label": label, "dataset": info.name, "kind": info.kind}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        for name in SPLITS:
            target = output_dir / name
            if target.exists():
                shutil.rmtree(target)
            os.replace(scratch / name, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = PreprocessOptions()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--input-dir", default=DEFAULT_INPUT, help="folder (or file) holding one dataset, or a folder per dataset")
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT, help="where train/, validation/ and test/ are written")
    parser.add_argument("--vocab-size", type=int, default=defaults.vocab_size, help="ids in the vocabulary, padding and unknown included")
    parser.add_argument("--min-count", type=int, default=defaults.min_count, help="a word must occur this often in train to get an id")
    parser.add_argument("--max-len", type=int, default=defaults.text.max_len, help="tokens kept per review")
    parser.add_argument("--truncate", choices=TRUNCATE_SIDES, default=defaults.text.truncate, help="which end of a long review is kept")
    parser.add_argument("--remove-stopwords", action=argparse.BooleanOptionalAction, default=defaults.text.remove_stopwords,
                        help="drop NLTK English stopwords (negations are always kept)")
    parser.add_argument("--stem", action=argparse.BooleanOptionalAction, default=defaults.text.stem, help="Porter-stem tokens")
    parser.add_argument("--validation-fraction", type=float, default=defaults.validation_fraction)
    parser.add_argument("--csv-test-fraction", type=float, default=defaults.csv_test_fraction,
                        help="share of a single CSV held out as the test split")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workers", type=int, default=defaults.workers, help="processes for tokenizing (0: one per core)")
    parser.add_argument("--sample", type=int, default=defaults.sample, help="keep a stratified N reviews per split (0: all)")
    parser.add_argument("--embedding-dim", type=int, default=defaults.embedding_dim,
                        help="size of the word vectors learned from co-occurrences (0: none)")
    parser.add_argument("--embedding-window", type=int, default=defaults.embedding_window, help="co-occurrence window in tokens")
    parser.add_argument("--unlabeled", action=argparse.BooleanOptionalAction, default=defaults.unlabeled,
                        help="learn the word vectors from the unlabeled reviews too, when present")
    parser.add_argument("--data-version", default="",
                        help="the data's version (the pipeline's InputDataVersion), recorded in stats.json")
    parser.add_argument("--overwrite", action="store_true", help="replace results already in --output-dir")
    parser.add_argument("--resource-config", type=Path, default=None,
                        help="SageMaker's resourceconfig.json: which of the job's instances this is (default: the only one)")
    return parser.parse_args(argv)


def options_from_args(args: argparse.Namespace) -> PreprocessOptions:
    text = TextConfig(stem=args.stem, remove_stopwords=args.remove_stopwords, max_len=args.max_len, truncate=args.truncate)
    return PreprocessOptions(vocab_size=args.vocab_size, min_count=args.min_count, validation_fraction=args.validation_fraction,
                             csv_test_fraction=args.csv_test_fraction, seed=args.seed, workers=args.workers,
                             sample=args.sample, embedding_dim=args.embedding_dim, embedding_window=args.embedding_window,
                             unlabeled=args.unlabeled, text=text)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)

    def work() -> int:
        instances = read_instances(args.resource_config)
        options, input_dir = options_from_args(args), Path(args.input_dir)
        if instances.count > 1 or is_sharded(input_dir):  # shards: the same code for one instance or many
            from steps.exchange import Exchange
            from steps.sharded import run_sharded

            stats = run_sharded(input_dir, Path(args.output_dir), options, Exchange(instances), overwrite=args.overwrite,
                                data_version=args.data_version)
        else:
            stats = run(input_dir, Path(args.output_dir), options, overwrite=args.overwrite, data_version=args.data_version)
        print(json.dumps({"seconds": stats["seconds"], "splits": {n: stats["splits"][n]["reviews"] for n in SPLITS}}))
        return 0

    return report_failures(work, (DataError, ValueError, ExchangeError), PROCESSING_REASON_FILE, log)


if __name__ == "__main__":
    sys.exit(main())
