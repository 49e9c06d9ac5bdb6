"""New training data on S3, in the shape the retrain trigger (``lambda/retrain.py``) acts on.

A dataset goes under ``s3://{bucket}/{prefix}/data/{name}/``. One archive or ``.csv`` is a
dataset by itself and starts a run as soon as it is stored; a folder of several files starts one
only when its ``_SUCCESS`` marker lands, and the marker is uploaded last, so a run never reads
half a dataset. An upload that breaks off leaves no marker: run it again to finish it.

A dataset's folder holds that dataset only. SageMaker reads ``InputDataUri`` as a key prefix
(every object whose key starts with it): the folder's URI ends with "/" so that ``imdb/`` does not
take ``imdb-2026-11/``, and an archive's URI is the archive's key, which would also take a
longer key beside it (``reviews.csv`` and ``reviews.csv.tar.gz``) were the folder shared.

The stack's artifact bucket sends its events to EventBridge (lambda/template.yaml), which is
what the trigger's rule listens to.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mlops_rules.data_versions import DATASET_SUFFIXES, READY_MARKER
from pipeline.aws.clients import AwsClients
from pipeline.aws.errors import BackendError, aws_errors
from pipeline.aws.upload import head_object
from pipeline.settings import Settings

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def data_prefix(settings: Settings) -> str:
    """``{prefix}/data/``: the key prefix the trigger watches (the template's ``DATA_PREFIX``)."""
    return f"{settings.prefix}/data/" if settings.prefix else "data/"


def _default_name(path: Path, suffixes: tuple[str, ...]) -> str:
    name = path.name
    for suffix in suffixes:
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return name


def _files_of(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                            p.relative_to(folder).parts))
    if not files:
        raise BackendError(f"{folder} holds no files to upload")
    starters = [p for p in files if p.name.lower().endswith(suffixes)]
    if starters:
        raise BackendError(f"{starters[0]} would start a run of its own as soon as it is stored: upload it "
                           f"by itself (`aws upload-data {starters[0]}`), or take it out of {folder}")
    return files


def upload_dataset(clients: AwsClients, settings: Settings, path: Path, name: str | None = None) -> dict[str, Any]:
    """Put a local dataset where the trigger sees it; the last object stored starts the run."""
    if not path.exists():
        raise BackendError(f"{path} does not exist: give an archive, a .csv, or a folder of the dataset's files")
    if path.is_file() and not path.name.lower().endswith(DATASET_SUFFIXES):
        raise BackendError(f"{path.name} is not a dataset by itself ({', '.join(DATASET_SUFFIXES)}): upload its folder, "
                           f"which gets a {READY_MARKER} marker once every file is stored")
    name = name or _default_name(path, DATASET_SUFFIXES)
    if not _NAME.match(name):
        raise BackendError(f"dataset name {name!r}: use letters, digits, '.', '_' and '-' (pass --name)")
    folder = f"{data_prefix(settings)}{name}/"
    files = [path] if path.is_file() else _files_of(path, DATASET_SUFFIXES)
    keys = [folder + (p.name if path.is_file() else p.relative_to(path).as_posix()) for p in files]
    last = keys[0] if path.is_file() else folder + READY_MARKER
    if head_object(clients, settings.bucket, last) is not None:
        raise BackendError(f"s3://{settings.bucket}/{last} exists already: that dataset was uploaded (and trained "
                           "on); pass another --name")
    _refuse_shared_folder(clients, settings.bucket, folder, keys)
    total = sum(p.stat().st_size for p in files)
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"upload {name}", disable=None) as bar:
        for file, key in zip(files, keys):
            with aws_errors(f"uploading {file} to s3://{settings.bucket}/{key}"):
                clients.s3.upload_file(str(file), settings.bucket, key, Callback=bar.update)
    if not path.is_file():
        with aws_errors(f"writing s3://{settings.bucket}/{last}"):
            clients.s3.put_object(Bucket=settings.bucket, Key=last, Body=b"")
    log.info("uploaded %d files (%d bytes) to s3://%s/%s", len(files), total, settings.bucket, folder)
    uri = f"s3://{settings.bucket}/{keys[0] if path.is_file() else folder}"
    return {"input_data_uri": uri, "files": len(files), "bytes": total, "trigger": f"s3://{settings.bucket}/{last}"}


def _refuse_shared_folder(clients: AwsClients, bucket: str, folder: str, keys: list[str]) -> None:
    """Refuse a folder that holds objects of another dataset: a run on either would read both.
    Objects this upload writes anyway (those of an upload that broke off) are fine."""
    ours, others = set(keys), []
    with aws_errors(f"listing s3://{bucket}/{folder}"):
        for page in clients.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder):
            others += [o["Key"] for o in page.get("Contents", []) if o["Key"] not in ours]
    if others:
        raise BackendError(f"s3://{bucket}/{folder} already holds {others[0]}"
                           + (f" and {len(others) - 1} more objects" if len(others) > 1 else "")
                           + ", which are not part of this dataset: a run reads every object under a dataset's URI, "
                           "so each dataset needs a folder of its own; pass another --name")
