"""The local SageMaker runtime: endpoints reached by name at an address that outlives their
variants, in SageMaker Runtime's own wire format, checked with a real boto3 client; and a
blue/green update under concurrent load that fails no request (real processes, real sockets)."""
from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pipeline.cli import main
from pipeline.local.services.api import runtime_client
from pipeline.local.services.hosting import _alive
from pipeline.local.services.runtime import read_record
from pipeline.local.state.db import open_state
from pipeline.settings import Settings
from tests.conftest import delete_endpoints, endpoint_pid, register_versions

pytestmark = pytest.mark.server

ENDPOINT = Settings().endpoint_name


@pytest.fixture
def home(trained, tmp_path):
    register_versions(tmp_path, trained)
    assert main(["--home", str(tmp_path), "registry", "approve", "1", "--json"]) == 0
    yield tmp_path
    delete_endpoints(tmp_path)


def _endpoint(home: Path) -> dict:
    from pipeline.local.services.hosting import LocalHosting

    return LocalHosting(home, open_state(home)).describe_endpoint(ENDPOINT)


def _client(home: Path):
    record = read_record(home)
    assert record is not None, "the runtime has not started"
    return runtime_client(record["url"])


def test_a_real_boto3_client_invokes_the_endpoint_by_name(home):
    answer = _client(home).invoke_endpoint(EndpointName=ENDPOINT, ContentType="application/json",
                                           Accept="application/json", Body=json.dumps({"review": "a moving film"}))
    (prediction,) = json.loads(answer["Body"].read())["predictions"]
    assert prediction["label"] in ("positive", "negative")
    assert answer["ContentType"] == "application/json" and answer["InvokedProductionVariant"] == "AllTraffic"
    assert answer["ResponseMetadata"]["RequestId"]


def test_the_endpoint_url_is_the_runtimes_address_for_the_name(home):
    url = _endpoint(home)["Url"]
    assert url == f"{read_record(home)['url']}/endpoints/{ENDPOINT}"
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.request("POST", parts.path + "/invocations", body=b"a fine film",
                       headers={"Content-Type": "text/plain", "Accept": "text/plain"})
    response = connection.getresponse()
    assert response.status == 200 and response.read() in (b"0", b"1")


@pytest.mark.parametrize("body, status, says", [
    ('{"review": "   "}', 400, "empty"),
    ('{"review": "<br /><br /><p></p>"}', 400, "no words once its HTML markup is removed"),
    ("{not json", 400, "malformed JSON"),
])
def test_the_containers_refusal_is_a_model_error_as_botocore_parses_it(home, body, status, says):
    client = _client(home)
    with pytest.raises(client.exceptions.ModelError) as raised:
        client.invoke_endpoint(EndpointName=ENDPOINT, ContentType="application/json", Body=body)
    response = raised.value.response
    assert response["Error"]["Code"] == "ModelError" and response["OriginalStatusCode"] == status
    message, trace = response["OriginalMessage"].split("\n", 1)  # the container's text: message, then traceback
    assert says in message and trace.startswith("Traceback")
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424


def test_an_unknown_endpoint_is_a_validation_error(home):
    client = _client(home)
    with pytest.raises(client.exceptions.ValidationError, match="Endpoint nowhere of account .* not found"):
        client.invoke_endpoint(EndpointName="nowhere", ContentType="text/plain", Body=b"a film")


def test_a_payload_over_sagemakers_limit_is_refused_before_it_is_read(home):
    parts = urlsplit(_endpoint(home)["Url"])
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.putrequest("POST", parts.path + "/invocations")
    connection.putheader("Content-Type", "text/plain")
    connection.putheader("Content-Length", str(7 * 1024 * 1024))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and response.getheader("x-amzn-ErrorType") == "ValidationError"
    assert "limit" in json.loads(response.read())["message"]


class Load:
    """``clients`` threads, each on one keep-alive connection, calling the endpoint as fast as
    it answers; every answer that is not a 200 (or a socket error) is kept."""

    def __init__(self, url: str, clients: int = 8) -> None:
        self.parts = urlsplit(url)
        assert self.parts.hostname is not None, url
        self.host = self.parts.hostname
        self.stop = threading.Event()
        self.ok = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def _client(self) -> None:
        connection = http.client.HTTPConnection(self.host, self.parts.port, timeout=60)
        while not self.stop.is_set():
            try:
                connection.request("POST", self.parts.path + "/invocations", body=b'{"review": "a fine, moving film"}',
                                   headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                body = response.read()
                outcome = None if response.status == 200 else f"{response.status}: {body[:200]!r}"
            except (OSError, http.client.HTTPException) as error:
                outcome = repr(error)
                connection.close()
                connection = http.client.HTTPConnection(self.host, self.parts.port, timeout=60)
            with self.lock:
                if outcome is None:
                    self.ok += 1
                else:
                    self.failures.append(outcome)
        connection.close()

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)



def test_a_blue_green_update_under_load_fails_no_request_and_keeps_the_address(home, capsys):
    before, old_pid = _endpoint(home), endpoint_pid(home)
    with Load(before["Url"]) as load:
        time.sleep(1.0)
        served_before = load.ok
        assert main(["--home", str(home), "registry", "approve", "2", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["deployment"][0]["status"] == "updated"
        after_update = load.ok
        time.sleep(1.0)
    after = _endpoint(home)
    assert load.failures == []
    assert served_before > 0 and load.ok > after_update  # served before, during and after the swap
    assert after["Url"] == before["Url"] and after["EndpointConfigName"].startswith(f"{ENDPOINT}-v2-")
    assert endpoint_pid(home) != old_pid and not _alive(old_pid)  # the old variant finished, then stopped


def test_the_model_packages_container_environment_reaches_the_endpoints_server(trained, tmp_path):
    """As SageMaker gives the container its Environment, so the server's knobs are set per model."""
    import psutil

    register_versions(tmp_path, trained, versions=1, environment={"SAGEMAKER_TS_BATCH_SIZE": "8"})
    try:
        assert main(["--home", str(tmp_path), "registry", "approve", "1", "--json"]) == 0
        assert psutil.Process(endpoint_pid(tmp_path)).environ()["SAGEMAKER_TS_BATCH_SIZE"] == "8"
    finally:
        delete_endpoints(tmp_path)
