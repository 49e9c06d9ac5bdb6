"""S3 URIs: one reading of ``s3://bucket/key`` for every part that names an object or a prefix."""
from __future__ import annotations

from typing import Any


def split_s3_uri(uri: Any) -> tuple[str, str]:
    """(bucket, key) of ``s3://bucket/key``; the key may be empty (``s3://bucket`` names the
    whole bucket as a prefix) and is kept as written, a trailing "/" included, since for a prefix
    it decides what matches. ValueError for anything else."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI; write s3://bucket/key")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket; write s3://bucket/key")
    return bucket, key


def prefix_folder(prefix: str) -> str:
    """The folder part of a key prefix, up to and including its last "/" (``""`` for none):
    ``data/imdb/`` for both ``data/imdb/`` and ``data/imdb/aclImdb_v1.tar.gz``."""
    return prefix[:prefix.rfind("/") + 1]
