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
from pipeline.lambdas import load_lambda
from tests.synthetic import make_reviews, write_jsonl
from tests.test_aws_backend import REGION, aws_env  # noqa: F401  (aws_env is a fixture)

pytestmark = pytest.mark.e2e

SMALL = ["--param", "Epochs=1", "--param", "MaxLen=40", "--param", "VocabSize=200", "--param", "EmbeddingDim=0",
         "--param", "AccuracyThreshold=0"]  # the gate is not what is tested


def _run(capsys, home: Path, data: Path, *flags: str) -> tuple[int, str]:
    """One run through the command; ``--param InputDataUri=...`` names the data, so no ``--data`` then."""
    named = any(flag.startswith("InputDataUri=") for flag in flags)
    code = main(["--home", str(home), "run", *([] if named else ["--data", str(data)]), *SMALL, *flags])
    return code, capsys.readouterr().out.strip().splitlines()[-1]


def _versions(home: Path) -> list:
    from pipeline.local.state.db import open_state
    from pipeline.local.state.registry import ModelRegistry
    from pipeline.settings import Settings

    packages = ModelRegistry(open_state(home)).list_packages(Settings().model_package_group)
    return sorted(packages, key=lambda p: p.version)


def _config(home: Path, artifact_uri: str) -> dict:
    """The config.json inside a registered model.tar.gz."""
    from pipeline.local.state.store import ArtifactStore

    with tarfile.open(ArtifactStore(home).path(artifact_uri)) as tar:
        config = tar.extractfile("config.json")
        assert config is not None, "config.json is not a regular file"
        return json.load(config)


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
    """What SageMaker does too: Preprocess and Train are reused (the Transform's Model is the
    execution's own, so it and Evaluate run again), and RegisterModel, which is never cached, adds
    a version holding the very same model.tar.gz. The flag exists for this."""
    code, out = _run(capsys, story["home"], story["data"], "--json")
    again = json.loads(out)
    assert code == 0 and again["status"] == "Succeeded" and again["model_package_version"] == 3
    assert {name: step["cached_from"] for name, step in again["steps"].items()
            if name in ("Preprocess", "Train", "Transform", "Evaluate")} == {
        **dict.fromkeys(("Preprocess", "Train"), story["second"]["execution_id"]), "Transform": None, "Evaluate": None}
    packages = _versions(story["home"])
    assert packages[2].artifact_uri == packages[1].artifact_uri
    story["third"] = again


def test_a_skipped_run_says_so_in_one_line(story, capsys):
    code, out = _run(capsys, story["home"], story["data"], "--skip-unchanged")
    assert code == 0 and out.startswith("skipped: no new data since execution ")
    assert [p.version for p in _versions(story["home"])] == [1, 2, 3]


def test_a_run_with_other_parameters_in_between_does_not_make_a_scheduled_run_repeat_one(story, capsys):
    """Any Succeeded run within the cache's lifetime counts, not only the newest on the data: after
    a run with Epochs=2, the cron line's run would take Preprocess and Train from the third run's cache."""
    code, out = _run(capsys, story["home"], story["data"], "--param", "Epochs=2", "--json")
    assert code == 0 and json.loads(out)["model_package_version"] == 4
    code, out = _run(capsys, story["home"], story["data"], "--skip-unchanged", "--json")
    skipped = json.loads(out)
    assert code == 0 and skipped["status"] == "skipped"
    assert skipped["unchanged_since"] == {"execution_id": story["third"]["execution_id"], "model_package_version": 3}
    assert [p.version for p in _versions(story["home"])] == [1, 2, 3, 4]


def _put_dataset(home: Path, uri: str, folder: Path) -> None:
    from pipeline.local.state.store import ArtifactStore

    ArtifactStore(home).upload_dir(folder, uri)


def test_data_replaced_at_an_explicit_uri_is_new_data(story, capsys):
    """`--param InputDataUri=s3://...` names data that is not staged (so not content-addressed):
    its version is the digest of the local store's listing there, so a replacement under the same
    keys is trained on, and unchanged data is still skipped."""
    uri = "s3://by-hand/datasets/imdb/"
    root, flags = story["home"].parent, ("--param", f"InputDataUri={uri}", "--skip-unchanged", "--json")
    _put_dataset(story["home"], uri, write_jsonl(root / "by-hand-1", make_reviews(40, seed=5), make_reviews(20, seed=6)))
    code, out = _run(capsys, story["home"], story["data"], *flags)
    first = json.loads(out)
    assert code == 0 and first["status"] == "Succeeded" and len(first["parameters"]["InputDataVersion"]) == 64

    _put_dataset(story["home"], uri, write_jsonl(root / "by-hand-2", make_reviews(40, seed=5), make_reviews(20, seed=7)))
    code, out = _run(capsys, story["home"], story["data"], *flags)
    replaced = json.loads(out)
    assert code == 0 and replaced["status"] == "Succeeded"
    assert replaced["parameters"]["InputDataVersion"] != first["parameters"]["InputDataVersion"]

    code, out = _run(capsys, story["home"], story["data"], *flags)
    assert code == 0 and json.loads(out)["unchanged_since"]["execution_id"] == replaced["execution_id"]


def test_local_and_s3_name_the_same_files_with_one_version(tmp_path, aws_env):  # noqa: F811
    """The local version of an explicit URI is the retrain Lambda's digest, with each file's MD5
    for the ETag that S3 gives a single-part upload: the same files get the same version here and
    in S3 (and an archive's own URI, the version of the folder holding only it, as there)."""
    import boto3
    from moto import mock_aws

    from pipeline.local.state.store import ArtifactStore
    from pipeline.runs import RunError, store_data_version
    from pipeline.settings import Settings

    folder = write_jsonl(tmp_path / "imdb", make_reviews(20, seed=1), make_reviews(10, seed=2))
    settings, data = Settings(home=tmp_path / "home"), "s3://local-data/data/"
    _put_dataset(settings.home, data + "imdb/", folder)
    ArtifactStore(settings.home).put_bytes(data + "archive/aclImdb_v1.tar.gz", b"an archive")
    retrain = load_lambda("retrain")
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="local-data")  # REGION is us-east-1: no LocationConstraint
        for file in sorted(folder.iterdir()):
            s3.put_object(Bucket="local-data", Key=f"data/imdb/{file.name}", Body=file.read_bytes())
        assert store_data_version(settings, data + "imdb/") == retrain.data_version(s3, data + "imdb/")
    archive = store_data_version(settings, data + "archive/")
    assert store_data_version(settings, data + "archive/aclImdb_v1.tar.gz") == archive
    assert archive != store_data_version(settings, data + "imdb/")
    with pytest.raises(RunError, match="no object in the local store"):
        store_data_version(settings, data + "nothing-here/")
