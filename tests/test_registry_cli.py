"""`sentiment-mlops registry` on the local registry: list, show, approve, reject, and the approval event."""
from __future__ import annotations

import json

import pytest

from pipeline.cli import main
from pipeline.local.state import db
from pipeline.local.state.db import open_state
from pipeline.local.state.registry import ModelRegistry
from pipeline.settings import Settings


def _report(accuracy: float) -> dict:
    return {"binary_classification_metrics": {"accuracy": {"value": accuracy, "standard_deviation": 0.002}}}


@pytest.fixture
def home(tmp_path):
    registry = ModelRegistry(open_state(tmp_path))
    group = Settings().model_package_group
    for accuracy in (0.89, 0.91):
        registry.register(group, "s3://bucket/model.tar.gz", "0" * 64, _report(accuracy),
                          inference_specification={"Containers": []})
    return tmp_path


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_shows_versions_newest_first_with_accuracy(home, capsys):
    code, out, _ = _run(capsys, "--home", str(home), "registry", "list", "--json")
    rows = json.loads(out)
    assert code == 0
    assert [(r["version"], r["status"], r["accuracy"]) for r in rows] == [
        (2, "PendingManualApproval", 0.91), (1, "PendingManualApproval", 0.89)]


def test_approve_records_history_and_writes_the_state_change_event(home, capsys):
    code, out, _ = _run(capsys, "--home", str(home), "registry", "approve", "2", "--comment", "beats v1", "--no-deploy",
                        "--json")
    result = json.loads(out)
    assert code == 0 and result["status"] == "Approved" and result["deployment"] == []
    event = json.loads(open(result["event"]).read())
    assert event["detail-type"] == "SageMaker Model Package State Change"
    assert event["detail"]["ModelApprovalStatus"] == "Approved" and event["detail"]["ModelPackageVersion"] == 2
    code, out, _ = _run(capsys, "--home", str(home), "registry", "show", "2", "--json")
    history = json.loads(out)["history"]
    assert [(h["from"], h["to"], h["comment"]) for h in history][-1] == ("PendingManualApproval", "Approved", "beats v1")
    code, out, _ = _run(capsys, "--home", str(home), "registry", "list", "--status", "Approved", "--json")
    assert [r["version"] for r in json.loads(out)] == [2]


def test_approving_twice_sends_no_second_event(home, capsys):
    _run(capsys, "--home", str(home), "registry", "approve", "1", "--no-deploy", "--json")
    code, out, _ = _run(capsys, "--home", str(home), "registry", "approve", "1", "--no-deploy", "--json")
    assert code == 0 and json.loads(out)["event"] is None
    assert len(list((home / "events").iterdir())) == 1


def test_a_deployment_that_fails_keeps_the_approval_and_the_event(home, capsys):
    """The registered artifact is not in the store: the approval stands, the deployment is
    refused with the reason, exit 1, and the event waits for `events deliver`."""
    code, out, _ = _run(capsys, "--home", str(home), "registry", "approve", "2", "--json")
    result = json.loads(out)
    assert code == 1 and result["status"] == "Approved"
    assert "not in the local store" in result["deployment_error"]
    assert [p.name for p in (home / "events").glob("*.json")] == [open(result["event"]).name.rsplit("/", 1)[-1]]
    code, _, err = _run(capsys, "--home", str(home), "events", "deliver")
    assert code == 2 and "stays pending" in err and len(err.strip().splitlines()) == 1


def test_a_rejection_of_a_version_that_does_not_serve_is_delivered_and_ignored(home, capsys):
    code, out, _ = _run(capsys, "--home", str(home), "registry", "reject", "1", "--json")
    (delivered,) = json.loads(out)["deployment"]
    assert code == 0 and delivered["status"] == "ignored" and "does not serve it" in delivered["reason"]
    assert list((home / "events").glob("*.json")) == [] and len(list((home / "events" / "delivered").iterdir())) == 1


def test_reject_and_plain_output(home, capsys):
    code, out, _ = _run(capsys, "--home", str(home), "registry", "reject", "1")
    assert code == 0 and "Rejected" in out and "0.8900" in out


def test_unknown_version_is_one_line_and_exit_2(home, capsys):
    code, out, err = _run(capsys, "--home", str(home), "registry", "approve", "9")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_events_keep_their_order_and_a_stale_approval_deploys_nothing(home, capsys):
    """Approve then reject before delivery: the approval event is read against the package's
    status now (Rejected), so nothing is deployed; both events are delivered, in order."""
    assert _run(capsys, "--home", str(home), "registry", "approve", "2", "--no-deploy")[0] == 0
    # the only Approved version: rejecting it needs the confirmation that serving stops
    assert _run(capsys, "--home", str(home), "registry", "reject", "2", "--no-deploy")[0] == 2
    assert _run(capsys, "--home", str(home), "registry", "reject", "2", "--no-deploy", "--stop-serving")[0] == 0
    code, out, _ = _run(capsys, "--home", str(home), "events", "deliver", "--json")
    delivered = json.loads(out)
    assert code == 0 and [d["status"] for d in delivered] == ["ignored", "ignored"]
    assert "was approved, but is Rejected now" in delivered[0]["reason"]
    assert "does not serve it" in delivered[1]["reason"]


def test_a_locked_state_database_is_one_line_naming_the_file(home, capsys, monkeypatch):
    connect = db.connect
    monkeypatch.setattr(db, "connect", lambda path, **kw: connect(path, timeout_s=0.2))
    holder = connect(db.state_path(home))
    holder.execute("BEGIN EXCLUSIVE")  # another command mid-write, for longer than the busy timeout
    try:
        code, out, err = _run(capsys, "--home", str(home), "registry", "approve", "1")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "locked by another sentiment-mlops command" in err and str(home) in err


def test_a_file_that_is_not_a_database_is_one_line_saying_what_to_do(tmp_path, capsys):
    (tmp_path / "state.db").write_bytes(b"this is not sqlite " * 100)
    code, out, err = _run(capsys, "--home", str(tmp_path), "registry", "list")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "is not a sentiment-mlops state database" in err and "--home" in err


def test_show_says_where_each_linked_file_lies_and_which_are_missing(tmp_path, capsys):
    """A version's links (CustomerMetadataProperties) map to files in the local store; one the
    evaluation did not write (the curves of a model trained before the artifact carried them)
    is said to be missing, and a version without links shows none."""
    from pipeline.local.state.store import ArtifactStore

    folder = "s3://bucket/executions/abcdef123456/Evaluate/evaluation"
    store = ArtifactStore(tmp_path)
    store.put_bytes(f"{folder}/evaluation.json", json.dumps(_report(0.9)).encode())
    registry = ModelRegistry(open_state(tmp_path))
    group = Settings().model_package_group
    registry.register(group, "s3://bucket/model.tar.gz", "0" * 64, _report(0.9), inference_specification={"Containers": []})
    registry.register(group, "s3://bucket/model.tar.gz", "0" * 64, _report(0.9), inference_specification={"Containers": []},
                      customer_metadata_properties={"EvaluationReport": f"{folder}/evaluation.json",
                                                    "TrainingCurves": f"{folder}/training_curves.png",
                                                    "Team": "nlp"})
    code, out, _ = _run(capsys, "--home", str(tmp_path), "registry", "show", "2", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["customer_metadata_properties"]["Team"] == "nlp"
    assert [(link["name"], link["path"], link["exists"]) for link in shown["links"]] == [
        ("EvaluationReport", str(store.path(f"{folder}/evaluation.json")), True),
        ("TrainingCurves", str(store.path(f"{folder}/training_curves.png")), False)]  # "Team" links nothing
    code, out, _ = _run(capsys, "--home", str(tmp_path), "registry", "show", "2")
    assert code == 0 and "the evaluation's files:" in out and "https" not in out
    (curves,) = [line for line in out.splitlines() if line.split()[:1] == ["TrainingCurves"]]
    assert curves.endswith("training_curves.png (not there: not written for this version)")
    assert "registry page: http://127.0.0.1:3000/registry/versions/2 (while `sentiment-mlops api` runs)" in out
    code, out, _ = _run(capsys, "--home", str(tmp_path), "registry", "show", "1")
    assert code == 0 and "evaluation's files" not in out and "registry/versions/1" in out
    code, out, _ = _run(capsys, "--home", str(tmp_path), "registry", "list", "--json")
    assert [r["customer_metadata_properties"] for r in json.loads(out)][1] == {}
