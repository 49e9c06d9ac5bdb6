"""The local executor runs the real definition JSON end to end, and its parts hold their contracts."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.bundles import build_bundles
from pipeline.definition import ACCURACY_PATH, definition_json
from pipeline.local.engine.executor import run_pipeline
from pipeline.local.engine.jobs import JobFailed, parse_metrics, rewrite_opt_ml, run_processing_job
from pipeline.local.state.db import open_state
from pipeline.local.state.executions import ExecutionStore
from pipeline.local.state.registry import ModelRegistry
from pipeline.local.state.store import ArtifactStore, StoreError
from pipeline.settings import Settings
from tests.synthetic import make_reviews, write_jsonl

pytestmark = pytest.mark.e2e

SMALL = {"Epochs": 2, "TrainingProfile": "cpu", "MaxLen": 40, "VocabSize": 200, "EmbeddingDim": 16}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[str, object, Path]:
    """The real definition and bundles (built once: the SDK takes seconds), and synthetic data.

    400 reviews, not fewer: train.py's OneCycleLR divides by zero when epochs x batches <= 10."""
    settings = Settings(home=tmp_path_factory.mktemp("unused"))
    data = write_jsonl(tmp_path_factory.mktemp("raw"), make_reviews(400, seed=1), make_reviews(100, seed=2))
    return definition_json(settings), build_bundles(settings), data


def _execute(built, home: Path, threshold: float):
    definition, bundles, data = built
    settings = Settings(home=home)
    uri = settings.s3_uri("data", "synthetic")
    ArtifactStore(home).upload_dir(data, uri)
    execution = run_pipeline(definition, settings, {"InputDataUri": uri, "AccuracyThreshold": threshold, **SMALL}, bundles)
    conn = open_state(home)
    return execution, ExecutionStore(conn).steps(execution.execution_id), ModelRegistry(conn), settings


@pytest.fixture(scope="module")
def passed(built, tmp_path_factory):
    """One run through the pass branch; the fail-branch test runs in the same home after it."""
    return _execute(built, tmp_path_factory.mktemp("home"), 0.5)


def _accuracy(metrics: dict) -> float:
    value: Any = metrics
    for key in ACCURACY_PATH.split("."):
        value = value[key]
    return value


def test_pass_branch_registers_one_pending_version(passed):
    execution, steps, registry, settings = passed
    assert execution.status == "Succeeded", execution.failure_reason
    status = {s.step_name: s.status for s in steps}
    assert status == {"Preprocess": "Succeeded", "Train": "Succeeded", "CreateModel": "Succeeded",
                      "Transform": "Succeeded", "Evaluate": "Succeeded",
                      "CheckAccuracy": "Succeeded", "CheckSentenceAccuracy": "Succeeded",
                      "Register": "Succeeded", "FailSentences": "Skipped", "Fail": "Skipped"}
    assert not any(s.cache_hit for s in steps)
    train = next(s for s in steps if s.step_name == "Train")
    assert train.properties["ModelArtifacts"]["S3ModelArtifacts"].endswith(f"/{train.properties['TrainingJobName']}/output/model.tar.gz")
    assert {m["MetricName"] for m in train.properties["FinalMetricDataList"]} >= {"val_accuracy", "train_loss"}
    assert Path(train.log_path).is_file()
    (package,) = [p for p in registry.list(settings.model_package_group) if p.execution_id == execution.execution_id]
    assert package.approval_status == "PendingManualApproval"
    assert 0.5 <= _accuracy(package.metrics) <= 1.0
    assert ArtifactStore(settings.home).path(package.artifact_uri).is_file()


def test_the_registered_version_links_every_file_of_its_evaluation(passed, capsys):
    """Register keeps the resolved CustomerMetadataProperties; each links a file the Evaluate step
    wrote into its output folder, the training curves included (from the artifact), and
    ``registry show`` prints where each lies in the local store and the registry page."""
    import json

    from evaluation.outputs import LINKS
    from pipeline.cli import main

    execution, steps, registry, settings = passed
    (package,) = [p for p in registry.list(settings.model_package_group) if p.execution_id == execution.execution_id]
    evaluate = next(s for s in steps if s.step_name == "Evaluate")
    (output,) = evaluate.properties["ProcessingOutputConfig"]["Outputs"]
    folder = output["S3Output"]["S3Uri"]
    assert folder == settings.s3_uri("executions", execution.execution_id, "Evaluate", "evaluation")
    assert package.customer_metadata_properties == {key: f"{folder}/{name}" for key, name in LINKS.items()}
    event = registry.event(package)["detail"]["CustomerMetadataProperties"]
    assert event == {**package.customer_metadata_properties, "ArtifactSha256": package.artifact_sha256,
                     "Accuracy": event["Accuracy"], "PipelineExecutionId": execution.execution_id}

    home = ["--home", str(settings.home)]
    assert main([*home, "registry", "show", str(package.version), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["customer_metadata_properties"] == package.customer_metadata_properties
    store = ArtifactStore(settings.home)
    assert [(link["name"], link["uri"], link["path"], link["exists"]) for link in shown["links"]] == [
        (key, f"{folder}/{name}", str(store.path(f"{folder}/{name}")), True) for key, name in LINKS.items()]
    assert Path(shown["links"][0]["path"]).parent == store.path(folder)
    assert Path(shown["links"][3]["path"]).read_bytes()[:4] == b"\x89PNG"  # the training curves
    assert shown["registry_page"] == f"http://127.0.0.1:3000/registry/versions/{package.version}"
    assert main([*home, "registry", "show", str(package.version)]) == 0
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines()]
    for link in shown["links"]:
        at = lines.index([link["name"], link["path"]])
        assert lines[at + 1] == [link["uri"]]
    assert f"registry page: http://127.0.0.1:3000/registry/versions/{package.version}" in out


def test_fail_branch_reuses_the_cached_jobs_fails_and_registers_nothing(built, passed):
    """Same data and hyperparameters, another threshold: the threshold is in no job's cache key,
    so Preprocess and Train come from the first run (their keys hold nothing execution-specific);
    the Transform's Model is the execution's own, as on SageMaker, so Transform and Evaluate run
    again, and the gate, this time to Fail."""
    first, _, _, settings = passed
    execution, steps, registry, _ = _execute(built, settings.home, 1.01)  # above any accuracy
    assert execution.status == "Failed"
    assert execution.failure_reason.startswith("Test accuracy on reviews ")
    assert "is below the threshold 1.01 - the model was not registered." in execution.failure_reason
    by_name = {s.step_name: s for s in steps}
    assert {n: s.status for n, s in by_name.items()}["Fail"] == "Failed" and by_name["Register"].status == "Skipped"
    assert by_name["CheckSentenceAccuracy"].status == "Skipped"  # the branch CheckAccuracy did not take
    assert [n for n, s in by_name.items() if s.cache_hit] == ["Preprocess", "Train"]
    assert {by_name[n].cache_source_execution_id for n in ("Preprocess", "Train")} == {first.execution_id}
    assert by_name["Transform"].status == by_name["Evaluate"].status == "Succeeded"
    assert not [p for p in registry.list(settings.model_package_group) if p.execution_id == execution.execution_id]


def test_a_model_whose_server_cannot_start_fails_at_transform_with_its_reason_and_registers_nothing(
        built, passed, monkeypatch):
    first, _, _, settings = passed
    monkeypatch.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", "0")  # the container refuses to start
    execution, steps, registry, _ = _execute(built, settings.home, 0.5)
    by_name = {s.step_name: s for s in steps}
    assert execution.status == "Failed" and by_name["Transform"].status == "Failed"
    assert "the model's server did not start" in by_name["Transform"].failure_reason
    assert "SAGEMAKER_MODEL_SERVER_WORKERS='0' must be at least 1" in execution.failure_reason
    assert "Evaluate" not in by_name or by_name["Evaluate"].status != "Succeeded"
    assert not [p for p in registry.list(settings.model_package_group) if p.execution_id == execution.execution_id]


# --- units -----------------------------------------------------------------------------------

@pytest.mark.parametrize("uri", ["s3://b/a/../../etc/passwd", "s3://../x", "s3://b/./k", "s3://b/a//k",
                                 "s3://b/a\\..\\k", "/etc/passwd", "file:///etc/passwd", "s3://"])
def test_store_refuses_unsafe_uris(tmp_path, uri):
    with pytest.raises(StoreError):
        ArtifactStore(tmp_path).path(uri)


def test_store_round_trips_files_and_prefixes_atomically(tmp_path):
    store = ArtifactStore(tmp_path / "home")
    assert store.path("s3://bucket/a/b.json") == (tmp_path / "home" / "s3" / "bucket" / "a" / "b.json").resolve()
    store.put_bytes("s3://bucket/a/b.json", b'{"x": 1}')
    assert store.read_json("s3://bucket/a/b.json") == {"x": 1}
    assert not list(store.path("s3://bucket/a").glob("*.partial"))
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "f.txt").write_text("hello")
    store.upload_dir(source, "s3://bucket/prefix/")
    assert (store.download("s3://bucket/prefix", tmp_path / "out") / "sub" / "f.txt").read_text() == "hello"
    assert (store.download("s3://bucket/a/b.json", tmp_path / "one") / "b.json").is_file()
    with pytest.raises(StoreError, match="nothing at"):
        store.download("s3://bucket/missing", tmp_path / "none")


# --- the store reads a URI as S3 reads a key prefix --------------------------------------------

def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def siblings(tmp_path) -> ArtifactStore:
    """``data/imdb/`` beside datasets whose keys start with ``data/imdb`` too."""
    store = ArtifactStore(tmp_path / "home")
    for key in ("data/imdb/train.jsonl", "data/imdb/sub/test.jsonl", "data/imdb-2026-11/train.jsonl",
                "data/imdb.csv", "data/other/imdb.txt"):
        store.put_bytes(f"s3://b/{key}", key.encode())
    return store


def test_a_prefix_without_a_slash_takes_every_key_that_starts_with_it(siblings, tmp_path):
    """S3Prefix: "all objects with the specified key name prefix" (ProcessingS3Input, S3DataSource)."""
    out = siblings.download("s3://b/data/imdb", tmp_path / "out")
    # The folder's own objects land as under "data/imdb/"; a sibling keeps its name from "data/".
    assert _files(out) == ["imdb-2026-11/train.jsonl", "imdb.csv", "sub/test.jsonl", "train.jsonl"]
    assert (out / "imdb.csv").read_bytes() == b"data/imdb.csv"
    assert siblings.exists("s3://b/data/imd") and siblings.exists("s3://b/data/imdb-")
    assert siblings.keys("s3://b/data/imdb") == [
        "data/imdb-2026-11/train.jsonl", "data/imdb.csv", "data/imdb/sub/test.jsonl", "data/imdb/train.jsonl"]


def test_a_prefix_with_a_slash_takes_only_its_folder(siblings, tmp_path):
    assert _files(siblings.download("s3://b/data/imdb/", tmp_path / "out")) == ["sub/test.jsonl", "train.jsonl"]
    assert not siblings.exists("s3://b/data/imdb.csv/")  # no key starts with "data/imdb.csv/"
    assert siblings.exists("s3://b/data/imdb/t") and not siblings.exists("s3://b/data/imdb/x")
    assert siblings.keys("s3://b/data/imdb/") == ["data/imdb/sub/test.jsonl", "data/imdb/train.jsonl"]


def test_an_object_uri_is_a_prefix_too(siblings, tmp_path):
    """``S3ModelArtifacts`` as a Processing input lands as ``model.tar.gz``; a longer key beside
    it is taken as well, keeping its own name."""
    siblings.put_bytes("s3://b/models/job/output/model.tar.gz", b"model")
    assert _files(siblings.download("s3://b/models/job/output/model.tar.gz", tmp_path / "one")) == ["model.tar.gz"]
    siblings.put_bytes("s3://b/models/job/output/model.tar.gz.bak", b"old")
    assert _files(siblings.download("s3://b/models/job/output/model.tar.gz", tmp_path / "two")) == [
        "model.tar.gz", "model.tar.gz.bak"]


def test_checkpoints_of_other_epochs_come_along_without_the_slash(tmp_path):
    store = ArtifactStore(tmp_path / "home")
    store.put_bytes("s3://b/checkpoints/gpu/epochs-8/checkpoint.pt", b"8")
    store.put_bytes("s3://b/checkpoints/gpu/epochs-80/checkpoint.pt", b"80")
    assert _files(store.download("s3://b/checkpoints/gpu/epochs-8", tmp_path / "a")) == [
        "checkpoint.pt", "epochs-80/checkpoint.pt"]
    only = store.download("s3://b/checkpoints/gpu/epochs-8/", tmp_path / "b")
    assert _files(only) == ["checkpoint.pt"] and (only / "checkpoint.pt").read_bytes() == b"8"


def test_writes_in_progress_are_not_objects(tmp_path):
    store = ArtifactStore(tmp_path / "home")
    folder = store.path("s3://b/out/")
    folder.mkdir(parents=True)
    (folder / ".evaluation.json.k2j4.partial").write_bytes(b"{")
    assert not store.exists("s3://b/out/")
    with pytest.raises(StoreError, match="nothing at s3://b/out/"):
        store.download("s3://b/out/", tmp_path / "none")
    assert store.keys("s3://b/out") == []


def test_objects_that_would_land_on_one_path_are_refused(siblings, tmp_path):
    siblings.put_bytes("s3://b/data/imdb/imdb.csv", b"inside")
    with pytest.raises(StoreError, match=r"same path \(imdb.csv\).*end the URI with '/'"):
        siblings.download("s3://b/data/imdb", tmp_path / "out")
    assert (siblings.download("s3://b/data/imdb/", tmp_path / "ok") / "imdb.csv").read_bytes() == b"inside"


@pytest.mark.parametrize("uri", ["s3://b/a/", "s3://b", "s3://b/"])
def test_a_prefix_is_not_an_object(tmp_path, uri):
    store = ArtifactStore(tmp_path)
    with pytest.raises(StoreError, match="names a prefix"):
        store.put_bytes(uri, b"x")
    with pytest.raises(StoreError, match="names a prefix"):
        store.read_bytes(uri)


def test_one_object_is_told_from_a_prefix_that_matches_a_longer_key(tmp_path):
    """A model.tar.gz that is gone is gone, even when model.tar.gz.partial-like longer keys remain."""
    store = ArtifactStore(tmp_path)
    store.put_bytes("s3://b/models/job/model.tar.gz.bak", b"old")
    assert store.exists("s3://b/models/job/model.tar.gz") and not store.has_object("s3://b/models/job/model.tar.gz")
    store.put_bytes("s3://b/models/job/model.tar.gz", b"new")
    assert store.has_object("s3://b/models/job/model.tar.gz") and not store.has_object("s3://b/models/job/")


def test_a_key_that_is_also_a_folder_is_refused_with_a_reason(tmp_path):
    store = ArtifactStore(tmp_path)
    store.put_bytes("s3://b/data/imdb/train.jsonl", b"x")
    with pytest.raises(StoreError, match="a key and a folder of the same name"):
        store.put_bytes("s3://b/data/imdb", b"y")


@pytest.mark.parametrize("uri", ["s3://b/a//", "s3://b//"])
def test_store_refuses_empty_segments_before_a_trailing_slash(tmp_path, uri):
    with pytest.raises(StoreError):
        ArtifactStore(tmp_path).exists(uri)


def test_a_processing_job_reads_its_input_as_a_prefix(siblings, tmp_path):
    """The local job stages inputs through the store, so it sees what the SageMaker job would."""
    def listing(uri: str, name: str) -> list[str]:
        script = "cd /opt/ml/processing/input/data && find . -type f > /opt/ml/processing/output/files.txt"
        arguments = {
            "AppSpecification": {"ContainerEntrypoint": ["/bin/bash", "-c", script]},
            "ProcessingInputs": [{"InputName": "data", "S3Input": {
                "S3Uri": uri, "LocalPath": "/opt/ml/processing/input/data", "S3DataType": "S3Prefix"}}],
            "ProcessingOutputConfig": {"Outputs": [{"OutputName": "files", "S3Output": {
                "S3Uri": f"s3://b/jobs/{name}/files", "LocalPath": "/opt/ml/processing/output"}}]}}
        run_processing_job(arguments, job_name=name, job_dir=tmp_path / name, store=siblings,
                           log_path=tmp_path / f"{name}.log")
        return sorted(siblings.read_bytes(f"s3://b/jobs/{name}/files/files.txt").decode().split())

    assert listing("s3://b/data/imdb/", "folder") == ["./sub/test.jsonl", "./train.jsonl"]
    assert listing("s3://b/data/imdb", "prefix") == [
        "./imdb-2026-11/train.jsonl", "./imdb.csv", "./sub/test.jsonl", "./train.jsonl"]


def test_opt_ml_paths_are_rewritten_under_the_job_dir(tmp_path):
    arguments = ["/bin/bash", "/opt/ml/processing/input/entrypoint/runproc.sh", "--output-dir=/opt/ml/processing/output",
                 "/opt/ml", "/opt/mlx/keep", "/data/opt/ml/keep", {"k": ["/opt/ml/model"]}, 3]
    assert rewrite_opt_ml(arguments, tmp_path) == [
        "/bin/bash", f"{tmp_path}/processing/input/entrypoint/runproc.sh", f"--output-dir={tmp_path}/processing/output",
        str(tmp_path), "/opt/mlx/keep", "/data/opt/ml/keep", {"k": [f"{tmp_path}/model"]}, 3]


def test_final_metrics_take_each_metrics_last_value():
    log = "epoch=1 val_accuracy=0.5 train_loss=0.7\nepoch=2 val_accuracy=0.75 train_loss=0.6\n"
    definitions = [{"Name": "val_accuracy", "Regex": "val_accuracy=([0-9.]+)"}, {"Name": "absent", "Regex": "nope=([0-9.]+)"}]
    (metric,) = parse_metrics(log, definitions)
    assert (metric["MetricName"], metric["Value"]) == ("val_accuracy", 0.75)


def test_a_failing_job_raises_with_exit_code_and_log(tmp_path):
    arguments = {"AppSpecification": {"ContainerEntrypoint": ["/bin/bash", "-c", "echo boom from $0; exit 3", "/opt/ml/x"]}}
    log = tmp_path / "job.log"
    with pytest.raises(JobFailed) as failed:
        run_processing_job(arguments, job_name="j", job_dir=tmp_path / "job", store=ArtifactStore(tmp_path), log_path=log)
    assert failed.value.exit_code == 3 and failed.value.log_path == log
    assert f"boom from {tmp_path / 'job'}/x" in log.read_text()
