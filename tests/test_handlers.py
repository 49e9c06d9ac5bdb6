"""Tests for serve.handlers (and serve.inference): parsing, validation, prediction and serialization."""
from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import serve.handlers as handlers
import serve.inference as inference
from serve.artifact import write_artifact
from serve.errors import BadRequest, InferenceError, NotAcceptable, PayloadTooLarge, UnsupportedMediaType
from serve.handlers import (
    MAX_BATCH_REVIEWS,
    MAX_BODY_BYTES,
    MAX_REVIEW_CHARS,
    PREDICT_BATCH_SIZE,
    Prediction,
    SentimentModel,
    input_fn,
    model_fn,
    output_fn,
    predict_fn,
    validate_reviews,
)
from serve.network import NetworkConfig, SentimentLSTM
from serve.text import TextConfig, TextNormalizer
from serve.vocab import Vocabulary
from tests.synthetic import make_reviews

REVIEWS = [r["text"] for r in make_reviews(40, seed=5)]


def _build(model_dir: Path, text: TextConfig, bidirectional: bool = True, num_layers: int = 1) -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    normalizer = TextNormalizer(text)
    vocab = Vocabulary.build(Counter(t for r in make_reviews(60, seed=0) for t in normalizer.tokens(r["text"])), max_size=50)
    network = SentimentLSTM(NetworkConfig(len(vocab), 8, 8, num_layers, bidirectional, 0.2))
    # Spread the head's weights so probabilities are far enough from 0.5 to tell reviews apart.
    with torch.no_grad():
        network.head.weight.mul_(20)
    write_artifact(model_dir, network, vocab, text, {"note": "test"})


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> SentimentModel:
    model_dir = tmp_path_factory.mktemp("handlers") / "model"
    _build(model_dir, TextConfig(max_len=25, truncate="tail"))
    loaded = model_fn(str(model_dir))
    assert loaded.loaded.device.type in ("cpu", "cuda")
    return loaded


@pytest.fixture(scope="module")
def two_layer_model(tmp_path_factory) -> SentimentModel:
    model_dir = tmp_path_factory.mktemp("handlers2") / "model"
    _build(model_dir, TextConfig(max_len=60, truncate="head", remove_stopwords=True), bidirectional=True, num_layers=2)
    return model_fn(str(model_dir))


# --- input_fn: the accepted shapes -------------------------------------------------------------------


def test_plain_text_is_one_review():
    assert input_fn(b"A great film, really.", "text/plain") == ["A great film, really."]


def test_plain_text_as_str_and_bytearray():
    assert input_fn("Good film", "text/plain") == ["Good film"]
    assert input_fn(bytearray(b"Good film"), "text/plain") == ["Good film"]


def test_plain_text_keeps_newlines_in_one_review():
    assert input_fn(b"first line\nsecond line", "text/plain") == ["first line\nsecond line"]


def test_json_single_review():
    assert input_fn(json.dumps({"review": "Loved it"}).encode(), "application/json") == ["Loved it"]


def test_json_many_reviews():
    body = json.dumps({"reviews": ["Loved it", "Hated it", "caf\u00e9 na\u00efve"]}, ensure_ascii=False).encode("utf-8")
    assert input_fn(body, "application/json") == ["Loved it", "Hated it", "caf\u00e9 na\u00efve"]


def test_csv_one_review_per_line_with_quotes_and_commas():
    body = 'plain review\n"quoted, with a comma"\nunquoted, commas, stay\n"a ""quote"" inside"\n"two\nlines"\n'
    assert input_fn(body.encode(), "text/csv") == [
        "plain review",
        "quoted, with a comma",
        "unquoted, commas, stay",
        'a "quote" inside',
        "two\nlines",
    ]


def test_csv_without_trailing_newline_and_crlf():
    assert input_fn(b"one\r\ntwo", "text/csv") == ["one", "two"]


def test_csv_row_with_a_quoted_field_and_more_fields_is_rejoined():
    assert input_fn(b'"good, very",fine', "text/csv") == ["good, very,fine"]


@pytest.mark.parametrize(
    "content_type, body, expected",
    [
        ("text/plain; charset=utf-8", "R\u00e9sum\u00e9 of a fine film", ["R\u00e9sum\u00e9 of a fine film"]),
        ("application/json; charset=UTF-8", json.dumps({"review": "ok film"}), ["ok film"]),
        ("text/csv; charset=utf-8", "a\nb", ["a", "b"]),
        ("Application/JSON", json.dumps({"review": "ok film"}), ["ok film"]),
        (" text/plain ", "x y", ["x y"]),
    ],
)
def test_content_type_parameters_and_case_are_ignored(content_type, body, expected):
    assert input_fn(body.encode("utf-8"), content_type) == expected


# --- input_fn: the refusals --------------------------------------------------------------------------


def _refused(body, content_type, error: type[InferenceError], status: int) -> InferenceError:
    with pytest.raises(error) as info:
        input_fn(body, content_type)
    assert info.value.status == status
    assert isinstance(info.value, InferenceError)
    assert str(info.value)  # a message a client can read
    return info.value


@pytest.mark.parametrize("body", [b"", b"   ", b"\n\t  \r\n"])
def test_empty_or_whitespace_text_is_400(body):
    error = _refused(body, "text/plain", BadRequest, 400)
    assert "empty" in str(error)


@pytest.mark.parametrize("review", ["", "   ", "\n"])
def test_empty_json_review_is_400(review):
    _refused(json.dumps({"review": review}).encode(), "application/json", BadRequest, 400)


def test_one_blank_review_in_a_batch_is_400_and_named():
    error = _refused(json.dumps({"reviews": ["fine film", "  ", "bad film"]}).encode(), "application/json", BadRequest, 400)
    assert "review 2" in str(error)


def test_an_empty_list_of_reviews_is_400():
    _refused(json.dumps({"reviews": []}).encode(), "application/json", BadRequest, 400)


def test_bad_utf8_is_400():
    error = _refused(b"great film \xff\xfe broken", "text/plain", BadRequest, 400)
    assert "UTF-8" in str(error)
    _refused(b'{"review": "caf\xe9"}', "application/json", BadRequest, 400)


@pytest.mark.parametrize("body", [b"{", b'{"review": }', b"not json", b"{'review': 'single quotes'}", b""])
def test_malformed_json_is_400(body):
    _refused(body, "application/json", BadRequest, 400)


def test_deeply_nested_json_is_400_not_a_crash():
    """A small hostile body must be a 400, not a RecursionError that the server turns into a 500."""
    _refused(b"[" * 100_000, "application/json", BadRequest, 400)


@pytest.mark.parametrize(
    "data",
    [
        ["a list", "of reviews"],
        "just a string",
        42,
        None,
        {"text": "wrong key"},
        {"review": 5},
        {"review": None},
        {"review": ["in", "a", "list"]},
        {"reviews": "not a list"},
        {"reviews": ["ok", 3]},
        {"reviews": [None]},
        {"reviews": {"a": "b"}},
    ],
)
def test_json_of_the_wrong_shape_is_400(data):
    error = _refused(json.dumps(data).encode(), "application/json", BadRequest, 400)
    assert "review" in str(error)


@pytest.mark.parametrize("content_type", ["application/xml", "image/png", "", None, "application/x-npy", "text/html; charset=utf-8"])
def test_unsupported_content_type_is_415(content_type):
    _refused(b"A fine film", content_type, UnsupportedMediaType, 415)


def test_body_over_the_limit_is_413():
    body = b"a" * (10 * 1024 * 1024)
    for content_type in ("text/plain", "application/json", "text/csv"):
        error = _refused(body, content_type, PayloadTooLarge, 413)
        assert f"{MAX_BODY_BYTES:,}" in str(error)


def test_str_body_over_the_limit_is_413_counting_utf8_bytes():
    # Fewer characters than the limit, more bytes than it: the limit is on bytes.
    body = "\u00e9" * (MAX_BODY_BYTES // 2 + 10)
    assert len(body) < MAX_BODY_BYTES
    _refused(body, "text/plain", PayloadTooLarge, 413)


def test_body_at_the_limit_is_not_refused_for_size():
    body = (b"word " * (MAX_BODY_BYTES // 5))[:MAX_BODY_BYTES]
    assert len(body) == MAX_BODY_BYTES
    # Within the byte limit, so what is refused is the review's length, not the body's size.
    error = _refused(body, "text/plain", PayloadTooLarge, 413)
    assert "characters" in str(error) and "bytes" not in str(error)
    reviews = ["word " * 1000] * 1000
    body = json.dumps({"reviews": reviews}).encode()
    assert len(body) < MAX_BODY_BYTES
    assert input_fn(body, "application/json") == reviews


def test_review_over_the_character_limit_is_413():
    error = _refused(("x" * (MAX_REVIEW_CHARS + 1)).encode(), "text/plain", PayloadTooLarge, 413)
    assert f"{MAX_REVIEW_CHARS:,}" in str(error)
    assert input_fn(("x" * MAX_REVIEW_CHARS).encode(), "text/plain") == ["x" * MAX_REVIEW_CHARS]


def test_one_long_review_in_a_batch_is_413_and_named():
    body = json.dumps({"reviews": ["fine", "y" * (MAX_REVIEW_CHARS + 1)]}).encode()
    error = _refused(body, "application/json", PayloadTooLarge, 413)
    assert "review 2" in str(error)


def test_too_many_reviews_is_413():
    body = json.dumps({"reviews": ["ok film"] * (MAX_BATCH_REVIEWS + 1)}).encode()
    error = _refused(body, "application/json", PayloadTooLarge, 413)
    assert f"{MAX_BATCH_REVIEWS:,}" in str(error)
    assert len(input_fn(json.dumps({"reviews": ["ok film"] * MAX_BATCH_REVIEWS}).encode(), "application/json")) == MAX_BATCH_REVIEWS


def test_csv_and_json_lines_batches_are_bounded_by_size_not_count():
    """A Batch Transform packs as many records as MaxPayloadInMB holds: short sentences are many."""
    many = MAX_BATCH_REVIEWS * 5
    assert len(input_fn(("ok film\n" * many).encode(), "text/csv")) == many
    assert len(input_fn(('"ok film"\n' * many).encode(), "application/jsonlines")) == many
    _refused(("ok film\n" * (MAX_BODY_BYTES // 8 + 1)).encode(), "text/csv", PayloadTooLarge, 413)


def test_csv_blank_line_is_400():
    _refused(b"good film\n\nbad film\n", "text/csv", BadRequest, 400)


def test_validate_reviews_returns_its_input():
    reviews = ["a", "b"]
    assert validate_reviews(reviews) == reviews


# --- errors ------------------------------------------------------------------------------------------


def test_error_statuses():
    assert (BadRequest.status, PayloadTooLarge.status, UnsupportedMediaType.status, NotAcceptable.status) == (400, 413, 415, 406)
    error = BadRequest("something specific")
    assert str(error) == "something specific" and error.message == "something specific"
    assert isinstance(error, Exception)


# --- predict_fn --------------------------------------------------------------------------------------


def test_predictions_are_probabilities(model):
    predictions = predict_fn(REVIEWS, model)
    assert len(predictions) == len(REVIEWS)
    probabilities = np.array([p.positive_probability for p in predictions])
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    assert all(isinstance(p.positive_probability, float) for p in predictions)
    assert probabilities.std() > 1e-3  # the model really looks at the text


def test_prediction_is_deterministic(model):
    first = [p.positive_probability for p in predict_fn(REVIEWS[:5], model)]
    second = [p.positive_probability for p in predict_fn(REVIEWS[:5], model)]
    assert first == second


@pytest.mark.parametrize("fixture", ["model", "two_layer_model"])
def test_same_review_same_probability_alone_and_in_a_mixed_batch(fixture, request):
    model = request.getfixturevalue(fixture)
    short = "Wonderful film."
    mixed = [REVIEWS[3] * 3, short, "Awful <br /> boring", REVIEWS[7], "x " * 200 + "great"]
    alone = [predict_fn([r], model)[0].positive_probability for r in mixed]
    together = [p.positive_probability for p in predict_fn(mixed, model)]
    np.testing.assert_allclose(together, alone, atol=1e-6)


def test_order_is_kept_across_several_internal_batches(model):
    rng = random.Random(1)
    reviews = [" ".join(rng.choices(REVIEWS, k=rng.randint(1, 3))) for _ in range(PREDICT_BATCH_SIZE + 45)]
    together = np.array([p.positive_probability for p in predict_fn(reviews, model)])
    reversed_ = np.array([p.positive_probability for p in predict_fn(reviews[::-1], model)])
    np.testing.assert_allclose(together, reversed_[::-1], atol=1e-6)
    for index in (0, 17, PREDICT_BATCH_SIZE, len(reviews) - 1):
        assert together[index] == pytest.approx(predict_fn([reviews[index]], model)[0].positive_probability, abs=1e-6)


def test_review_with_only_unknown_words_still_scores(model):
    (prediction,) = predict_fn(["zzzq qqqz xxyyzz"], model)
    assert 0.0 <= prediction.positive_probability <= 1.0
    (markup_only,) = predict_fn(["<br /><br />!!!"], model)
    assert 0.0 <= markup_only.positive_probability <= 1.0


def test_truncation_follows_the_text_config(model):
    """max_len=25, tail: words before the last 25 tokens must not change the score."""
    tail = " ".join(["great film"] * 20)
    with_prefix = "awful boring terrible " * 10 + tail
    a, b = predict_fn([tail, with_prefix], model)
    assert a.positive_probability == pytest.approx(b.positive_probability, abs=1e-6)


def test_end_to_end_handler_chain(model):
    body = json.dumps({"reviews": REVIEWS[:3]}).encode()
    out, kind = output_fn(predict_fn(input_fn(body, "application/json"), model), "application/json")
    assert kind == "application/json"
    assert len(json.loads(out)["predictions"]) == 3


# --- output_fn ---------------------------------------------------------------------------------------


PREDICTIONS = [Prediction(0.9), Prediction(0.1), Prediction(0.5), Prediction(0.4999999)]


@pytest.mark.parametrize("accept", ["application/json", "application/json; charset=utf-8", "*/*", None, "", "application/*"])
def test_json_output(accept):
    body, kind = output_fn(PREDICTIONS, accept)
    assert kind == "application/json"
    data = json.loads(body)
    assert list(data) == ["predictions"]
    assert [set(p) for p in data["predictions"]] == [{"label", "score", "positive_probability"}] * 4
    assert [p["label"] for p in data["predictions"]] == ["positive", "negative", "positive", "negative"]
    assert [p["positive_probability"] for p in data["predictions"]] == pytest.approx([0.9, 0.1, 0.5, 0.5], abs=1e-6)
    assert [p["score"] for p in data["predictions"]] == pytest.approx([0.9, 0.9, 0.5, 0.5], abs=1e-6)


def test_score_is_the_confidence_in_the_label():
    assert Prediction(0.8).label == "positive" and Prediction(0.8).score == pytest.approx(0.8)
    assert Prediction(0.2).label == "negative" and Prediction(0.2).score == pytest.approx(0.8)
    assert Prediction(0.5).label == "positive" and Prediction(0.5).score == 0.5
    for p in (0.0, 0.01, 0.49, 0.5, 0.51, 1.0):
        assert 0.5 <= Prediction(p).score <= 1.0


def test_text_output_is_one_label_per_line():
    for accept in ("text/plain", "text/plain; charset=utf-8", "TEXT/PLAIN"):
        body, kind = output_fn(PREDICTIONS, accept)
        assert kind == "text/plain"
        assert body.splitlines() == ["1", "0", "1", "0"]


@pytest.mark.parametrize("accept", ["text/html", "application/xml", "text/csv", "image/*"])
def test_unknown_accept_is_406(accept):
    with pytest.raises(NotAcceptable) as info:
        output_fn(PREDICTIONS, accept)
    assert info.value.status == 406
    assert "application/json" in str(info.value)


@pytest.mark.parametrize("accept", ["text/html, application/json", "application/json, */*;q=0.8", "text/csv,application/json;q=0.9"])
def test_accept_lists_with_a_supported_type_are_served(accept):
    """HTTP clients send Accept as a comma-separated list (the SageMaker toolkit's own handlers split it)."""
    body, kind = output_fn(PREDICTIONS, accept)
    assert kind == "application/json"
    assert len(json.loads(body)["predictions"]) == 4


def test_json_output_of_real_predictions(model):
    predictions = predict_fn(REVIEWS[:4], model)
    data = json.loads(output_fn(predictions, "application/json")[0])
    for given, served in zip(predictions, data["predictions"]):
        assert served["positive_probability"] == pytest.approx(given.positive_probability, abs=1e-6)
        assert served["label"] == given.label
    lines = output_fn(predictions, "text/plain")[0].splitlines()
    assert lines == ["1" if p.positive_probability >= 0.5 else "0" for p in predictions]


# --- the entry point ---------------------------------------------------------------------------------


def test_inference_module_exposes_the_four_handlers():
    assert set(inference.__all__) == {"model_fn", "input_fn", "predict_fn", "output_fn"}
    assert inference.model_fn is handlers.model_fn
    assert inference.input_fn is handlers.input_fn
    assert inference.predict_fn is handlers.predict_fn
    assert inference.output_fn is handlers.output_fn


def test_model_fn_uses_the_saved_text_config(tmp_path):
    text = TextConfig(stem=False, remove_stopwords=True, max_len=7, truncate="head")
    _build(tmp_path / "m", text)
    loaded = model_fn(str(tmp_path / "m"))
    assert loaded.loaded.text == text
    assert loaded.normalizer.config == text
    assert loaded.normalizer.tokens("The movies were not good") == ["movies", "not", "good"]


# --- JSON Lines: what a Batch Transform sends several records of, and assembles line by line ---
def test_json_lines_in_take_strings_or_review_records_and_skip_blank_lines():
    body = '"a fine film"\n{"review": "dull", "id": 7}\n\n"third"\n'
    assert input_fn(body.encode(), "application/jsonlines") == ["a fine film", "dull", "third"]


@pytest.mark.parametrize("body, says", [
    (b'"good"\nnot json\n', "line 2 is not JSON"),
    (b'{"text": "no review key"}\n', "line 1 holds no review"),
    (b'["a", "list"]\n', "line 1 holds no review"),
    (b"\n\n", "no reviews in the request"),
    (b'"good"\n"   "\n', "review 2 is empty"),
])
def test_bad_json_lines_are_refused_with_the_line(body, says):
    assert says in str(_refused(body, "application/jsonlines", BadRequest, 400))


def test_json_lines_out_answer_one_line_per_review_in_order():
    body, kind = output_fn(PREDICTIONS, "application/jsonlines")
    assert kind == "application/jsonlines"
    lines = [json.loads(line) for line in body.split("\n")]
    assert [r["label"] for r in lines] == ["positive", "negative", "positive", "negative"]
    assert lines[0] == {"label": "positive", "score": 0.9, "positive_probability": 0.9}
    assert lines == json.loads(output_fn(PREDICTIONS, "application/json")[0])["predictions"]  # the same records


def test_json_lines_round_trip_through_the_model(model):
    reviews = REVIEWS[:5]
    body = "\n".join(json.dumps({"review": r}) for r in reviews)
    answer, _ = output_fn(predict_fn(input_fn(body, "application/jsonlines"), model), "application/jsonlines")
    expected = predict_fn(reviews, model)
    assert [json.loads(line)["positive_probability"] for line in answer.split("\n")] == [
        round(p.positive_probability, 6) for p in expected]
