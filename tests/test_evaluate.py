"""The evaluation step: SageMaker's report format, scoring through the artifact's own code, bad inputs."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from evaluation import outputs
from evaluation.evaluate import EvaluationError, main, run
from evaluation.metrics import binary_classification_report
from serve.artifact import TRAINING_CURVES_FILE, ArtifactError, pack_model_dir


@pytest.fixture(scope="module")
def evaluated(trained, prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluated")
    pack_model_dir(trained / "model", out / "model.tar.gz")
    report = run(out / "model.tar.gz", prepared / "test", out / "evaluation")
    return out, report


def test_report_has_the_sagemaker_model_quality_shape(evaluated):
    _, report = evaluated
    metrics = report["binary_classification_metrics"]
    for name in ("accuracy", "precision", "recall", "f1", "auc"):
        assert set(metrics[name]) == {"value", "standard_deviation"}
        assert 0.0 <= metrics[name]["value"] <= 1.0
    assert set(metrics["confusion_matrix"]) == {"0", "1"}
    assert sum(metrics["confusion_matrix"][a][p] for a in "01" for p in "01") == 200
    roc = metrics["receiver_operating_characteristic_curve"]
    assert len(roc["false_positive_rates"]) == len(roc["true_positive_rates"]) >= 2
    assert roc["false_positive_rates"][0] == 0.0 and roc["true_positive_rates"][-1] == 1.0
    assert set(metrics["precision_recall_curve"]) == {"precisions", "recalls"}
    assert metrics["accuracy"]["value"] > 0.9  # the tiny model learned the synthetic task


def test_the_report_says_how_the_model_does_by_length_on_sentences_and_how_honest_it_is(evaluated, prepared):
    out, report = evaluated
    slices = report["slices"]
    assert sum(row["texts"] for row in slices["by_length"]) == 200
    overall = report["binary_classification_metrics"]["accuracy"]["value"]
    weighted = sum(row["texts"] * row["accuracy"] for row in slices["by_length"]) / 200
    assert weighted == pytest.approx(overall, abs=1e-3)
    assert slices["short_texts"] == {}  # the synthetic reviews are one sentence each: none taken from a longer one
    calibration = slices["calibration"]
    assert 0.0 <= calibration["expected_calibration_error"] <= 0.5 and calibration["bins"]
    for plot in ("accuracy_by_length.png", "calibration.png"):
        assert (out / "evaluation" / plot).read_bytes()[:4] == b"\x89PNG"


def test_sentences_taken_from_the_reviews_are_scored_on_their_own(evaluated, prepared, tmp_path):
    out, _ = evaluated
    test = tmp_path / "test"
    test.mkdir()
    with open(test / "reviews.jsonl", "w", encoding="utf-8") as handle:
        for line in (prepared / "test" / "reviews.jsonl").read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            words = record["text"].replace("<br />", " ").split()
            half = len(words) // 2
            record["text"] = " ".join(words[:half]) + ". " + " ".join(words[half:])
            handle.write(json.dumps(record) + "\n")
    short = run(out / "model.tar.gz", test, tmp_path / "evaluation")["slices"]["short_texts"]
    assert set(short) == {"first sentence", "last sentence"}
    assert all(row["texts"] > 100 and row["accuracy"] > 0.6 for row in short.values()), short


def test_outputs_a_person_can_read(evaluated):
    out, report = evaluated
    folder = out / "evaluation"
    assert json.loads((folder / "evaluation.json").read_text()) == report
    for plot in ("confusion_matrix.png", "roc_pr_curves.png"):
        assert (folder / plot).read_bytes()[:4] == b"\x89PNG"
    assert (folder / "worst_misclassified.md").read_text().startswith("# The ")
    predictions = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    accuracy = np.mean([(p["positive_probability"] >= 0.5) == p["label"] for p in predictions])
    assert accuracy == pytest.approx(report["binary_classification_metrics"]["accuracy"]["value"], abs=1e-6)


def test_every_file_the_registry_links_is_written_and_nothing_else(evaluated, trained):
    """The Register step links ``outputs.LINKS`` from the model package: each names a file this
    step writes, and the training curves come from the artifact, byte for byte. Beside them, the
    monitoring baseline's folder, which the package carries as its drift-check baselines."""
    out, _ = evaluated
    folder = out / "evaluation"
    assert sorted(p.name for p in folder.iterdir()) == sorted([*outputs.LINKS.values(), outputs.BASELINE_FOLDER])
    assert sorted(p.name for p in (folder / outputs.BASELINE_FOLDER).iterdir()) == [
        "constraints.json", "reference.npz", "statistics.json"]
    assert (folder / outputs.TRAINING_CURVES_FILE).read_bytes() == (trained / "model" / TRAINING_CURVES_FILE).read_bytes()


def test_an_artifact_without_training_curves_gives_no_curves_and_the_report_comes_last(trained, prepared, tmp_path,
                                                                                      monkeypatch):
    """An older artifact carries no curves: the evaluation has none. And whatever it writes, the
    report is moved into place last, so a reader that sees it sees its companions too."""
    import evaluation.evaluate as evaluate_module

    model_dir = tmp_path / "model"
    shutil.copytree(trained / "model", model_dir)
    (model_dir / TRAINING_CURVES_FILE).unlink()
    moved = []
    real_replace = evaluate_module.os.replace

    def replace(source, destination):
        moved.append(Path(destination).name)
        return real_replace(source, destination)

    monkeypatch.setattr(evaluate_module.os, "replace", replace)
    run(model_dir, prepared / "test", tmp_path / "out")
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted([*(name for name in outputs.LINKS.values() if name != outputs.TRAINING_CURVES_FILE),
                              outputs.BASELINE_FOLDER])
    assert moved[-1] == outputs.REPORT_FILE and sorted(moved) == written


def test_scores_through_the_artifacts_own_code_not_the_repository(trained, prepared, tmp_path):
    """Break the artifact's copy of the handlers: evaluation must see the break, so it ran that copy."""
    model_dir = tmp_path / "model"
    shutil.copytree(trained / "model", model_dir)
    handlers = model_dir / "code" / "serve" / "handlers.py"
    source = handlers.read_text()
    assert "return [Prediction(float(p))" in source
    handlers.write_text(source.replace("return [Prediction(float(p))", "return [Prediction(1.0 - float(p))"))
    honest = run(trained / "model", prepared / "test", tmp_path / "honest")["binary_classification_metrics"]["accuracy"]["value"]
    flipped = run(model_dir, prepared / "test", tmp_path / "flipped")["binary_classification_metrics"]["accuracy"]["value"]
    assert flipped == pytest.approx(1.0 - honest, abs=1e-9)
    import serve.handlers  # the repository's modules are back in place afterwards

    assert "code" not in serve.handlers.__file__.split("/")
    assert sys.modules["serve.handlers"] is serve.handlers


def test_report_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    probabilities = np.clip(labels * 0.3 + rng.random(500) * 0.6, 0, 1)
    metrics = binary_classification_report(labels, probabilities)["binary_classification_metrics"]
    predicted = probabilities >= 0.5
    assert metrics["accuracy"]["value"] == pytest.approx(skm.accuracy_score(labels, predicted), abs=1e-6)
    assert metrics["precision"]["value"] == pytest.approx(skm.precision_score(labels, predicted), abs=1e-6)
    assert metrics["recall"]["value"] == pytest.approx(skm.recall_score(labels, predicted), abs=1e-6)
    assert metrics["f2"]["value"] == pytest.approx(skm.fbeta_score(labels, predicted, beta=2), abs=1e-6)
    assert metrics["auc"]["value"] == pytest.approx(skm.roc_auc_score(labels, probabilities), abs=1e-6)
    tied = np.round(probabilities, 1)  # ties count half, as in sklearn
    tied_metrics = binary_classification_report(labels, tied)["binary_classification_metrics"]
    assert tied_metrics["auc"]["value"] == pytest.approx(skm.roc_auc_score(labels, tied), abs=1e-6)
    majority = int(labels.mean() >= 0.5)
    assert metrics["accuracy_best_constant_classifier"]["value"] == pytest.approx(np.mean(labels == majority), abs=1e-6)
    tn, fp, fn, tp = skm.confusion_matrix(labels, predicted).ravel()
    assert metrics["confusion_matrix"] == {"0": {"0": tn, "1": fp}, "1": {"0": fn, "1": tp}}
    assert 0 < metrics["accuracy"]["standard_deviation"] < 0.05
    assert binary_classification_report(labels, probabilities) == binary_classification_report(labels, probabilities)


def test_single_class_data_reports_nan_auc_instead_of_crashing():
    metrics = binary_classification_report(np.ones(10, dtype=int), np.full(10, 0.9))["binary_classification_metrics"]
    assert metrics["auc"]["value"] == "NaN" and metrics["accuracy"]["value"] == 1.0
    assert "receiver_operating_characteristic_curve" not in metrics


def test_missing_test_reviews_and_missing_model_are_clear_errors(trained, tmp_path, caplog):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvaluationError, match="reviews.jsonl"):
        run(trained / "model", tmp_path / "empty", tmp_path / "out")
    shutil.copytree(trained / "model", tmp_path / "model")
    (tmp_path / "model" / "model.pt").unlink()
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "reviews.jsonl").write_text('{"text": "fine film", "label": 1}\n')
    assert main(["--model", str(tmp_path / "model"), "--test", str(tmp_path / "test"), "--output-dir", str(tmp_path / "out")]) == 2
    assert any("model.pt" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "out" / "evaluation.json").exists()


def test_a_corrupt_archive_is_a_clear_error(prepared, tmp_path):
    (tmp_path / "model.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ArtifactError, match="cannot unpack"):
        run(tmp_path / "model.tar.gz", prepared / "test", tmp_path / "out")


def write_test_set(folder: Path, records: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "reviews.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return folder


def test_each_test_set_gets_its_own_report_and_each_kind_its_gate_figure(evaluated, tmp_path):
    """Reviews and sentences in one test split: a report per dataset, and what each gate reads."""
    from tests.synthetic import make_reviews, make_sentences

    out, _ = evaluated
    reviews = [{**r, "dataset": "imdb", "kind": "reviews"} for r in make_reviews(60, seed=8)]
    sentences = [{**r, "dataset": "sst2", "kind": "sentences"} for r in make_sentences(40, seed=9)]
    test = write_test_set(tmp_path / "test", reviews + sentences)
    report = run(out / "model.tar.gz", test, tmp_path / "evaluation")
    by_dataset = report[outputs.DATASETS_KEY]
    assert list(by_dataset) == ["imdb", "sst2"]
    assert (by_dataset["imdb"]["kind"], by_dataset["imdb"]["texts"]) == ("reviews", 60)
    assert (by_dataset["sst2"]["kind"], by_dataset["sst2"]["texts"]) == ("sentences", 40)
    predictions = [json.loads(line) for line in (tmp_path / "evaluation" / "predictions.jsonl").read_text().splitlines()]
    assert [p["dataset"] for p in predictions] == ["imdb"] * 60 + ["sst2"] * 40
    for name, rows in (("imdb", slice(0, 60)), ("sst2", slice(60, 100))):
        right = [(p["positive_probability"] >= 0.5) == bool(p["label"]) for p in predictions[rows]]
        accuracy = by_dataset[name]["binary_classification_metrics"]["accuracy"]["value"]
        assert accuracy == pytest.approx(np.mean(right), abs=1e-6)
        assert 0.0 <= by_dataset[name]["calibration_error"] <= 1.0
    gate = report[outputs.GATE_KEY]
    assert gate["reviews"] == {"texts": 60, "accuracy": pytest.approx(by_dataset["imdb"]["binary_classification_metrics"]
                                                                       ["accuracy"]["value"], abs=1e-6)}
    assert gate["sentences"] == {"texts": 40, "accuracy": pytest.approx(by_dataset["sst2"]["binary_classification_metrics"]
                                                                         ["accuracy"]["value"], abs=1e-6)}
    # Short texts are taken from reviews only: a sentence dataset is short texts already.
    assert sum(row["texts"] for row in report["slices"]["by_length"]) == 100


def test_a_run_without_sentences_writes_a_sentence_gate_with_no_texts(evaluated):
    _, report = evaluated
    assert report[outputs.GATE_KEY]["sentences"] == {"texts": 0, "accuracy": 0.0}
    assert report[outputs.GATE_KEY]["reviews"]["texts"] == 200
    assert list(report[outputs.DATASETS_KEY]) == ["imdb"]


def test_a_test_file_from_before_datasets_reads_as_one_dataset_of_reviews(evaluated, tmp_path):
    from tests.synthetic import make_reviews

    out, _ = evaluated
    test = write_test_set(tmp_path / "test", make_reviews(30, seed=3))
    report = run(out / "model.tar.gz", test, tmp_path / "evaluation")
    assert list(report[outputs.DATASETS_KEY]) == ["imdb"] and report[outputs.GATE_KEY]["reviews"]["texts"] == 30


@pytest.mark.parametrize("records, message", [
    ([{"text": "good", "label": 1, "dataset": "x", "kind": "tweets"}], "kind 'tweets'"),
    ([{"text": "good", "label": 1, "dataset": "x", "kind": "reviews"},
      {"text": "bad", "label": 0, "dataset": "x", "kind": "sentences"}], "line 2"),
])
def test_a_test_file_with_an_unknown_or_changing_kind_is_refused(evaluated, tmp_path, records, message):
    out, _ = evaluated
    test = write_test_set(tmp_path / "test", records)
    with pytest.raises(EvaluationError, match=message):
        run(out / "model.tar.gz", test, tmp_path / "evaluation")
