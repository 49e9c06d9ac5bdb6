"""What names a dataset and its version, and when a new execution would only repeat one that
ran: the rules the retrain trigger, ``aws start``, ``aws upload-data`` and a local ``run`` share.

A dataset lands as one object that is a dataset by itself (an archive or a .csv), or as a
folder of files completed by a ``_SUCCESS`` marker uploaded last. Its version is a digest of
its S3 listing (keys, ETags, sizes): SageMaker caches steps by their arguments, not by the
bytes in S3, and the version is a Preprocess argument, so data replaced in place gets new
cache keys.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from mlops_rules.parameters import INPUT_PARAMETER, VERSION_PARAMETER, effective_parameters
from mlops_rules.s3 import prefix_folder, split_s3_uri

DATASET_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".csv")
READY_MARKER = "_SUCCESS"


def listing_digest(prefix: str, objects: Iterable[tuple[str, str, int]]) -> str | None:
    """A sha256 over ``(key, etag, size)`` of the objects a key prefix matches, as sorted lines of
    the key relative to the prefix's folder, the ETag and the size; None when there are none.

    Relative to the folder, not to the prefix: an archive named by its own key and the folder
    that holds only it are the same objects, so they get the same version, while the same files
    in two folders (``imdb/`` and ``imdb-2026-11/``) are told apart only by their bytes. Sorting
    makes the version independent of the listing's order and pagination. The retrain trigger
    feeds it S3's listing; a local run feeds it the local store's, with each file's MD5 as its
    ETag (what S3 gives an object uploaded in one part), so both name the same files alike.
    """
    folder = prefix_folder(prefix)
    entries = sorted((key[len(folder):], etag.strip('"'), int(size)) for key, etag, size in objects)
    if not entries:
        return None
    digest = hashlib.sha256()
    for relative, etag, size in entries:
        digest.update(f"{relative}\0{etag}\0{size}\n".encode())
    return digest.hexdigest()


def comparable_parameters(definition: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """An execution's effective parameters with the data named by its version alone: the same
    objects are the same data, whatever URI named them (an archive's key, or its folder). Data
    given an empty version (by hand, on a pipeline that computes none) is named by its URI."""
    effective = effective_parameters(definition, values)
    if not effective.get(VERSION_PARAMETER):
        return effective
    return {name: value for name, value in effective.items() if name != INPUT_PARAMETER}


def repeats(definition: Mapping[str, Any], values: Mapping[str, Any],
            ran_definition: Mapping[str, Any], ran_values: Mapping[str, Any]) -> bool:
    """Whether starting ``definition`` with ``values`` would repeat a Succeeded execution that ran
    ``ran_definition`` with ``ran_values`` (within the step cache's lifetime): the same
    definition, the same effective parameters and the same data version. Starting would take
    every step from that run's cache and register its model once more.

    Any such run counts, not only the newest on the data: a run with other parameters in
    between, or a definition changed and changed back, leaves the first run's entries in place.
    """
    return (ran_definition == definition
            and comparable_parameters(ran_definition, ran_values) == comparable_parameters(definition, values))


def data_version(s3: Any, uri: str) -> str | None:
    """The version of the data at ``uri``: the ``listing_digest`` of what an ``S3Prefix`` input of
    that URI downloads (every key that starts with it, paginated), read with boto3's S3 client
    ``s3``. None when no object is there; ValueError for a URI that is not S3's.

    ETags change when an object's bytes are replaced (even under the same key), and listing costs
    no object reads, however large the dataset.
    """
    bucket, prefix = split_s3_uri(uri)
    objects: list[tuple[str, str, int]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        objects.extend((item["Key"], item.get("ETag", ""), item.get("Size", 0)) for item in page.get("Contents", []))
    return listing_digest(prefix, objects)
