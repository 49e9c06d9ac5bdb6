"""Temperature scaling (train/calibration.py) and the evaluation's views beyond whole reviews
(evaluation/slices.py): accuracy by length, short texts taken from the reviews, calibration error."""
from __future__ import annotations

import numpy as np
import pytest

from evaluation.slices import (
    LENGTH_BUCKETS,
    accuracy_by_length,
    bucket_name,
    expected_calibration_error,
    sentences,
    short_texts,
)
from serve.network import NetworkConfig
from train.calibration import MAX_SHARPNESS, MIN_SHARPNESS, fit_branch_weights, fit_temperature, log_loss


def _overconfident(temperature: float, count: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``temperature`` times too sharp: labels drawn from sigmoid(logit / temperature)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 4.0, count)
    labels = (rng.random(count) < 1.0 / (1.0 + np.exp(-logits / temperature))).astype(float)
    return logits, labels


def test_the_fitted_temperature_is_the_one_the_labels_were_drawn_with():
    logits, labels = _overconfident(2.5)
    fitted = fit_temperature(logits, labels)
    assert fitted.temperature == pytest.approx(2.5, rel=0.05)
    assert fitted.loss_after < fitted.loss_before
    assert fitted.loss_after == pytest.approx(log_loss(logits / fitted.temperature, labels))


def test_an_honest_model_keeps_a_temperature_near_one_and_no_change_of_side():
    logits, labels = _overconfident(1.0, seed=1)
    assert fit_temperature(logits, labels).temperature == pytest.approx(1.0, rel=0.05)


def test_fitting_needs_examples():
    with pytest.raises(ValueError, match="no validation examples"):
        fit_temperature(np.array([]), np.array([]))


def _two_branches(lstm: float, bag: float, count: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two branch logits and labels drawn from sigmoid(lstm · first + bag · second)."""
    rng = np.random.default_rng(seed)
    branches = rng.normal(0.0, 3.0, (count, 2))
    labels = (rng.random(count) < 1.0 / (1.0 + np.exp(-(branches @ np.array([lstm, bag]))))).astype(float)
    return branches, labels


def test_the_branch_weights_are_the_ones_the_labels_were_drawn_with():
    branches, labels = _two_branches(0.4, 0.7)
    fitted = fit_branch_weights(branches, labels)
    assert fitted.temperature == pytest.approx(1 / 0.4, rel=0.05)
    assert fitted.bag_weight == pytest.approx(0.7 / 0.4, rel=0.05)
    combined = (branches[:, 0] + fitted.bag_weight * branches[:, 1]) / fitted.temperature
    assert fitted.loss_after == pytest.approx(log_loss(combined, labels), rel=1e-4)
    assert fitted.loss_after < fitted.loss_before == pytest.approx(log_loss(branches.sum(axis=1), labels))


def test_a_bag_that_points_the_wrong_way_gets_weight_zero_and_the_lstm_alone_is_calibrated():
    branches, labels = _two_branches(0.5, -0.3, seed=2)
    fitted = fit_branch_weights(branches, labels)
    assert fitted.bag_weight == 0.0
    assert fitted.temperature == fit_temperature(branches[:, 0], labels).temperature


def test_separable_validation_data_gives_a_bounded_temperature_not_an_unbounded_fit():
    """Tiny or easy validation splits can be separated perfectly: the unregularized optimum is at
    infinity, and the fit falls back to the bounded one-number search."""
    branches = np.array([[2.0, 1.0], [1.0, 3.0], [-1.0, -2.0], [-3.0, -1.0]])
    fitted = fit_branch_weights(branches, np.array([1.0, 1.0, 0.0, 0.0]))
    assert 1 / MAX_SHARPNESS <= fitted.temperature <= 1 / MIN_SHARPNESS and 0 < fitted.bag_weight <= MAX_SHARPNESS
    assert isinstance(fitted.temperature, float) and isinstance(fitted.bag_weight, float)
    assert NetworkConfig(vocab_size=10, temperature=fitted.temperature, bag_weight=fitted.bag_weight)  # an artifact can hold it


def test_calibration_error_of_an_honest_and_an_overconfident_model():
    rng = np.random.default_rng(2)
    probabilities = rng.uniform(0.0, 1.0, 50_000)
    honest_labels = (rng.random(50_000) < probabilities).astype(int)
    assert expected_calibration_error(honest_labels, probabilities)["expected_calibration_error"] < 0.01
    sharp = np.where(probabilities >= 0.5, 0.999, 0.001)  # same sides, claims 99.9 % everywhere
    error = expected_calibration_error(honest_labels, sharp)
    assert error["expected_calibration_error"] == pytest.approx(0.999 - 0.75, abs=0.01)
    assert sum(b["texts"] for b in error["bins"]) == 50_000


def test_accuracy_by_length_counts_words_without_markup():
    texts = ["good", "one<br />two<br />three", " ".join(["w"] * 11), " ".join(["w"] * 600)]
    rows = accuracy_by_length(texts, np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.2]))
    assert [(r["bucket"], r["texts"], r["accuracy"]) for r in rows] == [
        ("1-10 words", 2, 0.5), ("11-25 words", 1, 1.0), ("501+ words", 1, 1.0)]
    assert bucket_name(len(LENGTH_BUCKETS)) == "501+ words"


def test_short_texts_are_each_reviews_first_and_last_sentence_with_its_label():
    reviews = ["A film about a dog and his boy. It was slow. Truly a waste of two hours!",
               "Only one sentence here, which is skipped.",
               "Hi. Brilliant acting from everyone in the cast, and a score to match.",
               "The plot made no sense at all. ... ... !!! :-) ?"]  # a last "sentence" with no words
    found = short_texts(reviews, np.array([0, 1, 1, 1]))
    first_texts, first_labels = found["first sentence"]
    last_texts, last_labels = found["last sentence"]
    assert first_texts == ["A film about a dog and his boy.", "The plot made no sense at all."]  # "Hi." is too short
    assert first_labels.tolist() == [0, 1]
    assert last_texts == ["Truly a waste of two hours!", "Brilliant acting from everyone in the cast, and a score to match."]
    assert last_labels.tolist() == [0, 1]
    assert sentences("One.<br /><br />Two!") == ["One.", "Two!"]


def test_the_short_text_sample_is_the_same_for_every_model():
    reviews = [f"Review number {i} starts here. It ends with verdict {i} today." for i in range(12_000)]
    labels = np.arange(12_000) % 2
    one, two = short_texts(reviews, labels), short_texts(reviews, labels)
    assert len(one["last sentence"][0]) == 5_000 and one["last sentence"][0] == two["last sentence"][0]
