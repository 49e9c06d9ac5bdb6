"""Training on short windows of the reviews (train/crops.py)."""
from __future__ import annotations

import numpy as np
import pytest

from train.crops import Crops


def _batch() -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([30, 3, 50, 12])
    ids = np.zeros((4, 50), dtype=np.uint16)
    for row, length in enumerate(lengths):
        ids[row, :length] = np.arange(1, length + 1) + 100 * row
    return ids, lengths


def test_a_cropped_row_is_a_window_of_its_own_tokens_and_the_rest_stays():
    ids, lengths = _batch()
    crops = Crops(probability=1.0, min_tokens=4, max_tokens=10, seed=1)
    cut, cut_lengths = crops.apply(ids, lengths, crops.generator(1))
    assert cut_lengths[1] == 3 and (cut[1] == ids[1]).all()  # too short to crop: unchanged
    for row in (0, 2, 3):
        size = int(cut_lengths[row])
        assert 4 <= size <= 10 and not cut[row, size:].any()
        window = cut[row, :size]
        start = int(window[0]) - (100 * row + 1)
        assert (window == ids[row, start : start + size]).all()
    assert (ids == _batch()[0]).all() and (lengths == _batch()[1]).all()  # the inputs are not changed


def test_the_windows_depend_on_the_seed_and_epoch_alone():
    ids, lengths = _batch()
    crops = Crops(probability=0.5, min_tokens=2, max_tokens=8, seed=3)
    first = crops.apply(ids, lengths, crops.generator(2))
    again = crops.apply(ids, lengths, crops.generator(2))
    other = [crops.apply(ids, lengths, crops.generator(epoch)) for epoch in range(3, 8)]
    assert all((a == b).all() for a, b in zip(first, again))
    assert any(not (first[1] == o[1]).all() for o in other)


def test_no_crops_leaves_every_review_whole():
    ids, lengths = _batch()
    crops = Crops(probability=0.0, min_tokens=4, max_tokens=10, seed=1)
    cut, cut_lengths = crops.apply(ids, lengths, crops.generator(1))
    assert (cut == ids).all() and (cut_lengths == lengths).all()


@pytest.mark.parametrize("settings", [dict(probability=1.5, min_tokens=4, max_tokens=10),
                                      dict(probability=0.5, min_tokens=0, max_tokens=10),
                                      dict(probability=0.5, min_tokens=12, max_tokens=10)])
def test_settings_that_cannot_crop_are_refused(settings):
    with pytest.raises(ValueError, match="crop"):
        Crops(seed=1, **settings)
