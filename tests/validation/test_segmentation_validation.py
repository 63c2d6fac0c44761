"""The segmentation mitigation validation: its paired bootstrap and trivial predictors against hand
computations, the preset's affected group, a quick run end to end and the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from medequity.cli import app
from medequity.data import create_dataset
from medequity.validation.segmentation import affected_group, paired_bootstrap, trivial_dice, validate_segmentation


def test_affected_group_is_the_presets_knob_group():
    assert affected_group("seg-derm-contrast") == ("skin_tone", "IV-VI")
    assert affected_group("seg-derm-scale") == ("age", ">60")
    assert affected_group("seg-derm-lesion") == ("skin_tone", "IV-VI")  # contrast, not representation
    with pytest.raises(ValueError, match="has no bias knob"):
        affected_group("seg-derm-unbiased")


def test_paired_bootstrap_of_a_method_that_adds_a_constant_on_the_affected_group():
    rng = np.random.default_rng(0)
    groups = np.array(["a"] * 30 + ["b"] * 20)
    erm = np.where(groups == "b", 0.6, 0.8) + rng.normal(0, 0.05, 50)
    better = erm + np.where(groups == "b", 0.1, 0.0)
    stats = paired_bootstrap(np.stack([erm, better]), groups, "b", n_boot=300)
    point_gap = [abs(v[groups == "a"].mean() - v[groups == "b"].mean()) for v in (erm, better)]
    np.testing.assert_allclose(stats["gap"][:, 0], point_gap)
    np.testing.assert_allclose(stats["affected_dice"][:, 0], [erm[groups == "b"].mean(), better[groups == "b"].mean()])
    np.testing.assert_allclose(stats["dice"][:, 0], [erm.mean(), better.mean()])
    # paired: the same resample for both rows, so a constant shift has a zero-width CI
    np.testing.assert_allclose(stats["effect_affected_dice"][1], [0.1, 0.1, 0.1], atol=1e-12)
    np.testing.assert_allclose(stats["effect_gap"][1], [-0.1, -0.1, -0.1], atol=1e-12)
    np.testing.assert_allclose(stats["effect_gap"][0], [0.0, 0.0, 0.0])
    low, high = stats["gap"][0, 1:]
    assert low < point_gap[0] < high and high - low > 0.01  # sampling noise gives the gap itself a CI
    with pytest.raises(ValueError, match="needs the affected group 'c'"):
        paired_bootstrap(np.stack([erm]), groups, "c", n_boot=10)


def test_trivial_predictors_by_hand():
    dataset = create_dataset("synthetic-segmentation", preset="seg-derm-contrast", n=60, image_size=32)
    table, masks = dataset.table, np.asarray(dataset.masks) > 0
    test, train = masks[(table.split == "test").to_numpy()], masks[(table.split == "train").to_numpy()]
    all_foreground = np.mean([2 * t.sum() / (t.sum() + t.size) for t in test])
    prior = train.mean(axis=0) > 0.5
    prior_dice = np.mean([2 * (t & prior).sum() / (t.sum() + prior.sum()) for t in test])
    assert trivial_dice(dataset, "skin_tone") == pytest.approx({"all_foreground": all_foreground, "prior_mask": prior_dice})


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the command does: a shared CPU is fastest with one thread
    try:
        return validate_segmentation(methods=("seg_thresholds",), size="quick", n=200, epochs=3,
                                     cache_dir=tmp_path_factory.mktemp("cache"))
    finally:
        torch.set_num_threads(threads)


def test_quick_validation_measures_each_method_against_erm(quick):
    table = quick.table.set_index("method")
    assert list(table.index) == ["erm", "seg_thresholds"]
    assert table.loc["erm", ["effect_affected_dice", "effect_gap"]].tolist() == [0.0, 0.0]
    for row in table.itertuples():
        assert row.affected_dice_low <= row.affected_dice <= row.affected_dice_high
        assert row.gap_low <= row.gap <= row.gap_high
    assert [c.name for c in quick.claims] == ["erm_learned", "bias_present", "seg_thresholds_learned"]
    floor = max(quick.settings["trivial_test_dice"].values())
    assert quick.claim("erm_learned").bound == pytest.approx(floor + 0.03)
    assert quick.claim("erm_learned").observed == pytest.approx(table.loc["erm", "dice"])
    assert quick.claim("bias_present").observed == pytest.approx(table.loc["erm", "shortfall_low"])
    runs = quick.settings["runs"]
    assert len(runs) == 2 and all(r["selected"] for r in runs)  # one learning rate, one seed: each run is kept


def test_cli_validate_segmentation_says_the_expected_duration_and_writes_its_files(quick, tmp_path, monkeypatch):
    import medequity.validation.segmentation as module

    monkeypatch.setattr(module, "validate_segmentation", lambda *a, **k: quick)
    result = CliRunner().invoke(app, ["validate", "segmentation", "--quick", "--method", "seg_thresholds", "--out", str(tmp_path)])
    assert result.exit_code == (0 if quick.passed else 1), result.output
    output = " ".join(result.output.split())  # the console wraps long lines
    assert "2 training runs, expected under a minute" in output
    assert "seg_thresholds Dice" in output and "vs ERM" in output
    saved = json.loads((tmp_path / "segmentation" / "validation.json").read_text())
    assert [row["method"] for row in saved["table"]] == ["erm", "seg_thresholds"]


def test_cli_refuses_an_unknown_method_before_training():
    bad = CliRunner().invoke(app, ["validate", "segmentation", "--quick", "--method", "nope"])
    assert bad.exit_code == 2 and "unknown method(s) ['nope']" in bad.output
