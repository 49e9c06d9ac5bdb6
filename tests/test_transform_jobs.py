"""Batch Transform on this machine, end to end: a registered version's real model server scores
files from the local store through ``LocalTransforms`` and ``sentiment-mlops transform``, as a
CreateTransformJob would on SageMaker (records, batching, data processing, outputs, failures)."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from pipeline.cli import main
from pipeline.local.processes import process_identity
from pipeline.local.services.hosting import LocalHosting
from pipeline.local.services.transform.jobs import LocalTransforms, execution_parameters, transform_log
from pipeline.local.state.db import iso, open_state, utc_now, write_transaction
from pipeline.local.state.registry import ModelRegistry
from pipeline.local.state.store import ArtifactStore
from pipeline.settings import Settings
from pipeline.transforms import TransformOptions, ensure_model, transform_request
from serve.handlers import model_fn, predict_fn
from tests.conftest import register_versions

pytestmark = pytest.mark.server

REVIEWS = ["a wonderful, moving film with great acting", "dull, boring and far too long", "I loved every minute",
           "the worst script I have seen in years", "fine", "an unforgettable performance \u2028 across two lines"]


@pytest.fixture
def home(trained, tmp_path):
    register_versions(tmp_path, trained, versions=1)
    return tmp_path


@pytest.fixture
def transforms(home):
    conn = open_state(home)
    yield LocalTransforms(home, conn, LocalHosting(home, conn))
    conn.close()


def _model(transforms: LocalTransforms, home: Path) -> str:
    settings = Settings(home=home)
    package = ModelRegistry(transforms.conn).get(settings.model_package_group, 1)
    return ensure_model(transforms.hosting, settings, 1, package.arn)


def _put(home: Path, uri: str, lines: list[str] | bytes) -> None:
    data = lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode()
    ArtifactStore(home).put_bytes(uri, data)


def _records(reviews: list[str]) -> list[str]:
    return [json.dumps({"id": i, "review": review, "label": i % 2}) for i, review in enumerate(reviews)]


def _run(transforms: LocalTransforms, home: Path, name: str, input_uri: str, **options) -> dict:
    request = transform_request(name, _model(transforms, home), input_uri, f"s3://bucket/out/{name}/",
                                TransformOptions(**options))
    transforms.create_transform_job(**request)
    return transforms.describe_transform_job(TransformJobName=name)


def _outputs(home: Path, name: str) -> dict[str, bytes]:
    folder = ArtifactStore(home).path(f"s3://bucket/out/{name}/")
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()} \
        if folder.is_dir() else {}


def test_a_joined_transform_answers_what_the_model_answers_in_process(home, transforms, trained):
    _put(home, "s3://bucket/in/reviews.jsonl", _records(REVIEWS))
    job = _run(transforms, home, "joined", "s3://bucket/in/", input_filter="$.review", join_source="Input",
               output_filter="$['id','label','SageMakerOutput']", max_payload_mb=1)
    assert job["TransformJobStatus"] == "Completed", job.get("FailureReason")
    lines = _outputs(home, "joined")["reviews.jsonl.out"].decode().splitlines()
    written = [json.loads(line) for line in lines]
    assert [w["id"] for w in written] == list(range(len(REVIEWS)))  # the input's order, one line a record
    assert all(set(w) == {"id", "label", "SageMakerOutput"} for w in written)
    expected = predict_fn(REVIEWS, model_fn(str(trained / "model")))
    assert [round(w["SageMakerOutput"]["positive_probability"], 6) for w in written] == \
        [round(p.positive_probability, 6) for p in expected]
    assert transforms.progress("joined")["records"] == len(REVIEWS)


def test_every_object_under_the_prefix_gets_its_own_out_file_at_its_relative_path(home, transforms):
    _put(home, "s3://bucket/in/a.jsonl", [json.dumps(r) for r in REVIEWS[:2]])
    _put(home, "s3://bucket/in/more/b.jsonl", [json.dumps(r) for r in REVIEWS[2:5]])
    _put(home, "s3://bucket/in/more/c.jsonl.gz", gzip.compress(b'"gzip is not asked for"\n'))
    job = _run(transforms, home, "many", "s3://bucket/in/more/b", batch_strategy="SingleRecord")
    assert job["TransformJobStatus"] == "Completed", job.get("FailureReason")
    assert set(_outputs(home, "many")) == {"b.jsonl.out"}  # a key prefix: b.jsonl only
    job = _run(transforms, home, "all", "s3://bucket/in/", batch_strategy="SingleRecord", compression="None",
               assemble_with="Line")
    assert job["TransformJobStatus"] == "Failed"  # the gzip object is not JSON Lines
    job = _run(transforms, home, "plain", "s3://bucket/in/more/b.jsonl")
    outputs = _outputs(home, "plain")
    assert set(outputs) == {"b.jsonl.out"} and len(outputs["b.jsonl.out"].splitlines()) == 3


def test_gzip_input_and_single_record_requests(home, transforms):
    _put(home, "s3://bucket/gz/reviews.jsonl.gz", gzip.compress(("\n".join(json.dumps(r) for r in REVIEWS)).encode()))
    job = _run(transforms, home, "gz", "s3://bucket/gz/", compression="Gzip", batch_strategy="SingleRecord")
    assert job["TransformJobStatus"] == "Completed", job.get("FailureReason")
    answers = _outputs(home, "gz")["reviews.jsonl.gz.out"].decode().splitlines()
    assert len(answers) == len(REVIEWS) and all(json.loads(a)["label"] in ("positive", "negative") for a in answers)


def test_csv_records_are_joined_by_appending_fields(home, transforms):
    rows = ['7,"a wonderful, moving film"', '8,"dull and far too long"']
    _put(home, "s3://bucket/csv/reviews.csv", rows)
    job = _run(transforms, home, "csv", "s3://bucket/csv/", content_type="text/csv", accept="text/plain",
               input_filter="$[1]", join_source="Input", output_filter="$[0,2]")
    assert job["TransformJobStatus"] == "Completed", job.get("FailureReason")
    written = _outputs(home, "csv")["reviews.csv.out"].decode().splitlines()
    assert [line.split(",")[0] for line in written] == ["7", "8"]
    assert all(line.split(",")[1] in ("0", "1") for line in written)


def test_a_record_the_model_refuses_fails_the_job_with_its_reason_and_leaves_no_partial_output(home, transforms):
    """As on SageMaker, the other files are still transformed; the job fails with the first reason."""
    _put(home, "s3://bucket/bad/1-good.jsonl", [json.dumps(r) for r in REVIEWS])
    _put(home, "s3://bucket/bad/2-bad.jsonl", [json.dumps("fine film"), "{not json", json.dumps("good")])
    _put(home, "s3://bucket/bad/3-good.jsonl", [json.dumps(r) for r in REVIEWS[:2]])
    job = _run(transforms, home, "bad", "s3://bucket/bad/")
    assert job["TransformJobStatus"] == "Failed"
    reason = job["FailureReason"]
    assert reason.startswith("ClientError: the model answered 400") and "2-bad.jsonl" in reason
    assert "line 2 is not JSON" in reason and reason.endswith("(1 of 3 input files failed)") and "\n" not in reason
    outputs = _outputs(home, "bad")
    assert set(outputs) == {"1-good.jsonl.out", "3-good.jsonl.out"}  # whole; nothing of the failed one, no .partial
    assert len(outputs["3-good.jsonl.out"].splitlines()) == 2
    assert transforms.progress("bad")["objects_done"] == 3


def test_an_object_over_max_payload_with_split_type_none_fails_before_it_is_sent(home, transforms):
    _put(home, "s3://bucket/big/one.json", json.dumps({"review": "long " * 300_000}).encode())
    job = _run(transforms, home, "big", "s3://bucket/big/", content_type="application/json", split_type="None",
               batch_strategy=None, max_payload_mb=1)
    assert job["TransformJobStatus"] == "Failed"
    assert "larger than MaxPayloadInMB" in job["FailureReason"] and "SplitType Line" in job["FailureReason"]
    assert _outputs(home, "big") == {}


def test_text_plain_is_one_review_a_request_so_multi_record_is_refused():
    from pipeline.transforms import TransformError

    with pytest.raises(TransformError, match="text/plain is one review a request"):
        transform_request("t", "m", "s3://b/in/", "s3://b/out/", TransformOptions(content_type="text/plain"))
    single = transform_request("t", "m", "s3://b/in/", "s3://b/out/",
                               TransformOptions(content_type="text/plain", batch_strategy="SingleRecord"))
    assert single["BatchStrategy"] == "SingleRecord"


def test_requests_sagemaker_refuses_are_refused_before_anything_runs(home, transforms):
    model = _model(transforms, home)
    _put(home, "s3://bucket/in/a.jsonl", [json.dumps("fine")])
    good = transform_request("ok", model, "s3://bucket/in/", "s3://bucket/out/ok/", TransformOptions())
    with pytest.raises(ClientError, match="Could not find model"):
        transforms.create_transform_job(**{**good, "ModelName": "no-such-model"})
    with pytest.raises(ClientError, match="TransformJobName"):
        transforms.create_transform_job(**{**good, "TransformJobName": "under_score"})
    with pytest.raises(ClientError, match="at most 63"):
        transforms.create_transform_job(**{**good, "DataProcessing": {"InputFilter": "$." + "a" * 62}})
    transforms.create_transform_job(**good)
    with pytest.raises(ClientError, match="already exists"):
        transforms.create_transform_job(**good)
    names = [s["TransformJobName"] for s in transforms.list_transform_jobs()["TransformJobSummaries"]]
    assert names == ["ok"]  # the refused ones left no record


def test_the_model_server_tells_a_transform_its_execution_parameters(home, transforms):
    model = _model(transforms, home)
    pid, url = transforms.hosting.start_model_server(model, transform_log(home, "params"),
                                                     {"SAGEMAKER_MODEL_SERVER_WORKERS": "1"})
    try:
        assert execution_parameters(url) == {"MaxConcurrentTransforms": 2, "BatchStrategy": "MULTI_RECORD",
                                             "MaxPayloadInMB": 5}
    finally:
        os.kill(pid, 15)


def _records_done(transforms: LocalTransforms, name: str) -> int:
    try:
        return transforms.progress(name).get("records", 0)
    except ClientError:  # not created yet
        return 0


def test_stopping_a_running_job_leaves_no_output(home, transforms):
    _put(home, "s3://bucket/slow/reviews.jsonl", [json.dumps("a fine film")] * 3000)
    model = _model(transforms, home)
    request = transform_request("slow", model, "s3://bucket/slow/", "s3://bucket/out/slow/",
                                TransformOptions(batch_strategy="SingleRecord", max_concurrent=1))
    def run() -> None:  # a connection per thread, as SQLite wants
        conn = open_state(home)
        try:
            LocalTransforms(home, conn).create_transform_job(**request)
        finally:
            conn.close()

    worker = threading.Thread(target=run)
    worker.start()
    other = transforms
    deadline = time.monotonic() + 60
    while _records_done(other, "slow") == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    other.stop_transform_job(TransformJobName="slow")
    worker.join(60)
    job = other.describe_transform_job(TransformJobName="slow")
    assert job["TransformJobStatus"] == "Stopped" and "TransformEndTime" in job
    assert _outputs(home, "slow") == {}
    with pytest.raises(ClientError, match="cannot be stopped"):
        other.stop_transform_job(TransformJobName="slow")


def test_a_job_whose_process_was_killed_is_settled_as_failed(home, transforms):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    now = iso(utc_now())
    with write_transaction(transforms.conn):
        transforms.conn.execute(
            "INSERT INTO transform_jobs (name, arn, model_name, request, status, creation_time, start_time, "
            "last_modified_time, runner_pid, runner_identity) VALUES ('killed','arn:x','m','{}','InProgress',?,?,?,?,?)",
            (now, now, now, gone.pid, "boot:1"))
        transforms.conn.execute(
            "INSERT INTO transform_jobs (name, arn, model_name, request, status, creation_time, start_time, "
            "last_modified_time, runner_pid, runner_identity) VALUES ('alive','arn:y','m','{}','InProgress',?,?,?,?,?)",
            (now, now, now, os.getpid(), process_identity(os.getpid())))
    summaries = {s["TransformJobName"]: s for s in transforms.list_transform_jobs()["TransformJobSummaries"]}
    assert summaries["killed"]["TransformJobStatus"] == "Failed"
    assert f"pid {gone.pid}" in summaries["killed"]["FailureReason"]
    assert summaries["alive"]["TransformJobStatus"] == "InProgress"


def test_the_transform_command_scores_a_local_file_and_lists_the_job(home, tmp_path, capsys):
    source = tmp_path / "new-reviews.jsonl"
    source.write_text("\n".join(_records(REVIEWS)) + "\n", encoding="utf-8")
    code = main(["--home", str(home), "transform", "--version", "1", "--input", str(source), "--name", "cli",
                 "--input-filter", "$.review", "--join-source", "Input", "--output-filter", "$['id','SageMakerOutput']",
                 "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert code == 0 and shown["TransformJobStatus"] == "Completed"
    (output,) = shown["OutputFiles"]
    assert output["uri"].endswith("/transforms/cli/new-reviews.jsonl.out")
    assert len(Path(output["path"]).read_text().splitlines()) == len(REVIEWS)
    assert main(["--home", str(home), "transforms", "list", "--json"]) == 0
    assert [row["TransformJobName"] for row in json.loads(capsys.readouterr().out)] == ["cli"]
    assert main(["--home", str(home), "transform", "--version", "9", "--input", str(source)]) == 2
    assert "version 9" in capsys.readouterr().err


# --- ModelClientConfig: retries and timeouts, against a real HTTP server ----------------------

def _flaky_server(statuses: list[int], delay_s: float = 0.0):
    """An HTTP server answering /invocations with ``statuses`` in turn (then 200), counting calls."""
    import asyncio

    from aiohttp import web

    from serve.server.run import BackgroundServer

    calls: list[float] = []

    async def invocations(request: web.Request) -> web.Response:
        calls.append(time.monotonic())
        await request.read()
        status = statuses[len(calls) - 1] if len(calls) <= len(statuses) else 200
        if delay_s:
            await asyncio.sleep(delay_s)
        return web.Response(status=status, text="ok" if status == 200 else f"status {status}\ntraceback here")

    app = web.Application()
    app.router.add_post("/invocations", invocations)
    return BackgroundServer(app), calls


def _client(url: str, retries: int, timeout_s: int = 600):
    from pipeline.local.services.transform.runner import ModelClient
    from pipeline.local.services.transform.spec import parse_request

    request = transform_request("t", "m", "s3://b/in/", "s3://b/out/", TransformOptions())
    request["ModelClientConfig"] = {"InvocationsMaxRetries": retries, "InvocationsTimeoutInSeconds": timeout_s}
    return ModelClient(url, parse_request(request), connections=1)


def test_a_5xx_is_tried_again_up_to_invocations_max_retries():
    from pipeline.local.services.transform.runner import TransformFailed

    server, calls = _flaky_server([503, 500])
    with server:
        assert _client(server.url, retries=2).invoke(b'"fine"', "w").body == b"ok"
        assert len(calls) == 3
    server, calls = _flaky_server([503, 503, 503])
    with server, pytest.raises(TransformFailed, match=r"the model answered 503: status 503 \(tried 2 times\)"):
        _client(server.url, retries=1).invoke(b'"fine"', "w")
    assert len(calls) == 2


def test_a_4xx_fails_at_once_with_the_models_first_line():
    from pipeline.local.services.transform.runner import TransformFailed

    server, calls = _flaky_server([400])
    with server, pytest.raises(TransformFailed, match=r"answered 400 for w: status 400$"):
        _client(server.url, retries=3).invoke(b'"fine"', "w")
    assert len(calls) == 1


def test_an_answer_slower_than_the_timeout_is_tried_again_then_fails():
    from pipeline.local.services.transform.runner import TransformFailed

    server, calls = _flaky_server([], delay_s=2.0)
    with server, pytest.raises(TransformFailed, match="did not answer .*ReadTimeoutError.*tried 2 times"):
        _client(server.url, retries=1, timeout_s=1).invoke(b'"fine"', "w")
    assert len(calls) == 2


def test_max_concurrent_transforms_is_how_many_requests_are_in_flight_at_once(tmp_path):
    """With SingleRecord and MaxConcurrentTransforms 3, a slow model sees exactly 3 requests at a
    time, never more, and the answers are written in the records' order all the same."""
    import asyncio

    from aiohttp import web

    from pipeline.local.services.transform.runner import run_transform
    from pipeline.local.services.transform.spec import parse_request, resolve
    from serve.server.run import BackgroundServer

    in_flight, most = [0], [0]

    async def invocations(request: web.Request) -> web.Response:
        body = await request.read()
        in_flight[0] += 1
        most[0] = max(most[0], in_flight[0])
        await asyncio.sleep(0.05 if body.endswith(b'0"') else 0.02)  # uneven: answers come back out of order
        in_flight[0] -= 1
        return web.Response(text=json.dumps({"echo": json.loads(body)}), content_type="application/jsonlines")

    app = web.Application()
    app.router.add_post("/invocations", invocations)
    store = ArtifactStore(tmp_path)
    store.put_bytes("s3://b/in/r.jsonl", "".join(json.dumps(f"review {i}") + "\n" for i in range(30)).encode())
    request = transform_request("c", "m", "s3://b/in/", "s3://b/out/",
                                TransformOptions(batch_strategy="SingleRecord", max_concurrent=3))
    spec = parse_request(request)
    with BackgroundServer(app) as server:
        progress = run_transform(spec, resolve(spec, {}), store, server.url)
    assert most[0] == 3 and progress.records == 30
    written = [json.loads(line)["echo"] for line in store.read_bytes("s3://b/out/r.jsonl.out").splitlines()]
    assert written == [f"review {i}" for i in range(30)]
