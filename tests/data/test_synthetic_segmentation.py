"""Synthetic segmentation data: each knob lowers the affected group's achievable Dice, no knob no gap.

Gaps are judged against the sampling noise the test computes (two-sample z on per-sample Dice),
and knob effects are paired: one seed gives the same patients, shapes and noise in every preset,
so the unaffected group's images and masks are bit-identical between a biased preset and the
unbiased one.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest

from medequity.data import create_dataset
from medequity.data.prompts import inside_rate, make_prompts
from medequity.data.synthetic import SyntheticConfigError
from medequity.data.synthetic_segmentation import (
    SEG_PRESETS,
    _generate,
    list_segmentation_presets,
    make_synthetic_segmentation,
    oracle_group_dice,
    threshold_segment,
)
from medequity.metrics.segmentation import dice_per_sample

N = 800
SEED = 0


N_VOLUMES = 400  # 16×32×32 volumes: 4× the voxels of a 64×64 image


@functools.cache
def data(preset: str, n: int | None = None, seed: int = SEED):
    if n is None:
        n = N_VOLUMES if preset.startswith("seg-organ") else N
    return make_synthetic_segmentation(preset, n=n, seed=seed)


@functools.cache
def segmenter_dice(preset: str) -> np.ndarray:
    ds = data(preset)
    classes = sorted(c for c in ds.info["mask_labels"] if c)
    return dice_per_sample(threshold_segment(ds), ds.masks, classes=classes).values


def group_masks(ds, attribute):
    groups = ds.table["group:" + attribute].astype(object)
    return {g: (groups == g).to_numpy() for g in sorted(groups.dropna().unique())}


def gap_z(values: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean difference (a − b) and its z score."""
    x, y = values[a], values[b]
    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    diff = x.mean() - y.mean()
    se = np.sqrt(x.var(ddof=1) / len(x) + y.var(ddof=1) / len(y))
    return float(diff), float(diff / se)


# --- the dataset contract ------------------------------------------------------------------------


def test_dataset_columns_arrays_and_registry():
    ds = data("seg-derm-unbiased")
    assert ds.task == "segmentation" and len(ds) == N
    assert ds.images.shape == (N, 64, 64, 3) and ds.images.dtype == np.uint8
    assert ds.masks.shape == (N, 64, 64) and set(np.unique(ds.masks)) <= {0, 1}
    for column in ("sample_id", "patient_id", "label", "split", "sex", "age", "skin_tone",
                   "group:sex", "group:age", "group:skin_tone", "oracle_dice"):
        assert column in ds.table.columns
    assert ds.table["sample_id"].is_unique and (ds.table["label"] == 1).all()
    assert ds.table.groupby("patient_id")["split"].nunique().max() == 1  # a patient is in one split
    assert ds.info["affected_groups"] == {}
    via_registry = create_dataset("synthetic-segmentation", preset="seg-derm-unbiased", n=50, seed=SEED)
    assert np.array_equal(via_registry.masks, data("seg-derm-unbiased", n=50).masks)
    assert set(list_segmentation_presets()) == set(SEG_PRESETS.names())
    assert {"seg-derm-lesion", "seg-derm-unbiased", "seg-derm-contrast", "seg-derm-annotation", "seg-derm-scale",
            "seg-derm-representation", "seg-fundus-rimcup", "seg-organ-3d"} <= set(SEG_PRESETS.names())


def test_fundus_rim_and_cup_and_3d_volumes():
    fundus = data("seg-fundus-rimcup", n=200)
    assert fundus.images.shape == (200, 64, 64, 3) and set(np.unique(fundus.masks)) == {0, 1, 2}
    for mask in fundus.masks[:20]:  # the cup sits inside the disc: no cup pixel touches background
        cup = mask == 2
        assert cup.any() and (mask[np.roll(cup, 1, 0) & cup] != 0).all()
    assert {"oracle_dice:rim", "oracle_dice:cup"} <= set(fundus.table.columns)
    assert {"group:race", "race"} <= set(fundus.table.columns)
    volume = data("seg-organ-3d", n=100)
    assert volume.images.shape == (100, 16, 32, 32) and volume.masks.shape == (100, 16, 32, 32)
    assert set(np.unique(volume.masks)) == {0, 1}
    bigger = make_synthetic_segmentation("seg-organ-3d", n=5, seed=0, image_size=48)
    assert bigger.images.shape == (5, 24, 48, 48)


def test_same_seed_same_data_other_seed_other_data():
    a, b = make_synthetic_segmentation("seg-derm-contrast", n=60, seed=3), make_synthetic_segmentation("seg-derm-contrast", n=60, seed=3)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks) and a.table.equals(b.table)
    c = make_synthetic_segmentation("seg-derm-contrast", n=60, seed=4)
    assert not np.array_equal(a.images, c.images)


def test_oracle_dice_is_the_visible_object_against_the_annotation():
    ds, visible = _generate("seg-fundus-rimcup", n=100, seed=1)
    expected = dice_per_sample(visible, ds.masks, classes=[1, 2])
    assert np.allclose(ds.table["oracle_dice"], expected.values)
    assert np.allclose(ds.table["oracle_dice:cup"], expected.per_class[:, 1])
    by_group = oracle_group_dice(ds, "race")
    for group, value in by_group.items():
        assert value == pytest.approx(ds.table.loc[ds.table["group:race"] == group, "oracle_dice"].mean())
    assert oracle_group_dice(ds, "race", split="test").index.name == "race"
    with pytest.raises(KeyError, match="skin_tone"):
        oracle_group_dice(ds, "skin_tone")


def test_absent_objects_give_empty_masks_label_zero_and_no_oracle():
    ds = make_synthetic_segmentation("seg-derm-unbiased", n=400, seed=0, presence=0.8)
    absent = ds.table["label"].to_numpy() == 0
    assert 40 < absent.sum() < 120  # P(absent) = 0.2
    assert not ds.masks[absent].any() and ds.masks[~absent].reshape((~absent).sum(), -1).any(axis=1).all()
    assert ds.table.loc[absent, "oracle_dice"].isna().all() and ds.table.loc[~absent, "oracle_dice"].notna().all()
    assert oracle_group_dice(ds, "sex").notna().all()
    # Prompts skip absent objects rather than crash.
    assert make_prompts(ds.masks[np.flatnonzero(absent)[0]], "center", seed=0, sample_id="x", classes=[1]) == {1: None}


def test_config_errors_name_the_valid_choices():
    with pytest.raises(SyntheticConfigError, match="valid keys"):
        make_synthetic_segmentation("seg-derm-unbiased", n=10, contrastt={"strength": 0.2})
    with pytest.raises(SyntheticConfigError, match="skin_tone"):
        make_synthetic_segmentation("seg-fundus-rimcup", n=10, contrast={"attribute": "skin_tone", "strength": 0.2})
    with pytest.raises(SyntheticConfigError, match="scale.strength"):
        make_synthetic_segmentation("seg-derm-scale", n=10, scale={"strength": 0.95})
    with pytest.raises(KeyError, match="seg-derm-lesion"):
        make_synthetic_segmentation("seg-nope", n=10)


def test_generating_500_images_is_fast():
    start = time.perf_counter()
    make_synthetic_segmentation("seg-derm-lesion", n=500, seed=5, image_size=64)
    elapsed = time.perf_counter() - start
    assert elapsed < 4.0, f"500 64x64 images took {elapsed:.2f}s"


# --- no knob, no gap ---------------------------------------------------------------------------


@pytest.mark.parametrize("preset,attributes", [
    ("seg-derm-unbiased", ["skin_tone", "sex", "age"]),
    ("seg-fundus-rimcup", ["race", "sex"]),
    ("seg-organ-3d", ["sex", "age"]),
    ("seg-derm-representation", ["skin_tone"]),
])
def test_without_a_dice_knob_groups_are_equal(preset, attributes):
    ds = data(preset)
    oracle = ds.table["oracle_dice"].to_numpy()
    segmented = segmenter_dice(preset)
    assert np.nanmean(oracle) > 0.75 and np.nanmean(segmented) > 0.7
    for attribute in attributes:
        (a, mask_a), (b, mask_b) = group_masks(ds, attribute).items()
        for values in (oracle, segmented):
            diff, z = gap_z(values, mask_a, mask_b)
            assert abs(z) < 3.5 and abs(diff) < 0.02, (attribute, a, b, diff, z)
        # Object size does not depend on the group either.
        _, z_area = gap_z(ds.table["annotated_area"].to_numpy(float), mask_a, mask_b)
        assert abs(z_area) < 3.5


def test_representation_sets_the_share_only():
    ds = data("seg-derm-representation")
    share = (ds.table["group:skin_tone"] == "IV-VI").mean()
    assert abs(share - 0.15) < 0.04
    assert ds.info["affected_groups"] == {"representation": "IV-VI"}


# --- each knob lowers the affected group's Dice ------------------------------------------------


KNOBS = [
    ("seg-derm-contrast", "seg-derm-unbiased", "skin_tone", "IV-VI", 0.08),
    ("seg-derm-annotation", "seg-derm-unbiased", "skin_tone", "IV-VI", 0.05),
    ("seg-derm-scale", "seg-derm-unbiased", "age", ">60", 0.03),
    ("seg-derm-lesion", "seg-derm-unbiased", "skin_tone", "IV-VI", 0.03),
    ("seg-fundus-race-contrast", "seg-fundus-rimcup", "race", "non-White", 0.05),
    ("seg-organ-3d-scale", "seg-organ-3d", "sex", "female", 0.03),
]


@pytest.mark.parametrize("preset,reference,attribute,affected,min_gap", KNOBS)
def test_each_knob_lowers_the_affected_groups_oracle_and_segmenter_dice(preset, reference, attribute, affected, min_gap):
    ds = data(preset)
    groups = group_masks(ds, attribute)
    other = next(g for g in groups if g != affected)
    for values in (ds.table["oracle_dice"].to_numpy(), segmenter_dice(preset)):
        diff, z = gap_z(values, groups[other], groups[affected])
        assert diff > min_gap and z > 4, (preset, diff, z)
    oracle = oracle_group_dice(ds, attribute)
    assert oracle[affected] < oracle[other] - min_gap
    if preset == "seg-derm-lesion":
        return  # representation changes who is drawn: no row-wise pairing with the reference
    base = data(reference)
    assert base.table[f"group:{attribute}"].equals(ds.table[f"group:{attribute}"])
    hit, spared = groups[affected], groups[other]
    # Paired: the affected group lost Dice against the same samples without the knob ...
    paired = ds.table["oracle_dice"].to_numpy()[hit] - base.table["oracle_dice"].to_numpy()[hit]
    assert np.nanmean(paired) < -min_gap
    assert np.nanmean(segmenter_dice(preset)[hit] - segmenter_dice(reference)[hit]) < -min_gap
    # ... while the other group's images and masks are bit-identical.
    assert np.array_equal(ds.images[spared], base.images[spared]) and np.array_equal(ds.masks[spared], base.masks[spared])


def test_contrast_leaves_masks_alone_and_annotation_leaves_images_alone():
    unbiased, contrast, annotation = data("seg-derm-unbiased"), data("seg-derm-contrast"), data("seg-derm-annotation")
    assert np.array_equal(unbiased.masks, contrast.masks)  # masks do not follow the rendered contrast
    assert np.array_equal(unbiased.images, annotation.images)
    hit = (annotation.table["group:skin_tone"] == "IV-VI").to_numpy()
    grown = annotation.table["annotated_area"].to_numpy()[hit] - unbiased.table["annotated_area"].to_numpy()[hit]
    assert (grown > 0).all()
    assert (annotation.masks[hit] >= unbiased.masks[hit]).all()  # dilation contains the original


def test_stronger_knobs_lower_dice_more():
    means = []
    for strength in (0.0, 0.15, 0.3, 0.45):
        ds = make_synthetic_segmentation("seg-derm-contrast", n=300, seed=2, contrast={"strength": strength})
        means.append(oracle_group_dice(ds, "skin_tone")["IV-VI"])
    assert all(a > b for a, b in zip(means, means[1:])), means
    eroded = make_synthetic_segmentation("seg-derm-annotation", n=300, seed=2, annotation={"pixels": -2.0})
    assert oracle_group_dice(eroded, "skin_tone")["IV-VI"] < oracle_group_dice(eroded, "skin_tone")["I-III"] - 0.05


def test_center_prompts_on_generated_masks():
    ds = data("seg-fundus-rimcup", n=100)
    rim = [make_prompts(m, "center", seed=0, sample_id=s, classes=[1])[1] for m, s in zip(ds.masks, ds.table["sample_id"])]
    interior = [make_prompts(m, "center", seed=0, sample_id=s, classes=[1], mode="interior")[1]
                for m, s in zip(ds.masks, ds.table["sample_id"])]
    # The rim is a ring around the cup: its box centre lands in the cup, never on the rim.
    assert inside_rate(rim) < 0.05 and inside_rate(interior) == 1.0


# --- the audit's verdicts: no knob, every group's interval covers 0; a knob, the affected group flagged ----


def _contrasts(values, ds, attribute):
    import warnings

    from medequity.metrics import GroupMetricWarning
    from medequity.metrics.segmentation import segmentation_group_metrics_from_values

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GroupMetricWarning)
        result = segmentation_group_metrics_from_values(values, sensitive_features=ds.table[f"group:{attribute}"],
                                                        n_boot=400, random_state=0)
    return result, result.contrasts().set_index("group")


@pytest.mark.parametrize("preset,attribute", [("seg-derm-unbiased", "skin_tone"), ("seg-fundus-rimcup", "race")])
def test_without_a_knob_every_group_vs_all_interval_covers_zero(preset, attribute):
    ds = data(preset)
    result, table = _contrasts(segmenter_dice(preset), ds, attribute)
    assert (table.ci_low < 0).all() and (table.ci_high > 0).all(), table
    assert not table.significant.any()
    delta = result.fairness_table().set_index("summary").loc["delta"]
    assert delta.p_value >= 0.05  # the omnibus test agrees with the intervals


@pytest.mark.parametrize("preset,attribute,affected", [("seg-derm-contrast", "skin_tone", "IV-VI"),
                                                       ("seg-derm-annotation", "skin_tone", "IV-VI")])
def test_a_knob_makes_the_affected_group_significantly_worse_than_all(preset, attribute, affected):
    ds = data(preset)
    result, table = _contrasts(segmenter_dice(preset), ds, attribute)
    assert table.loc[affected].significant and table.loc[affected].ci_high < 0
    assert result.fairness_table().set_index("summary").loc["delta"].p_value < 0.05


def _box_fill_dice(masks: np.ndarray) -> float:
    """Mean Dice of each mask's filled bounding box against the mask."""
    scores = []
    for mask in masks > 0:
        ys, xs = np.nonzero(mask)
        box = np.zeros_like(mask)
        box[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
        scores.append(2 * (box & mask).sum() / (box.sum() + mask.sum()))
    return float(np.mean(scores))


def test_irregular_lesions_fill_their_bounding_box_less_than_the_default_ones():
    default = make_synthetic_segmentation("seg-derm-unbiased", n=80, seed=4, image_size=32)
    irregular = make_synthetic_segmentation("seg-derm-irregular", n=80, seed=4, image_size=32)
    np.testing.assert_array_equal(irregular.table.skin_tone, default.table.skin_tone)  # only the geometry differs
    assert _box_fill_dice(irregular.masks) < _box_fill_dice(default.masks) - 0.05
    with pytest.raises(SyntheticConfigError, match="elongation"):
        make_synthetic_segmentation("seg-derm-unbiased", n=10, elongation=0.5)
