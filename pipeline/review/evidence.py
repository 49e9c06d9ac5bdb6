"""A registered version's evidence, found and read in the local state and artifact store.

What a version points at, and where its files are:

- ``metrics_uri`` names the Evaluate step's ``evaluation.json``; the step wrote its companions
  next to it (``evaluation/outputs.py`` names them): ``predictions.jsonl`` (label and positive
  probability per test review, in the order of the test reviews), ``roc_pr_curves.png``,
  ``confusion_matrix.png``, ``worst_misclassified.md`` and ``training_curves.png``;
- the execution that registered it recorded its Evaluate step with the resolved request: its
  ``ProcessingInputs`` hold the ``test`` input's S3 URI, under which lies ``reviews.jsonl``, the
  very test reviews the step scored (a step taken from the cache carries the properties of the run
  that really ran it, so the URI is right either way);
- ``artifact_uri`` names ``model.tar.gz``, whose ``config.json`` holds the data's sha256 and
  version and the training summary (and, in newer artifacts, ``training_curves.png``); the
  training job left ``output.tar.gz`` beside it, holding ``training_curves.png`` too, for versions
  evaluated before the Evaluate step published the curves;
- the execution's definition names the code bundles by content (``code/<sha256>/<name>``).

Only file names known here are read, each from the version's own folders: nothing a request
says becomes a path. Files that are missing come back as None with the reason in words, so a page
can say what is not there instead of failing.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sqlite3
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from evaluation.outputs import (
    ACCURACY_BY_LENGTH_FILE,
    CALIBRATION_FILE,
    CONFUSION_MATRIX_FILE,
    PREDICTIONS_FILE,
    ROC_PR_FILE,
    TRAINING_CURVES_FILE,
)
from pipeline.definition.contracts import EVALUATE, TEST_INPUT_DIR
from pipeline.local.state.db import StateError, open_state
from pipeline.local.state.executions import Execution, ExecutionError, ExecutionStore, Step
from pipeline.local.state.registry import ModelPackage, ModelRegistry
from pipeline.local.state.store import ArtifactStore, StoreError, landing_path, split_uri
from pipeline.settings import Settings
from steps.arrays import REVIEWS_FILE

# The files the Evaluate step writes have their names in evaluation/outputs.py; the test reviews'
# file is the preprocessing step's (steps/preprocess.py, which imports torch: repeated here, and
# tests/test_review.py checks that the two agree).
TRAINING_OUTPUT_ARCHIVE = "output.tar.gz"
MODEL_CONFIG_FILE = "config.json"
# The plots a page may show, by the only names a request may ask for.
PLOTS = {
    ROC_PR_FILE: "ROC and precision-recall curves",
    CONFUSION_MATRIX_FILE: "Confusion matrix",
    TRAINING_CURVES_FILE: "Training curves (loss and accuracy per epoch)",
    ACCURACY_BY_LENGTH_FILE: "Accuracy by length (whole reviews and single sentences)",
    CALIBRATION_FILE: "Calibration (how sure against how often right)",
}
# Members read out of an archive are small; anything larger is not what the steps write.
MAX_MEMBER_BYTES = 20 * 1024 * 1024
CODE_BUNDLE = re.compile(r"^s3://.+/code/([0-9a-f]{64})/([^/]+)$")

T = TypeVar("T")


class EvidenceError(StateError):
    """A version's evidence that cannot be read; the message says what is missing."""


@dataclass(frozen=True)
class EvaluationSet:
    """The test reviews a version was evaluated on: where they are and what they are (their
    ``sha256``, a digest of every text and label in order, is what decides whether two versions'
    predictions can be compared review by review)."""

    input_uri: str
    reviews_uri: str
    sha256: str
    count: int


@dataclass(frozen=True)
class Review:
    text: str
    label: int


@dataclass(frozen=True)
class Prediction:
    label: int
    positive_probability: float


@dataclass(frozen=True)
class CodeBundle:
    step: str
    name: str
    sha256: str
    uri: str


class Evidence:
    """Reads for one home: the registry, the executions and the artifact store on one connection."""

    def __init__(self, settings: Settings, conn: sqlite3.Connection) -> None:
        self.settings, self.conn = settings, conn
        self.group = settings.model_package_group
        self.registry = ModelRegistry(conn)
        self.executions = ExecutionStore(conn)
        self.store = ArtifactStore(settings.home)
        # The test reviews each Evaluate step read (tens of MB), by its test input's URI: a page
        # needs their digest and their text, a comparison two versions' digests; read once.
        self._test_reviews: dict[str, tuple[str, bytes]] = {}

    # --- the registry -----------------------------------------------------------------------------
    def package(self, version: int) -> ModelPackage:
        """A version of the group; ``RegistryError`` (a StateError) naming the versions there are."""
        return self.registry.get(self.group, version)

    def packages(self) -> list[ModelPackage]:
        return self.registry.list_packages(self.group)

    # --- the evaluation folder --------------------------------------------------------------------
    def evaluation_folder(self, package: ModelPackage) -> str | None:
        """The URI of the folder the Evaluate step wrote (``…/evaluation/``), from ``metrics_uri``."""
        if not package.metrics_uri:
            return None
        return package.metrics_uri.rpartition("/")[0] + "/"

    def _evaluation_file(self, package: ModelPackage, name: str) -> bytes | None:
        folder = self.evaluation_folder(package)
        if folder is None:
            return None
        uri = folder + name
        return self.store.read_bytes(uri) if self.store.has_object(uri) else None

    def plot(self, package: ModelPackage, name: str) -> bytes | None:
        """One of ``PLOTS`` (by that name only) from the evaluation folder. Versions evaluated before
        the Evaluate step published the training curves there have them in ``model.tar.gz`` or in
        the training job's ``output.tar.gz`` beside it. None when absent."""
        if name not in PLOTS:
            return None
        found = self._evaluation_file(package, name)
        if found is None and name == TRAINING_CURVES_FILE:
            found = self._archive_member(package.artifact_uri, TRAINING_CURVES_FILE)
            if found is None:
                folder = package.artifact_uri.rpartition("/")[0]
                found = self._archive_member(f"{folder}/{TRAINING_OUTPUT_ARCHIVE}", TRAINING_CURVES_FILE)
        return found

    def predictions(self, package: ModelPackage) -> list[Prediction]:
        """predictions.jsonl: one per test review, in the test reviews' order."""
        data = self._evaluation_file(package, PREDICTIONS_FILE)
        if data is None:
            raise EvidenceError(f"version {package.version} has no saved predictions ({PREDICTIONS_FILE} next to "
                                f"{package.metrics_uri or 'its evaluation report'})")
        return _json_lines(data, f"{PREDICTIONS_FILE} of version {package.version}", "{label, positive_probability}",
                           lambda record: Prediction(int(record["label"]), float(record["positive_probability"])))

    # --- the execution ----------------------------------------------------------------------------
    def execution(self, package: ModelPackage) -> Execution | None:
        if not package.execution_id:
            return None
        try:
            return self.executions.get(package.execution_id)
        except ExecutionError:
            return None

    def job_hosts(self, package: ModelPackage) -> dict[str, int]:
        """How many instances each of the execution's jobs ran on, by step name."""
        if not package.execution_id:
            return {}
        try:
            steps = self.executions.steps(package.execution_id)
        except ExecutionError:
            return {}
        return {step.step_name: step.hosts for step in steps if step.hosts}

    def evaluate_step(self, package: ModelPackage) -> Step | None:
        if not package.execution_id:
            return None
        try:
            return self.executions.step(package.execution_id, EVALUATE)
        except ExecutionError:
            return None

    def test_input_uri(self, package: ModelPackage) -> str:
        """The S3 URI of the test reviews the version's Evaluate step read (its ``test`` input)."""
        step = self.evaluate_step(package)
        if step is None:
            raise EvidenceError(f"version {package.version} was not registered by a recorded pipeline execution "
                                f"with an {EVALUATE} step, so its test reviews cannot be found")
        for item in step.properties.get("ProcessingInputs") or []:
            source = item.get("S3Input") or {}
            if source.get("LocalPath") == TEST_INPUT_DIR or item.get("InputName") == "test":
                if isinstance(source.get("S3Uri"), str):
                    return source["S3Uri"]
        raise EvidenceError(f"the {EVALUATE} step of execution {step.execution_id} records no test input")

    def test_set(self, package: ModelPackage) -> EvaluationSet:
        """Where the test reviews are and their digest (EvidenceError when they cannot be found).

        The digest covers each review's text and label, not the file's bytes: a file written since
        reviews.jsonl names each line's dataset holds the same reviews as one written before."""
        uri, _ = self._test_reviews_bytes(package)
        reviews = self.test_reviews(package)
        digest = hashlib.sha256()
        for review in reviews:
            digest.update(json.dumps([review.text, review.label], ensure_ascii=False).encode("utf-8") + b"\n")
        return EvaluationSet(self.test_input_uri(package), uri, digest.hexdigest(), len(reviews))

    def _test_reviews_bytes(self, package: ModelPackage) -> tuple[str, bytes]:
        prefix_uri = self.test_input_uri(package)
        if prefix_uri not in self._test_reviews:
            self._test_reviews[prefix_uri] = self._read_test_reviews(package, prefix_uri)
        return self._test_reviews[prefix_uri]

    def _read_test_reviews(self, package: ModelPackage, prefix_uri: str) -> tuple[str, bytes]:
        try:
            bucket, prefix = split_uri(prefix_uri)
            keys = self.store.keys(prefix_uri)
        except StoreError as error:
            raise EvidenceError(f"the test input of version {package.version} is not readable: {error}") from None
        # The object the Evaluate job saw as <test input>/reviews.jsonl, as a File-mode input lands it.
        for key in keys:
            if landing_path(prefix, key) == REVIEWS_FILE:
                uri = f"s3://{bucket}/{key}"
                return uri, self.store.read_bytes(uri)
        raise EvidenceError(f"no {REVIEWS_FILE} under {prefix_uri} (the test reviews of version {package.version}) "
                            "in the local store")

    def test_reviews(self, package: ModelPackage) -> list[Review]:
        uri, data = self._test_reviews_bytes(package)
        return _json_lines(data, uri, "{text, label}", lambda record: Review(str(record["text"]), int(record["label"])))

    def code_bundles(self, package: ModelPackage) -> list[CodeBundle]:
        """The content-addressed code bundles the registering execution's definition names, per step."""
        if not package.execution_id:
            return []
        try:
            definition = json.loads(self.executions.definition(package.execution_id))
        except (ExecutionError, json.JSONDecodeError):
            return []
        found: dict[tuple[str, str], CodeBundle] = {}
        for step in definition.get("Steps") or []:
            for text in _strings(step.get("Arguments")):
                match = CODE_BUNDLE.match(text)
                if match:
                    found.setdefault((step.get("Name", "?"), text),
                                     CodeBundle(step.get("Name", "?"), match.group(2), match.group(1), text))
        return list(found.values())

    # --- the model --------------------------------------------------------------------------------
    def model_config(self, package: ModelPackage) -> dict[str, Any] | None:
        """config.json inside model.tar.gz: the data's sha256 and version, the training summary."""
        data = self._archive_member(package.artifact_uri, MODEL_CONFIG_FILE)
        if data is None:
            return None
        with contextlib.suppress(UnicodeDecodeError, json.JSONDecodeError):
            config = json.loads(data.decode("utf-8"))
            return config if isinstance(config, dict) else None
        return None

    def _archive_member(self, uri: str, name: str) -> bytes | None:
        """One regular file, by its exact name at the archive's root, read (never extracted)."""
        if not self.store.has_object(uri):
            return None
        path: Path = self.store.path(uri)
        try:
            with tarfile.open(path, "r:*") as tar:
                for member in tar:
                    if member.name.removeprefix("./") == name:
                        if not member.isfile() or member.size > MAX_MEMBER_BYTES:
                            return None
                        handle = tar.extractfile(member)
                        return handle.read() if handle is not None else None
        except (tarfile.TarError, OSError, EOFError):
            return None
        return None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


@contextlib.contextmanager
def reading(settings: Settings) -> Iterator[Evidence]:
    """The home's evidence on a connection of its own, closed afterwards (one per thread)."""
    with contextlib.closing(open_state(settings.home)) as conn:
        yield Evidence(settings, conn)


def _json_lines(data: bytes, source: str, shape: str, parse: Callable[[dict], T]) -> list[T]:
    """One ``parse``d record per non-blank line; EvidenceError naming the file and line otherwise.

    Lines end at ``\n`` only: ``str.splitlines`` would also split at U+2028, U+0085 and the like,
    which JSON keeps raw inside strings (reviews hold them)."""
    found = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        line = raw.decode("utf-8", errors="replace")
        if not line.strip():
            continue
        try:
            found.append(parse(json.loads(line)))
        except (ValueError, KeyError, TypeError) as error:
            raise EvidenceError(f"{source} line {number} is not a {shape} record: {error}") from None
    return found


def lines_up(predictions: list[Prediction], reviews: list[Review]) -> bool:
    """Whether saved predictions are about these test reviews: one each, with the same labels."""
    return len(predictions) == len(reviews) and all(p.label == r.label for p, r in zip(predictions, reviews))
