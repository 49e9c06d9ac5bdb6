"""The project's settings in one place: where data comes from and where local work goes.

Values come from the environment (``SENTIMENT_MLOPS_*``) or from the defaults below.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

OFFICIAL_DATASET_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
OFFICIAL_DATASET_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
REPO_ROOT = Path(__file__).resolve().parents[1]


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=lambda: _env_path("SENTIMENT_MLOPS_HOME", Path(".mlops")))
    cache_dir: Path = field(default_factory=lambda: _env_path("SENTIMENT_MLOPS_CACHE", Path.home() / ".cache" / "sentiment-mlops"))
    dataset_url: str = field(default_factory=lambda: os.environ.get("SENTIMENT_MLOPS_DATASET_URL", OFFICIAL_DATASET_URL))
    dataset_sha256: str = field(default_factory=lambda: os.environ.get("SENTIMENT_MLOPS_DATASET_SHA256", OFFICIAL_DATASET_SHA256))
