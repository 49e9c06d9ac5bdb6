"""Deterministic, content-addressed code bundles for the pipeline's jobs.

The definition references step code by ``s3://`` URI instead of local paths, because a local
path makes the SDK upload while the definition is being built (an AWS call, and a key that
changes each time). A bundle's key is the sha256 of its bytes, and the bytes depend on the
source alone (sorted entries, zeroed times and owners, normalized modes, gzip header without a
timestamp), so the same source gives the same URI and the same definition, byte for byte, and
a changed source gives a new URI, which is also what invalidates SageMaker's step cache.

The bundles are returned with their bytes: the SageMaker backend uploads them before
``upsert``, and the local runtime reads them from its artifact store under the same key.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.settings import REPO_ROOT, Settings
from serve import dependencies

# What the processing and training containers pip-install at job start, on top of the PyTorch
# training image (which has torch, numpy, scipy, scikit-learn, matplotlib and tqdm): exact pins
# from serve/constraints.txt, the one source that the model's code/ is pinned from too.
TEXT_REQUIREMENTS = dependencies.JOBS.installs
CONSTRAINTS_SOURCE = "serve/constraints.txt"  # inside the bundle: its root constraints.txt is a copy

# A package below a folder (lambda/mlops_rules) is bundled at the archive's top (mlops_rules/), where
# the script's imports find it: the monitoring job reads captures and feedback by its rules.
PROCESSING_PACKAGES = ("steps", "serve", "evaluation", "monitor", "lambda/mlops_rules")
TRAINING_PACKAGES = ("train", "serve", "steps")

PROCESSING_BUNDLE_NAME = "sourcedir.tar.gz"
TRAINING_BUNDLE_NAME = "sourcedir.tar.gz"
RUNNER_NAME = "runproc.sh"

# The runner is the processing job's entry point, like the SDK's FrameworkProcessor
# ``runproc.sh``: unpack the code bundle, install its requirements, run the script with the
# job's arguments. It runs plain ``pip install -r requirements.txt``, as the training and
# inference toolkits do: the pins travel inside that file (``-c constraints.txt``), and pip's
# PIP_* variables from the job's environment (a mirror's PIP_INDEX_URL) apply to all three.
# Locally the same scripts run in the project's own environment instead.
RUNNER_SCRIPT = """#!/bin/bash
# Entry point of the sentiment-mlops processing jobs: unpack the code bundle,
# install its requirements, then run the script named by the first argument.
set -euo pipefail
CODE_INPUT="${SM_CODE_INPUT:-/opt/ml/processing/input/code}"
WORK_DIR="${SM_CODE_DIR:-/opt/ml/code}"
mkdir -p "$WORK_DIR"
cd "$WORK_DIR"
tar -xzf "$CODE_INPUT/sourcedir.tar.gz"
if [[ -f requirements.txt ]]; then
    python -m pip install --quiet --disable-pip-version-check -r requirements.txt
fi
script="$1"
shift
export PYTHONPATH="$WORK_DIR${PYTHONPATH:+:$PYTHONPATH}"
exec python "$script" "$@"
"""

_EXCLUDED_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache"}
_EXCLUDED_SUFFIXES = (".pyc", ".pyo")


@dataclass(frozen=True)
class Bundle:
    """One content-addressed file: its name, bytes and sha256, and where it lives in S3."""

    name: str
    data: bytes
    sha256: str
    s3_uri: str

    @property
    def key(self) -> str:
        """The S3 key, without the bucket: the same key the local artifact store uses."""
        return self.s3_uri.split("/", 3)[3]


@dataclass(frozen=True)
class CodeBundles:
    """The files every job's code comes from."""

    processing: Bundle
    training: Bundle
    runner: Bundle

    def all(self) -> tuple[Bundle, ...]:
        return (self.processing, self.training, self.runner)


def install_files(files: Mapping[str, bytes], requirements: Iterable[str] = TEXT_REQUIREMENTS) -> dict[str, bytes]:
    """``requirements.txt`` and ``constraints.txt`` for the bundle's root, generated from the
    bundle's own ``serve/constraints.txt``: the pins shipped are those of the source shipped."""
    if CONSTRAINTS_SOURCE not in files:
        raise FileNotFoundError(f"cannot pin the bundle's requirements: it holds no {CONSTRAINTS_SOURCE}")
    return dependencies.install_files(requirements, files[CONSTRAINTS_SOURCE])


def _source_files(root: Path, packages: Iterable[str]) -> dict[str, bytes]:
    """``{archive name: bytes}`` for each package's files, caches and compiled files left out; each
    package at the archive's top, under its own name."""
    files: dict[str, bytes] = {}
    for package in packages:
        base = root / package
        if not base.is_dir():
            raise FileNotFoundError(f"cannot bundle {package}/: no such folder under {root}")
        for path in base.rglob("*"):
            relative = path.relative_to(base.parent)
            if any(part in _EXCLUDED_DIRS or part.startswith(".") for part in relative.parts):
                continue
            if path.is_file() and not path.name.endswith(_EXCLUDED_SUFFIXES):
                files[relative.as_posix()] = path.read_bytes()
    return files


def deterministic_tar_gz(files: Mapping[str, bytes]) -> bytes:
    """A tar.gz of ``files`` that depends only on their names and contents.

    Entries are sorted; mtime, uid and gid are 0, owner names empty, modes 0644 (0755 for
    shell scripts); the gzip header carries no file name and mtime 0.
    """
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            data = files[name]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if name.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(data))
    compressed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return compressed.getvalue()


def content_addressed(name: str, data: bytes, settings: Settings) -> Bundle:
    """``s3://{bucket}/{prefix}/code/{sha256}/{name}``: the URI changes exactly when the bytes do."""
    digest = hashlib.sha256(data).hexdigest()
    return Bundle(name=name, data=data, sha256=digest, s3_uri=settings.s3_uri("code", digest, name))


def source_bundle(packages: Iterable[str], settings: Settings, root: Path = REPO_ROOT,
                  name: str = PROCESSING_BUNDLE_NAME, requirements: Iterable[str] = TEXT_REQUIREMENTS) -> Bundle:
    """The named packages with a pinned ``requirements.txt`` and its ``constraints.txt``, as one
    content-addressed tar.gz."""
    files = _source_files(root, packages)
    files.update(install_files(files, requirements))
    return content_addressed(name, deterministic_tar_gz(files), settings)


def build_bundles(settings: Settings, root: Path = REPO_ROOT) -> CodeBundles:
    """The processing bundle, the training bundle and the processing runner, built from ``root``."""
    return CodeBundles(
        processing=source_bundle(PROCESSING_PACKAGES, settings, root, PROCESSING_BUNDLE_NAME),
        training=source_bundle(TRAINING_PACKAGES, settings, root, TRAINING_BUNDLE_NAME),
        runner=content_addressed(RUNNER_NAME, RUNNER_SCRIPT.encode("utf-8"), settings),
    )
