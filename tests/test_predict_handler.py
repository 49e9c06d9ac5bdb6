"""The predict handler (``lambda/predict.py``): API Gateway proxy events in, the endpoint's
answer out, checked with the real sagemaker-runtime client under botocore's Stubber (which
validates every request against the service model)."""
from __future__ import annotations

import base64
import io
import json

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from pipeline.lambdas import load_lambda

predict = load_lambda("predict")
CONFIG = predict.PredictConfig("sentiment-test", "https://reviews.example.com")
ANSWER = {"predictions": [{"label": "positive", "score": 0.93, "positive_probability": 0.93}]}
REVIEW = "An unforgettable, tender film about a family."


def _v2(method: str = "POST", path: str = "/predict", body: str | None = None, content_type: str = "application/json",
        base64_encoded: bool = False) -> dict:
    """An HTTP API (payload 2.0) event."""
    return {"version": "2.0", "routeKey": "$default", "rawPath": path, "headers": {"content-type": content_type},
            "requestContext": {"http": {"method": method, "path": path}, "stage": "$default"},
            "body": body, "isBase64Encoded": base64_encoded}


def _v1(method: str, path: str, body: str | None, content_type: str, base64_encoded: bool = False) -> dict:
    """A REST API (payload 1.0) event, as a stage's URL delivers it."""
    return {"resource": "/{proxy+}", "path": f"/prod{path}", "httpMethod": method,
            "headers": {"Content-Type": content_type}, "requestContext": {"stage": "prod"},
            "body": body, "isBase64Encoded": base64_encoded}


@pytest.fixture
def runtime():
    client = boto3.client("sagemaker-runtime", region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x")
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


def _expect(stub, body: bytes, content_type: str = "application/json", answer: dict = ANSWER) -> None:
    data = json.dumps(answer).encode()
    stub.add_response("invoke_endpoint", {"Body": StreamingBody(io.BytesIO(data), len(data)),
                                          "ContentType": "application/json"},
                      {"EndpointName": "sentiment-test", "ContentType": content_type, "Accept": "application/json",
                       "Body": body, "InferenceId": ANY})


def test_a_review_goes_to_the_endpoint_and_its_answer_comes_back(runtime, caplog):
    client, stub = runtime
    body = json.dumps({"review": REVIEW})
    _expect(stub, body.encode())
    caplog.set_level("INFO", logger="predict")
    response = predict.handle(_v2(body=body), CONFIG, client, new_inference_id=lambda: "id-1")
    assert response["statusCode"] == 200 and json.loads(response["body"]) == {**ANSWER, "inference_id": "id-1"}
    assert response["headers"]["Access-Control-Allow-Origin"] == "https://reviews.example.com"
    assert REVIEW not in caplog.text  # reviews are the users' words: sizes are logged, not text


def test_a_rest_api_stage_event_with_a_base64_text_body(runtime):
    client, stub = runtime
    _expect(stub, REVIEW.encode(), "text/plain")
    event = _v1("POST", "/predict", base64.b64encode(REVIEW.encode()).decode(), "text/plain; charset=utf-8", True)
    assert predict.handle(event, CONFIG, client)["statusCode"] == 200


@pytest.mark.parametrize("event, status, message", [
    (_v2(body="x" * (predict.MAX_BODY_BYTES + 1)), 413, "the limit is"),
    (_v2(body=base64.b64encode(b"x" * 10_000_000).decode(), base64_encoded=True), 413, "the limit is"),
    (_v2(body=base64.b64encode(b"\xff\xfe review").decode(), base64_encoded=True), 400, "UTF-8"),
    (_v2(body="not base64!", base64_encoded=True), 400, "base64"),
    (_v2(body="<review/>", content_type="application/xml"), 415, "application/json or text/plain"),
    (_v2(method="GET"), 405, "use POST"),
    (_v2(path="/admin", body="{}"), 404, "no route"),
    ("not an event", 400, "could not be read"),
])
def test_what_a_caller_gets_wrong_is_answered_without_calling_the_endpoint(runtime, event, status, message):
    client, _ = runtime  # no response queued: a call to the endpoint would fail the test
    response = predict.handle(event, CONFIG, client)
    assert response["statusCode"] == status and message in json.loads(response["body"])["error"]


def test_preflight_and_health_need_no_endpoint(runtime):
    client, _ = runtime
    assert predict.handle(_v2(method="OPTIONS"), CONFIG, client)["statusCode"] == 204
    health = predict.handle(_v2(method="GET", path="/health"), CONFIG, client)
    assert health["statusCode"] == 200 and json.loads(health["body"])["endpoint"] == "sentiment-test"


def test_the_endpoints_refusal_keeps_its_status_and_message(runtime):
    client, stub = runtime
    refusal = json.dumps({"error": "the review is empty: send the text of a movie review"})
    stub.add_client_error("invoke_endpoint", "ModelError", "Received client error (400) from primary",
                          http_status_code=424, response_meta={},
                          modeled_fields={"OriginalStatusCode": 400, "OriginalMessage": refusal})
    response = predict.handle(_v2(body='{"review": " "}'), CONFIG, client)
    assert response["statusCode"] == 400 and json.loads(response["body"])["error"].startswith("the review is empty")


# What the SageMaker PyTorch inference container answers when input_fn raises our BadRequest:
# sagemaker_inference's Transformer.handle_error returns "{message}\n{traceback}" as the body.
CONTAINER_REFUSAL = (
    "the review is empty: send the text of a movie review\n"
    "Traceback (most recent call last):\n"
    '  File "/opt/conda/lib/python3.11/site-packages/sagemaker_inference/transformer.py", line 150, in transform\n'
    "    result = self._run_handler_function(\n"
    '  File "/opt/ml/model/code/serve/handlers.py", line 61, in input_fn\n'
    "    raise BadRequest(\"the review is empty: send the text of a movie review\")\n"
    "serve.errors.BadRequest: the review is empty: send the text of a movie review\n")


@pytest.mark.parametrize("original, says", [
    (CONTAINER_REFUSAL, "the review is empty: send the text of a movie review"),
    ('{"error": "the review is empty"}', "the review is empty"),  # the local model server's own refusals
    ('{"code": 413, "type": "PayloadTooLarge", "message": "too many reviews"}', "too many reviews"),  # TorchServe's
    ("Traceback (most recent call last):\n  File x\nValueError: secret", "the model refused the request"),
    ("", "the model refused the request"),
    ("x" * 5000, "x" * 200),
])
def test_the_endpoints_refusal_is_one_json_line_whatever_the_containers_format(runtime, original, says):
    client, stub = runtime
    stub.add_client_error("invoke_endpoint", "ModelError", "Received client error (400) from primary",
                          http_status_code=424, response_meta={},
                          modeled_fields={"OriginalStatusCode": 400, "OriginalMessage": original})
    response = predict.handle(_v2(body='{"review": " "}'), CONFIG, client)
    assert response["statusCode"] == 400 and response["headers"]["Content-Type"] == "application/json"
    error = json.loads(response["body"])["error"]  # what website/app.js reads
    assert says in error and "Traceback" not in error and "File " not in error and "\n" not in error
    assert len(error) <= predict.MAX_MESSAGE_CHARS


def test_a_model_server_with_a_full_queue_is_a_busy_message_not_a_fault(runtime):
    client, stub = runtime
    stub.add_client_error("invoke_endpoint", "ModelError", "Received server error (503) from primary",
                          http_status_code=424, response_meta={},
                          modeled_fields={"OriginalStatusCode": 503, "OriginalMessage": '{"error": "the server is busy"}'})
    response = predict.handle(_v2(body=json.dumps({"review": REVIEW})), CONFIG, client)
    assert response["statusCode"] == 503 and "busy" in json.loads(response["body"])["error"]


@pytest.mark.parametrize("code, message, status, says", [
    ("ValidationError", "Endpoint sentiment-test of account 123456789012 not found.", 503, "not deployed yet"),
    ("ThrottlingException", "Rate exceeded", 503, "busy"),
    ("InternalFailure", "internal details nobody outside should see", 502, "could not answer"),
])
def test_endpoint_trouble_is_a_message_a_page_can_show(runtime, code, message, status, says):
    client, stub = runtime
    stub.add_client_error("invoke_endpoint", code, message, http_status_code=400 if code == "ValidationError" else 500)
    response = predict.handle(_v2(body=json.dumps({"review": REVIEW})), CONFIG, client)
    assert response["statusCode"] == status and says in response["body"] and "internal details" not in response["body"]


def test_settings_come_from_the_environment():
    assert predict.PredictConfig.from_env({"ENDPOINT_NAME": "e"}) == predict.PredictConfig("e", "*")
    with pytest.raises(RuntimeError, match="ENDPOINT_NAME"):
        predict.PredictConfig.from_env({})
