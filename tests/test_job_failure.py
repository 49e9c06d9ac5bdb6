"""The reason a job script leaves for SageMaker when it refuses its input (steps/job_failure.py),
where each kind of job leaves it, and that a local run's summary shows it."""
from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path

import pytest

from pipeline.local.engine.jobs import JobFailed, run_processing_job, run_training_job
from pipeline.local.state.store import ArtifactStore
from pipeline.settings import Settings
from steps import job_failure
from steps.job_failure import (
    MAX_BYTES,
    OUTPUT_DIR_ENV,
    PROCESSING_REASON_FILE,
    TRAINING_REASON_FILE,
    one_line,
    report_failures,
    write_reason,
)
from tests.synthetic import make_reviews, write_csv, write_jsonl

# --- the helper --------------------------------------------------------------------------------------------


def test_the_file_holds_the_first_line_only(tmp_path):
    written = write_reason(ValueError("x.csv needs a review column\n  - detail\n  - more"), "failure", tmp_path)
    assert written == tmp_path / "failure"
    assert written.read_text(encoding="utf-8") == "x.csv needs a review column"
    assert [p.name for p in tmp_path.iterdir()] == ["failure"]  # no scratch file left behind


def test_the_line_is_capped_at_what_sagemaker_keeps_without_splitting_a_character(tmp_path):
    reason = "é" * MAX_BYTES  # two bytes each in UTF-8
    text = write_reason(reason, "message", tmp_path).read_bytes()
    assert len(text) == MAX_BYTES and text.decode("utf-8") == "é" * (MAX_BYTES // 2)
    odd = one_line("a" + "é" * MAX_BYTES)
    assert len(odd.encode("utf-8")) == MAX_BYTES - 1  # the half character at the cut is dropped


def test_a_blank_first_line_is_skipped_and_undecodable_bytes_become_escapes(tmp_path):
    assert one_line("\n  \n  second line \nthird") == "second line"
    text = write_reason("its header is ['caf\udce9']", "message", tmp_path).read_text(encoding="utf-8")
    assert text == "its header is ['caf\\udce9']"  # valid UTF-8: SageMaker fails a job whose message is not


def test_a_new_reason_replaces_an_old_one(tmp_path):
    write_reason("first", "failure", tmp_path)
    assert write_reason("second", "failure", tmp_path).read_text(encoding="utf-8") == "second"


def test_the_folder_is_sm_output_dir_else_opt_ml_output_else_none(tmp_path, monkeypatch):
    monkeypatch.setenv(OUTPUT_DIR_ENV, str(tmp_path / "out"))
    assert job_failure.output_dir() == tmp_path / "out"
    monkeypatch.delenv(OUTPUT_DIR_ENV)
    monkeypatch.setattr(job_failure, "OPT_ML", tmp_path / "opt" / "ml")
    assert job_failure.output_dir() is None and write_reason("bad", "failure") is None  # by hand: nothing written
    (tmp_path / "opt" / "ml").mkdir(parents=True)
    assert job_failure.output_dir() == tmp_path / "opt" / "ml" / "output"
    assert write_reason("bad", "message") == tmp_path / "opt" / "ml" / "output" / "message"  # created if absent


def test_an_expected_error_is_logged_written_and_exits_2(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(OUTPUT_DIR_ENV, str(tmp_path))

    def work() -> int:
        raise LookupError("no reviews\nAccepted layouts: ...")

    with caplog.at_level(logging.ERROR):
        assert report_failures(work, (LookupError,), TRAINING_REASON_FILE, logging.getLogger("t")) == 2
    assert (tmp_path / "failure").read_text(encoding="utf-8") == "no reviews"
    assert "no reviews\nAccepted layouts: ..." in caplog.text  # the log keeps the whole message


def test_success_and_unexpected_errors_write_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(OUTPUT_DIR_ENV, str(tmp_path))
    assert report_failures(lambda: 0, (LookupError,), TRAINING_REASON_FILE, logging.getLogger("t")) == 0

    def work() -> int:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        report_failures(work, (LookupError,), TRAINING_REASON_FILE, logging.getLogger("t"))
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_cannot_be_written_still_exits_2(tmp_path, monkeypatch, caplog):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv(OUTPUT_DIR_ENV, str(tmp_path / "file"))

    def work() -> int:
        raise LookupError("no reviews")

    assert report_failures(work, (LookupError,), TRAINING_REASON_FILE, logging.getLogger("t")) == 2
    assert "cannot write the failure reason" in caplog.text


# --- the scripts -------------------------------------------------------------------------------------------


def test_preprocess_leaves_its_reason_as_the_exit_message(tmp_path, monkeypatch):
    from steps.preprocess import main

    monkeypatch.setenv(OUTPUT_DIR_ENV, str(tmp_path / "output"))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.csv").write_text("body,sentiment\nnice film,positive\n", encoding="utf-8")
    assert main(["--input-dir", str(tmp_path / "data"), "--output-dir", str(tmp_path / "out"), "--workers", "1"]) == 2
    assert "x.csv needs a review column" in (tmp_path / "output" / PROCESSING_REASON_FILE).read_text(encoding="utf-8")


def test_train_leaves_its_reason_as_the_failure_reason(tmp_path, monkeypatch):
    from train.train import main

    monkeypatch.setenv(OUTPUT_DIR_ENV, str(tmp_path / "output"))
    (tmp_path / "empty").mkdir()
    assert main(["--train", str(tmp_path / "empty"), "--validation", str(tmp_path / "empty"), "--model-dir",
                 str(tmp_path / "m"), "--output-data-dir", str(tmp_path / "o"), "--checkpoint-dir", str(tmp_path / "c"),
                 "--num-gpus", "0", "--profile", "cpu"]) == 2
    assert "preprocessing step" in (tmp_path / "output" / TRAINING_REASON_FILE).read_text(encoding="utf-8")


def test_evaluate_leaves_its_reason_as_the_exit_message(tmp_path, monkeypatch):
    from evaluation.evaluate import main

    monkeypatch.setenv(OUTPUT_DIR_ENV, str(tmp_path / "output"))
    (tmp_path / "test").mkdir()
    assert main(["--model", str(tmp_path / "model"), "--test", str(tmp_path / "test"),
                 "--output-dir", str(tmp_path / "out")]) == 2
    assert (tmp_path / "output" / PROCESSING_REASON_FILE).read_text(encoding="utf-8")


# --- where the local runtime reads it ----------------------------------------------------------------------


@pytest.mark.parametrize("file_name, shown", [(PROCESSING_REASON_FILE, True), (TRAINING_REASON_FILE, False)])
def test_a_processing_job_is_read_from_its_exit_message_file(tmp_path, file_name, shown):
    """SageMaker reads /opt/ml/output/message of a processing job; a ``failure`` file there is not its contract."""
    script = f'echo "x.csv needs a review column" > "$SM_OUTPUT_DIR/{file_name}"; exit 2'
    arguments = {"AppSpecification": {"ContainerEntrypoint": ["/bin/bash", "-c", script]}}
    with pytest.raises(JobFailed) as failed:
        run_processing_job(arguments, job_name="j", job_dir=tmp_path / "job", store=ArtifactStore(tmp_path),
                           log_path=tmp_path / "job.log")
    assert ("exited with code 2: x.csv needs a review column" in str(failed.value)) is shown
    assert (tmp_path / "job" / "output" / file_name).is_file()  # SM_OUTPUT_DIR is the job's /opt/ml/output


def test_a_training_job_is_read_from_its_failure_file(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    script = ("import os, sys\n"
              "open(os.path.join(os.environ['SM_OUTPUT_DIR'], 'failure'), 'w').write('train has no stats.json')\n"
              "sys.exit(2)\n")
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        info = tarfile.TarInfo("fail.py")
        info.size = len(script)
        tar.addfile(info, io.BytesIO(script.encode()))
    store.put_bytes("s3://b/code/sourcedir.tar.gz", archive.getvalue())
    arguments = {"HyperParameters": {"sagemaker_program": "fail.py", "sagemaker_submit_directory": "s3://b/code/sourcedir.tar.gz"},
                 "OutputDataConfig": {"S3OutputPath": "s3://b/out"}}
    with pytest.raises(JobFailed, match="exited with code 2: train has no stats.json"):
        run_training_job(arguments, job_name="t", job_dir=tmp_path / "job", store=store, log_path=tmp_path / "t.log",
                         num_gpus=0)


# --- a local run's summary ---------------------------------------------------------------------------------


def _csv_without_a_review_column(folder: Path) -> tuple[Path, str]:
    path = write_csv(folder / "x.csv", make_reviews(40, seed=3))
    path.write_text(path.read_text(encoding="utf-8").replace("review,", "body,", 1), encoding="utf-8")
    return path, "x.csv needs a review column"


def _truncated_gz(folder: Path) -> tuple[Path, str]:
    """A download cut short: the first records read, the end of the stream is missing."""
    write_jsonl(folder, make_reviews(400, seed=3), make_reviews(100, seed=4))
    raw = (folder / "train.jsonl.gz").read_bytes()
    (folder / "train.jsonl.gz").write_bytes(raw[: len(raw) * 2 // 3])
    return folder, "train.jsonl.gz"


@pytest.mark.parametrize("make_data", [_csv_without_a_review_column, _truncated_gz], ids=["csv", "gz"])
@pytest.mark.e2e
def test_a_runs_summary_says_what_is_wrong_with_the_data(tmp_path, capsys, make_data):
    """The data is put in the store and named by InputDataUri, as it is in S3 on AWS: no check on
    the caller's side sees it, so the step itself must say what is wrong."""
    from pipeline.cli import main

    home = tmp_path / "home"
    source, expected = make_data(tmp_path / "data")
    uri = Settings(home=home).s3_uri("data", "bad") + "/"
    store = ArtifactStore(home)
    if source.is_dir():
        store.upload_dir(source, uri)
    else:
        store.upload_file(source, uri + source.name)
    capsys.readouterr()
    assert main(["--home", str(home), "run", "--json", "--param", f"InputDataUri={uri}"]) == 1
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "Failed" and summary["steps"]["Preprocess"]["status"] == "Failed"
    reason = summary["failure_reason"]
    assert reason.startswith("Step Preprocess failed") and expected in reason
    if expected == "train.jsonl.gz":
        assert "cannot read" in reason
