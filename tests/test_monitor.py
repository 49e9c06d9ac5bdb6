"""The monitoring job: its statistical tests, the baseline the Evaluate step writes, and a window of
captured traffic (written in SageMaker's capture format by the same rules the endpoint uses) with
web users' feedback, judged against it: same reviews, no violation; short sentences in other words,
violations; live quality equal to the accuracy computed directly; bad lines and an empty window
reported, never a crash."""
from __future__ import annotations

import json
import random
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from mlops_rules.capture import CaptureRules, capture_config
from mlops_rules.feedback import ground_truth_record
from monitor import job
from monitor.baseline import CONSTRAINTS_FILE, STATISTICS_FILE, make_baseline, read_baseline
from monitor.statistics import Reservoir, ks_test, mmd_test, wilson_interval
from tests.synthetic import make_reviews
from tests.test_registry_page import browser  # noqa: F401  (a fixture: Chromium, or a skip outside CI)

START = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)
WORDS = ["gripping", "thriller", "quiet", "tale", "of", "grief", "sharp", "dialogue", "an", "uneven", "sequel", "heist"]


# --- the tests ------------------------------------------------------------------------------------

def test_two_samples_of_one_distribution_pass_and_a_shifted_one_fails():
    generator = np.random.default_rng(3)
    same, other = generator.normal(size=(200, 8)), generator.normal(size=(200, 8))
    assert mmd_test(same, other, 200).p_value > 0.05
    assert mmd_test(same, other + 0.5, 200).p_value < 0.01
    assert ks_test(same[:, 0], other[:, 0]).p_value > 0.05 and ks_test(same[:, 0], other[:, 0] + 1).p_value < 0.01


def test_the_wilson_interval_holds_the_proportion_and_stays_within_0_and_1():
    assert wilson_interval(0, 0) is None
    low, high = wilson_interval(90, 100)
    assert low < 0.9 < high and round(low, 3) == 0.826 and round(high, 3) == 0.945
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(0, 10)[0] == 0.0


def test_a_reservoir_keeps_a_bounded_uniform_sample():
    reservoir = Reservoir(100, seed=1)
    for item in range(10_000):
        reservoir.add(item)
    assert len(reservoir.items) == 100 and reservoir.seen == 10_000
    assert 3_000 < np.mean(reservoir.items) < 7_000  # from the whole stream, not its start


# --- a window against a baseline ------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(trained):
    from serve.artifact import load_model

    return load_model(trained / "model")


@pytest.fixture(scope="module")
def handlers(trained):
    from serve import handlers as served

    return served, served.model_fn(str(trained / "model"))


@pytest.fixture(scope="module")
def baseline(model, tmp_path_factory) -> Path:
    from monitor.features import describe

    folder = tmp_path_factory.mktemp("baseline")
    texts = [r["text"] for r in make_reviews(300, seed=5)]
    make_baseline(texts, describe(texts, model).probabilities, model, folder, accuracy=0.95)
    return folder


def _sentences(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(3, 6))).capitalize() + "." for _ in range(count)]


def _capture(folder: Path, texts: list[str], handlers, when: datetime = START) -> list[tuple[str, str]]:
    """Each text as one captured invocation (the endpoint's rules), with the model's real answer;
    returns each one's InferenceId and the label the model gave."""
    served, loaded = handlers
    rules = CaptureRules.of(capture_config("s3://bucket/datacapture", 100))
    assert rules is not None
    given, lines = [], []
    for i, text in enumerate(texts):
        predictions = served.predict_fn([text], loaded)
        body, content_type = served.output_fn(predictions, "application/json")
        inference_id = str(uuid.UUID(int=random.Random(i + len(texts)).getrandbits(128)))
        record = rules.record(("application/json", json.dumps({"review": text}).encode()), (content_type, body.encode()),
                              str(uuid.uuid4()), when + timedelta(seconds=i % 3000), inference_id)
        lines.append(json.dumps(record))
        given.append((inference_id, predictions[0].label))
    path = folder / f"{when:%Y/%m/%d/%H}" / f"{uuid.uuid4()}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return given


def _settings(tmp_path: Path, baseline: Path, trained: Path, truth: Path | None = None) -> job.JobSettings:
    return job.JobSettings(tmp_path / "capture", tmp_path / "out", START, START + timedelta(hours=1), baseline / STATISTICS_FILE,
                           baseline / CONSTRAINTS_FILE, trained / "model", truth)


def test_the_baseline_is_plain_arrays_and_what_the_evaluation_measured(baseline):
    statistics, constraints, reference = read_baseline(baseline)
    assert statistics["texts"] == 300 and statistics["accuracy"] == 0.95 and 0 <= statistics["oov_rate"] < 0.2
    assert constraints["p_value"] == 0.01 and reference["representation"].shape[0] == statistics["sample"]
    assert reference["representation"].dtype == np.float32  # np.load(allow_pickle=False) read it


def test_reviews_like_the_baselines_raise_no_violation(tmp_path, baseline, trained, handlers):
    _capture(tmp_path / "capture", [r["text"] for r in make_reviews(300, seed=6)], handlers)
    found, violations = job.run(_settings(tmp_path, baseline, trained))
    assert found["invocations"] == 300 and violations == [], violations
    assert {c["name"] for c in found["checks"]} == {"input_length", "score_distribution", "representation", "oov_rate"}
    assert all(c["p_value"] >= 0.01 for c in found["checks"] if "p_value" in c)
    written = json.loads((tmp_path / "out" / job.VIOLATIONS_FILE).read_text(encoding="utf-8"))
    assert written == {"violations": []}


def test_short_sentences_in_other_words_are_drift(tmp_path, baseline, trained, handlers):
    _capture(tmp_path / "capture", _sentences(300, seed=7), handlers)
    found, violations = job.run(_settings(tmp_path, baseline, trained))
    violated = {v["feature_name"] for v in violations}
    assert {"input_length", "representation", "oov_rate"} <= violated, violations
    assert all(v["constraint_check_type"] == "drift_check" and v["description"] for v in violations)
    assert json.loads((tmp_path / "out" / job.VIOLATIONS_FILE).read_text(encoding="utf-8"))["violations"] == violations


def test_live_quality_is_the_accuracy_of_the_labelled_answers_and_a_fall_is_a_violation(tmp_path, baseline, trained,
                                                                                         handlers):
    reviews = make_reviews(200, seed=8)
    given = _capture(tmp_path / "capture", [r["text"] for r in reviews], handlers)
    truth = tmp_path / "groundtruth"
    folder = truth / f"{START + timedelta(hours=1):%Y/%m/%d/%H}"
    folder.mkdir(parents=True)
    rng = random.Random(9)
    labels = {}
    for inference_id, label in given[:150]:  # web users label 150 answers, a third of them wrongly answered
        shown = int(label == "positive")
        labels[inference_id] = shown if rng.random() < 0.66 else 1 - shown
    lines = [json.dumps(ground_truth_record(i, label)) for i, label in labels.items()]
    lines += ["not json", json.dumps(ground_truth_record("never-served", 1))]
    (folder / "feedback.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    found, violations = job.run(_settings(tmp_path, baseline, trained, truth))
    quality = found["live_quality"]
    predicted = {i: int(label == "positive") for i, label in given}
    direct = sum(labels[i] == predicted[i] for i in labels) / len(labels)
    assert quality["labels"] == 150 and quality["accuracy"]["value"] == pytest.approx(direct)
    assert found["unreadable_feedback"] == 1  # the line that is not a record; the unknown id joins nothing
    low, high = quality["accuracy"]["interval"]
    assert low < direct < high and quality["violated"] and "live_accuracy" in {v["feature_name"] for v in violations}


def test_bad_lines_and_an_empty_window_are_reported_not_a_crash(tmp_path, baseline, trained, handlers):
    _capture(tmp_path / "capture", [r["text"] for r in make_reviews(20, seed=10)], handlers)
    bad = tmp_path / "capture" / f"{START:%Y/%m/%d/%H}" / "torn.jsonl"
    bad.write_bytes(b'{"captureData": {"endpointInput"\n\xff\xfe\n')
    # Whole records, but: a score that is not one, a time that is not one; and two times in other
    # ISO 8601 forms, which count (fractional seconds, an offset instead of Z).
    good = json.loads(next(p for p in (tmp_path / "capture").rglob("*.jsonl") if p != bad).read_text(
        encoding="utf-8").splitlines()[0])
    variants = []
    for change in ("score", "time", "fraction", "offset"):
        record = json.loads(json.dumps(good))
        if change == "score":
            answer = json.loads(record["captureData"]["endpointOutput"]["data"])
            answer["predictions"][0]["positive_probability"] = None
            record["captureData"]["endpointOutput"]["data"] = json.dumps(answer)
        record["eventMetadata"]["inferenceTime"] = {"time": "yesterday", "fraction": "2026-12-07T20:30:00.123Z",
                                                    "offset": "2026-12-07T21:30:00+01:00"}.get(change, "2026-12-07T20:30:00Z")
        variants.append(json.dumps(record))
    (bad.parent / "odd.jsonl").write_text("\n".join(variants) + "\n", encoding="utf-8")
    found, _ = job.run(_settings(tmp_path, baseline, trained))
    assert found["invocations"] == 22 and found["unreadable_lines"] == 4
    assert found["first_unreadable"].split(": ", 1)[0].endswith(("odd.jsonl:1", "torn.jsonl:1"))
    empty = tmp_path / "empty"
    settings = job.JobSettings(empty, tmp_path / "out2", START, START + timedelta(hours=1), baseline / STATISTICS_FILE,
                               baseline / CONSTRAINTS_FILE, trained / "model")
    found, violations = job.run(settings)
    assert (found["invocations"], found["texts"], violations) == (0, 0, [])
    assert found["live_quality"]["labels"] == 0 and found["live_quality"]["accuracy"]["value"] is None


def test_the_container_contract_settings_and_a_failure_message(tmp_path, baseline, trained):
    environ = {"dataset_source": str(tmp_path / "capture"), "output_path": str(tmp_path / "out"),
               "start_time": "2026-12-07T20:00:00Z", "end_time": "2026-12-07T21:00:00Z",
               "baseline_statistics": str(baseline / STATISTICS_FILE), "baseline_constraints": str(baseline / CONSTRAINTS_FILE),
               "model_source": str(trained / "model"), "publish_cloudwatch_metrics": "Enabled",
               "sagemaker_endpoint_name": "sentiment-mlops", "sagemaker_monitoring_schedule_name": "hourly"}
    settings = job.JobSettings.from_env(environ)
    assert (settings.start, settings.end - settings.start, settings.publish_metrics) == (START, timedelta(hours=1), True)
    job.run(settings, metrics_folder=tmp_path / "metrics")
    metrics = [json.loads(line) for line in (tmp_path / "metrics" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {"Invocations", "Violations"} <= {m["MetricName"] for m in metrics}
    assert metrics[0]["Dimensions"] == [{"Name": "Endpoint", "Value": "sentiment-mlops"},
                                        {"Name": "MonitoringSchedule", "Value": "hourly"}]
    message = tmp_path / "message"
    assert job.main({**environ, "baseline_statistics": str(tmp_path / "nowhere" / STATISTICS_FILE)}, message) == 1
    assert "cannot be read" in message.read_text(encoding="utf-8")
    assert job.main({**environ, "end_time": "2026-12-07T19:00:00Z"}, message) == 1
    assert "is not after" in message.read_text(encoding="utf-8")
    partial = tmp_path / "partial-baseline"  # statistics without the figures the checks compare with
    shutil.copytree(baseline, partial)
    (partial / STATISTICS_FILE).write_text('{"version": 1}', encoding="utf-8")
    assert job.main({**environ, "baseline_statistics": str(partial / STATISTICS_FILE)}, message) == 1
    assert "lacks oov_rate, tokens, scores" in message.read_text(encoding="utf-8")
    (tmp_path / "constraints.json").write_text("not json", encoding="utf-8")  # the job's own constraints, unreadable
    assert job.main({**environ, "baseline_constraints": str(tmp_path / "constraints.json")}, message) == 1
    assert "constraints" in message.read_text(encoding="utf-8") and "cannot be read" in message.read_text(encoding="utf-8")


# --- `sentiment-mlops monitor run` on a deployed local endpoint -----------------------------------

@pytest.fixture(scope="module")
def monitored(trained, baseline, tmp_path_factory):
    """A home with version 1, registered with the baseline, approved: served, capturing everything."""
    from pipeline.cli import main
    from tests.conftest import delete_endpoints, register_versions

    home = tmp_path_factory.mktemp("monitor-home")
    register_versions(home, trained, versions=1, baseline=baseline)
    assert main(["--home", str(home), "registry", "approve", "1", "--json"]) == 0
    yield home
    delete_endpoints(home)


def _serve_through_the_runtime(home: Path, texts: list[str]) -> list[str]:
    """Each text as one invocation through boto3's runtime client; the InferenceIds sent."""
    import boto3

    from pipeline.local.services.hosting import LocalHosting
    from pipeline.local.state.db import open_state
    from pipeline.settings import Settings

    settings = Settings(home=home)
    url = LocalHosting(home, open_state(home)).describe_endpoint(settings.endpoint_name)["Url"]
    runtime = boto3.client("sagemaker-runtime", endpoint_url=url.split("/endpoints/")[0], region_name="us-east-1",
                           aws_access_key_id="local",
                           aws_secret_access_key="local")
    ids = []
    for text in texts:
        ids.append(str(uuid.uuid4()))
        answer = runtime.invoke_endpoint(EndpointName=settings.endpoint_name, ContentType="application/json",
                                         Body=json.dumps({"review": text}), InferenceId=ids[-1])
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    return ids


def _wait_for_capture(home: Path, ids: list[str]) -> None:
    """Until the runtime has written the capture of each of these invocations (once a second)."""
    import time

    from mlops_rules.capture import CAPTURE_FOLDER, read_capture_line
    from pipeline.local.state.store import ArtifactStore
    from pipeline.settings import Settings

    folder = ArtifactStore(home).path(Settings(home=home).s3_uri(CAPTURE_FOLDER))
    deadline = time.monotonic() + 20
    while not set(ids) <= {read_capture_line(line)["inference_id"] for path in folder.rglob("*.jsonl")
                           for line in path.read_bytes().splitlines()}:
        assert time.monotonic() < deadline, "the answers were not captured"
        time.sleep(0.3)


def _monitor(home: Path, capsys, *args: str) -> tuple[int, dict]:
    from pipeline.cli import main

    capsys.readouterr()
    code = main(["--home", str(home), "monitor", "run", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.server
def test_monitor_run_judges_the_endpoints_own_capture_against_its_registered_baseline(monitored, capsys):
    import time

    from pipeline.cli import main
    from pipeline.local.state.store import ArtifactStore

    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    _wait_for_capture(monitored, _serve_through_the_runtime(monitored, [r["text"] for r in make_reviews(120, seed=11)]))
    code, report = _monitor(monitored, capsys, "--start", started)
    assert code == 0 and report["version"] == 1 and report["violations"] == [], report["violations"]
    assert report["statistics"]["invocations"] == 120
    folder = ArtifactStore(monitored).path(report["report"])
    assert json.loads((folder / job.VIOLATIONS_FILE).read_text(encoding="utf-8")) == {"violations": []}

    drifted = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    time.sleep(1.1)  # the window starts at a whole second: the reviews above lie before it
    _wait_for_capture(monitored, _serve_through_the_runtime(monitored, _sentences(120, seed=12)))
    code, report = _monitor(monitored, capsys, "--start", drifted)
    assert code == 1 and {"oov_rate", "representation"} <= {v["feature_name"] for v in report["violations"]}
    assert main(["--home", str(monitored), "monitor", "run", "--start", drifted]) == 1
    printed = capsys.readouterr().out
    assert "violation: " in printed and "report: s3://" in printed
    # The last hour began before version 1 took the endpoint: it is judged from then on.
    code, report = _monitor(monitored, capsys, "--hours", "1")
    assert report["serving_since"] is not None and report["statistics"]["window"]["start"] == report["serving_since"]


@pytest.mark.browser
def test_web_users_feedback_and_the_drift_checks_reach_the_versions_page(monitored, capsys, browser):
    """Reviews and their verdicts sent through the API (as the website sends them), a monitoring
    run, and the serving version's page shows its checks and its live accuracy, in Chromium."""

    from selenium.webdriver.common.by import By

    from pipeline.local.services.api import api_app
    from pipeline.review.web import registry_mount
    from pipeline.settings import Settings
    from serve.server.run import BackgroundServer
    from tests.test_local_api import _request

    settings = Settings(home=monitored)
    ids = []
    with BackgroundServer(lambda url: api_app(settings, url, mounts=[registry_mount(settings, url)])) as site:
        for review in make_reviews(6, seed=13):
            status, _, body = _request(site, "POST", "/predict", json.dumps({"review": review["text"]}).encode(),
                                       {"Content-Type": "application/json"})
            assert status == 200, body
            answer = json.loads(body)
            feedback = {"inference_id": answer["inference_id"], "label": answer["predictions"][0]["label"],
                        "verdict": "right", "token": answer["feedback_token"]}
            status, _, body = _request(site, "POST", "/feedback", json.dumps(feedback).encode(),
                                       {"Content-Type": "application/json"})
            assert status == 201, body
            ids.append(answer["inference_id"])
        _wait_for_capture(monitored, ids)
        code, report = _monitor(monitored, capsys, "--hours", "1")
        assert report["statistics"]["live_quality"]["labels"] == 6
        assert report["statistics"]["live_quality"]["accuracy"]["value"] == 1.0  # every verdict said "right"
        browser.get(f"{site.url}/registry/versions/1")
        live = browser.find_element(By.ID, "live").text
        assert f"{report['statistics']['invocations']:,} invocations" in live and report["report"] in live
        assert len(browser.find_elements(By.CSS_SELECTOR, "#drift-checks tbody tr")) == 4
        assert "6 labelled answers" in browser.find_element(By.ID, "live-quality").text
        shown = browser.find_elements(By.CSS_SELECTOR, "#violations li")
        assert [item.text for item in shown] == [v["description"] for v in report["violations"]]


@pytest.mark.server
def test_web_users_verdicts_become_a_dataset_the_next_run_reads(monitored, tmp_path, capsys):
    """Each labelled answer's text from the capture and its label from the feedback, split by id,
    in a folder the pipeline's reader takes as a dataset of sentences named feedback."""

    from pipeline.cli import main
    from pipeline.local.state.store import ArtifactStore
    from pipeline.settings import Settings
    from steps.datasets import describe_dataset
    from steps.sources import load_reviews

    reviews = make_reviews(40, seed=14)
    ids = _serve_through_the_runtime(monitored, [r["text"] for r in reviews])
    settings = Settings(home=monitored)
    truth = ArtifactStore(monitored).path(settings.s3_uri("groundtruth") + "/") / f"{datetime.now(UTC):%Y/%m/%d/%H}"
    truth.mkdir(parents=True, exist_ok=True)
    (truth / "replayed.jsonl").write_text("".join(json.dumps(ground_truth_record(i, r["label"])) + "\n"
                                                  for i, r in zip(ids, reviews)) + "not a record\n", encoding="utf-8")
    _wait_for_capture(monitored, ids)
    output = tmp_path / "feedback"
    capsys.readouterr()
    code = main(["--home", str(monitored), "monitor", "feedback-data", "--output", str(output), "--json"])
    result = json.loads(capsys.readouterr().out)
    # (the module's other tests may have labelled a few answers of their own)
    assert code == 0 and result["train"] + result["test"] >= 40 and result["test"] > 0
    data = load_reviews(output, unlabeled=False)
    expected = {r["text"]: r["label"] for r in reviews}
    exported = dict(pair for split in (data.train, data.test) for pair in zip(split.texts, split.labels))
    assert {text: exported.get(text) for text in expected} == expected
    assert len(exported) == result["train"] + result["test"]
    assert describe_dataset(output) == ("feedback", "sentences")
    assert main(["--home", str(monitored), "monitor", "feedback-data", "--output", str(output)]) == 2  # not over a dataset
    assert "not empty" in capsys.readouterr().err


def test_monitor_run_says_what_is_missing(tmp_path, capsys):
    from pipeline.cli import main

    assert main(["--home", str(tmp_path), "monitor", "run"]) == 2
    assert "approve a version" in capsys.readouterr().err
    assert main(["--home", str(tmp_path), "monitor", "run", "--start", "2026-12-07T20:00:00Z",
                 "--end", "2026-12-07T19:00:00Z"]) == 2
    assert "before it starts" in capsys.readouterr().err
