"""Shared fixtures: synthetic data preprocessed once, and a tiny trained model, for the whole session."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch

from serve.text import TextConfig
from steps.preprocess import PreprocessOptions
from steps.preprocess import run as preprocess
from tests.synthetic import make_reviews, write_jsonl

TIERS = ("slow", "e2e", "server", "browser")  # the markers pyproject.toml registers; unmarked tests are the fast tier


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--all", action="store_true", help="run every tier (slow, e2e, server, browser), as CI does")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without ``--all`` or an explicit ``-m``, leave out the marked tiers: the default run is the
    one-minute loop a change to a docstring should wait for, not the ten-minute one."""
    if config.getoption("--all") or config.option.markexpr:
        return
    marked = [item for item in items if any(item.get_closest_marker(tier) for tier in TIERS)]
    if marked:
        config.hook.pytest_deselected(items=marked)
        left_out = set(marked)
        items[:] = [item for item in items if item not in left_out]


# Hyperparameters for a network small enough to train in seconds on synthetic reviews.
TINY = ["--epochs", "4", "--batch_size", "32", "--embedding_dim", "16", "--hidden_dim", "16", "--learning_rate", "0.01",
        "--num_threads", "1", "--ngram_buckets", "4096"]


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny networks run fastest on one thread, and a busy 2-core machine makes more threads crawl."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True, scope="session")
def _one_worker_per_model_server():
    """Local endpoints start with one worker each (the machine has two cores, and tests start
    many endpoints); the tests of the process tree ask for two explicitly."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", "1")
        yield


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    """Synthetic reviews run through the real preprocessing step: train/, validation/, test/."""
    root = tmp_path_factory.mktemp("prepared")
    data = write_jsonl(root / "data", make_reviews(600, seed=1), make_reviews(200, seed=2))
    options = PreprocessOptions(vocab_size=200, min_count=1, workers=1, text=TextConfig(max_len=40))
    preprocess(data, root / "out", options)
    return root / "out"


def train_args(prepared: Path, out: Path, *extra: str) -> list[str]:
    return ["--train", str(prepared / "train"), "--validation", str(prepared / "validation"), "--model-dir", str(out / "model"),
            "--output-data-dir", str(out / "output"), "--checkpoint-dir", str(out / "checkpoints"), "--num-gpus", "0",
            "--profile", "cpu", *TINY, *extra]


@pytest.fixture(scope="session")
def trained(prepared, tmp_path_factory) -> Path:
    """A tiny model trained by the real training job; returns the job's folder (model/, output/, checkpoints/)."""
    from train.train import main as train_main

    out = tmp_path_factory.mktemp("trained")
    assert train_main(train_args(prepared, out)) == 0
    return out


def register_versions(home: Path, trained: Path, versions: int = 2, environment: dict | None = None,
                      baseline: Path | None = None) -> None:
    """``versions`` registered model versions in ``home``'s local registry, each with the tiny
    trained model as its artifact in the local store (what the pipeline's Register leaves), and
    ``baseline`` (a folder monitor/baseline.py wrote) as its DriftCheckBaselines when given."""
    from pipeline.local.state.db import open_state
    from pipeline.local.state.registry import ModelRegistry
    from pipeline.local.state.store import ArtifactStore
    from pipeline.settings import Settings
    from serve.artifact import pack_model_dir

    store, registry = ArtifactStore(home), ModelRegistry(open_state(home))
    archive = home / "model.tar.gz"
    pack_model_dir(trained / "model", archive)
    for version in range(1, versions + 1):
        uri = f"s3://bucket/models/v{version}/model.tar.gz"
        store.upload_file(archive, uri)
        baselines = {}
        if baseline is not None:
            folder = f"s3://bucket/evaluation/v{version}/baseline"
            store.upload_dir(baseline, folder)
            baselines = {"ModelDataQuality": {part: {"ContentType": "application/json", "S3Uri": f"{folder}/{name}"}
                                              for part, name in (("Statistics", "statistics.json"),
                                                                 ("Constraints", "constraints.json"))}}
        registry.register(Settings().model_package_group, uri, "0" * 64,
                          {"binary_classification_metrics": {"accuracy": {"value": 0.9}}},
                          inference_specification={"Containers": [{"ModelDataUrl": uri,
                                                                   **({"Environment": environment} if environment else {})}]},
                          drift_check_baselines=baselines)


def endpoint_pid(home: Path) -> int:
    """The pid of the model server that serves the default endpoint now."""
    from pipeline.local.state.db import open_state
    from pipeline.settings import Settings

    row = open_state(home).execute("SELECT pid FROM endpoints WHERE name = ?", (Settings().endpoint_name,)).fetchone()
    return row["pid"]


def delete_endpoints(home: Path) -> None:
    """Stop every local endpoint's model server under ``home``, and the home's local runtime."""
    from pipeline.local.services.hosting import LocalHosting
    from pipeline.local.services.runtime import stop_runtime
    from pipeline.local.state.db import open_state

    conn = open_state(home)
    hosting = LocalHosting(home, conn)
    for endpoint in hosting.list_endpoints():
        stop_rollout(conn, endpoint["EndpointName"])
        hosting.wait_for_rollout(endpoint["EndpointName"])
        hosting.delete_endpoint(endpoint["EndpointName"])
    stop_runtime(home)


def stop_rollout(conn, endpoint: str) -> None:
    """Signal a rollout's driver to stop (it rolls back), if one runs."""
    import json
    import signal

    row = conn.execute("SELECT rollout FROM endpoints WHERE name = ?", (endpoint,)).fetchone()
    pid = json.loads(row["rollout"]).get("driver_pid") if row and row["rollout"] else None
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
