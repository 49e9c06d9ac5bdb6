"""Web users' feedback as ground truth: the record in Model Monitor's format, the predict
function's signed answers and its /feedback route (against botocore's Stubber for S3), and the
same on this machine through the local API, with the website's buttons in a real browser."""
from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from mlops_rules.feedback import (
    GROUND_TRUTH_FOLDER,
    MAX_FEEDBACK_BYTES,
    Feedback,
    FeedbackError,
    feedback_token,
    ground_truth_key,
    ground_truth_record,
    parse_feedback,
    read_ground_truth_line,
)
from pipeline.lambdas import load_lambda
from tests.test_local_api import api, home  # noqa: F401  (module fixtures: a deployed endpoint behind the API)
from tests.test_registry_page import browser  # noqa: F401  (a fixture: Chromium, or a skip outside CI)

predict = load_lambda("predict")
KEY = b"0123456789abcdef0123456789abcdef"
CONFIG = predict.PredictConfig("sentiment-test", "https://reviews.example.com", "s3://bucket/prefix/groundtruth", KEY)
ANSWER = {"predictions": [{"label": "positive", "score": 0.91, "positive_probability": 0.91}]}


def _body(**fields) -> bytes:
    token = feedback_token(KEY, "id-1", "positive")
    return json.dumps({"inference_id": "id-1", "label": "positive", "verdict": "right", "token": token,
                       **fields}).encode()


def _event(path: str, body: bytes = b"", content_type: str = "application/json", source_ip: str = "198.51.100.7",
           method: str = "POST") -> dict:
    return {"version": "2.0", "rawPath": path, "headers": {"content-type": content_type},
            "requestContext": {"http": {"method": method, "path": path, "sourceIp": source_ip}, "stage": "$default"},
            "body": body.decode(), "isBase64Encoded": False}


# --- the record -----------------------------------------------------------------------------------

@pytest.mark.parametrize("label, verdict, truth", [("positive", "right", 1), ("positive", "wrong", 0),
                                                   ("negative", "right", 0), ("negative", "wrong", 1)])
def test_a_verdict_on_the_label_shown_is_the_true_label(label, verdict, truth):
    feedback = Feedback("id-1", label, verdict, "0" * 32)
    assert feedback.true_label == truth
    record = ground_truth_record("id-1", feedback.true_label)
    assert record == {"groundTruthData": {"data": str(truth), "encoding": "CSV"}, "eventMetadata": {"eventId": "id-1"},
                      "eventVersion": "0"}
    assert read_ground_truth_line(json.dumps(record)) == ("id-1", truth)


def test_records_are_filed_by_the_hour_and_an_id_never_makes_a_folder():
    when = datetime(2026, 12, 7, 22, 5, tzinfo=UTC)
    assert ground_truth_key("prefix/groundtruth", when, "a/../b c") == "prefix/groundtruth/2026/12/07/22/a_.._b_c.jsonl"


@pytest.mark.parametrize("body, message", [
    (b"x" * (MAX_FEEDBACK_BYTES + 1), "the limit is"),
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (_body(inference_id=""), "inference_id"),
    (_body(inference_id="x" * 65), "inference_id"),
    (_body(label="neutral"), "label must be one of"),
    (_body(verdict="maybe"), "verdict must be one of"),
    (_body(token="not-hex"), "token"),
])
def test_a_malformed_feedback_is_refused_with_what_is_wrong(body, message):
    with pytest.raises(FeedbackError, match=message):
        parse_feedback(body)


@pytest.mark.parametrize("line", [b"{}", b"not json", b'{"groundTruthData": {"data": "7"}, "eventMetadata": {"eventId": "x"}}'])
def test_a_line_that_is_not_ground_truth_is_refused(line):
    with pytest.raises(FeedbackError):
        read_ground_truth_line(line)


def test_each_client_gets_its_own_budget_and_it_refills():
    now = [0.0]
    limiter = predict.FeedbackLimiter(per_minute=20, clock=lambda: now[0])
    assert all(limiter.allow("a") for _ in range(20)) and not limiter.allow("a")
    assert limiter.allow("b")  # another address is not held back
    now[0] += 3.0  # one feedback every 3 s at 20 a minute
    assert limiter.allow("a") and not limiter.allow("a")


# --- the predict function ----------------------------------------------------------------------------

@pytest.fixture
def clients():
    runtime = boto3.client("sagemaker-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(runtime) as runtime_stub, Stubber(s3) as s3_stub:
        yield runtime, runtime_stub, s3, s3_stub
        runtime_stub.assert_no_pending_responses()
        s3_stub.assert_no_pending_responses()


def _answer(stub, answer: dict) -> None:
    data = json.dumps(answer).encode()
    stub.add_response("invoke_endpoint", {"Body": StreamingBody(io.BytesIO(data), len(data)), "ContentType": "application/json"},
                      {"EndpointName": "sentiment-test", "ContentType": "application/json", "Accept": "application/json",
                       "Body": ANY, "InferenceId": "id-1"})


def test_an_answer_is_signed_and_its_feedback_becomes_a_ground_truth_record(clients):
    runtime, runtime_stub, s3, s3_stub = clients
    _answer(runtime_stub, ANSWER)
    response = predict.handle(_event("/predict", b'{"review": "superb"}'), CONFIG, runtime, lambda: "id-1", s3=s3)
    answer = json.loads(response["body"])
    assert answer["inference_id"] == "id-1" and answer["feedback_token"] == feedback_token(KEY, "id-1", "positive")
    record = json.dumps(ground_truth_record("id-1", 0)) + "\n"
    s3_stub.add_response("put_object", {}, {"Bucket": "bucket", "Key": ANY, "Body": record.encode(),
                                            "ContentType": "application/jsonlines"})
    body = json.dumps({"inference_id": "id-1", "label": "positive", "verdict": "wrong", "token": answer["feedback_token"]})
    response = predict.handle(_event("/feedback", body.encode()), CONFIG, runtime, s3=s3)
    assert response["statusCode"] == 201, response
    assert json.loads(response["body"]) == {"recorded": True, "inference_id": "id-1", "label": "negative"}


def test_an_answer_about_several_reviews_is_not_signed(clients):
    runtime, runtime_stub, _, _ = clients
    _answer(runtime_stub, {"predictions": ANSWER["predictions"] * 2})
    response = predict.handle(_event("/predict", b'{"reviews": ["a", "b"]}'), CONFIG, runtime, lambda: "id-1")
    assert "feedback_token" not in json.loads(response["body"])


@pytest.mark.parametrize("body, content_type, status, message", [
    (_body(token="f" * 32), "application/json", 403, "gave no such answer"),
    (_body(label="negative"), "application/json", 403, "gave no such answer"),  # the token was for "positive"
    (_body(), "text/plain", 415, "application/json"),
    (_body(), "application/x-www-form-urlencoded", 415, "application/json"),  # what a cross-site form sends
    (b"{", "application/json", 400, "not JSON"),
])
def test_a_feedback_that_labels_no_given_answer_is_refused_and_nothing_is_written(clients, body, content_type, status,
                                                                                   message):
    runtime, _, s3, _ = clients  # nothing queued: a write would fail the test
    response = predict.handle(_event("/feedback", body, content_type), CONFIG, runtime, s3=s3)
    assert response["statusCode"] == status and message in json.loads(response["body"])["error"]


def test_a_client_past_its_limit_is_told_to_wait(clients):
    runtime, _, s3, s3_stub = clients
    limiter = predict.FeedbackLimiter(per_minute=2, clock=lambda: 0.0)
    for _ in range(2):
        s3_stub.add_response("put_object", {}, {"Bucket": "bucket", "Key": ANY, "Body": ANY, "ContentType": ANY})
        assert predict.handle(_event("/feedback", _body()), CONFIG, runtime, s3=s3, limiter=limiter)["statusCode"] == 201
    refused = predict.handle(_event("/feedback", _body()), CONFIG, runtime, s3=s3, limiter=limiter)
    assert refused["statusCode"] == 429 and "try again in a minute" in refused["body"]


def test_a_write_that_fails_is_a_clear_answer_and_feedback_off_is_a_404(clients):
    runtime, _, s3, s3_stub = clients
    s3_stub.add_client_error("put_object", "InternalError", "We encountered an internal error")
    response = predict.handle(_event("/feedback", _body()), CONFIG, runtime, s3=s3)
    assert response["statusCode"] == 502 and "try again later" in response["body"]
    off = predict.PredictConfig("sentiment-test")
    assert predict.handle(_event("/feedback", _body()), off, runtime, s3=s3)["statusCode"] == 404
    assert predict.handle(_event("/feedback", method="GET"), CONFIG, runtime, s3=s3)["statusCode"] == 405


def test_the_key_is_never_printed():
    assert KEY.decode() not in repr(CONFIG)


# --- on this machine --------------------------------------------------------------------------------

def _ground_truth(home) -> list[tuple[str, int]]:
    from pipeline.local.state.store import ArtifactStore
    from pipeline.settings import Settings

    folder = ArtifactStore(home).path(Settings(home=home).s3_uri(GROUND_TRUTH_FOLDER))
    return [read_ground_truth_line(line) for path in sorted(folder.rglob("*.jsonl")) for line in path.read_bytes().splitlines()]


@pytest.mark.server
def test_feedback_through_the_local_api_lands_in_the_store_once_per_answer(api, home):  # noqa: F811
    from tests.test_local_api import _request

    status, _, body = _request(api, "POST", "/predict", b'{"review": "a warm and funny film"}',
                               {"Content-Type": "application/json"})
    assert status == 200
    answer = json.loads(body)
    shown = answer["predictions"][0]["label"]
    feedback = {"inference_id": answer["inference_id"], "label": shown, "verdict": "wrong", "token": answer["feedback_token"]}
    for _ in range(2):  # a second word on the same answer replaces the first
        status, _, body = _request(api, "POST", "/feedback", json.dumps(feedback).encode(), {"Content-Type": "application/json"})
        assert status == 201, body
    truth = 0 if shown == "positive" else 1
    assert [(i, label) for i, label in _ground_truth(home) if i == answer["inference_id"]] == [(answer["inference_id"], truth)]
    forged = {**feedback, "inference_id": "never-served"}
    status, _, body = _request(api, "POST", "/feedback", json.dumps(forged).encode(), {"Content-Type": "application/json"})
    assert status == 403 and "never-served" not in {i for i, _ in _ground_truth(home)}


@pytest.mark.browser
def test_a_web_user_says_an_answer_is_wrong_and_it_becomes_ground_truth(api, home, browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    website_browser = browser
    website_browser.get(api.url)
    wait, by = WebDriverWait(website_browser, 30), By
    wait.until(lambda driver: driver.find_element(by.ID, "submit").is_enabled())
    website_browser.find_element(by.ID, "review").send_keys("Dull, slow and far too long.")
    website_browser.find_element(by.ID, "submit").click()
    wait.until(lambda driver: driver.find_element(by.ID, "feedback").is_displayed())
    shown = website_browser.find_element(by.ID, "label").text.lower()
    before = len(_ground_truth(home))
    website_browser.find_element(by.ID, "feedback-wrong").click()
    wait.until(lambda driver: "Thank you" in driver.find_element(by.ID, "feedback-status").text)
    other = "negative" if shown == "positive" else "positive"
    assert website_browser.find_element(by.ID, "feedback-status").text == f"Thank you: noted as {other}."
    assert not website_browser.find_element(by.ID, "feedback-right").is_enabled()  # one word per answer
    assert len(_ground_truth(home)) == before + 1
