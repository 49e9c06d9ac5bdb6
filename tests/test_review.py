"""The approvers' workspace (pipeline/review/) on homes built by hand: what it finds in the store,
how it compares two versions, and the one path a decision takes (one event per change, one
deployment, even when the registry page and the CLI approve at the same moment)."""
from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from pipeline.definition.contracts import EVALUATE, TEST_INPUT_DIR
from pipeline.local.state.db import open_state, sha256_text
from pipeline.local.state.executions import ExecutionStore
from pipeline.local.state.registry import ModelRegistry, RegistryError
from pipeline.local.state.store import ArtifactStore
from pipeline.review import compare as comparing
from pipeline.review import decisions, evidence, versions
from pipeline.review.web import Guard, is_loopback
from pipeline.settings import Settings
from tests.conftest import delete_endpoints, register_versions
from tests.test_end_to_end import COMMAND

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
BUNDLE = "s3://bucket/p/code/" + "a" * 64 + "/sourcedir.tar.gz"
REVIEWS = [{"text": "A superb film.", "label": 1}, {"text": "Dull <br />and long.", "label": 0},
           {"text": "<script>alert(1)</script> <b>loved</b> it", "label": 0}, {"text": "Great cast.", "label": 1}]


def _report(accuracy: float, auc: float | str = 0.9) -> dict:
    return {"binary_classification_metrics": {
        "accuracy": {"value": accuracy, "standard_deviation": 0.01}, "precision": {"value": 0.8, "standard_deviation": 0.02},
        "recall": {"value": 0.7, "standard_deviation": 0.03}, "f1": {"value": 0.75, "standard_deviation": 0.02},
        "auc": {"value": auc, "standard_deviation": 0.01}, "confusion_matrix": {"0": {"0": 1, "1": 1}, "1": {"0": 0, "1": 2}}}}


def _archive(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def add_version(home: Path, name: str, probabilities: list[float] | None, reviews: list[dict] | None = None, *,
                plots: tuple[str, ...] = ("roc_pr_curves.png", "confusion_matrix.png"), curves_in: str | None = None,
                accuracy: float = 0.75) -> int:
    """A version as a pipeline run leaves it: an execution whose Evaluate step records its test input,
    the test reviews there, the evaluation folder (report, predictions, plots), a model.tar.gz with
    its config.json; ``curves_in`` puts training_curves.png in "evaluation", "model" or "output"."""
    store, conn = ArtifactStore(home), open_state(home)
    reviews = REVIEWS if reviews is None else reviews
    definition = json.dumps({"Steps": [{"Name": EVALUATE, "Arguments": {"ProcessingInputs": [
        {"InputName": "code", "S3Input": {"S3Uri": BUNDLE}}]}}]})
    executions = ExecutionStore(conn)
    execution = executions.create("sentiment-mlops", sha256_text(definition), {"Epochs": 3, "InputDataVersion": name},
                                  definition_json=definition)
    test_uri = f"s3://bucket/p/executions/{execution.execution_id}/Preprocess/test"
    # as the preprocessing step writes them: UTF-8, not escaped to ASCII
    store.put_bytes(f"{test_uri}/reviews.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in reviews).encode())
    store.put_bytes(f"{test_uri}/data.npz", b"not read")
    executions.start_step(execution.execution_id, EVALUATE, "Processing")
    executions.mark_step(execution.execution_id, EVALUATE, "Succeeded", properties={"ProcessingInputs": [
        {"InputName": "test", "S3Input": {"LocalPath": TEST_INPUT_DIR, "S3Uri": test_uri}}]})
    folder = f"s3://bucket/p/executions/{execution.execution_id}/Evaluate/evaluation/"
    store.put_bytes(folder + "evaluation.json", json.dumps(_report(accuracy)).encode())
    if probabilities is not None:
        store.put_bytes(folder + "predictions.jsonl", "".join(
            json.dumps({"label": r["label"], "positive_probability": p}) + "\n" for r, p in zip(reviews, probabilities)).encode())
    for plot in plots:
        store.put_bytes(folder + plot, PNG)
    model = {"config.json": json.dumps({"data": {"sha256": {"train": "1" * 64, "test": "2" * 64}, "version": name},
                                        "training": {"best_epoch": 2, "hyperparameters": {"epochs": 3}}}).encode()}
    if curves_in == "evaluation":
        store.put_bytes(folder + "training_curves.png", PNG + b"evaluation")
    if curves_in == "model":
        model["training_curves.png"] = PNG + b"model"
    artifact = f"s3://bucket/p/models/{name}/output/model.tar.gz"
    store.put_bytes(artifact, _archive(model))
    if curves_in == "output":
        store.put_bytes(f"s3://bucket/p/models/{name}/output/output.tar.gz", _archive({"training_curves.png": PNG + b"output"}))
    package = ModelRegistry(conn).register(Settings().model_package_group, artifact, "0" * 64, _report(accuracy),
                                           inference_specification={"Containers": [{"ModelDataUrl": artifact}]},
                                           execution_id=execution.execution_id, metrics_uri=folder + "evaluation.json")
    conn.close()
    return package.version


def _settings(home: Path) -> Settings:
    return Settings(home=home)


def test_the_file_names_are_the_steps_own():
    from evaluation import outputs
    from steps.arrays import REVIEWS_FILE

    assert evidence.REVIEWS_FILE == REVIEWS_FILE
    assert set(evidence.PLOTS) == {outputs.ROC_PR_FILE, outputs.CONFUSION_MATRIX_FILE, outputs.TRAINING_CURVES_FILE,
                                   outputs.ACCURACY_BY_LENGTH_FILE, outputs.CALIBRATION_FILE}
    assert set(evidence.PLOTS) == {name for name in outputs.LINKS.values() if name.endswith(".png")}


def test_the_same_reviews_compare_whether_or_not_their_lines_name_a_dataset(tmp_path):
    """A version evaluated before reviews.jsonl named each line's dataset compares review by review
    with one evaluated after, on the same reviews; and its one test set counts as imdb's."""
    add_version(tmp_path, "old", [0.9, 0.2, 0.95, 0.4])
    newer = [{**r, "dataset": "imdb", "kind": "reviews"} for r in REVIEWS]
    add_version(tmp_path, "new", [0.1, 0.2, 0.95, 0.6], newer)
    with evidence.reading(_settings(tmp_path)) as found:
        result = comparing.compare(found, 1, 2)
    assert result.per_review and result.disagreements_total == 2
    assert result.deltas[-1].name == "accuracy:imdb" and result.deltas[-1].champion == result.deltas[0].champion


def test_evidence_finds_the_test_reviews_predictions_plots_and_lineage(tmp_path):
    version = add_version(tmp_path, "one", [0.9, 0.2, 0.95, 0.4], curves_in="evaluation")
    with evidence.reading(_settings(tmp_path)) as found:
        package = found.package(version)
        test_set = found.test_set(package)
        assert test_set.count == 4 and test_set.reviews_uri.endswith("/Preprocess/test/reviews.jsonl")
        pairs = "".join(json.dumps([r["text"], r["label"]], ensure_ascii=False) + "\n" for r in REVIEWS)
        assert test_set.sha256 == hashlib.sha256(pairs.encode()).hexdigest()  # the texts and labels, in order
        assert [r.label for r in found.test_reviews(package)] == [1, 0, 0, 1]
        assert [p.positive_probability for p in found.predictions(package)] == [0.9, 0.2, 0.95, 0.4]
        assert found.plot(package, "roc_pr_curves.png") == PNG
        assert found.plot(package, "training_curves.png") == PNG + b"evaluation"
        assert found.code_bundles(package)[0].sha256 == "a" * 64
        detail = versions.detail(found, version)
    assert [p.available for p in detail.plots] == [True, True, True, False, False]  # evaluated before the by-length and calibration plots existed
    assert detail.lineage.data_version == "one" and detail.lineage.data_sha256 == {"train": "1" * 64, "test": "2" * 64}
    assert detail.lineage.training["best_epoch"] == 2 and detail.lineage.parameters["Epochs"] == 3
    assert detail.lineage.test_set == test_set and detail.notes == []
    assert detail.summary.metrics["f1"].value == 0.75 and detail.summary.metrics["auc"].value == 0.9
    # the most confident mistakes first: review 2 (scored 0.95, actually negative), then 3 (0.4, actually positive)
    assert [(m.index, m.actual) for m in detail.mistakes] == [(2, "negative"), (3, "positive")]
    assert detail.mistakes[0].text == REVIEWS[2]["text"] and detail.misclassified == 2 and detail.evaluated == 4


@pytest.mark.parametrize("where", ["model", "output", None])
def test_training_curves_of_older_versions_come_from_the_artifacts(tmp_path, where):
    version = add_version(tmp_path, "old", [0.9, 0.2, 0.1, 0.8], curves_in=where)
    with evidence.reading(_settings(tmp_path)) as found:
        curves = found.plot(found.package(version), "training_curves.png")
        detail = versions.detail(found, version)
    assert curves == (PNG + where.encode() if where else None)
    assert {p.name: p.available for p in detail.plots}["training_curves.png"] is (where is not None)


def test_a_plot_is_read_only_by_a_known_name_from_the_versions_own_folder(tmp_path):
    version = add_version(tmp_path, "one", [0.9, 0.2, 0.1, 0.8])
    with evidence.reading(_settings(tmp_path)) as found:
        package = found.package(version)
        for name in ("evaluation.json", "predictions.jsonl", "../evaluation/evaluation.json", "/etc/passwd", ""):
            assert found.plot(package, name) is None, name


def test_a_version_without_its_files_says_what_is_missing(tmp_path):
    version = add_version(tmp_path, "bare", None, plots=())
    with evidence.reading(_settings(tmp_path)) as found:
        detail = versions.detail(found, version)
    assert detail.mistakes == [] and not any(p.available for p in detail.plots)
    assert any("no saved predictions" in note for note in detail.notes)


def test_a_version_that_does_not_exist_is_named(tmp_path):
    add_version(tmp_path, "one", [0.9, 0.2, 0.1, 0.8])
    with evidence.reading(_settings(tmp_path)) as found, pytest.raises(RegistryError, match="no version 7 .* versions 1 to 1"):
        versions.detail(found, 7)


def test_the_same_test_reviews_are_compared_review_by_review(tmp_path):
    champion = add_version(tmp_path, "one", [0.9, 0.2, 0.95, 0.4], accuracy=0.5)
    challenger = add_version(tmp_path, "two", [0.8, 0.6, 0.3, 0.7], accuracy=0.75)  # same reviews, another URI
    with evidence.reading(_settings(tmp_path)) as found:
        result = comparing.compare(found, champion, challenger)
    assert result.per_review and result.reason is None and result.test_set is not None
    assert result.deltas[0].name == "accuracy" and result.deltas[0].delta == pytest.approx(0.25)
    # reviews 1, 2 and 3 change sides; sorted by the size of the change: 2 (0.65), 1 (0.4), 3 (0.3)
    assert [d.index for d in result.disagreements] == [2, 1, 3] and result.disagreements_total == 3
    assert [d.challenger_right for d in result.disagreements] == [True, False, True] and result.challenger_right == 2
    assert result.disagreements[0].text == REVIEWS[2]["text"]
    as_json = json.loads(json.dumps(result.as_dict()))
    assert as_json["champion_right"] == 1 and as_json["deltas"][0]["delta"] == pytest.approx(0.25)


def test_reviews_holding_unicode_line_separators_stay_one_review_each(tmp_path):
    """JSON keeps U+2028, U+2029 and U+0085 raw inside strings; the IMDb test set has them. A
    reader splitting at every Unicode line break would see a broken record there."""
    reviews = [{"text": "Great\u2028film", "label": 1}, {"text": "Dull\x85and\u2029slow", "label": 0}]
    champion = add_version(tmp_path, "one", [0.9, 0.6], reviews)
    challenger = add_version(tmp_path, "two", [0.8, 0.2], reviews)
    with evidence.reading(_settings(tmp_path)) as found:
        result = comparing.compare(found, champion, challenger)
    assert result.per_review and result.reason is None, result.reason
    assert result.test_set is not None and result.test_set.count == 2
    assert [d.text for d in result.disagreements] == ["Dull\x85and\u2029slow"]


def test_different_test_sets_give_the_metric_deltas_and_the_reason(tmp_path):
    champion = add_version(tmp_path, "one", [0.9, 0.2, 0.95, 0.4])
    other = [dict(r, text=r["text"] + " (again)") for r in REVIEWS]
    challenger = add_version(tmp_path, "two", [0.8, 0.6, 0.3, 0.7], other, accuracy=0.8)
    with evidence.reading(_settings(tmp_path)) as found:
        result = comparing.compare(found, champion, challenger)
    assert not result.per_review and result.disagreements == [] and result.disagreements_total == 0
    assert result.reason is not None and "different test reviews" in result.reason
    assert result.deltas[0].delta == pytest.approx(0.05)


def test_predictions_that_do_not_line_up_are_not_compared(tmp_path):
    champion = add_version(tmp_path, "one", [0.9, 0.2, 0.95, 0.4])
    challenger = add_version(tmp_path, "two", None)
    with evidence.reading(_settings(tmp_path)) as found:
        result = comparing.compare(found, champion, challenger)
    assert not result.per_review and "no saved predictions" in (result.reason or "")


def test_a_comparison_that_cannot_be_made_says_what_to_ask(tmp_path):
    add_version(tmp_path, "one", [0.9, 0.2, 0.95, 0.4])
    with evidence.reading(_settings(tmp_path)) as found:
        with pytest.raises(comparing.ComparisonError, match="no version is serving"):
            comparing.compare(found, None, 1)
        with pytest.raises(comparing.ComparisonError, match="with itself"):
            comparing.compare(found, 1, 1)
        with pytest.raises(RegistryError, match="no version 5"):
            comparing.compare(found, 1, 5)


# --- decisions ------------------------------------------------------------------------------------

def _events(home: Path) -> list[str]:
    folder = home / "events"
    return sorted(p.name for p in folder.rglob("*.json")) if folder.is_dir() else []


def test_a_decision_records_one_event_and_a_second_approval_none(tmp_path):
    version = add_version(tmp_path, "one", [0.9, 0.2, 0.95, 0.4])
    first = decisions.decide(_settings(tmp_path), version, "approve", "  looks right\r\n", deliver=False)
    assert first.changed and first.package.approval_status == "Approved" and first.pending
    assert first.package.approval_description == "looks right" and first.event is not None
    again = decisions.decide(_settings(tmp_path), version, "approve", "again", deliver=False)
    assert not again.changed and again.event is None and again.package.approval_description == "looks right"
    assert len(_events(tmp_path)) == 1


@pytest.mark.parametrize("verb, comment, message", [
    ("approve", "x" * (decisions.MAX_COMMENT_CHARS + 1), "at most 1,024"),
    ("deploy", None, "not a decision"),
])
def test_a_decision_that_cannot_be_recorded_changes_nothing(tmp_path, verb, comment, message):
    version = add_version(tmp_path, "one", [0.9, 0.2, 0.95, 0.4])
    with pytest.raises(decisions.DecisionError, match=message):
        decisions.decide(_settings(tmp_path), version, verb, comment, deliver=False)
    with evidence.reading(_settings(tmp_path)) as found:
        assert found.package(version).approval_status == "PendingManualApproval"
    assert _events(tmp_path) == []


def test_a_decision_on_a_version_that_does_not_exist_sends_nothing(tmp_path):
    add_version(tmp_path, "one", [0.9, 0.2, 0.95, 0.4])
    with pytest.raises(RegistryError, match="no version 3"):
        decisions.decide(_settings(tmp_path), 3, "approve", deliver=False)
    assert _events(tmp_path) == []


def test_a_comment_of_the_longest_length_is_kept_whole(tmp_path):
    version = add_version(tmp_path, "one", [0.9, 0.2, 0.95, 0.4])
    comment = "é" * decisions.MAX_COMMENT_CHARS
    made = decisions.decide(_settings(tmp_path), version, "reject", comment, deliver=False)
    assert made.package.approval_description == comment


@pytest.fixture
def deployable(trained, tmp_path):
    """Two versions of the tiny trained model, deployable; endpoints deleted afterwards."""
    register_versions(tmp_path, trained, versions=2)
    yield tmp_path
    delete_endpoints(tmp_path)


@pytest.mark.server
def test_an_approval_deploys_and_the_serving_version_is_found(deployable):
    made = decisions.decide(_settings(deployable), 2, "approve", "ship it")
    assert made.deployment_error is None and made.outcome is not None and made.outcome["status"] == "created"
    assert not made.pending
    with evidence.reading(_settings(deployable)) as found:
        now = versions.serving(found)
        listed = versions.overview(found)
    assert (now.version, now.status) == (2, "InService") and now.in_service
    assert [v.serving for v in listed.versions] == [True, False]  # newest first: version 2 serves
    rejected = decisions.decide(_settings(deployable), 2, "reject", "second thoughts")
    # the only Approved version: taking it back leaves nothing to serve (the CLI and the page confirm first)
    assert rejected.outcome is not None and rejected.outcome["status"] == "stopped"
    with evidence.reading(_settings(deployable)) as found:
        assert versions.serving(found).version is None and not versions.serving(found).in_service


@pytest.mark.server
def test_a_page_approval_racing_a_cli_approval_gives_one_event_and_one_deployment(deployable):
    """The registry page's path and the command line approve the same version at once: one of them
    changes it (SQLite's write lock), the other is told it was approved already; one event is
    delivered, one model is made, and the endpoint serves the version."""
    results = {}

    def page() -> None:
        results["page"] = decisions.decide(_settings(deployable), 1, "approve", "from the page")

    thread = threading.Thread(target=page)
    cli = subprocess.Popen([COMMAND, "--home", str(deployable), "registry", "approve", "1", "--comment", "from the CLI",
                            "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    thread.start()
    out, err = cli.communicate(timeout=300)
    thread.join(timeout=300)
    assert cli.returncode == 0, err[-3000:]
    by_cli, by_page = json.loads(out), results["page"]
    assert isinstance(by_page, decisions.Decision)
    assert [by_cli["changed"], by_page.changed].count(True) == 1
    assert len(_events(deployable)) == 1 and list((deployable / "events").glob("*.json")) == []
    conn = open_state(deployable)
    try:
        assert [r["name"] for r in conn.execute("SELECT name FROM hosted_models")] == ["sentiment-mlops-v1"]
        history = [r["to_status"] for r in conn.execute("SELECT to_status FROM approval_history WHERE version = 1")]
    finally:
        conn.close()
    assert history == ["PendingManualApproval", "Approved"]
    with evidence.reading(_settings(deployable)) as found:
        assert versions.serving(found).version == 1


# --- the page's Host and Origin rules --------------------------------------------------------------

@pytest.mark.parametrize("host, allowed", [
    ("127.0.0.1:3000", True), ("localhost:3000", True), ("LOCALHOST:3000", True), ("[::1]:3000", True),
    ("127.0.0.1:3001", False), ("localhost", False), ("evil.example:3000", False), ("127.0.0.1.evil.example:3000", False),
    ("10.0.0.5:3000", False), ("", False), (None, False), ("127.0.0.1:30x0", False), ("user@127.0.0.1:3000", False),
    ("127.0.0.1:3000?x", False), ("127.0.0.1:3000/x", False), ("127.0.0.1:3000#x", False), ("127.0.0.1 :3000", False),
])
def test_only_the_servers_own_names_are_its_host(host, allowed):
    assert Guard("http://127.0.0.1:3000").host_allowed(host) is allowed


@pytest.mark.parametrize("host, allowed", [
    ("10.0.0.5:3000", True), ("[fe80::1]:3000", True), ("127.0.0.1:3000", True), ("evil.example:3000", False),
    ("10.0.0.5:80", False),
])
def test_on_all_interfaces_address_literals_are_allowed_but_not_other_names(host, allowed):
    assert Guard("http://0.0.0.0:3000", "0.0.0.0").host_allowed(host) is allowed


def test_a_named_listening_host_is_allowed_as_well():
    guard = Guard("http://192.168.1.7:3000", "192.168.1.7")
    assert guard.host_allowed("192.168.1.7:3000") and not guard.host_allowed("192.168.1.8:3000")


@pytest.mark.parametrize("origin, allowed", [
    (None, True), ("http://127.0.0.1:3000", True), ("http://localhost:3000", True), ("null", False),
    ("http://evil.example", False), ("http://127.0.0.1:4000", False), ("https://127.0.0.1:3000", False),
    ("http://127.0.0.1:3000/path", False),
])
def test_a_change_comes_only_from_the_servers_own_origin(origin, allowed):
    assert Guard("http://127.0.0.1:3000").origin_allowed(origin) is allowed


def test_the_token_is_per_server_and_compared_whole():
    one, two = Guard("http://127.0.0.1:3000"), Guard("http://127.0.0.1:3000")
    assert one.token != two.token and len(one.token) >= 40
    assert one.token_matches(one.token) and not one.token_matches(two.token)
    assert not one.token_matches(one.token[:-1]) and not one.token_matches(None) and not one.token_matches("")


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("localhost", True), ("::1", True), ("127.0.0.2", True),
                                            ("0.0.0.0", False), ("::", False), ("192.168.1.7", False)])
def test_which_listening_hosts_keep_the_server_to_this_machine(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("host, warned", [("0.0.0.0", True), ("127.0.0.1", False)])
def test_the_api_command_warns_when_it_listens_beyond_this_machine(tmp_path, capsys, monkeypatch, host, warned):
    import serve.server.run as run
    from pipeline.cli import main

    served = {}
    monkeypatch.setattr(run, "serve_forever", lambda app, sockets: served.update(app=app, sockets=sockets))
    try:
        assert main(["--home", str(tmp_path), "api", "--host", host, "--port", "0"]) == 0
    finally:
        for sock in served.get("sockets", []):
            sock.close()
        delete_endpoints(tmp_path)  # the API started the home's runtime
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == (1 if warned else 0)
    if warned:
        assert host in warnings[0] and "registry page" in warnings[0]
    assert "/registry" in captured.out


def test_the_registry_page_of_an_empty_home_says_how_to_get_a_version(tmp_path):
    """The page alone (no API, so no runtime), mounted as the API mounts it."""
    from aiohttp import web

    from pipeline.review.web import PREFIX, RegistryPages
    from serve.server.run import BackgroundServer
    from tests.test_local_api import _request

    def app(url: str) -> web.Application:
        root = web.Application()
        root.add_subapp(PREFIX, RegistryPages(_settings(tmp_path), url).app())
        return root

    with BackgroundServer(app) as server:
        status, headers, body = _request(server, "GET", "/registry")
        assert status == 200 and b"No version is registered yet" in body and b"Nothing is deployed" in body
        assert headers["Content-Security-Policy"].startswith("default-src 'none'")
        status, _, body = _request(server, "GET", "/registry/compare?challenger=1")
        assert status == 400 and b"no version is serving now" in body
        status, _, body = _request(server, "GET", "/registry/versions/1")
        assert status == 404 and b"has no versions; register a model first" in body


def test_a_deployment_that_fails_is_shown_and_its_event_waits(tmp_path):
    """The artifact is not in the store: the approval stands, the page says why the deployment
    failed and that the event waits for `events deliver`."""
    from aiohttp import web

    from pipeline.review.web import PREFIX, RegistryPages
    from serve.server.run import BackgroundServer
    from tests.test_local_api import _request

    conn = open_state(tmp_path)
    ModelRegistry(conn).register(Settings().model_package_group, "s3://bucket/missing/model.tar.gz", "0" * 64,
                                 _report(0.8), inference_specification={"Containers": []})
    conn.close()
    pages: dict[str, RegistryPages] = {}

    def app(url: str) -> web.Application:
        pages["registry"] = RegistryPages(_settings(tmp_path), url)
        root = web.Application()
        root.add_subapp(PREFIX, pages["registry"].app())
        return root

    try:
        with BackgroundServer(app) as server:
            form = f"csrf_token={pages['registry'].guard.token}&action=approve&comment=go".encode()
            status, _, body = _request(server, "POST", "/registry/versions/1/decision", form,
                                       {"Content-Type": "application/x-www-form-urlencoded", "Origin": server.url})
    finally:
        delete_endpoints(tmp_path)
    page = body.decode()
    assert status == 200 and "Version 1 is Approved" in page
    assert 'id="deployment-error"' in page and "not in the local store" in page and "events deliver" in page
    assert len(list((tmp_path / "events").glob("*.json"))) == 1  # still pending
