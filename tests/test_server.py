"""The SageMaker-compatible model server, over a real socket on localhost: one worker's
application served from a thread (so a test can reach into its handlers), and the whole
process tree (supervisor and workers) as `sentiment-mlops serve` runs it."""
from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from serve.artifact import pack_model_dir
from serve.artifact_code import load_artifact_handlers
from serve.handlers import MAX_BATCH_REVIEWS, MAX_BODY_BYTES, model_fn, predict_fn
from serve.server.app import BATCHER, HANDLERS, build_app
from serve.server.run import BackgroundServer
from serve.server.settings import ServerSettings
from serve.server.supervisor import main
from tests.synthetic import make_reviews

pytestmark = pytest.mark.server

REVIEWS = [r["text"] for r in make_reviews(6, seed=11)]


@contextlib.contextmanager
def _serving(model_dir: Path, **settings):
    handlers = load_artifact_handlers(model_dir)
    app = build_app(handlers, handlers.model_fn(str(model_dir)), ServerSettings(workers=1, **settings))
    with BackgroundServer(app) as server:
        yield server


@pytest.fixture(scope="module")
def served(trained):
    with _serving(trained / "model") as server:
        yield server


def _address(server) -> tuple[str, int]:
    return server.socket.getsockname()[:2]


def _request(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    connection = http.client.HTTPConnection(*_address(server), timeout=30)
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


def test_json_lines_in_and_out_one_line_per_review(served, trained):
    """What a Batch Transform sends (SplitType Line, MultiRecord) and assembles (AssembleWith Line)."""
    body = "\n".join(json.dumps({"review": review}) for review in REVIEWS).encode()
    status, content_type, answer = _invoke(served, body, "application/jsonlines", accept="application/jsonlines")
    assert (status, content_type) == (200, "application/jsonlines")
    lines = [json.loads(line) for line in answer.decode().split("\n")]
    expected = predict_fn(REVIEWS, model_fn(str(trained / "model")))
    assert [line["positive_probability"] for line in lines] == [round(e.positive_probability, 6) for e in expected]


@pytest.mark.parametrize("body, content_type, accept, status, message", [
    (b'{"review": "   "}', "application/json", None, 400, "empty"),
    (b'{"review": "<br /><br /><p></p>"}', "application/json", None, 400, "no words once its HTML markup is removed"),
    (b"\xff\xfe bad bytes", "text/plain", None, 400, "UTF-8"),
    (b"{not json", "application/json", None, 400, "malformed JSON"),
    (b"a review", "image/png", None, 415, "content type"),
    (b"a review", "text/plain", "image/png", 406, "cannot answer"),
    (json.dumps({"reviews": ["good"] * (MAX_BATCH_REVIEWS + 1)}).encode(), "application/json", None, 413, "split the batch"),
])
def test_bad_requests_are_answered_as_the_containers_toolkit_answers_them(served, body, content_type, accept,
                                                                         status, message):
    """sagemaker_inference's Transformer.handle_error: the status, then "{message}\\n{traceback}"."""
    got, got_type, answer = _invoke(served, body, content_type, accept)
    assert (got, got_type.split(";")[0]) == (status, "text/plain")
    first, rest = answer.decode("utf-8").split("\n", 1)
    assert message in first and rest.startswith("Traceback (most recent call last):")


def _send_whole_body_then_read(address, size: int, headers: bytes = b"") -> bytes:
    """Send a request with a ``size``-byte body in full, as curl or a browser does, then read the answer."""
    with socket.create_connection(address, timeout=30) as client:
        client.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n" + headers +
                       f"Content-Length: {size}\r\n\r\n".encode())
        chunk = b"a" * 65536
        for _ in range(size // len(chunk)):
            client.sendall(chunk)  # a reset here would be the broken pipe the client must not see
        client.sendall(b"a" * (size % len(chunk)))
        answer = b""
        while data := client.recv(65536):
            answer += data
        return answer


def test_a_10_mb_body_gets_a_413_the_client_can_read(served):
    """The answer comes as soon as the headers are read, and the body the client goes on sending
    is drained, not met with a reset: the client sees the 413, never a broken pipe."""
    answer = _send_whole_body_then_read(_address(served), 10 * 1024 * 1024)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"Connection: close" in head
    assert "limit" in json.loads(body)["error"]


def test_an_oversize_body_is_refused_before_it_is_sent(served):
    connection = http.client.HTTPConnection(*_address(served), timeout=30)
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
    connection = http.client.HTTPConnection(*_address(served), timeout=30)
    try:
        connection.putrequest("POST", "/invocations")
        connection.putheader("Content-Type", "text/plain")
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 411 and "Content-Length" in json.loads(response.read())["error"]
    finally:
        connection.close()
    with socket.create_connection(_address(served), timeout=30) as client:  # a chunked body, sent whole
        client.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n" + b"10000\r\n" + b"a" * 65536 + b"\r\n" * 1)
        for _ in range(10):
            client.sendall(b"10000\r\n" + b"a" * 65536 + b"\r\n")
        client.sendall(b"0\r\n\r\n")
        answer = b""
        while data := client.recv(65536):
            answer += data
    assert answer.startswith(b"HTTP/1.1 411") and b"no chunked encoding" in answer
    assert _request(served, "GET", "/nowhere")[0] == 404
    assert _request(served, "POST", "/nowhere", b"x", {"Content-Type": "text/plain"})[0] == 404


def test_the_artifacts_own_handlers_answer(served, trained):
    """As in the container, the handlers are the artifact's code/inference.py, not this process's."""
    code_dir = (trained / "model" / "code").resolve()
    handlers = served.app[HANDLERS]
    assert Path(handlers.__file__).resolve() == code_dir / "inference.py"
    assert Path(handlers.predict_fn.__code__.co_filename).resolve().is_relative_to(code_dir)


def test_the_artifact_carries_no_server(trained):
    """In SageMaker the container is the server: the artifact's code/ needs none of this package."""
    code = trained / "model" / "code"
    assert not (code / "serve" / "server").exists() and not list(code.rglob("*aiohttp*"))
    assert "aiohttp" not in (code / "requirements.txt").read_text()


def test_an_unexpected_failure_is_a_500_with_the_containers_message_and_traceback(trained, caplog):
    with _serving(trained / "model") as server:
        def broken(reviews, model):
            raise RuntimeError("secret internal detail")

        server.app[BATCHER]._score_fn = lambda reviews: broken(reviews, None)
        status, _, body = _invoke(server, b'{"review": "fine film"}')
    # What the container answers; the predict function never passes a 5xx answer on to the public.
    assert status == 500 and body.startswith(b"secret internal detail\nTraceback (most recent call last):")
    assert "secret internal detail" in caplog.text  # and the operator's log has it


def _concurrently(server, bodies: list[bytes]) -> list[tuple[int, bytes]]:
    results: list = [None] * len(bodies)
    start = threading.Barrier(len(bodies))

    def call(index: int) -> None:
        start.wait()
        status, _, answer = _invoke(server, bodies[index])
        results[index] = (status, answer)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_requests_that_arrive_together_are_scored_together_with_the_answers_of_one_at_a_time(trained):
    """Dynamic batching changes how many forward passes run, not what anyone is told: each
    request gets exactly the answer it gets alone, for its own reviews, in its own order."""
    reviews = [r["text"] for r in make_reviews(40, seed=5)]
    bodies = [json.dumps({"reviews": reviews[i:i + 1 + i % 3]}).encode() for i in range(0, 36, 2)]
    with _serving(trained / "model", max_batch_delay_ms=200) as server:
        alone = [_invoke(server, body)[2] for body in bodies]
        passes = server.app[BATCHER].batches
        together = _concurrently(server, bodies)
        batched_passes = server.app[BATCHER].batches - passes
    assert [status for status, _ in together] == [200] * len(bodies)
    assert [answer for _, answer in together] == alone
    assert batched_passes < len(bodies) / 2  # they were batched, not scored one by one


def test_past_the_queue_bound_a_request_gets_503_with_retry_after_and_then_is_served(trained):
    with _serving(trained / "model", queue_size=1) as server:
        batcher, scoring, release = server.app[BATCHER], threading.Event(), threading.Event()
        score = batcher._score_fn

        def busy(reviews):  # the model is busy until the test releases it
            scoring.set()
            release.wait(30)
            return score(reviews)

        batcher._score_fn = busy
        body = b'{"review": "a fine film"}'
        held = [threading.Thread(target=_invoke, args=(server, body)) for _ in range(2)]
        held[0].start()  # being scored
        assert scoring.wait(30)
        held[1].start()  # waits in the queue: its one slot
        deadline = time.monotonic() + 30
        while not batcher._jobs and time.monotonic() < deadline:
            time.sleep(0.01)
        connection = http.client.HTTPConnection(*_address(server), timeout=30)
        connection.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        refused = (response.status, response.getheader("Retry-After"), response.getheader("Content-Type"),
                   json.loads(response.read()))
        connection.close()
        release.set()
        for thread in held:
            thread.join()
        again = _invoke(server, body)
    assert refused[:3] == (503, "1", "application/json") and "busy" in refused[3]["error"]
    assert again[0] == 200


def test_a_body_that_trickles_in_gets_408(trained, monkeypatch):
    """A client that declares a body and sends it a byte at a time gets 408 once the request's
    deadline passes, instead of holding a connection for as long as it likes."""
    from serve.server import http as http_module

    monkeypatch.setattr(http_module, "REQUEST_TIMEOUT_S", 1.0)
    with _serving(trained / "model") as slow:
        with socket.create_connection(_address(slow), timeout=30) as client:
            client.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                           b"Content-Length: 100\r\n\r\n")
            started, answer = time.monotonic(), b""
            for _ in range(40):
                try:
                    client.sendall(b"a")
                except OSError:
                    break
                client.settimeout(0.1)
                try:
                    answer += client.recv(4096)
                except TimeoutError:
                    pass
                if answer:
                    break
            assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 10


def test_control_characters_from_a_client_do_not_reach_the_log():
    from serve.server.http import printable

    assert printable("GET /\x1b]0;owned\x07 HTTP/1.1\nforged line") == "GET /\\x1b]0;owned\\x07 HTTP/1.1\\x0aforged line"


def test_settings_come_from_the_containers_variables():
    from serve.server.settings import SettingsError

    settings = ServerSettings.from_env({"SAGEMAKER_MODEL_SERVER_WORKERS": "3", "SAGEMAKER_TS_BATCH_SIZE": "16",
                                        "SAGEMAKER_TS_MAX_BATCH_DELAY": "2.5", "SAGEMAKER_TS_JOB_QUEUE_SIZE": "7"})
    assert settings == ServerSettings(workers=3, batch_size=16, max_batch_delay_ms=2.5, queue_size=7)
    assert ServerSettings.from_env({}).workers >= 1
    with pytest.raises(SettingsError, match="SAGEMAKER_TS_BATCH_SIZE='lots' is not a whole number"):
        ServerSettings.from_env({"SAGEMAKER_TS_BATCH_SIZE": "lots"})
    with pytest.raises(SettingsError, match="SAGEMAKER_MODEL_SERVER_WORKERS='0' must be at least 1"):
        ServerSettings.from_env({"SAGEMAKER_MODEL_SERVER_WORKERS": "0"})


# --- the process tree -----------------------------------------------------------------------------
def test_a_missing_model_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["--model-dir", str(tmp_path / "nothing"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model not found") and len(err.strip().splitlines()) == 1


def test_a_model_that_cannot_load_stops_the_server_with_the_workers_reason(trained, tmp_path):
    broken = tmp_path / "model"
    broken.mkdir()
    for path in (trained / "model").iterdir():
        if path.name != "model.pt":
            (broken / path.name).symlink_to(path)
    (broken / "model.pt").write_bytes(b"not weights")
    done = subprocess.run([sys.executable, "-m", "serve.server", "--model-dir", str(broken), "--host", "127.0.0.1",
                           "--port", "0"], capture_output=True, text=True, timeout=120, env=_env(workers=1))
    assert done.returncode == 2 and "error: cannot load the model: cannot load weights" in done.stderr


def _env(**settings) -> dict:
    import os

    names = {"workers": "SAGEMAKER_MODEL_SERVER_WORKERS", "batch_size": "SAGEMAKER_TS_BATCH_SIZE"}
    return {**os.environ, **{names[k]: str(v) for k, v in settings.items()}}


def test_the_server_runs_its_workers_and_stops_them_all(trained, tmp_path):
    """Two workers, each a process of its own on the same port; SIGTERM stops them all."""
    import psutil

    archive = tmp_path / "model.tar.gz"
    pack_model_dir(trained / "model", archive)
    ready = tmp_path / "url"
    server = subprocess.Popen([sys.executable, "-m", "serve.server", "--model-dir", str(archive), "--host", "127.0.0.1",
                               "--port", "0", "--ready-file", str(ready)], env=_env(workers=2))
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert server.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        host, port = ready.read_text().removeprefix("http://").split(":")
        workers = psutil.Process(server.pid).children()
        assert len(workers) == 2
        for _ in range(20):  # every connection lands on a worker that answers
            connection = http.client.HTTPConnection(host, int(port), timeout=30)
            connection.request("POST", "/invocations", body=b"a fine film", headers={"Content-Type": "text/plain"})
            assert connection.getresponse().status == 200
            connection.close()
    finally:
        server.terminate()
        assert server.wait(60) == 0
    assert not any(worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE for worker in workers)


def test_workers_stop_when_their_supervisor_is_killed_outright(trained, tmp_path):
    """A worker never outlives its supervisor, even one killed with SIGKILL (no chance to stop them)."""
    import os
    import signal

    import psutil

    ready = tmp_path / "url"
    server = subprocess.Popen([sys.executable, "-m", "serve.server", "--model-dir", str(trained / "model"),
                               "--host", "127.0.0.1", "--port", "0", "--ready-file", str(ready)], env=_env(workers=2))
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert server.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    workers = psutil.Process(server.pid).children()
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert alive == [] and len(gone) == 2
    with pytest.raises(ConnectionRefusedError):  # and the port is closed, not left queueing connections
        socket.create_connection(("127.0.0.1", int(ready.read_text().rsplit(":", 1)[1])), timeout=5)
