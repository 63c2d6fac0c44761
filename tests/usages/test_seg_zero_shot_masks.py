"""The zero-shot segmenter's public masks: ``predict_masks`` gives each sample's per-class binary
masks exactly as ``segment`` scores them, whatever other samples are asked for, and ``label_map``
stacks them into one label map (the cup drawn over the rim)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from medequity.experiment import ExperimentSpec, run_experiment
from medequity.metrics.segmentation import cup_to_disc_ratio_error
from medequity.usages.seg_zero_shot import PromptedSegmenter


@pytest.fixture(scope="module")
def fundus(tmp_path_factory):
    """A zero-shot sam_tiny run on fundus images (two foreground classes, rim and cup), random points."""
    spec = ExperimentSpec(dataset="synthetic-segmentation",
                          dataset_options={"preset": "seg-fundus-rimcup", "n": 40, "image_size": 32},
                          attribute="race", eval_attributes=["race"], task="segmentation", model="sam_tiny",
                          usage="seg_zs", usage_params={"prompt": "rands"}, n_boot=10, n_permutations=10,
                          cache_dir=str(tmp_path_factory.mktemp("cache")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_experiment(spec), spec.seed


def test_label_map_puts_the_higher_class_over_the_lower_one():
    rim = np.array([[1, 1, 0], [1, 1, 0]], dtype=bool)
    cup = np.array([[0, 1, 1], [0, 0, 0]], dtype=bool)
    expected = np.array([[1, 2, 2], [1, 1, 0]])
    np.testing.assert_array_equal(PromptedSegmenter.label_map({2: cup, 1: rim}, (2, 3)), expected)
    np.testing.assert_array_equal(PromptedSegmenter.label_map({}, (2, 3)), np.zeros((2, 3), dtype=np.int64))


def test_predicted_masks_are_the_masks_segment_scores(fundus):
    result, seed = fundus
    model, test = result.model, result.data["test"]
    rows = pd.DataFrame(list(model.segment(test, seed=seed)))
    positions = [len(test) - 1, 0, 2]  # any order, any subset
    masks = model.predict_masks(test, positions, seed=seed)
    assert list(masks) == positions
    for i in positions:
        item = test.items[i]
        truth = np.asarray(item["mask"])
        mine = rows[(rows["index"] == i) & ~rows.skipped.astype(bool)].set_index("class")
        assert sorted(masks[i]) == sorted(mine.index) == sorted(int(c) for c in np.unique(truth) if c)
        for cls, pred in masks[i].items():
            assert pred.shape == truth.shape and pred.dtype == bool
            t = truth == cls
            dice = 2 * (pred & t).sum() / (pred.sum() + t.sum())  # Dice by hand, at the original size
            assert dice == pytest.approx(mine.dice[cls], abs=1e-12) and pred.sum() == mine.pred_area[cls]
        # the label map of the masks is the one segment() measured the cup-to-disc ratio error on
        label = model.label_map(masks[i], truth.shape)
        error = cup_to_disc_ratio_error(label[None], truth[None].astype(np.int64)).values[0]
        assert error == pytest.approx(mine.cdr_error.iloc[0], abs=1e-12)
    # a sample's masks do not depend on the other samples asked for (prompts draw from per-sample RNGs)
    alone = model.predict_masks(test, [2], seed=seed)[2]
    assert all(np.array_equal(alone[c], masks[2][c]) for c in masks[2])
    other_seed = model.predict_masks(test, [2], seed=seed + 1)[2]  # new random points: other masks
    assert any(not np.array_equal(other_seed[c], masks[2][c]) for c in masks[2])
