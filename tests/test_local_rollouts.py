"""Guarded rollouts on this machine: an approval's update shifts traffic to the new version by the
deploy function's DeploymentConfig (a canary, linear steps), the router counts each fleet's
answers as SageMaker's metrics, the local copies of the stack's alarms judge them, and a version
that fails or is slow is rolled back with only the canary's share of requests affected. Real
model servers, a real router, real HTTP clients."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pipeline.cli import main
from pipeline.local.services.hosting import LocalHosting, _alive
from pipeline.local.state.db import open_state
from pipeline.settings import Settings
from serve.artifact import pack_model_dir
from tests.conftest import delete_endpoints, register_versions

pytestmark = pytest.mark.server

ENDPOINT = Settings().endpoint_name
BROKEN = {
    "errors": "\n\ndef predict_fn(reviews, model):\n    raise RuntimeError('this version is broken')\n",
    "slow": "\n\nimport time as _time\nfrom serve.handlers import predict_fn as _predict\n\n"
            "def predict_fn(reviews, model):\n    _time.sleep(0.3)\n    return _predict(reviews, model)\n",
}


@pytest.fixture
def home(trained, tmp_path):
    register_versions(tmp_path, trained)
    yield tmp_path
    delete_endpoints(tmp_path)


def _rollout_env(monkeypatch, **settings: str) -> None:
    for name, value in {"ALARM_PERIOD": "5", "MAX_DEPLOYMENT_SECONDS": "600", **settings}.items():
        monkeypatch.setenv(f"SENTIMENT_MLOPS_{name}", value)


def _break_version(home: Path, trained: Path, version: int, how: str) -> None:
    """Replace a version's artifact by one whose inference code fails (or is slow) on every request."""
    model = home / "broken-model"
    shutil.copytree(trained / "model", model)
    with open(model / "code" / "inference.py", "a", encoding="utf-8") as code:
        code.write(BROKEN[how])
    pack_model_dir(model, home / "s3" / "bucket" / "models" / f"v{version}" / "model.tar.gz")


def _cli(capsys, home: Path, *args: str) -> tuple[int, dict | list]:
    code, answer, _ = _cli_with_progress(capsys, home, *args)
    return code, answer


def _cli_with_progress(capsys, home: Path, *args: str) -> tuple[int, dict | list, str]:
    """The command's exit status, its JSON answer, and what it wrote to stderr as it went."""
    code = main(["--home", str(home), *args, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


class Load:
    """Two clients sending reviews one after another until stopped; each answer's time and status."""

    def __init__(self, url: str) -> None:
        self.url = urlsplit(url)
        self.answers: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, daemon=True) for _ in range(2)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _send(self) -> None:
        connection = http.client.HTTPConnection(self.url.hostname or "127.0.0.1", self.url.port, timeout=30)
        while not self._stop.is_set():
            connection.request("POST", self.url.path + "/invocations", body=json.dumps({"review": "a fine film"}),
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            self.answers.append((time.time(), response.status))

    def between(self, start: float, end: float) -> list[int]:
        return [status for at, status in list(self.answers) if start <= at < end]


def _history(capsys, home: Path) -> list[dict]:
    code, rows = _cli(capsys, home, "endpoints", "history", ENDPOINT)
    assert code == 0 and isinstance(rows, list)
    return rows


@pytest.mark.parametrize("how, alarm", [("errors", "invocation-5xx-errors"), ("slow", "new-fleet-model-latency")])
def test_a_bad_version_under_a_canary_is_rolled_back_and_only_the_canary_share_fails(
        home, trained, capsys, monkeypatch, how, alarm):
    _rollout_env(monkeypatch, DEPLOYMENT_MODE="CANARY", TRAFFIC_STEP_PERCENT="10", ENDPOINT_INSTANCE_COUNT="10",
                 BAKE_SECONDS="20", LATENCY_ALARM_MICROSECONDS="150000")
    assert _cli(capsys, home, "registry", "approve", "1")[0] == 0
    _break_version(home, trained, 2, how)
    hosting = LocalHosting(home, open_state(home))
    first = hosting.describe_endpoint(ENDPOINT)
    with Load(first["Url"]) as load:
        time.sleep(1.0)
        started = time.time()
        code, approved = _cli(capsys, home, "registry", "approve", "2")
        ended = time.time()
        time.sleep(2.0)
    assert code == 1, approved  # the approval stands; its rollout did not take
    assert approved["deployment"][-1]["status"] == "updated" and "10 % canary" in approved["deployment"][-1]["traffic"]
    rollout = approved["rollout"]
    assert rollout["outcome"] == "rolled back" and f"{ENDPOINT}-{alarm}" in rollout["reason"]
    assert rollout["endpoint_config"] == first["EndpointConfigName"]
    assert ended - started < 20  # the alarm cut the 20 s bake short

    after = hosting.describe_endpoint(ENDPOINT)
    assert after["EndpointStatus"] == "InService" and after["EndpointConfigName"] == first["EndpointConfigName"]
    assert "rolled back" in after["FailureReason"] and "PendingDeploymentSummary" not in after
    during, later = load.between(started, ended), load.between(ended, ended + 2.0)
    assert later and set(later) == {200}  # nothing fails once rolled back
    failed = sum(status != 200 for status in during)
    if how == "errors":
        assert 0 < failed <= 0.12 * len(during), (failed, len(during))  # the canary's share, no more
    else:
        assert failed == 0  # slow, not failing: rolled back on latency alone
    events = [(row["event"], row["version"]) for row in _history(capsys, home)]
    assert events == [("Created", 1), ("RolledBack", 2)]


def test_a_good_version_under_linear_steps_takes_all_traffic_with_no_failed_request(home, capsys, monkeypatch):
    _rollout_env(monkeypatch, DEPLOYMENT_MODE="LINEAR", TRAFFIC_STEP_PERCENT="50", ENDPOINT_INSTANCE_COUNT="2",
                 BAKE_SECONDS="2")
    assert _cli(capsys, home, "registry", "approve", "1")[0] == 0
    hosting = LocalHosting(home, open_state(home))
    first = hosting.describe_endpoint(ENDPOINT)
    old_pid = open_state(home).execute("SELECT pid FROM endpoints").fetchone()[0]
    with Load(first["Url"]) as load:
        time.sleep(0.5)
        started = time.time()
        code, approved, progress = _cli_with_progress(capsys, home, "registry", "approve", "2")
        ended = time.time()
        time.sleep(1.0)
    assert code == 0 and approved["rollout"]["outcome"] == "completed", approved
    assert "steps of 50 %" in approved["deployment"][-1]["traffic"]
    assert "takes 50 % of the requests" in progress and "takes 100 % of the requests" in progress
    after = hosting.describe_endpoint(ENDPOINT)
    assert after["EndpointConfigName"].startswith(f"{ENDPOINT}-v2-") and "FailureReason" not in after
    statuses = load.between(started - 0.5, ended + 1.0)
    assert len(statuses) > 50 and set(statuses) == {200}  # no request dropped through two steps and a swap
    assert ended - started >= 4  # two steps of 2 s
    # The driver stops the old server after the swap, letting it finish what it holds: on a loaded
    # machine that can take more than the second above, but not forever.
    deadline = time.monotonic() + 15
    while _alive(old_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(old_pid)
    (created, updated) = _history(capsys, home)
    assert (created["event"], updated["event"], updated["version"]) == ("Created", "Updated", 2)
    assert "LINEAR: 50 % → 100 %" in updated["detail"]


def test_the_router_deals_the_canary_its_exact_share_and_counts_each_fleet(home, capsys, monkeypatch):
    _rollout_env(monkeypatch, DEPLOYMENT_MODE="CANARY", TRAFFIC_STEP_PERCENT="25", ENDPOINT_INSTANCE_COUNT="4",
                 BAKE_SECONDS="300", MAX_DEPLOYMENT_SECONDS="900")
    assert _cli(capsys, home, "registry", "approve", "1")[0] == 0
    code, approved = _cli(capsys, home, "registry", "approve", "2", "--no-wait")
    assert code == 0 and "rollout" not in approved
    hosting = LocalHosting(home, open_state(home))
    shown = hosting.describe_endpoint(ENDPOINT)
    assert shown["EndpointStatus"] == "Updating"
    pending = shown["PendingDeploymentSummary"]
    assert pending["EndpointConfigName"].startswith(f"{ENDPOINT}-v2-")
    assert pending["ProductionVariants"][0]["CurrentWeight"] == 0.25
    url = urlsplit(shown["Url"])
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    for _ in range(40):
        connection.request("POST", url.path + "/invocations", body=b'{"review": "fine"}',
                           headers={"Content-Type": "application/json"})
        assert connection.getresponse().read()
    connection.request("GET", f"/_local/metrics/{ENDPOINT}")
    fleets = json.loads(connection.getresponse().read())["fleets"]
    counts = {config: sum(bucket[1] for bucket in buckets) for config, buckets in fleets.items()}
    assert counts == {shown["EndpointConfigName"]: 30, pending["EndpointConfigName"]: 10}

    # A rollout whose process is killed outright is rolled back when the endpoint is next read.
    rollout = json.loads(open_state(home).execute("SELECT rollout FROM endpoints").fetchone()[0])
    candidate = open_state(home).execute("SELECT candidate_pid FROM endpoints").fetchone()[0]
    os.kill(rollout["driver_pid"], signal.SIGKILL)
    time.sleep(0.5)
    after = hosting.describe_endpoint(ENDPOINT)
    assert after["EndpointStatus"] == "InService" and after["EndpointConfigName"] == shown["EndpointConfigName"]
    assert "the rollout's process is gone" in after["FailureReason"]
    assert not _alive(candidate)


def test_a_rollout_sagemaker_would_refuse_is_refused_with_its_reason(home, capsys, monkeypatch):
    _rollout_env(monkeypatch, DEPLOYMENT_MODE="CANARY", BAKE_SECONDS="5")  # one instance: no canary possible
    code, approved = _cli(capsys, home, "registry", "approve", "1")
    assert code == 1 and "CANARY needs at least 2 instances" in approved["deployment_error"]


def _endpoint_in_rollout(home: Path, candidate_pid: int) -> LocalHosting:
    """An endpoint row in the middle of a rollout, written directly (no servers: their pids are not running)."""
    conn = open_state(home)
    variants = json.dumps([{"VariantName": "AllTraffic", "ModelName": "not-made"}])
    conn.execute("INSERT INTO endpoint_configs (name, arn, production_variants, creation_time) VALUES "
                 "('old', 'arn:old', ?, '2026-12-07T00:00:00.000Z'), ('new', 'arn:new', ?, '2026-12-07T00:00:00.000Z')",
                 (variants, variants))
    conn.execute("INSERT INTO endpoints (name, arn, config_name, status, pid, creation_time, last_modified_time, "
                 "candidate_config, candidate_pid, candidate_share, rollout) VALUES (?, 'arn:e', 'old', 'Updating', 999999, "
                 "'2026-12-07T00:00:00.000Z', '2026-12-07T00:00:00.000Z', 'new', ?, 0.1, ?)",
                 (ENDPOINT, candidate_pid, json.dumps({"started": "2026-12-07T00:00:00.000Z", "driver_pid": None})))
    return LocalHosting(home, conn)


def test_a_rollout_ends_once_whoever_reads_its_end(tmp_path):
    """Two readers that both find the driver gone roll it back once; a reader holding a rollout that
    has been replaced since changes nothing."""
    hosting = _endpoint_in_rollout(tmp_path, candidate_pid=999998)
    assert not hosting._settle(ENDPOINT, 123, ("Updating",), status="RollingBack")  # another rollout's candidate
    hosting.roll_back(ENDPOINT, "first reader")
    hosting.roll_back(ENDPOINT, "second reader")
    hosting.finish_rollout(ENDPOINT, "too late")
    row = hosting.conn.execute("SELECT * FROM endpoints").fetchone()
    assert (row["status"], row["config_name"], row["rollout"], row["candidate_pid"]) == ("InService", "old", None, None)
    assert row["failure_reason"] == "update to new rolled back: first reader"
    assert [(r["event"], r["endpoint_config"]) for r in hosting.endpoint_history(ENDPOINT)] == [("RolledBack", "new")]
    assert hosting.rolled_back(ENDPOINT, "new") and not hosting.rolled_back(ENDPOINT, "old")


def test_an_endpoint_in_a_rollout_cannot_be_deleted_and_a_bad_alarm_period_is_refused(tmp_path):
    from botocore.exceptions import ClientError

    from pipeline.local.services.cloudwatch import LocalCloudWatch

    hosting = _endpoint_in_rollout(tmp_path, candidate_pid=999998)
    with pytest.raises(ClientError, match="is Updating: wait until it is InService"):
        hosting.delete_endpoint(ENDPOINT)
    with pytest.raises(ClientError, match="SENTIMENT_MLOPS_ALARM_PERIOD"):
        LocalCloudWatch(hosting.conn).put_metric_alarm(
            AlarmName="a", Namespace="AWS/SageMaker", MetricName="Invocation5XXErrors", Period=0, EvaluationPeriods=1,
            Threshold=1, ComparisonOperator="GreaterThanOrEqualToThreshold")
