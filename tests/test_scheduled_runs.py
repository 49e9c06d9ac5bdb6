"""A scheduled run registers nothing new unless the data changed (issue 11, item 3).

Locally the schedule is a cron line, ``sentiment-mlops run --data ~/imdb --skip-unchanged``.
Step caching keys on the steps' arguments, as SageMaker's does: unchanged data staged at the same
content-addressed URI takes Preprocess, Train and Evaluate from the cache, and Register (never
cached) adds another version holding the same model. ``--skip-unchanged`` starts nothing then.
One module-scoped home runs the whole story once (each real run takes seconds), through the
command's own entry point.
"""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from pipeline.cli import main
from tests.synthetic import make_reviews, write_jsonl

SMALL = ["--param", "Epochs=1", "--param", "MaxLen=40", "--param", "VocabSize=200", "--param", "EmbeddingDim=0",
         "--param", "AccuracyThreshold=0"]  # the gate is not what is tested


def _run(capsys, home: Path, data: Path, *flags: str) -> tuple[int, str]:
    code = main(["--home", str(home), "run", "--data", str(data), *SMALL, *flags])
    return code, capsys.readouterr().out.strip().splitlines()[-1]


def _versions(home: Path) -> list:
    from pipeline.local.db import open_state
    from pipeline.local.registry import ModelRegistry
    from pipeline.settings import Settings

    packages = ModelRegistry(open_state(home)).list_packages(Settings().model_package_group)
    return sorted(packages, key=lambda p: p.version)


def _config(home: Path, artifact_uri: str) -> dict:
    """The config.json inside a registered model.tar.gz."""
    from pipeline.local.store import ArtifactStore

    with tarfile.open(ArtifactStore(home).path(artifact_uri)) as tar:
        return json.load(tar.extractfile("config.json"))


@pytest.fixture(scope="module")
def story(tmp_path_factory) -> dict:
    """Data, and the home every step of the story runs in (kept between the tests below, in order)."""
    root = tmp_path_factory.mktemp("scheduled")
    data = write_jsonl(root / "imdb", make_reviews(200, seed=1), make_reviews(60, seed=2))
    return {"home": root / "home", "data": data}


def test_a_first_run_registers_version_1(story, capsys):
    code, out = _run(capsys, story["home"], story["data"], "--skip-unchanged", "--json")
    first = json.loads(out)
    assert code == 0 and first["status"] == "Succeeded" and first["model_package_version"] == 1
    assert not any(step["cached_from"] for step in first["steps"].values())
    # The staged data's fingerprint is the execution's InputDataVersion, and the model says so.
    version = first["parameters"]["InputDataVersion"]
    assert version and first["parameters"]["InputDataUri"].rstrip("/").endswith(version)
    (package,) = _versions(story["home"])
    assert _config(story["home"], package.artifact_uri)["data"]["version"] == version
    story["first"] = first


def test_a_scheduled_run_on_unchanged_data_starts_nothing(story, capsys):
    code, out = _run(capsys, story["home"], story["data"], "--skip-unchanged", "--json")
    skipped = json.loads(out)
    assert code == 0 and skipped["status"] == "skipped" and skipped["execution_id"] is None
    assert f"no new data since execution {story['first']['execution_id']}" in skipped["reason"]
    assert skipped["unchanged_since"] == {"execution_id": story["first"]["execution_id"], "model_package_version": 1}
    assert [p.version for p in _versions(story["home"])] == [1]


def test_a_scheduled_run_on_changed_data_registers_version_2(story, capsys):
    write_jsonl(story["data"], make_reviews(200, seed=3), make_reviews(60, seed=4))
    code, out = _run(capsys, story["home"], story["data"], "--skip-unchanged", "--json")
    second = json.loads(out)
    assert code == 0 and second["status"] == "Succeeded" and second["model_package_version"] == 2
    assert second["parameters"]["InputDataVersion"] != story["first"]["parameters"]["InputDataVersion"]
    assert not any(step["cached_from"] for step in second["steps"].values())
    assert [p.version for p in _versions(story["home"])] == [1, 2]
    story["second"] = second


def test_without_the_flag_a_cached_run_registers_the_same_model_again(story, capsys):
    """What SageMaker does too: every cacheable step is reused, and RegisterModel, which is never
    cached, adds a version holding the very same model.tar.gz. The flag exists for this."""
    code, out = _run(capsys, story["home"], story["data"], "--json")
    again = json.loads(out)
    assert code == 0 and again["status"] == "Succeeded" and again["model_package_version"] == 3
    assert {name: step["cached_from"] for name, step in again["steps"].items()
            if name in ("Preprocess", "Train", "Evaluate")} == dict.fromkeys(
        ("Preprocess", "Train", "Evaluate"), story["second"]["execution_id"])
    packages = _versions(story["home"])
    assert packages[2].artifact_uri == packages[1].artifact_uri


def test_a_skipped_run_says_so_in_one_line(story, capsys):
    code, out = _run(capsys, story["home"], story["data"], "--skip-unchanged")
    assert code == 0 and out.startswith("skipped: no new data since execution ")
    assert [p.version for p in _versions(story["home"])] == [1, 2, 3]
