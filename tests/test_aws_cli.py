"""``sentiment-mlops aws ...`` against moto: the command a user types, the boto3 calls it makes.

moto runs nothing: a started execution is Succeeded at once, and it has no
ListPipelineExecutionSteps (the commands say so instead of listing steps).
"""
from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from pipeline.cli import main
from tests.test_aws_backend import REGION, aws_env  # noqa: F401  (aws_env is a fixture)

pytestmark = pytest.mark.slow

BUCKET = "sentiment-cli-bucket"
PIPELINE = "sentiment-cli-test"
ROLE = "arn:aws:iam::123456789012:role/TestSageMakerRole"


@pytest.fixture
def cloud(aws_env, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setenv("SENTIMENT_MLOPS_REGION", REGION)
    monkeypatch.setenv("SENTIMENT_MLOPS_BUCKET", BUCKET)
    monkeypatch.setenv("SENTIMENT_MLOPS_PIPELINE_NAME", PIPELINE)
    monkeypatch.setenv("SENTIMENT_MLOPS_ROLE_ARN", ROLE)
    monkeypatch.setenv("SENTIMENT_MLOPS_HOME", str(tmp_path / "home"))
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        yield s3


def _json(capsys, *argv: str) -> tuple[int, object]:
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out) if code in (0, 1) else None


def test_upsert_start_wait_list_and_show(cloud, capsys):
    code, upserted = _json(capsys, "aws", "upsert", "--json")
    assert code == 0 and upserted["pipeline_arn"].endswith(f":pipeline/{PIPELINE}")
    assert len(upserted["uploaded"]) == 3 and upserted["already_uploaded"] == []
    keys = [o["Key"] for o in cloud.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert sorted(keys) == sorted(uri.split(f"s3://{BUCKET}/", 1)[1] for uri in upserted["uploaded"])

    code, finished = _json(capsys, "aws", "start", "--param", "Epochs=3", "--param", "AccuracyThreshold=0.9",
                           "--display-name", "cli-test", "--wait", "--poll", "0", "--json")
    assert code == 0 and finished["status"] == "Succeeded"
    assert finished["parameters"]["Epochs"] == "3" and finished["parameters"]["AccuracyThreshold"] == "0.9"
    assert finished["steps"] is None and "ListPipelineExecutionSteps" in finished["steps_note"]

    code, listed = _json(capsys, "aws", "list", "--json")
    assert code == 0 and [e["arn"] for e in listed] == [finished["arn"]]
    assert listed[0]["started"]  # a datetime from boto3, printed as ISO 8601 text

    code, shown = _json(capsys, "aws", "show", finished["arn"], "--json")
    assert code == 0 and shown["status"] == "Succeeded" and shown["display_name"] == "cli-test"

    # The same, for people: one line per execution, and the execution with its steps' note.
    execution_id = finished["arn"].rsplit("/", 1)[-1]
    assert listed[0]["execution_id"] == execution_id
    assert main(["aws", "list"]) == 0 and execution_id in capsys.readouterr().out
    assert main(["aws", "show", execution_id]) == 0  # the id `aws list` prints is enough
    assert f"execution {finished['arn']}: Succeeded" in capsys.readouterr().out

    # A wrong value is refused before anything is sent, naming the parameter.
    assert main(["aws", "start", "--param", "Epochs=many"]) == 2
    assert "Epochs (Integer) needs" in capsys.readouterr().err


def test_start_before_upsert_says_to_upsert(cloud, capsys):
    assert main(["aws", "start", "--param", "Epochs=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "create it with upsert first" in err and len(err.splitlines()) == 1


def test_upsert_without_a_role_uploads_nothing(cloud, capsys, monkeypatch):
    monkeypatch.delenv("SENTIMENT_MLOPS_ROLE_ARN")
    assert main(["aws", "upsert"]) == 2
    assert "SENTIMENT_MLOPS_ROLE_ARN" in capsys.readouterr().err
    assert "Contents" not in cloud.list_objects_v2(Bucket=BUCKET)


def test_waiting_for_an_unknown_execution_is_one_line(cloud, capsys):
    arn = f"arn:aws:sagemaker:{REGION}:123456789012:pipeline/{PIPELINE}/execution/doesnotexist"
    assert main(["aws", "wait", arn, "--poll", "0"]) == 2
    err = capsys.readouterr().err
    assert "list the executions" in err and len(err.splitlines()) == 1


def test_publish_website_uploads_the_page_and_its_config(cloud, capsys):
    code, published = _json(capsys, "aws", "publish-website", "--bucket", BUCKET,
                            "--api-url", "https://abc123.execute-api.us-east-1.amazonaws.com/", "--json")
    assert code == 0 and published["uploaded"] == ["index.html", "app.js", "style.css", "config.json"]
    config = cloud.get_object(Bucket=BUCKET, Key="config.json")
    assert json.loads(config["Body"].read()) == {"apiUrl": "https://abc123.execute-api.us-east-1.amazonaws.com"}
    page = cloud.get_object(Bucket=BUCKET, Key="index.html")
    assert page["ContentType"].startswith("text/html") and b'id="review"' in page["Body"].read()


@pytest.mark.parametrize("url", ["http://abc.execute-api.us-east-1.amazonaws.com", "abc.example.com",
                                 "https://abc.example.com/predict"])
def test_publish_website_refuses_an_address_that_is_not_the_apis_base(cloud, capsys, url):
    assert main(["aws", "publish-website", "--bucket", BUCKET, "--api-url", url]) == 2
    assert "https:// base URL" in capsys.readouterr().err
    assert "Contents" not in cloud.list_objects_v2(Bucket=BUCKET)
