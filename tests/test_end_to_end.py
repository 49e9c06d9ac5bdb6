"""The main job through the installed command: the pipeline definition executed by the local runtime."""
from __future__ import annotations

import http.client
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pipeline.local.processes import free_port
from pipeline.local.state.store import ArtifactStore
from pipeline.settings import Settings
from tests.synthetic import make_reviews, make_sentences, write_archive, write_jsonl, write_sst

pytestmark = pytest.mark.e2e

COMMAND = shutil.which("sentiment-mlops") or str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "sentiment-mlops")
SMALL = ["--param", "Epochs=3", "--param", "MaxLen=40", "--param", "VocabSize=200", "--param", "EmbeddingDim=16"]


def _run(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([COMMAND, "--home", str(home), *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    return write_archive(folder / "aclImdb_v1.tar.gz", make_reviews(500, seed=5), make_reviews(200, seed=6),
                         unlabeled=make_reviews(100, seed=7))


def test_the_main_job_registers_a_pending_version_when_the_gate_passes(archive, tmp_path):
    result = _run(tmp_path, "run", "--data", str(archive), "--json", *SMALL, "--param", "AccuracyThreshold=0.6")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["status"] == "Succeeded"
    assert [s for s in summary["steps"]] == ["Preprocess", "Train", "CreateModel", "Transform", "Evaluate",
                                             "CheckAccuracy", "CheckSentenceAccuracy", "Register", "FailSentences", "Fail"]
    assert summary["steps"]["Register"]["status"] == "Succeeded" and summary["steps"]["Fail"]["status"] == "Skipped"
    _the_report_is_the_transforms_answers_and_equals_scoring_in_process(tmp_path, summary["execution_id"])
    assert summary["accuracy"] > 0.6 and summary["threshold"] == 0.6
    assert summary["model_package_version"] == 1
    assert summary["parameters"]["TrainingProfile"] == "cpu"  # the local default
    assert summary["parameters"]["Epochs"] == 3  # given; without it, the cpu profile's own epochs
    for name in ("Preprocess", "Train", "Evaluate"):
        assert summary["steps"][name]["seconds"] > 0 and Path(summary["steps"][name]["log"]).stat().st_size > 0
    listed = _run(tmp_path, "registry", "list", "--json")
    assert [(r["version"], r["status"]) for r in json.loads(listed.stdout)] == [(1, "PendingManualApproval")]
    assert json.loads(listed.stdout)[0]["accuracy"] == pytest.approx(summary["accuracy"])
    shown = json.loads(_run(tmp_path, "executions", "show", summary["execution_id"], "--json").stdout)
    assert shown["status"] == "Succeeded" and shown["model_package_version"] == 1
    # Every plot of the version in one folder, each linked from the registry: nothing to open by hand.
    version = json.loads(_run(tmp_path, "registry", "show", "1", "--json").stdout)
    assert {link["name"]: Path(link["path"]).name for link in version["links"] if link["exists"]} == {
        "EvaluationReport": "evaluation.json", "ConfusionMatrix": "confusion_matrix.png",
        "RocPrCurves": "roc_pr_curves.png", "TrainingCurves": "training_curves.png",
        "WorstMistakes": "worst_misclassified.md", "Predictions": "predictions.jsonl",
        "AccuracyByLength": "accuracy_by_length.png", "Calibration": "calibration.png"}
    assert len({Path(link["path"]).parent for link in version["links"]}) == 1
    _serve_and_invoke(tmp_path, "1")
    _approve_and_invoke(tmp_path, "1")


def _the_report_is_the_transforms_answers_and_equals_scoring_in_process(home: Path, execution_id: str) -> None:
    """Evaluate's predictions are the serving container's answers from the Transform step, and
    scoring the same texts in process (what Evaluate did before the transform) gives the same file."""
    from evaluation.evaluate import run as evaluate

    (execution,) = home.glob(f"s3/*/*/executions/{execution_id}")
    answers = (execution / "Transform/predictions/reviews.jsonl.out").read_text(encoding="utf-8").splitlines()
    reviews = (execution / "Preprocess/test/reviews.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(answers) == len(reviews) and all("SageMakerOutput" in json.loads(a) for a in answers)
    from_transform = (execution / "Evaluate/evaluation/predictions.jsonl").read_bytes()
    assert [json.loads(line)["positive_probability"] for line in from_transform.splitlines()] == \
        [json.loads(a)["SageMakerOutput"]["positive_probability"] for a in answers]
    (artifact,) = home.glob("s3/*/*/models/*/output/model.tar.gz")
    evaluate(artifact, execution / "Preprocess/test", home / "in-process")
    assert (home / "in-process/predictions.jsonl").read_bytes() == from_transform


def _approve_and_invoke(home: Path, version: str) -> None:
    """The whole loop: approving deploys the version to a local endpoint that answers."""
    approved = _run(home, "registry", "approve", version, "--comment", "e2e", "--json")
    assert approved.returncode == 0, approved.stderr[-3000:]
    (deployment,) = json.loads(approved.stdout)["deployment"]
    assert deployment["status"] == "created" and deployment["version"] == int(version)
    endpoint = json.loads(_run(home, "endpoints", "show", deployment["endpoint"], "--json").stdout)
    try:
        assert endpoint["EndpointStatus"] == "InService"
        url = urlsplit(endpoint["Url"])
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        connection.request("POST", url.path + "/invocations", body=b"a fine film", headers={"Content-Type": "text/plain",
                                                                                   "Accept": "text/plain"})
        response = connection.getresponse()
        assert response.status == 200 and response.read() in (b"0", b"1")
        connection.close()
    finally:
        assert _run(home, "endpoints", "delete", deployment["endpoint"]).returncode == 0


def _serve_and_invoke(home: Path, version: str) -> None:
    """`serve --version N` answers /ping and /invocations like an endpoint; Ctrl-C stops it."""
    port = free_port()
    server = _start(home, "serve", "--version", version, "--port", str(port))
    try:
        assert server.stdout is not None
        assert "serving" in server.stdout.readline()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("POST", "/invocations", body=b'{"reviews": ["a fine film", "a dull film"]}',
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200
        assert [p["label"] in ("positive", "negative") for p in json.loads(response.read())["predictions"]] == [True, True]
        connection.close()
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=30)
    assert server.returncode == 0
    missing = _run(home, "serve", "--version", "99")
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and "Traceback" not in missing.stderr


def test_an_unreachable_threshold_fails_the_run_and_registers_nothing(archive, tmp_path):
    result = _run(tmp_path, "run", "--data", str(archive), "--json", "--sample", "150", *SMALL,
                  "--param", "AccuracyThreshold=1.01")  # above any accuracy: the tiny data can be learned perfectly
    assert result.returncode == 1, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["status"] == "Failed" and summary["model_package_version"] is None
    assert "below the threshold 1.01" in summary["failure_reason"]
    assert summary["steps"]["Register"]["status"] == "Skipped"
    assert json.loads(_run(tmp_path, "registry", "list", "--json").stdout) == []


@pytest.fixture(scope="module")
def sentences(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sst2")
    return write_sst(folder, make_sentences(300, seed=8), make_sentences(100, seed=9), dev=make_sentences(60, seed=10))


def test_one_model_on_reviews_and_sentences_is_gated_and_reported_on_each(archive, sentences, tmp_path):
    """`run --data A --data B`: one execution, one model, each test set reported and gated on its own."""
    result = _run(tmp_path, "run", "--data", str(archive), "--data", str(sentences), "--json", *SMALL,
                  "--param", "AccuracyThreshold=0.6", "--param", "SentenceAccuracyThreshold=0.6")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["status"] == "Succeeded" and summary["model_package_version"] == 1
    assert list(summary["accuracy_by_dataset"]) == ["imdb", "sst2"]
    assert all(accuracy > 0.6 for accuracy in summary["accuracy_by_dataset"].values())
    assert summary["steps"]["CheckSentenceAccuracy"]["status"] == "Succeeded"
    assert summary["parameters"]["InputDataUri"].endswith("-all/")
    listed = json.loads(_run(tmp_path, "registry", "list", "--json").stdout)
    assert listed[0]["accuracy_by_dataset"] == summary["accuracy_by_dataset"]
    printed = _run(tmp_path, "executions", "show", summary["execution_id"]).stdout
    assert "sst2" in printed and "thresholds: reviews 0.6, sentences 0.6" in printed
    # The same data and model against a sentence threshold no model reaches: only the gates run again.
    failed = _run(tmp_path, "run", "--data", str(archive), "--data", str(sentences), "--json", *SMALL,
                  "--param", "AccuracyThreshold=0.6", "--param", "SentenceAccuracyThreshold=1.01")
    assert failed.returncode == 1
    summary = json.loads(failed.stdout.strip().splitlines()[-1])
    assert summary["failure_reason"].startswith("Test accuracy on sentences ")
    assert "below the threshold 1.01" in summary["failure_reason"]
    assert summary["steps"]["FailSentences"]["status"] == "Failed" and summary["steps"]["Register"]["status"] == "Skipped"
    assert summary["steps"]["Train"]["cached_from"] is not None


@pytest.mark.parametrize("args, expected", [
    (["--data", "{missing}"], "no such file or folder"),
    (["--data", "{data}", "--data", "{data}"], "two --data datasets are named 'imdb'"),
    (["--data", "Big=={data}"], "dataset name 'Big' must be"),
    (["--param", "InputDataUri="], "InputDataUri= is empty"),
    (["--data", "{data}", "--param", "InputDataUri=s3://b/data/x/"], "leave out --data and --sample"),
    (["--data", "{data}", "--param", "Epochz=2"], "Epochz"),
    (["--data", "{data}", "--param", "Epochs=many"], "Epochs"),
    (["--data", "{data}", "--param", "Epochs"], "Name=Value"),
])
def test_bad_run_arguments_are_one_line_and_exit_2(tmp_path, archive, args, expected):
    args = [a.format(missing=tmp_path / "nowhere", data=archive) for a in args]
    result = _run(tmp_path, "run", *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith("error: ") and expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_path_with_no_reviews_is_refused_before_an_execution_is_recorded(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("not reviews")
    result = _run(tmp_path / "home", "run", "--data", str(tmp_path / "data"), "--json")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: --data ") and "Accepted layouts" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    listed = _run(tmp_path / "home", "executions", "list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


def test_a_failing_step_names_its_reason_and_its_log(tmp_path):
    """Data that breaks the step (a download cut short), named by InputDataUri as in S3: nothing on
    the caller's side reads it first. Staged with --data, it is refused while staging, before any
    execution is recorded (staging reads every record to write the shards)."""
    write_jsonl(tmp_path / "data", make_reviews(400, seed=3), make_reviews(100, seed=4))
    raw = (tmp_path / "data" / "train.jsonl.gz").read_bytes()
    (tmp_path / "data" / "train.jsonl.gz").write_bytes(raw[: len(raw) * 2 // 3])
    staged = _run(tmp_path / "staged", "run", "--data", str(tmp_path / "data"), "--json")
    assert staged.returncode == 2 and "train.jsonl.gz" in staged.stderr and "Traceback" not in staged.stderr
    uri = Settings(home=tmp_path / "home").s3_uri("data", "cut") + "/"
    ArtifactStore(tmp_path / "home").upload_dir(tmp_path / "data", uri)
    result = _run(tmp_path / "home", "run", "--param", f"InputDataUri={uri}", "--json")
    assert result.returncode == 1
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["status"] == "Failed" and summary["steps"]["Preprocess"]["status"] == "Failed"
    assert "train.jsonl.gz" in summary["failure_reason"] and ".log" in summary["failure_reason"]
    assert Path(summary["steps"]["Preprocess"]["log"]).is_file()


def test_local_defaults_follow_the_chosen_profile():
    from pipeline.runs import local_defaults
    from train.profiles import PROFILES

    assert local_defaults("cpu") == {"TrainingProfile": "cpu", "Epochs": str(PROFILES["cpu"].epochs)}
    assert local_defaults("gpu")["Epochs"] == str(PROFILES["gpu"].epochs)


# --- Ctrl-C, retry, and two executions at once ---------------------------------------------------

def _start(home: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([COMMAND, "--home", str(home), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_step(home: Path, step: str, status: str, process: subprocess.Popen, timeout_s: float = 300):
    """The (execution, step) once the newest execution's ``step`` is ``status``, read from the
    state database as another process would watch it."""
    from pipeline.local.state.db import open_state
    from pipeline.local.state.executions import ExecutionError, ExecutionStore

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        if (home / "state.db").exists():
            conn = open_state(home)
            try:
                executions = ExecutionStore(conn).list_executions()
                if executions:
                    try:
                        found = ExecutionStore(conn).step(executions[0].execution_id, step)
                    except ExecutionError:
                        found = None
                    if found is not None and found.status == status:
                        return executions[0], found
            finally:
                conn.close()
        time.sleep(0.05)
    raise AssertionError(f"step {step} never became {status}")


def _processes_working_in(folder: Path) -> list[int]:
    """Processes whose working directory is inside ``folder`` (a job's processes run in its job folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cwd = (proc / "cwd").resolve()
        except (OSError, RuntimeError):
            continue
        if proc.name.isdigit() and str(cwd).startswith(str(folder.resolve())):
            found.append(int(proc.name))
    return found


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_signal_stops_the_execution_and_retry_finishes_it(archive, tmp_path, stop):
    home = tmp_path / "home"
    process = _start(home, "run", "--data", str(archive), "--json", *SMALL, "--param", "AccuracyThreshold=0.6")
    execution, _ = _wait_for_step(home, "Train", "Executing", process)
    process.send_signal(stop)  # SIGINT is what Ctrl-C sends; SIGTERM what `kill` sends
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "interrupted" in err and "Traceback" not in err

    shown = json.loads(_run(home, "executions", "show", execution.execution_id, "--json").stdout)
    assert shown["status"] == "Stopped" and shown["failure_reason"].startswith("interrupted")
    assert shown["steps"]["Preprocess"]["status"] == "Succeeded" and shown["steps"]["Train"]["status"] == "Stopped"
    assert "Evaluate" not in shown["steps"] and shown["model_package_version"] is None
    assert _processes_working_in(home / "jobs") == []  # the training process was stopped with it
    if stop == signal.SIGTERM:
        return  # the retry below is the same after either signal

    retried = _run(home, "executions", "retry", execution.execution_id, "--json")
    assert retried.returncode == 0, retried.stderr[-3000:]
    summary = json.loads(retried.stdout.strip().splitlines()[-1])
    assert summary["execution_id"] == execution.execution_id and summary["status"] == "Succeeded"
    assert summary["steps"]["Preprocess"] == shown["steps"]["Preprocess"]  # kept, not run again
    assert summary["steps"]["Train"]["attempts"] == 2 and summary["model_package_version"] == 1
    again = _run(home, "executions", "retry", execution.execution_id)
    assert again.returncode == 2 and "only a Failed or Stopped execution can be retried" in again.stderr


def test_two_executions_at_once_do_not_clobber_each_other(archive, tmp_path):
    home = tmp_path / "home"
    runs = [_start(home, "run", "--data", str(archive), "--json", "--no-cache", *SMALL,
                   "--param", f"AccuracyThreshold={threshold}") for threshold in ("0.6", "0.65")]
    results = [(p, *p.communicate(timeout=600)) for p in runs]
    summaries = []
    for process, out, err in results:
        assert process.returncode == 0, err[-3000:]
        summaries.append(json.loads(out.strip().splitlines()[-1]))
    assert len({s["execution_id"] for s in summaries}) == 2
    assert sorted(s["model_package_version"] for s in summaries) == [1, 2]
    assert [s["threshold"] for s in summaries] == [0.6, 0.65]
    assert not any(step["cached_from"] for s in summaries for step in s["steps"].values())
    logs = {s["steps"]["Train"]["log"] for s in summaries}
    assert len(logs) == 2 and all(Path(log).is_file() for log in logs)
    listed = json.loads(_run(home, "registry", "list", "--json").stdout)
    assert sorted((r["version"], r["execution_id"]) for r in listed) == sorted(
        (s["model_package_version"], s["execution_id"]) for s in summaries)
    assert len({r["artifact"] for r in listed}) == 2


@pytest.mark.parametrize("step", ["Preprocess", "Train", "Transform", "Evaluate"])
def test_a_run_killed_outright_reads_as_failed_and_a_retry_finishes_it(archive, tmp_path, step):
    """SIGKILL cannot be caught: the next command that reads the executions finds the runner
    gone and records the execution and its step Failed, with the time it ended and how to run it
    again, and stops the job it left running; a retry then finishes the execution."""
    home = tmp_path / "home"
    process = _start(home, "run", "--data", str(archive), "--json", *SMALL, "--param", "AccuracyThreshold=0.6")
    execution, _ = _wait_for_step(home, step, "Executing", process)
    time.sleep(0.3)  # the job's pid is recorded as it starts
    process.kill()
    process.communicate(timeout=60)

    listed = json.loads(_run(home, "executions", "list", "--json").stdout)
    assert [(e["execution_id"], e["status"]) for e in listed] == [(execution.execution_id, "Failed")]
    assert f"(pid {process.pid}) ended at about" in listed[0]["failure_reason"]
    shown = json.loads(_run(home, "executions", "show", execution.execution_id, "--json").stdout)
    assert shown["steps"][step]["status"] == "Failed"
    assert all(s["status"] == "Succeeded" for name, s in shown["steps"].items() if name != step)
    assert shown["rerun"] == f"sentiment-mlops executions retry {execution.execution_id}"
    assert shown["rerun"] in _run(home, "executions", "show", execution.execution_id).stdout
    deadline = time.monotonic() + 15
    while _processes_working_in(home / "jobs") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_working_in(home / "jobs") == [], "the killed runner's job was not stopped"

    retried = _run(home, "executions", "retry", execution.execution_id, "--json")
    assert retried.returncode == 0, retried.stderr[-3000:]
    summary = json.loads(retried.stdout.strip().splitlines()[-1])
    assert summary["status"] == "Succeeded" and summary["steps"][step]["attempts"] == 2
    assert summary["model_package_version"] == 1 and summary["rerun"] is None
    assert _processes_working_in(home / "jobs") == []
