"""The training job: artifact contract, determinism, spot-interruption resume, SageMaker environment."""
from __future__ import annotations

import json
import re

import pytest
import torch

from serve.artifact import load_model
from tests.conftest import train_args
from train import train as train_module
from train.checkpoints import CHECKPOINT_FILE, CheckpointStore
from train.epoch_log import METRIC_DEFINITIONS
from train.train import main


def _weights(model_dir):
    return torch.load(model_dir / "model.pt", map_location="cpu", weights_only=True)


def test_training_writes_a_self_contained_artifact(trained):
    model_dir = trained / "model"
    for name in ("model.pt", "config.json", "vocab.json", "code/inference.py", "code/requirements.txt", "code/serve/handlers.py"):
        assert (model_dir / name).is_file(), name
    config = json.loads((model_dir / "config.json").read_text())
    assert config["network"]["hidden_dim"] == 16 and config["text"]["max_len"] == 40
    assert config["training"]["profile"] == "cpu" and config["versions"]["torch"] == torch.__version__
    assert len(config["data"]["sha256"]["train"]) == 64
    loaded = load_model(model_dir)
    assert loaded.config["training"]["best_val_accuracy"] > 0.9  # the synthetic task is learnable


def test_training_writes_metrics_and_curves(trained):
    metrics = json.loads((trained / "output" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, metrics["epochs_run"] + 1))
    assert metrics["best_val_accuracy"] == max(h["val_accuracy"] for h in metrics["history"])
    assert (trained / "output" / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_artifact_carries_the_training_curves(trained):
    """SM_OUTPUT_DATA_DIR goes to output.tar.gz, which no later step reads: the model dir (packed
    into model.tar.gz, which Evaluate reads) carries the curves too, under the artifact's name."""
    from serve.artifact import TRAINING_CURVES_FILE

    assert train_module.CURVES_FILE == TRAINING_CURVES_FILE
    assert (trained / "model" / TRAINING_CURVES_FILE).read_bytes() == (trained / "output" / "training_curves.png").read_bytes()


def test_epoch_log_lines_match_the_metric_definitions(prepared, tmp_path, caplog):
    caplog.set_level("INFO", logger="train")
    assert main(train_args(prepared, tmp_path, "--epochs", "1")) == 0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch=")]
    assert len(lines) == 1
    for definition in METRIC_DEFINITIONS:
        match = re.search(definition["Regex"], lines[0])
        assert match, definition["Name"]
        float(match.group(1))


def test_same_seed_gives_identical_weights(prepared, trained, tmp_path):
    assert main(train_args(prepared, tmp_path)) == 0
    first, second = _weights(trained / "model"), _weights(tmp_path / "model")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_another_seed_gives_other_weights(prepared, trained, tmp_path):
    assert main(train_args(prepared, tmp_path, "--seed", "7")) == 0
    first, second = _weights(trained / "model"), _weights(tmp_path / "model")
    assert not all(torch.equal(first[k], second[k]) for k in first)


def test_an_interrupted_job_resumes_from_its_checkpoint_and_ends_the_same(prepared, trained, tmp_path, monkeypatch, caplog):
    original_save = CheckpointStore.save

    def save_then_get_interrupted(self, *args, **kwargs):
        original_save(self, *args, **kwargs)
        raise SystemExit("spot interruption")

    monkeypatch.setattr(CheckpointStore, "save", save_then_get_interrupted)
    with pytest.raises(SystemExit):
        main(train_args(prepared, tmp_path))
    assert (tmp_path / "checkpoints" / CHECKPOINT_FILE).is_file()
    assert not (tmp_path / "model").exists()

    monkeypatch.setattr(CheckpointStore, "save", original_save)
    caplog.set_level("INFO")
    assert main(train_args(prepared, tmp_path)) == 0
    assert any("resuming after epoch 1" in r.getMessage() for r in caplog.records)
    resumed, uninterrupted = _weights(tmp_path / "model"), _weights(trained / "model")
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)
    history = json.loads((tmp_path / "output" / "metrics.json").read_text())["history"]
    expected = json.loads((trained / "output" / "metrics.json").read_text())["history"]
    assert len(history) > 1 and [h["epoch"] for h in history] == [h["epoch"] for h in expected]
    assert [h["val_accuracy"] for h in history] == [h["val_accuracy"] for h in expected]


def test_a_checkpoint_from_other_hyperparameters_is_ignored(prepared, tmp_path, caplog):
    assert main(train_args(prepared, tmp_path, "--epochs", "1")) == 0
    caplog.set_level("WARNING")
    assert main(train_args(prepared, tmp_path, "--epochs", "1", "--seed", "3")) == 0
    assert any("other hyperparameters or data" in r.getMessage() for r in caplog.records)


def test_a_finished_jobs_checkpoint_is_not_resumed(prepared, tmp_path, caplog):
    """The checkpoint folder is shared by executions of one profile: a new job trains anew."""
    assert main(train_args(prepared, tmp_path, "--epochs", "1")) == 0
    first = _weights(tmp_path / "model")
    caplog.set_level("INFO")
    assert main(train_args(prepared, tmp_path, "--epochs", "1")) == 0
    assert any("not resuming" in r.getMessage() for r in caplog.records)
    assert not any("resuming after epoch" in r.getMessage() for r in caplog.records)
    assert json.loads((tmp_path / "output" / "metrics.json").read_text())["epochs_run"] == 1
    second = _weights(tmp_path / "model")
    assert all(torch.equal(first[k], second[k]) for k in first)  # trained again, deterministically


def test_a_corrupt_checkpoint_is_ignored(prepared, tmp_path, caplog):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    caplog.set_level("WARNING")
    assert main(train_args(prepared, tmp_path, "--epochs", "1")) == 0
    assert any("unreadable checkpoint" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_sagemaker_environment_and_hyperparameter_spelling(prepared, tmp_path, monkeypatch):
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(prepared / "train"))
    monkeypatch.setenv("SM_CHANNEL_VALIDATION", str(prepared / "validation"))
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    monkeypatch.setenv("SM_OUTPUT_DATA_DIR", str(tmp_path / "output"))
    monkeypatch.setenv("SM_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("SM_NUM_GPUS", "0")
    monkeypatch.setenv("SM_HPS", json.dumps({"profile": "cpu", "hidden_dim": "12", "epochs": "1"}))
    args, hp = train_module.parse_args(["--embedding_dim", "8", "--bidirectional", "false", "--sagemaker_program", "train.py"])
    assert (hp.hidden_dim, hp.embedding_dim, hp.bidirectional, hp.epochs) == (12, 8, False, 1)
    assert args.profile == "cpu" and args.num_gpus == 0
    assert main(["--embedding_dim", "8", "--num_threads", "1"]) == 0
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["network"]["hidden_dim"] == 12 and config["network"]["embedding_dim"] == 8


def test_profiles_differ_and_cli_overrides_win(monkeypatch):
    monkeypatch.delenv("SM_HPS", raising=False)
    _, cpu = train_module.parse_args(["--profile", "cpu", "--num-gpus", "0"])
    _, gpu = train_module.parse_args(["--profile", "gpu", "--num-gpus", "0", "--epochs", "2"])
    assert gpu.hidden_dim > cpu.hidden_dim and gpu.epochs == 2


def test_unknown_hyperparameter_is_refused():
    with pytest.raises(SystemExit) as exit_info:
        train_module.parse_args(["--num-gpus", "0", "--learning_rat", "0.1"])
    assert exit_info.value.code == 2


def test_missing_training_data_is_a_clear_error(tmp_path, caplog):
    (tmp_path / "empty").mkdir()
    args = ["--train", str(tmp_path / "empty"), "--validation", str(tmp_path / "empty"), "--model-dir", str(tmp_path / "m"),
            "--output-data-dir", str(tmp_path / "o"), "--checkpoint-dir", str(tmp_path / "c"), "--num-gpus", "0", "--profile", "cpu"]
    assert main(args) == 2
    assert any("preprocessing step" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("reviews", [24, 60])
def test_a_tiny_dataset_trains_without_a_schedule_error(tmp_path, reviews):
    """One or a few batches per epoch must still give the one-cycle schedule a step per phase."""
    from serve.text import TextConfig
    from steps.preprocess import PreprocessOptions
    from steps.preprocess import run as preprocess
    from tests.synthetic import make_reviews, write_jsonl

    data = write_jsonl(tmp_path / "data", make_reviews(reviews, seed=3), make_reviews(10, seed=4))
    preprocess(data, tmp_path / "prepared", PreprocessOptions(vocab_size=50, min_count=1, workers=1, embedding_dim=0,
                                                              validation_fraction=0.2, text=TextConfig(max_len=20)))
    assert main(train_args(tmp_path / "prepared", tmp_path / "job", "--epochs", "2")) == 0
    assert (tmp_path / "job" / "model" / "model.pt").is_file()


@pytest.mark.slow
def test_the_gpu_profile_trains_its_exact_network_and_schedule_on_the_cpu(prepared, tmp_path):
    """The SageMaker default (``gpu``) is never run here on a GPU: its network, bag, crops, epochs
    and calibration run on tiny data on the CPU, so a change that breaks it fails here first."""
    from train.profiles import PROFILES

    gpu = PROFILES["gpu"]
    args = ["--train", str(prepared / "train"), "--validation", str(prepared / "validation"),
            "--model-dir", str(tmp_path / "model"), "--output-data-dir", str(tmp_path / "output"),
            "--checkpoint-dir", str(tmp_path / "checkpoints"), "--num-gpus", "0", "--profile", "gpu", "--num_threads", "1"]
    assert main(args) == 0
    summary = json.loads((tmp_path / "output" / "metrics.json").read_text())
    assert summary["hyperparameters"] == gpu.to_dict() | {"num_threads": 1}
    network = load_model(tmp_path / "model").config["network"]
    assert (network["hidden_dim"], network["num_layers"], network["ngram_buckets"]) == (gpu.hidden_dim, gpu.num_layers, gpu.ngram_buckets)
    assert network["temperature"] == summary["calibration"]["temperature"] > 0
    assert summary["best_val_accuracy"] > 0.8


def test_calibration_is_stored_in_the_artifact_and_applied_when_it_is_loaded(trained):
    summary = json.loads((trained / "output" / "metrics.json").read_text())
    loaded = load_model(trained / "model")
    assert loaded.network.config.temperature == summary["calibration"]["temperature"] != 1.0
    assert summary["calibration"]["loss_after"] <= summary["calibration"]["loss_before"]


def test_the_bag_is_the_nbsvm_fitted_before_training_and_the_calibration_weighs_it(prepared, trained):
    """The bag's weights are the convex NBSVM fit on the training split, untouched by the LSTM's
    training; the artifact's config holds the fitted bag weight the network multiplies them by."""
    from serve.network import NgramBag
    from steps.arrays import load_split_arrays
    from train.nbsvm import fit_nbsvm

    summary = json.loads((trained / "output" / "metrics.json").read_text())
    hp = summary["hyperparameters"]
    loaded = load_model(trained / "model")
    config = loaded.network.config
    assert config.ngram_binary and config.ngram_buckets == hp["ngram_buckets"] == 4096
    assert config.bag_weight == summary["calibration"]["bag_weight"] > 0
    expected = fit_nbsvm(load_split_arrays(prepared / "train"), hp["ngram_buckets"], config.vocab_size, hp["ngram_order"], hp["ngram_c"])
    assert isinstance(loaded.network.ngrams, NgramBag)
    assert torch.equal(loaded.network.ngrams.weights.weight[:, 0], expected)


def _split_with_datasets(folder, datasets: list[int]):
    import numpy as np

    from steps.arrays import save_split_arrays

    folder.mkdir()
    rows = len(datasets)
    save_split_arrays(folder, np.ones((rows, 3)), np.full(rows, 3), np.arange(rows) % 2, 10, np.asarray(datasets))
    return folder


def test_an_epoch_visits_each_sentence_sentence_repeats_times_and_each_review_once(tmp_path):
    import numpy as np

    from train.profiles import Hyperparameters

    folder = _split_with_datasets(tmp_path / "train", [0, 0, 0, 1, 1])
    stats = {"datasets": [{"name": "imdb", "kind": "reviews"}, {"name": "sst2", "kind": "sentences"}]}
    rows = train_module.epoch_rows(folder, 5, stats, Hyperparameters(sentence_repeats=3))
    assert np.bincount(rows).tolist() == [1, 1, 1, 3, 3]
    assert train_module.epoch_rows(folder, 5, stats, Hyperparameters(sentence_repeats=1)).tolist() == [0, 1, 2, 3, 4]
    # Reviews alone, or a split from before datasets were recorded: every row once.
    reviews_only = {"datasets": [{"name": "imdb", "kind": "reviews"}, {"name": "more", "kind": "reviews"}]}
    assert train_module.epoch_rows(folder, 5, reviews_only, Hyperparameters()).tolist() == [0, 1, 2, 3, 4]
    batches = train_module.Batches(np.full(5, 3), 2, seed=1, rows=rows)
    assert sorted(np.concatenate(batches.epoch(1)).tolist()) == sorted(rows.tolist())


def test_a_split_naming_a_dataset_its_stats_do_not_list_is_refused(tmp_path):
    from train.profiles import Hyperparameters

    folder = _split_with_datasets(tmp_path / "train", [0, 2])
    with pytest.raises(train_module.TrainingError, match="names dataset 2, but its stats.json lists 1"):
        train_module.epoch_rows(folder, 2, {"datasets": [{"name": "imdb", "kind": "reviews"}]}, Hyperparameters())
