"""Several labelled datasets in one run: how a data folder names them, and how they are split and joined.

Preprocess reads one folder (on SageMaker, the ``InputDataUri`` prefix). It holds either

- **one dataset** in any layout ``steps.sources`` accepts (today's default, ``data/imdb/``), named
  by its layout (``imdb`` for reviews, ``sst2`` for SST's sentence files) unless a
  ``dataset.json`` in it names it; or
- **one sub-folder per dataset** (``data/mixed/imdb/``, ``data/mixed/sst2/``), each in any
  accepted layout and named by its folder.

One prefix, not one parameter per dataset: a pipeline's inputs are fixed when it is built, so a
prefix holding a folder per dataset is the only shape that lets the number of datasets change per
execution. Caching and ``InputDataVersion`` need nothing new, since the listing digest covers every
folder under the prefix.

Each dataset keeps its own test split (evaluated and gated on its own), uses its own validation
split when it ships one (SST-2's dev file) and otherwise carves one from its training split.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serve.text import REVIEWS, SENTENCES, TEXT_KINDS
from steps.sources import DEFAULT_NAME, DataError, ReviewData, Split, check_dataset, load_reviews, stratified_split

log = logging.getLogger(__name__)

# Optional, in a dataset's folder: {"name": ..., "kind": "reviews" | "sentences"}, for a dataset whose
# layout does not say what it is (your own sentences as JSON Lines; a sample `run --sample` staged).
DATASET_FILE = "dataset.json"

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


def check_name(name: str, where: str) -> str:
    """A dataset name as the report, the gate and ``run --json`` use it."""
    if not _NAME.fullmatch(name):
        raise DataError(f"{where}: dataset name {name!r} must be 1 to 40 lower-case letters, digits, '-' or '_' "
                        "(starting with a letter or digit); rename the folder")
    return name


def declared(folder: Path) -> dict[str, str]:
    """What ``dataset.json`` in ``folder`` says of the dataset (nothing when there is none)."""
    path = Path(folder) / DATASET_FILE
    if not path.is_file():
        return {}
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not JSON ({exc}); expected {{\"name\": ..., \"kind\": \"reviews\"|\"sentences\"}}") from exc
    if not isinstance(found, dict) or set(found) - {"name", "kind"} or found.get("kind", REVIEWS) not in TEXT_KINDS:
        raise DataError(f"{path} must be an object with an optional \"name\" and a \"kind\" of "
                        f"{' or '.join(TEXT_KINDS)}; it holds {str(found)[:200]}")
    if "name" in found:
        check_name(str(found["name"]), str(path))
    return {key: str(value) for key, value in found.items()}


def describe_dataset(path: Path) -> tuple[str, str]:
    """The name and kind of the dataset at ``path``, after the cheap look ``check_dataset`` takes:
    what ``dataset.json`` says, else what the layout is (SST-2's files: sentences)."""
    from steps.sources import find_layout
    from steps.sst import DATASET_NAME as SST_NAME

    check_dataset(path)
    layout, info = find_layout(Path(path)).kind, declared(path) if Path(path).is_dir() else {}
    name, kind = (SST_NAME, SENTENCES) if layout == "sst" else (DEFAULT_NAME, REVIEWS)
    return info.get("name", name), info.get("kind", kind)


def dataset_folders(path: Path) -> list[tuple[str | None, Path]]:
    """``[(name, folder)]`` of the datasets under ``path``: ``[(None, path)]`` when ``path`` itself
    holds one (the reader names it), else one entry per sub-folder, named by the folder.

    A sub-folder that holds no accepted layout is refused by name rather than skipped: a dataset
    dropped without a word would train a different model than the one asked for.
    """
    from steps.sources import find_layout

    path = Path(path)
    folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")) if path.is_dir() else []
    try:
        layout = find_layout(path)
    except DataError as root_error:
        if not folders:
            raise root_error
    else:
        _refuse_datasets_beside(path, layout.describe(), [f for f in folders if f.name not in _TREE_FOLDERS])
        return [(None, path)]
    # Files beside the dataset folders are no dataset: `aws upload-data` puts its _SUCCESS marker there.
    ignored = sorted(p.name for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if ignored:
        log.info("%s: reading the datasets in its folders; ignoring the files beside them (%s)", path, ", ".join(ignored))
    for folder in folders:
        check_name(folder.name, str(path))
        try:
            find_layout(folder)
        except DataError as exc:
            raise DataError(f"dataset folder {folder} holds no accepted layout: {str(exc).splitlines()[0]}") from exc
    return [(folder.name, folder) for folder in folders]


# The folders of the aclImdb tree's own layout: part of the dataset at the root, not datasets beside it.
_TREE_FOLDERS = {"aclImdb", "train", "test"}


def _refuse_datasets_beside(path: Path, layout: str, folders: list[Path]) -> None:
    """A folder that holds a dataset itself and another in a sub-folder is ambiguous (the cache,
    say, with aclImdb_v1.tar.gz beside sst2/): reading one of the two would drop the other unsaid."""
    from steps.sources import find_layout

    for folder in folders:
        try:
            find_layout(folder)
        except DataError:
            continue
        raise DataError(f"{path} holds a dataset ({layout}) and another in its folder {folder.name}/: put each dataset "
                        "in a folder of its own under one folder (imdb/, sst2/), or name each with --data")


@dataclass
class Labelled:
    """Texts with their labels and the index of the dataset each came from (into ``Corpus.datasets``)."""

    texts: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    dataset: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def extend(self, split: Split, rows: np.ndarray | None, index: int) -> None:
        rows_list = range(len(split)) if rows is None else rows.tolist()
        self.texts.extend(split.texts[i] for i in rows_list)
        self.labels.extend(split.labels[i] for i in rows_list)
        self.dataset.extend(index for _ in rows_list)


@dataclass
class DatasetInfo:
    """What stats.json and the report say about one dataset."""

    name: str
    kind: str
    layout: str
    sources: list[str]
    train_sha256: str
    test_sha256: str
    validation_from: str  # "its own validation split" or "carved from its training split"
    undecodable: int = 0
    empty: int = 0
    unlabeled: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Corpus:
    """Every dataset of a run, split and joined in dataset order."""

    datasets: list[DatasetInfo] = field(default_factory=list)
    train: Labelled = field(default_factory=Labelled)
    validation: Labelled = field(default_factory=Labelled)
    test: Labelled = field(default_factory=Labelled)
    unlabeled: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.datasets]

    def data_sha256(self) -> dict[str, str]:
        """The fingerprint training and the model's config.json carry: one dataset's own, as before
        several were possible, or a digest of each dataset's name and fingerprint in order."""
        if len(self.datasets) == 1:
            return {"train": self.datasets[0].train_sha256, "test": self.datasets[0].test_sha256}
        return {split: hashlib.sha256("".join(f"{d.name}\t{getattr(d, f'{split}_sha256')}\n" for d in self.datasets)
                                      .encode()).hexdigest() for split in ("train", "test")}


def load_corpus(path: Path, validation_fraction: float, csv_test_fraction: float = 0.5, seed: int = 42,
                unlabeled: bool = True, sample: int = 0) -> Corpus:
    """Read every dataset under ``path`` and split each: its own validation split when it has one,
    else a seeded, stratified ``validation_fraction`` of its training split."""
    corpus = Corpus()
    for folder_name, folder in dataset_folders(Path(path)):
        data = load_reviews(folder, csv_test_fraction, seed, unlabeled=unlabeled)
        info = declared(folder) if folder.is_dir() else {}
        data.name, data.kind = info.get("name", data.name), info.get("kind", data.kind)
        if sample:
            data.sample(sample, seed)
        name = folder_name or check_name(data.name, str(folder))
        if name in corpus.names:
            raise DataError(f"two datasets are named {name!r} ({folder} and an earlier one): give each its own folder name")
        _add(corpus, name, data, validation_fraction, seed)
    return corpus


def _add(corpus: Corpus, name: str, data: ReviewData, validation_fraction: float, seed: int) -> None:
    index = len(corpus.datasets)
    labels = np.asarray(data.train.labels, dtype=np.int64)
    if len(np.unique(labels)) < 2:
        raise DataError(f"the training data of dataset {name!r} holds only one label: a classifier needs positive "
                        "and negative examples")
    if data.validation is not None:  # load_reviews refuses an empty one
        corpus.train.extend(data.train, None, index)
        corpus.validation.extend(data.validation, None, index)
        validation_from = "its own validation split"
    else:
        train_rows, val_rows = stratified_split(labels, validation_fraction, seed)
        if not len(train_rows) or not len(val_rows):
            raise DataError(f"{len(labels)} training texts of dataset {name!r} are too few for a {validation_fraction:.1%} "
                            "validation split: use more (a larger --sample) or change --validation-fraction")
        corpus.train.extend(data.train, train_rows, index)
        corpus.validation.extend(data.train, val_rows, index)
        validation_from = "carved from its training split"
    corpus.test.extend(data.test, None, index)
    corpus.unlabeled.extend(data.unlabeled)
    corpus.datasets.append(DatasetInfo(name, data.kind, data.layout, data.sources, data.train.sha256(), data.test.sha256(),
                                       validation_from, data.undecodable, data.empty, len(data.unlabeled)))
