"""Fetch a dataset once (the official IMDb archive, or SST-2's three files), check it, and keep it in a cache."""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from tqdm import tqdm

from pipeline.errors import UserError
from pipeline.settings import SST2_FILES, SST2_FOLDER, Settings

log = logging.getLogger(__name__)

_BLOCK = 1 << 20
# The official archive is 84 MB; anything far larger is not what we asked for.
MAX_DOWNLOAD_BYTES = 1 << 30
# What a download error tells the user to do instead, for the dataset that failed.
IMDB_HOW_TO_CONTINUE = ("download aclImdb_v1.tar.gz on a machine with network access and pass its path "
                        "(or the unpacked aclImdb/ folder, or train/test JSON Lines) with --data PATH")
SST2_HOW_TO_CONTINUE = (f"download {', '.join(SST2_FILES)} on a machine with network access, put them in one "
                        "folder and pass it with --data PATH")


class DownloadError(UserError, RuntimeError):
    """A download that failed; the message says how to go on without it."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, sha256: str | None, cache_dir: Path, timeout: float = 30.0,
             how_to_continue: str = IMDB_HOW_TO_CONTINUE) -> Path:
    """Return the cached file for ``url``, downloading it (with a progress bar) when missing or corrupt.

    ``how_to_continue`` ends each error message: how to get the dataset in without this download.
    """
    name = Path(urlparse(url).path).name or "download"
    target = Path(cache_dir) / name
    if target.is_file() and (sha256 is None or sha256_of(target) == sha256):
        log.info("using cached %s", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            digest, received = hashlib.sha256(), 0
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {name}", disable=None) as bar:
                for block in iter(lambda: response.read(_BLOCK), b""):
                    received += len(block)
                    if received > MAX_DOWNLOAD_BYTES:
                        raise DownloadError(f"{url} sent more than {MAX_DOWNLOAD_BYTES:,} bytes: that is not the dataset archive")
                    digest.update(block)
                    out.write(block)
                    bar.update(len(block))
            if total is not None and received != total:
                raise DownloadError(f"{url} sent {received:,} of {total:,} bytes: the connection dropped; try again, or {how_to_continue}")
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        partial.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"cannot download {url} ({reason}); {how_to_continue}") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if sha256 is not None and digest.hexdigest() != sha256:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{url} has sha256 {digest.hexdigest()}, expected {sha256}: the download is corrupt or not the "
                            f"dataset; try again, or {how_to_continue}")
    os.replace(partial, target)
    log.info("downloaded %s (%d bytes) to %s", url, received, target)
    return target


def download_dataset(settings: Settings) -> Path:
    return download(settings.dataset_url, settings.dataset_sha256, settings.cache_dir)


def download_sst2(settings: Settings) -> Path:
    """SST-2's train, dev and test files, each checked by its sha256, in one cached folder that
    ``--data`` accepts as it is. Each file is written whole or not at all; files already cached
    intact are not fetched again, so a failed download resumes with the file that failed."""
    folder = settings.cache_dir / SST2_FOLDER
    base = settings.sst2_base_url.rstrip("/")
    for name, sha256 in SST2_FILES.items():
        download(f"{base}/{name}", sha256, folder, how_to_continue=SST2_HOW_TO_CONTINUE)
    return folder


def download_known(name: str, settings: Settings) -> Path:
    """The dataset ``name`` (one of settings.KNOWN_DATASETS) from the cache, downloaded if needed:
    the IMDb archive's path, or SST-2's folder."""
    if name == "sst2":
        return download_sst2(settings)
    if name == "imdb":
        return download_dataset(settings)
    raise DownloadError(f"unknown dataset {name!r}: known are imdb and sst2")
