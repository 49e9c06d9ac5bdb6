"""The local artifact store: ``s3://bucket/key`` is the file ``<home>/s3/bucket/key``.

Why a plain directory tree: the jobs read and write files, and a person debugging a run wants
to ``ls`` what a step produced under the same key the AWS run would use. Keys are refused when
they could escape the tree (``..``, empty or ``.`` segments, backslashes), and every write goes
to a temporary file that is renamed into place, so a reader never sees half a file and an
interrupted upload leaves nothing behind under the real key.

S3 "prefix" semantics are simplified to what the pipeline uses: a URI names either one object
(a file) or a folder of objects (every file below ``key/``).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

S3_DIR = "s3"


class StoreError(ValueError):
    """A URI the store refuses, or an object that is not there."""


def split_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of ``s3://bucket/key``; refuses anything that could leave the tree."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise StoreError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://"):].partition("/")
    key = key.rstrip("/")
    _check_segment(bucket, uri)
    for segment in key.split("/") if key else []:
        _check_segment(segment, uri)
    return bucket, key


def _check_segment(segment: str, uri: str) -> None:
    if segment in ("", ".", "..") or "\\" in segment or "\x00" in segment:
        raise StoreError(f"refusing {uri!r}: empty, '.', '..' or backslash segments could escape the store")


class ArtifactStore:
    """Upload, download and read objects under ``<root>/s3``."""

    def __init__(self, home: Path | str) -> None:
        self.root = Path(home).resolve() / S3_DIR

    def path(self, uri: str) -> Path:
        """The local path of an object or prefix (which need not exist yet)."""
        bucket, key = split_uri(uri)
        return self.root / bucket / key if key else self.root / bucket

    def exists(self, uri: str) -> bool:
        return self.path(uri).exists()

    def put_bytes(self, uri: str, data: bytes) -> Path:
        """Write one object atomically."""
        target = self.path(uri)
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

    def upload_file(self, source: Path, uri: str) -> Path:
        """Copy one file to an object, atomically (temp file in the target folder, then rename)."""
        target = self.path(uri)
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

    def download(self, uri: str, destination: Path) -> Path:
        """An object into ``destination/<its name>``, or a prefix's files into ``destination``
        keeping their relative paths (what a File-mode S3Prefix input does)."""
        source = self.path(uri)
        destination = Path(destination)
        destination.mkdir(parents=True, exist_ok=True)
        if source.is_file():
            shutil.copyfile(source, destination / source.name)
        elif source.is_dir():
            for path in sorted(p for p in source.rglob("*") if p.is_file() and not p.name.endswith(".partial")):
                target = destination / path.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
        else:
            raise StoreError(f"nothing at {uri} (looked in {source}); put the data there first")
        return destination

    def read_bytes(self, uri: str) -> bytes:
        source = self.path(uri)
        if not source.is_file():
            raise StoreError(f"no object at {uri} (looked for {source})")
        return source.read_bytes()

    def read_json(self, uri: str) -> Any:
        """The parsed JSON object at ``uri`` (a property file, evaluation.json)."""
        try:
            return json.loads(self.read_bytes(uri).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise StoreError(f"{uri} is not JSON: {error}") from None
