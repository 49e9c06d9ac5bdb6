"""The local artifact store: ``s3://bucket/key`` is the file ``<home>/s3/bucket/key``.

Why a plain directory tree: the jobs read and write files, and a person debugging a run wants
to ``ls`` what a step produced under the same key the AWS run would use. Keys are refused when
they could escape the tree (``..``, empty or ``.`` segments, backslashes), and every write goes
to a temporary file that is renamed into place, so a reader never sees half a file and an
interrupted upload leaves nothing behind under the real key.

A URI that is read (``download``, ``exists``, ``keys``) is a key prefix, as a SageMaker
``S3Prefix`` input or a checkpoint URI is: it matches every object whose key starts with it, so
``s3://b/data/imdb`` also takes ``data/imdb-2026-11/…`` and ``data/imdb.csv``, and only
``s3://b/data/imdb/`` means the folder. A local run therefore reads what the AWS run would: a URI
missing its trailing "/" takes the same extra objects here, where a test can see it. Where each
object lands is ``landing_path``. A URI that is written or read as one object
(``put_bytes``, ``upload_file``, ``read_bytes``) names that object exactly.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from mlops_rules.s3 import split_s3_uri

S3_DIR = "s3"


class StoreError(ValueError):
    """A URI the store refuses, or an object that is not there."""


def split_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of ``s3://bucket/key``, the key as written: a trailing "/" is kept, because
    for a prefix it decides what matches. Refuses anything that could leave the tree."""
    try:
        bucket, key = split_s3_uri(uri)
    except ValueError as error:
        raise StoreError(str(error)) from None
    _check_segment(bucket, uri)
    body = key.removesuffix("/")
    if key and not body:
        _check_segment("", uri)
    for segment in body.split("/") if body else []:
        _check_segment(segment, uri)
    return bucket, key


def _check_segment(segment: str, uri: str) -> None:
    if segment in ("", ".", "..") or "\\" in segment or "\x00" in segment:
        raise StoreError(f"refusing {uri!r}: empty, '.', '..' or backslash segments could escape the store")


def landing_path(prefix: str, key: str) -> str:
    """Where a File-mode ``S3Prefix`` input puts the object ``key`` matched by ``prefix``, relative
    to its LocalPath (``/opt/ml/processing/<name>``, ``/opt/ml/input/data/<channel>``).

    AWS documents only which objects match (every key that starts with the prefix); where they
    land follows what SageMaker's own examples and users observe: a prefix that is a folder
    (ends in "/", or the key continues it with "/") is removed, so ``…/output/test`` puts
    ``…/output/test/test.csv`` at ``test.csv``; otherwise the prefix's folder part is removed,
    so an object named exactly keeps its file name (``…/model.tar.gz`` at ``model.tar.gz``) and
    a sibling keeps its full name (``data/imdb.csv`` at ``imdb.csv``; aws/sagemaker-python-sdk
    issue 3612 reports this for SageMaker jobs, and ``.csv`` for the SDK's local mode, which
    strips the whole prefix).
    """
    if not prefix or prefix.endswith("/"):
        return key[len(prefix):]
    if key.startswith(prefix + "/"):
        return key[len(prefix) + 1:]
    folder = prefix.rpartition("/")[0]
    return key[len(folder) + 1:] if folder else key


def _is_temporary(name: str) -> bool:
    """A write in progress (see ``put_bytes``): not an object yet."""
    return name.startswith(".") and name.endswith(".partial")


class ArtifactStore:
    """Upload, download and read objects under ``<root>/s3``."""

    def __init__(self, home: Path | str) -> None:
        self.root = Path(home).resolve() / S3_DIR

    def path(self, uri: str) -> Path:
        """The local path of an object, or of the folder a prefix ending in "/" names (which need
        not exist yet)."""
        bucket, key = split_uri(uri)
        key = key.rstrip("/")
        return self.root / bucket / key if key else self.root / bucket

    def _object_path(self, uri: str) -> Path:
        """The local path of the one object ``uri`` names; a prefix ("…/") names none."""
        bucket, key = split_uri(uri)
        if not key or key.endswith("/"):
            raise StoreError(f"{uri} names a prefix (a folder), not an object: give the object's full key")
        if (self.root / bucket / key).is_dir():
            raise StoreError(f"{uri} is also the prefix of other objects ({key}/...): S3 allows a key and a folder of "
                             "the same name, the local store does not; choose another key")
        return self.root / bucket / key

    def _matching(self, uri: str) -> Iterator[str]:
        """The keys that start with ``uri``'s key, as S3's ListObjectsV2 ``Prefix`` matches them:
        the entries of the prefix's folder whose names start with its last part, and everything
        below those that are folders."""
        bucket, prefix = split_uri(uri)
        bucket_dir = self.root / bucket
        folder, _, stem = prefix.rpartition("/")
        base = bucket_dir / folder if folder else bucket_dir
        if not base.is_dir():
            return
        for entry in base.iterdir():
            if not entry.name.startswith(stem):
                continue
            found = [entry] if entry.is_file() else entry.rglob("*") if entry.is_dir() else []
            for path in found:
                if path.is_file() and not _is_temporary(path.name):
                    yield path.relative_to(bucket_dir).as_posix()

    def keys(self, uri: str) -> list[str]:
        """Every key ``uri`` matches as a prefix, in S3's listing order."""
        return sorted(self._matching(uri))

    def exists(self, uri: str) -> bool:
        """Whether ``uri`` matches any object as a prefix (what an S3Prefix input would read)."""
        return next(self._matching(uri), None) is not None

    def has_object(self, uri: str) -> bool:
        """Whether the one object ``uri`` names is there (a longer key beside it does not count)."""
        try:
            return self._object_path(uri).is_file()
        except StoreError:
            return False

    def put_bytes(self, uri: str, data: bytes) -> Path:
        """Write one object atomically."""
        target = self._object_path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    @contextlib.contextmanager
    def writer(self, uri: str) -> Iterator[IO[bytes]]:
        """A file to write one object through, streamed: it appears under ``uri`` only when the
        block ends without an error, whole; on an error nothing is left."""
        target = self._object_path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def upload_file(self, source: Path, uri: str) -> Path:
        """Copy one file to an object, atomically (temp file in the target folder, then rename)."""
        target = self._object_path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def upload_dir(self, source: Path, uri: str) -> list[str]:
        """Every file below ``source`` to ``uri/<relative path>``; returns the URIs written."""
        written = []
        for path in sorted(p for p in Path(source).rglob("*") if p.is_file()):
            object_uri = f"{uri.rstrip('/')}/{path.relative_to(source).as_posix()}"
            self.upload_file(path, object_uri)
            written.append(object_uri)
        return written

    def download(self, uri: str, destination: Path, keys: list[str] | None = None) -> Path:
        """Every object ``uri`` matches as a prefix into ``destination``, each where a File-mode
        S3Prefix input puts it (``landing_path``); returns ``destination``. ``keys``: only these
        of them (one instance's share of a ``ShardedByS3Key`` input)."""
        bucket, prefix = split_uri(uri)
        keys = self.keys(uri) if keys is None else keys
        if not keys:
            raise StoreError(f"nothing at {uri}: no object's key starts with {prefix!r} in {self.root / bucket}; "
                             "put the data there first, or give the URI of data that is there")
        destination = Path(destination)
        destination.mkdir(parents=True, exist_ok=True)
        for key, relative in _landings(uri, prefix, keys).items():
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.root / bucket / key, target)
        return destination

    def read_bytes(self, uri: str) -> bytes:
        source = self._object_path(uri)
        if not source.is_file():
            raise StoreError(f"no object at {uri} (looked for {source})")
        return source.read_bytes()

    def read_json(self, uri: str) -> Any:
        """The parsed JSON object at ``uri`` (a property file, evaluation.json)."""
        try:
            return json.loads(self.read_bytes(uri).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise StoreError(f"{uri} is not JSON: {error}") from None


def _landings(uri: str, prefix: str, keys: list[str]) -> dict[str, str]:
    """``{key: landing path}``; refuses keys that would land on one path, or a file where another
    needs a folder (``data/imdb.csv`` and ``data/imdb/imdb.csv`` under ``data/imdb``): one would
    silently replace the other, and a URI ending in "/" says which was meant."""
    landings = {key: landing_path(prefix, key) for key in keys}
    seen: set[str] = set()
    files = set(landings.values())
    for relative in landings.values():
        folders = {relative.rsplit("/", n)[0] for n in range(1, relative.count("/") + 1)}
        clash = relative if relative in seen else next(iter(sorted(folders & files)), None)
        if clash is not None:
            raise StoreError(f"{uri} matches objects that land on the same path ({clash}): "
                             "end the URI with '/' to name one folder")
        seen.add(relative)
    return landings
