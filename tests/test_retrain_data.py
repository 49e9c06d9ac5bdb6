"""New data on S3 starts a run: ``sentiment-mlops aws upload-data`` against moto, with the
uploaded objects' events handed to the trigger (``lambda/retrain.py``) as EventBridge would, so
the upload and the trigger are checked to agree."""
from __future__ import annotations

import json

import boto3
import pytest

from pipeline.cli import main
from pipeline.lambdas import load_lambda
from tests.test_aws_backend import REGION, aws_env  # noqa: F401  (aws_env is a fixture)
from tests.test_aws_cli import BUCKET, PIPELINE, cloud  # noqa: F401  (cloud is a fixture)

pytestmark = pytest.mark.e2e

retrain = load_lambda("retrain")

CONFIG = retrain.RetrainConfig(PIPELINE, BUCKET, "sentiment-mlops/data/")


def _run(capsys, *argv: str) -> tuple[int, object, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else None), captured.err


def _keys(s3) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def _created(key: str, n: int) -> dict:
    return {"version": "0", "id": f"event-{n}", "detail-type": "Object Created", "source": "aws.s3",
            "account": "123456789012", "time": "2026-11-22T18:43:48Z", "region": REGION, "resources": [],
            "detail": {"version": "0", "bucket": {"name": BUCKET}, "object": {"key": key, "size": 1}}}


def _deliver_all(s3, sagemaker) -> list[dict]:
    """Every stored object's "Object Created" event, through the trigger: what EventBridge does."""
    return [retrain.handle(_created(key, n), CONFIG, sagemaker, s3) for n, key in enumerate(_keys(s3))]


@pytest.fixture
def dataset_folder(tmp_path):
    folder = tmp_path / "imdb-2026-11"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"text": "great", "label": 1}\n', encoding="utf-8")
    (folder / "test.jsonl").write_text('{"text": "awful", "label": 0}\n', encoding="utf-8")
    (folder / ".DS_Store").write_bytes(b"\0")
    return folder


def test_a_folder_starts_one_run_on_the_whole_folder_once_its_marker_lands(cloud, capsys, dataset_folder):
    code, upserted, _ = _run(capsys, "aws", "upsert", "--json")
    assert code == 0
    code, uploaded, _ = _run(capsys, "aws", "upload-data", str(dataset_folder), "--json")
    assert code == 0 and uploaded["files"] == 2
    folder = "sentiment-mlops/data/imdb-2026-11/"
    assert uploaded["input_data_uri"] == f"s3://{BUCKET}/{folder}"
    assert {folder + n for n in ("train.jsonl", "test.jsonl", "_SUCCESS")} <= set(_keys(cloud))
    assert not any(".DS_Store" in k for k in _keys(cloud))

    sagemaker = boto3.client("sagemaker", region_name=REGION)
    results = [r for r in _deliver_all(cloud, sagemaker) if r["status"] != "ignored"]
    assert [r["status"] for r in results] == ["started"]  # the marker's event only; the code bundles and files start nothing
    assert results[0]["parameters"] == {"InputDataUri": uploaded["input_data_uri"],
                                        "InputDataVersion": retrain.data_version(cloud, uploaded["input_data_uri"])}
    assert uploaded["trigger"] == f"s3://{BUCKET}/{folder}_SUCCESS"


def test_an_archive_is_a_dataset_by_itself(cloud, capsys, tmp_path):
    archive = tmp_path / "aclImdb_v1.tar.gz"
    archive.write_bytes(b"not really gzip, but the upload does not care")
    code, uploaded, _ = _run(capsys, "aws", "upload-data", str(archive), "--json")
    key = "sentiment-mlops/data/aclImdb_v1/aclImdb_v1.tar.gz"
    assert code == 0 and _keys(cloud) == [key] and uploaded["input_data_uri"] == f"s3://{BUCKET}/{key}"
    config = retrain.RetrainConfig(PIPELINE, BUCKET, "sentiment-mlops/data/")
    assert retrain.parse_event(_created(key, 0), config).input_data_uri == uploaded["input_data_uri"]


def _scheduled(n: int) -> dict:
    return {"version": "0", "id": f"tick-{n}", "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "123456789012", "time": "2026-11-23T03:00:00Z", "region": REGION, "resources": [],
            "detail": {}}


def test_the_readmes_archive_walk_trains_once_on_new_data_and_not_again_on_the_next_tick(cloud, capsys, tmp_path):
    """`aws upload-data aclImdb_v1.tar.gz --name imdb` puts the archive in the default dataset's
    folder; its event starts a run with InputDataUri = the archive's key. A tick reads the
    default folder, which holds that one archive: the same data, so it starts nothing."""
    assert _run(capsys, "aws", "upsert", "--json")[0] == 0
    archive = tmp_path / "aclImdb_v1.tar.gz"
    archive.write_bytes(b"not really gzip, but the upload does not care")
    code, uploaded, _ = _run(capsys, "aws", "upload-data", str(archive), "--name", "imdb", "--json")
    assert code == 0 and uploaded["input_data_uri"] == f"s3://{BUCKET}/sentiment-mlops/data/imdb/aclImdb_v1.tar.gz"

    sagemaker = boto3.client("sagemaker", region_name=REGION)
    (started,) = [r for r in _deliver_all(cloud, sagemaker) if r["status"] != "ignored"]
    assert started["status"] == "started" and started["parameters"]["InputDataUri"] == uploaded["input_data_uri"]
    tick = retrain.handle(_scheduled(1), CONFIG, sagemaker, cloud)
    assert tick["status"] == "skipped" and started["execution_arn"] in tick["reason"]
    assert f"s3://{BUCKET}/sentiment-mlops/data/imdb/ is version" in tick["reason"]
    assert len(sagemaker.list_pipeline_executions(PipelineName=PIPELINE)["PipelineExecutionSummaries"]) == 1


def test_the_same_dataset_twice_is_refused_so_it_is_not_trained_on_twice(cloud, capsys, dataset_folder):
    assert _run(capsys, "aws", "upload-data", str(dataset_folder), "--json")[0] == 0
    before = _keys(cloud)
    code, _, err = _run(capsys, "aws", "upload-data", str(dataset_folder), "--json")
    assert code == 2 and "exists already" in err and "--name" in err and len(err.strip().splitlines()) == 1
    assert _keys(cloud) == before
    assert _run(capsys, "aws", "upload-data", str(dataset_folder), "--name", "imdb-again", "--json")[0] == 0


def test_an_upload_that_breaks_off_leaves_no_marker_and_can_be_finished(cloud, capsys, dataset_folder, monkeypatch):
    from pipeline.aws import clients as clients_module

    real = clients_module.make_clients

    def failing_clients(settings, session=None):
        clients = real(settings, session)
        upload, calls = clients.s3.upload_file, []

        def upload_file(*args, **kwargs):
            calls.append(args)
            if len(calls) == 2:
                raise ConnectionResetError("the network went away")
            return upload(*args, **kwargs)

        clients.s3.upload_file = upload_file
        return clients

    monkeypatch.setattr("pipeline.aws.make_clients", failing_clients)
    code, _, err = _run(capsys, "aws", "upload-data", str(dataset_folder), "--json")
    assert code == 2 and "the network went away" in err and "Traceback" not in err
    assert not any(k.endswith("_SUCCESS") for k in _keys(cloud))  # nothing starts on half a dataset
    monkeypatch.setattr("pipeline.aws.make_clients", real)
    code, uploaded, _ = _run(capsys, "aws", "upload-data", str(dataset_folder), "--json")
    assert code == 0 and uploaded["trigger"].endswith("imdb-2026-11/_SUCCESS")


@pytest.mark.parametrize("make, message", [
    (lambda d: (d / "reviews.jsonl").write_text("{}"), "is not a dataset by itself"),
    (lambda d: None, "does not exist"),
])
def test_what_cannot_be_a_dataset_is_refused_before_any_upload(cloud, capsys, tmp_path, make, message):
    make(tmp_path)
    target = tmp_path / ("reviews.jsonl" if "itself" in message else "missing")
    code, _, err = _run(capsys, "aws", "upload-data", str(target))
    assert code == 2 and message in err and _keys(cloud) == []


def test_a_folder_holding_an_archive_is_refused(cloud, capsys, dataset_folder):
    (dataset_folder / "extra.tar.gz").write_bytes(b"x")
    code, _, err = _run(capsys, "aws", "upload-data", str(dataset_folder))
    assert code == 2 and "would start a run of its own" in err and _keys(cloud) == []
