"""The local website + API: HTTP → API Gateway event → lambda/predict.py → the local endpoint's
model server, and the page's static files with the config.json that points it at the API."""
from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest

from pipeline.cli import main
from pipeline.local.services.api import api_app
from pipeline.settings import Settings
from serve.server.run import BackgroundServer
from tests.conftest import delete_endpoints, register_versions

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def home(trained, tmp_path_factory):
    """A home with version 1 approved, hence deployed to a local endpoint."""
    home = tmp_path_factory.mktemp("api-home")
    register_versions(home, trained, versions=1)
    assert main(["--home", str(home), "registry", "approve", "1", "--json"]) == 0
    yield home
    delete_endpoints(home)


def _serving(settings: Settings) -> BackgroundServer:
    return BackgroundServer(lambda url: api_app(settings, url)).start()


@pytest.fixture(scope="module")
def api(home):
    server = _serving(Settings(home=home))
    yield server
    server.close()


def _request(server: BackgroundServer, method: str, path: str, body: bytes | None = None,
             headers: dict | None = None) -> tuple[int, dict, bytes]:
    parts = urlsplit(server.url)
    assert parts.hostname is not None, server.url
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)  # an approval deploys
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_the_page_and_its_config(api):
    status, headers, body = _request(api, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html") and b'id="review"' in body
    assert _request(api, "GET", "/app.js")[0] == 200
    status, _, body = _request(api, "GET", "/config.json")
    assert status == 200 and json.loads(body) == {"apiUrl": api.url}


def test_a_review_is_answered_by_the_deployed_model(api):
    status, headers, body = _request(api, "POST", "/predict", json.dumps({"review": "a wonderful film"}).encode(),
                                     {"Content-Type": "application/json"})
    assert status == 200, body
    (prediction,) = json.loads(body)["predictions"]
    assert prediction["label"] in ("positive", "negative") and 0.5 <= prediction["score"] <= 1.0
    assert headers["Access-Control-Allow-Origin"] == api.url


def test_the_endpoints_refusal_reaches_the_page(api):
    status, _, body = _request(api, "POST", "/predict", b'{"review": "   "}', {"Content-Type": "application/json"})
    assert status == 400 and "empty" in json.loads(body)["error"]


def test_a_review_that_is_only_markup_is_refused_through_the_api(api):
    status, _, body = _request(api, "POST", "/predict", b"<br /><br /><p></p>", {"Content-Type": "text/plain"})
    assert status == 400 and "no words once its HTML markup is removed" in json.loads(body)["error"]


def test_an_oversize_body_is_refused_before_it_is_read(api):
    parts = urlsplit(api.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.putrequest("POST", "/predict")
        connection.putheader("Content-Type", "text/plain")
        connection.putheader("Content-Length", str(11 * 1024 * 1024))
        connection.endheaders()
        assert connection.getresponse().status == 413
    finally:
        connection.close()


def test_with_no_endpoint_the_page_is_told_to_wait_for_a_deployment(tmp_path):
    server = _serving(Settings(home=tmp_path))
    try:
        status, _, body = _request(server, "POST", "/predict", b"a fine film", {"Content-Type": "text/plain"})
        assert status == 503 and "not deployed yet" in json.loads(body)["error"]
    finally:
        server.close()
        delete_endpoints(tmp_path)


def test_static_files_are_only_the_sites_own(api):
    for path in ("/../setup.py", "/website/../setup.py", "/%2e%2e/setup.py", "/etc/passwd"):
        status, _, body = _request(api, "GET", path)
        assert status == 404 and b"setup(" not in body, path


@pytest.mark.parametrize("length, status", [("-1", 400), ("12abc", 400), ("1e3", 400)])
def test_a_content_length_that_is_not_a_byte_count_is_refused(api, length, status):
    parts = urlsplit(api.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.putrequest("POST", "/predict")
        connection.putheader("Content-Type", "text/plain")
        connection.putheader("Content-Length", length)
        connection.endheaders()
        response = connection.getresponse()  # refused by the HTTP parser itself, before any handler
        assert response.status == status and b"Content-Length" in response.read()
    finally:
        connection.close()
