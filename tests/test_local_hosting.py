"""Approve → deploy on this machine: the local registry's event goes to lambda/deploy.py, which
drives LocalHosting as it drives SageMaker; the endpoint is a real model-server process."""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pipeline.cli import main
from pipeline.local.services.events import deliver_pending, record_event
from pipeline.local.services.hosting import _alive
from pipeline.local.state.db import open_state
from pipeline.local.state.registry import ModelRegistry
from pipeline.settings import Settings
from tests.conftest import delete_endpoints, endpoint_pid, register_versions

pytestmark = pytest.mark.server

ENDPOINT = Settings().endpoint_name


@pytest.fixture
def home(trained, tmp_path):
    """Two registered versions with real artifacts in the store; every endpoint is deleted after."""
    register_versions(tmp_path, trained)
    yield tmp_path
    delete_endpoints(tmp_path)


def _cli(capsys, home: Path, *args: str) -> tuple[int, dict]:
    code = main(["--home", str(home), *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def _endpoint(capsys, home: Path) -> dict:
    code, shown = _cli(capsys, home, "endpoints", "show", ENDPOINT)
    assert code == 0
    return shown


def _invoke(url: str, review: str) -> tuple[int, dict]:
    parts = urlsplit(url)
    assert parts.hostname is not None, url
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("POST", parts.path + "/invocations", body=json.dumps({"review": review}),
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()



def test_approving_deploys_then_a_newer_approval_updates_blue_green(home, capsys):
    code, approved = _cli(capsys, home, "registry", "approve", "1")
    assert code == 0 and approved["deployment_error"] is None
    (deployment,) = approved["deployment"]
    assert deployment["status"] == "created" and deployment["model"] == f"{ENDPOINT}-v1"
    first = _endpoint(capsys, home)
    assert first["EndpointStatus"] == "InService" and first["EndpointConfigName"] == deployment["endpoint_config"]
    status, answer = _invoke(first["Url"], "a wonderful, moving film")
    assert status == 200 and answer["predictions"][0]["label"] in ("positive", "negative")
    old_pid = endpoint_pid(home)

    code, approved = _cli(capsys, home, "registry", "approve", "2", "--comment", "newer")
    assert code == 0 and approved["deployment"][0]["status"] == "updated"
    second = _endpoint(capsys, home)
    assert second["EndpointConfigName"].startswith(f"{ENDPOINT}-v2-")
    assert second["Url"] == first["Url"]  # the endpoint's address outlives its variants, as on SageMaker
    assert _invoke(second["Url"], "a dull film")[0] == 200
    assert not _alive(old_pid)  # the old server stopped once the new one answered

    # EventBridge delivers at least once: the same approval again changes nothing.
    code, delivered = _cli(capsys, home, "events", "deliver")
    assert code == 0 and delivered == []
    assert _endpoint(capsys, home)["Url"] == second["Url"]


def test_a_server_that_died_shows_failed_restart_revives_it_and_delete_cleans_up(home, capsys):
    _cli(capsys, home, "registry", "approve", "1")
    pid = endpoint_pid(home)
    os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    shown = _endpoint(capsys, home)
    assert shown["EndpointStatus"] == "Failed" and "is not running" in shown["FailureReason"]

    code, restarted = _cli(capsys, home, "endpoints", "restart", ENDPOINT)
    assert code == 0 and restarted["EndpointStatus"] == "InService" and "FailureReason" not in restarted
    assert restarted["EndpointConfigName"] == shown["EndpointConfigName"]
    assert _invoke(restarted["Url"], "a fine film")[0] == 200

    code, listed = _cli(capsys, home, "endpoints", "list")
    assert code == 0 and [e["EndpointName"] for e in listed] == [ENDPOINT]
    code, deleted = _cli(capsys, home, "endpoints", "delete", ENDPOINT)
    assert code == 0 and deleted == {"deleted": ENDPOINT}
    assert _cli(capsys, home, "endpoints", "list") == (0, [])
    assert main(["--home", str(home), "endpoints", "show", ENDPOINT]) == 2
    assert "Could not find endpoint" in capsys.readouterr().err


def test_an_update_that_cannot_start_keeps_the_old_model_serving(home, capsys):
    _cli(capsys, home, "registry", "approve", "1")
    before = _endpoint(capsys, home)
    (Path(home) / "s3" / "bucket" / "models" / "v2" / "model.tar.gz").write_bytes(b"not a model archive")
    code, approved = _cli(capsys, home, "registry", "approve", "2")
    assert code == 1 and "cannot unpack" in approved["deployment_error"]
    after = _endpoint(capsys, home)
    assert after["EndpointStatus"] == "InService" and after["Url"] == before["Url"]
    assert _invoke(after["Url"], "fine")[0] == 200


def test_an_approval_that_meets_a_change_under_way_is_requeued_and_then_serves(home, capsys):
    """Another process is updating the endpoint: the deploy handler requeues the approval (on
    AWS, onto the retry queue with a delay), and the same delivery hands it back once it is due,
    so the newer version ends up serving without anyone approving again."""
    _cli(capsys, home, "registry", "approve", "1")
    open_state(home).execute("UPDATE endpoints SET status = 'Updating' WHERE name = ?", (ENDPOINT,))
    settle = threading.Timer(2.5, lambda: open_state(home).execute(
        "UPDATE endpoints SET status = 'InService' WHERE name = ?", (ENDPOINT,)))
    settle.start()
    try:
        code, approved = _cli(capsys, home, "registry", "approve", "2")
    finally:
        settle.cancel()
    statuses = [d["status"] for d in approved["deployment"]]
    assert code == 0 and approved["deployment_error"] is None
    assert statuses[0] == "requeued" and statuses[-1] == "updated" and set(statuses[1:-1]) <= {"requeued"}
    assert _endpoint(capsys, home)["EndpointConfigName"].startswith(f"{ENDPOINT}-v2-")
    assert not list((home / "events").glob("*.json"))  # nothing left pending


def test_a_replayed_older_approval_does_not_undo_a_newer_one(home, capsys):
    _cli(capsys, home, "registry", "approve", "1")
    _cli(capsys, home, "registry", "approve", "2")
    delivered = sorted((home / "events" / "delivered").glob("*.json"))
    stale = json.loads(delivered[0].read_text())["event"]  # version 1's approval, delivered again late
    stale["time"] = "2020-01-01T00:00:00Z"
    (home / "events" / f"{time.time_ns():020d}-stale.json").write_text(json.dumps(stale))
    code, results = _cli(capsys, home, "events", "deliver")
    assert code == 0 and results[0]["status"] == "ignored" and "superseded" in results[0]["reason"]
    assert _endpoint(capsys, home)["EndpointConfigName"].startswith(f"{ENDPOINT}-v2-")



@pytest.mark.parametrize("delivered_first", [1, 2])
def test_two_approvals_at_the_same_instant_end_serving_the_higher_version(home, capsys, delivered_first):
    """`registry approve 1 & registry approve 2` recorded both at one instant (issue 23): whichever
    event is delivered last, version 2 serves, and the other delivery says why it did nothing."""
    settings, instant = Settings(home=home), datetime(2026, 12, 7, 12, 0, 0, 663000, tzinfo=UTC)
    with contextlib.closing(open_state(home)) as conn:
        registry = ModelRegistry(conn, clock=lambda: instant)
        events = {version: registry.update_approval(settings.model_package_group, version, "Approved").event
                  for version in (1, 2)}
    for version in (delivered_first, 3 - delivered_first):
        record_event(settings, events[version])
    results = deliver_pending(settings)
    assert _endpoint(capsys, home)["EndpointConfigName"].startswith(f"{ENDPOINT}-v2-")
    if delivered_first == 2:
        assert results[-1]["status"] == "ignored" and "the higher version wins" in results[-1]["reason"]


def test_rejecting_the_version_that_serves_rolls_back_and_the_last_one_stops_serving_only_when_confirmed(home, capsys):
    """Reject means roll back: the newest other Approved version serves again, blue/green; the
    only Approved version is rejected only with --stop-serving, and then nothing serves."""
    assert _cli(capsys, home, "registry", "approve", "1")[0] == 0
    first = _endpoint(capsys, home)
    assert _cli(capsys, home, "registry", "approve", "2")[0] == 0
    code, rejected = _cli(capsys, home, "registry", "reject", "2", "--comment", "answers badly")
    assert code == 0 and rejected["deployment_error"] is None
    (rollback,) = rejected["deployment"]
    assert (rollback["status"], rollback["version"], rollback["rolled_back_from"]) == ("updated", 1, 2)
    now = _endpoint(capsys, home)
    assert now["EndpointConfigName"].startswith(f"{ENDPOINT}-v1-") and now["EndpointStatus"] == "InService"
    assert now["Url"] == first["Url"] and _invoke(now["Url"], "a fine film")[0] == 200

    assert main(["--home", str(home), "registry", "reject", "1"]) == 2
    refusal = capsys.readouterr().err
    assert "the only Approved version" in refusal and "--stop-serving" in refusal
    assert _endpoint(capsys, home)["EndpointStatus"] == "InService"  # nothing was changed
    code, stopped = _cli(capsys, home, "registry", "reject", "1", "--stop-serving")
    assert code == 0 and stopped["deployment"][0]["status"] == "stopped"
    assert main(["--home", str(home), "endpoints", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
