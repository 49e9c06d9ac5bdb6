"""The main job through the installed command: preprocess → train → evaluate, each its own process."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.synthetic import make_reviews, write_archive

COMMAND = shutil.which("sentiment-mlops") or str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "sentiment-mlops")
TINY = ["-H", "epochs=4", "-H", "embedding_dim=16", "-H", "hidden_dim=16", "-H", "batch_size=32", "-H", "learning_rate=0.01",
        "-P", "max_len=40", "-P", "min_count=1", "-P", "workers=1"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([COMMAND, *args], capture_output=True, text=True, timeout=300)


def test_the_main_job_runs_end_to_end_on_the_official_archive_layout(tmp_path):
    archive = write_archive(tmp_path / "data" / "aclImdb_v1.tar.gz", make_reviews(600, seed=5), make_reviews(200, seed=6))
    result = _run("run", "--data", str(archive), "--work-dir", str(tmp_path / "run"), "--json", *TINY)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(summary["steps"]) == {"Preprocess", "Train", "Evaluate"}
    assert summary["accuracy"] > 0.9
    work = Path(summary["work_dir"])
    report = json.loads((work / "evaluation" / "evaluation.json").read_text())
    assert report["binary_classification_metrics"]["accuracy"]["value"] == summary["accuracy"]
    for log in ("preprocess.log", "train.log", "evaluate.log"):
        assert (work / "logs" / log).stat().st_size > 0
    assert "epoch=4" in (work / "logs" / "train.log").read_text()


def test_a_missing_data_path_is_one_line_and_a_nonzero_exit(tmp_path):
    result = _run("run", "--data", str(tmp_path / "nowhere"), "--work-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_a_malformed_hyperparameter_is_one_line_and_a_nonzero_exit(tmp_path):
    (tmp_path / "data").mkdir()
    result = _run("run", "--data", str(tmp_path / "data"), "--work-dir", str(tmp_path / "run"), "-H", "epochs")
    assert result.returncode == 2 and "NAME=VALUE" in result.stderr and "Traceback" not in result.stderr


def test_a_failing_step_names_its_log(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("not reviews")
    result = _run("run", "--data", str(tmp_path / "data"), "--work-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: step Preprocess failed") and "preprocess.log" in last
    assert "Accepted layouts" in (tmp_path / "run" / "logs" / "preprocess.log").read_text()
