"""The SageMaker-compatible model server, over a real socket on localhost."""
from __future__ import annotations

import contextlib
import http.client
import json
import threading
from pathlib import Path

import pytest

from serve.artifact import pack_model_dir
from serve.handlers import MAX_BATCH_REVIEWS, MAX_BODY_BYTES, model_fn, predict_fn
from serve.server import load_server, main
from tests.synthetic import make_reviews

REVIEWS = [r["text"] for r in make_reviews(6, seed=11)]


@contextlib.contextmanager
def _serving(model_path: Path):
    server = load_server(model_path, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def served(trained):
    with _serving(trained / "model") as server:
        yield server


def _request(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()


def _invoke(server, body: bytes, content_type: str = "application/json", accept: str | None = None):
    headers = {"Content-Type": content_type, **({"Accept": accept} if accept else {})}
    return _request(server, "POST", "/invocations", body, headers)


def test_ping_answers_200(served):
    assert _request(served, "GET", "/ping")[0] == 200


def test_invocations_answer_what_the_handlers_answer(served, trained):
    status, content_type, body = _invoke(served, json.dumps({"reviews": REVIEWS}).encode())
    assert (status, content_type) == (200, "application/json")
    predictions = json.loads(body)["predictions"]
    expected = predict_fn(REVIEWS, model_fn(str(trained / "model")))
    assert [p["positive_probability"] for p in predictions] == [round(e.positive_probability, 6) for e in expected]
    assert [p["label"] for p in predictions] == [e.label for e in expected]


def test_text_in_and_text_out(served):
    status, content_type, body = _invoke(served, REVIEWS[0].encode(), "text/plain; charset=utf-8", accept="text/plain")
    assert (status, content_type) == (200, "text/plain") and body in (b"0", b"1")


@pytest.mark.parametrize("body, content_type, accept, status, message", [
    (b'{"review": "   "}', "application/json", None, 400, "empty"),
    (b"\xff\xfe bad bytes", "text/plain", None, 400, "UTF-8"),
    (b"{not json", "application/json", None, 400, "malformed JSON"),
    (b"a review", "image/png", None, 415, "content type"),
    (b"a review", "text/plain", "image/png", 406, "cannot answer"),
    (json.dumps({"reviews": ["good"] * (MAX_BATCH_REVIEWS + 1)}).encode(), "application/json", None, 413, "split the batch"),
])
def test_bad_requests_get_a_status_and_a_json_message(served, body, content_type, accept, status, message):
    got, got_type, answer = _invoke(served, body, content_type, accept)
    assert (got, got_type) == (status, "application/json")
    assert message in json.loads(answer)["error"]


def test_an_oversize_body_is_refused_before_it_is_sent(served):
    host, port = served.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:  # only the headers go out: the server must answer without waiting for 6 MB
        connection.putrequest("POST", "/invocations")
        connection.putheader("Content-Type", "text/plain")
        connection.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413 and "limit" in json.loads(response.read())["error"]
    finally:
        connection.close()


def test_a_body_without_length_or_a_wrong_path_is_refused(served):
    host, port = served.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.putrequest("POST", "/invocations")
        connection.putheader("Content-Type", "text/plain")
        connection.endheaders()
        assert connection.getresponse().status == 411
    finally:
        connection.close()
    assert _request(served, "GET", "/nowhere")[0] == 404
    assert _request(served, "POST", "/nowhere", b"x", {"Content-Type": "text/plain"})[0] == 404


def test_the_artifacts_own_handlers_answer(served, trained):
    """As in the container, the handlers are the artifact's code/inference.py, not this process's."""
    code_dir = (trained / "model" / "code").resolve()
    assert Path(served.handlers.__file__).resolve() == code_dir / "inference.py"
    assert Path(served.handlers.predict_fn.__code__.co_filename).resolve().is_relative_to(code_dir)


def test_an_unexpected_failure_is_a_500_that_reveals_nothing(served, monkeypatch, caplog):
    def broken(reviews, model):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(served.handlers, "predict_fn", broken)
    status, _, body = _invoke(served, b'{"review": "fine film"}')
    assert status == 500 and b"secret" not in body and b"Traceback" not in body
    assert "secret internal detail" in caplog.text  # kept for the operator, in the server's log


def test_a_model_tar_gz_is_served_too(served, trained, tmp_path):
    archive = tmp_path / "model.tar.gz"
    pack_model_dir(trained / "model", archive)
    body = json.dumps({"reviews": REVIEWS}).encode()
    with _serving(archive) as from_archive:
        assert _request(from_archive, "GET", "/ping")[0] == 200
        assert _invoke(from_archive, body)[2] == _invoke(served, body)[2]


def test_a_missing_model_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["--model-dir", str(tmp_path / "nothing"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model not found") and len(err.strip().splitlines()) == 1


def test_a_body_that_trickles_in_is_dropped(trained, monkeypatch):
    """A client that declares a body and sends it a byte at a time gets 408 once the request's
    deadline passes, instead of holding a thread for as long as it likes."""
    import socket
    import time as clock

    from serve import server as server_module

    monkeypatch.setattr(server_module, "REQUEST_TIMEOUT_S", 1.0)
    with _serving(trained / "model") as slow:
        host, port = slow.server_address[:2]
        with socket.create_connection((host, port), timeout=30) as client:
            client.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                           b"Content-Length: 100\r\n\r\n")
            started = clock.monotonic()
            answer = b""
            for _ in range(40):
                try:
                    client.sendall(b"a")
                except OSError:
                    break
                client.settimeout(0.1)
                try:
                    answer += client.recv(4096)
                except socket.timeout:
                    pass
                if answer:
                    break
            assert answer.startswith(b"HTTP/1.1 408") and clock.monotonic() - started < 10


def test_control_characters_from_a_client_do_not_reach_the_log():
    from serve.server import printable

    assert printable("GET /\x1b]0;owned\x07 HTTP/1.1\nforged line") == "GET /\\x1b]0;owned\\x07 HTTP/1.1\\x0aforged line"


def test_connections_past_the_cap_get_503_and_a_freed_slot_serves_again(trained, monkeypatch):
    """Each connection holds a thread; past the cap the server sheds load instead of piling up threads."""
    import socket
    import time as clock

    from serve import server as server_module

    monkeypatch.setattr(server_module, "MAX_CONNECTIONS", 2)
    with _serving(trained / "model") as capped:
        address = capped.server_address[:2]
        idle = [socket.create_connection(address, timeout=30) for _ in range(2)]
        for client in idle:  # half a request: each holds its thread, as a slow client does
            client.sendall(b"POST /invocations HTTP/1.1\r\n")
        status, _, body = _request(capped, "GET", "/ping")
        assert status == 503 and b"busy" in body
        idle[0].close()
        deadline = clock.monotonic() + 10
        while (status := _request(capped, "GET", "/ping")[0]) == 503 and clock.monotonic() < deadline:
            clock.sleep(0.05)
        assert status == 200
        idle[1].close()
