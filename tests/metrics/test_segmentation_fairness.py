"""Group summaries of segmentation metrics (FairMedFM Δ/STD/Skew/DSC_ES, FairSeg ES-Dice/ES-IoU),
per-patient means, vertical cup-to-disc ratio error."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medequity.metrics import (
    GroupMetricWarning,
    cup_to_disc_ratio_error,
    dice_per_sample,
    iou_per_sample,
    patient_means,
    segmentation_disparities,
    segmentation_group_metrics,
    segmentation_group_metrics_from_values,
    vertical_cup_to_disc_ratio,
)

QUIET = {"min_group_size": 1}


# --- aggregate level -------------------------------------------------------------------------------


def test_fairmedfm_table2_sam_row():
    # FairMedFM Table 2, SAM: DSC 83.55, Female 84.47 / Male 82.74 -> Δ 1.73, STD 0.86(5), Skew 1.11, DSC_ES 82.83.
    # The overall is the mean over samples (not the mean of the two group means, 83.605).
    d = segmentation_disparities(0.8355, [0.8447, 0.8274])
    assert round(100 * float(d["delta"]), 2) == 1.73
    assert float(d["std"]) == pytest.approx(0.00865, abs=1e-12)
    assert round(100 * float(d["std"]), 2) in (0.86, 0.87)  # 0.865 exactly; the paper prints 0.86
    assert round(float(d["skew"]), 2) == 1.11
    assert round(100 * float(d["es_std"]), 2) == 82.83
    assert float(d["worst"]) == 0.8274


def test_three_groups_by_hand():
    d = segmentation_disparities(0.75, [0.9, 0.8, 0.6])
    mean = (0.9 + 0.8 + 0.6) / 3
    std = np.sqrt(((0.9 - mean) ** 2 + (0.8 - mean) ** 2 + (0.6 - mean) ** 2) / 3)
    assert float(d["delta"]) == pytest.approx(0.3)
    assert float(d["std"]) == pytest.approx(std) and std == pytest.approx(0.1247219, abs=1e-7)
    assert float(d["skew"]) == pytest.approx(0.4 / 0.1)
    assert float(d["es_std"]) == pytest.approx(0.75 / (1 + std))
    assert float(d["es_sum_abs_dev"]) == pytest.approx(0.75 / (1 + 0.15 + 0.05 + 0.15))  # FairSeg ES-Dice
    assert float(d["worst"]) == 0.6


def test_lower_is_better_has_no_skew_or_es():
    d = segmentation_disparities(3.0, [2.0, 5.0, 3.5], higher_is_better=False)
    assert set(d) == {"overall", "worst", "delta", "std"} and float(d["worst"]) == 5.0


group_lists = st.lists(st.floats(0.0, 0.999), min_size=2, max_size=7)


@settings(max_examples=200, deadline=None)
@given(group_lists, st.floats(0.0, 1.0), st.randoms(use_true_random=False))
def test_disparity_properties(groups, overall, random):
    d = segmentation_disparities(overall, groups)
    assert d["delta"] >= 0 and d["std"] >= 0
    assert d["std"] <= d["delta"] / 2 + 1e-12  # population std of values in [min, max]
    assert d["skew"] >= 1 - 1e-12
    assert d["es_std"] <= overall + 1e-12 and d["es_sum_abs_dev"] <= overall + 1e-12
    assert d["worst"] == min(groups)
    shuffled = list(groups)
    random.shuffle(shuffled)
    again = segmentation_disparities(overall, shuffled)
    for key in d:
        assert float(again[key]) == pytest.approx(float(d[key]), rel=1e-12, abs=1e-15)
    if len(set(groups)) == 1:
        assert d["delta"] == 0 and d["skew"] == pytest.approx(1.0)


def test_nan_group_propagates_not_fair():
    d = segmentation_disparities(0.8, [0.8, np.nan, 0.7])
    assert all(np.isnan(float(d[k])) for k in ("worst", "delta", "std", "skew", "es_std", "es_sum_abs_dev"))


# --- sample level ----------------------------------------------------------------------------------


def _values_three_groups(seed=0, n=90, shift=(0.0, 0.0, 0.0)):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.array(["a", "b", "c"]), n // 3)
    values = np.clip(rng.normal(0.8, 0.05, n) - np.repeat(np.asarray(shift), n // 3), 0, 1)
    return values, groups


def test_group_means_and_table_match_hand_computation():
    values, groups = _values_three_groups(shift=(0.0, 0.05, 0.15))
    values[3] = np.nan  # an undefined sample (both masks empty): excluded from the means
    with pytest.warns(GroupMetricWarning, match="1 of 90 samples are undefined"):
        result = segmentation_group_metrics_from_values(values, sensitive_features=groups, n_boot=200, n_permutations=200, **QUIET)
    means = np.array([np.nanmean(values[groups == g]) for g in "abc"])
    np.testing.assert_allclose(result.by_group["dice"], means, rtol=1e-12)
    assert result.values["dice"][0] == pytest.approx(np.nanmean(values))
    table = result.fairness_table().set_index("summary")
    expected = segmentation_disparities(np.nanmean(values), means)
    for key, value in expected.items():
        assert table.loc[key, "value"] == pytest.approx(float(value), rel=1e-12)
        assert table.loc[key, "ci_low"] <= table.loc[key, "ci_high"]
    assert table.loc["delta", "ci_low"] <= table.loc["delta", "value"] <= table.loc["delta", "ci_high"]
    for key in ("delta", "std", "skew", "es_std", "es_sum_abs_dev"):
        assert table.loc[key, "p_value"] == pytest.approx(1 / 201)  # strong disparity: no permutation reaches it
    assert table.loc["delta", "p_value"] == pytest.approx(result.summaries().set_index("summary").loc["gap", "p_value"])
    assert result.settings()["n_undefined_samples"] == 1


def test_no_disparity_gives_large_p_and_reproducible_results():
    values = np.tile([0.7, 0.8, 0.9], 20)
    groups = np.repeat(["a", "b", "c"], 20)  # every group holds 0.7/0.8/0.9 equally -> identical means
    values = values.reshape(3, 20).T.ravel()
    first = segmentation_group_metrics_from_values(values, sensitive_features=groups, n_boot=100, n_permutations=100, **QUIET)
    table = first.fairness_table().set_index("summary")
    assert table.loc["delta", "value"] == pytest.approx(0, abs=1e-12)
    assert table.loc["delta", "p_value"] == 1.0 and table.loc["std", "p_value"] == 1.0
    again = segmentation_group_metrics_from_values(values, sensitive_features=groups, n_boot=100, n_permutations=100, **QUIET)
    pd.testing.assert_frame_equal(first.fairness_table(), again.fairness_table())


def test_intersections_are_groups():
    values, _ = _values_three_groups(n=120)
    rng = np.random.default_rng(1)
    features = pd.DataFrame({"sex": rng.choice(["F", "M"], 120), "age": rng.choice(["<60", ">=60"], 120)})
    result = segmentation_group_metrics_from_values(values, sensitive_features=features, n_boot=50, n_permutations=50, **QUIET)
    assert result.attribute == "sex & age" and len(result.groups) == 4
    for name, value in result.by_group["dice"].items():
        sex, age = str(name).split(" & ")
        member = ((features.sex == sex) & (features.age == age)).to_numpy()
        assert value == pytest.approx(values[member].mean())
    assert len(result.fairness_table()) == 7


def test_masks_end_to_end_dice_iou_es():
    rng = np.random.default_rng(2)
    true = (rng.random((30, 10, 10)) < 0.4).astype(int)
    noise = np.repeat([0.05, 0.2, 0.4], 10)[:, None, None]
    pred = np.where(rng.random(true.shape) < noise, 1 - true, true)
    groups = np.repeat(["g0", "g1", "g2"], 10)
    for metric, per_sample in (("dice", dice_per_sample), ("iou", iou_per_sample)):
        result = segmentation_group_metrics(pred, true, sensitive_features=groups, metric=metric, n_boot=0, n_permutations=0, **QUIET)
        values = per_sample(pred, true).values
        means = np.array([values[groups == g].mean() for g in ("g0", "g1", "g2")])
        overall = values.mean()
        es = result.fairness_table().set_index("summary").loc["es_sum_abs_dev", "value"]
        assert es == pytest.approx(overall / (1 + np.abs(overall - means).sum()))  # FairSeg ES-Dice / ES-IoU
        assert result.settings()["empty"] == "nan"


def test_hd95_nsd_cdr_group_metrics():
    true = np.zeros((12, 16, 16), int)
    true[:, 4:12, 4:12] = 1
    true[:, 6:10, 6:10] = 2
    pred = np.stack([np.roll(t, int(s), axis=1) for t, s in zip(true, np.repeat([0, 1, 3], 4))])
    pred[0] = 0  # an empty prediction: HD95 one-sided
    groups = np.repeat(["a", "b", "c"], 4)
    with pytest.raises(ValueError, match="infinite.*one_empty='diagonal'"):
        segmentation_group_metrics(pred, true, sensitive_features=groups, metric="hd95", one_empty="inf", **QUIET)
    hd = segmentation_group_metrics(pred, true, sensitive_features=groups, metric="hd95", spacing=(0.5, 0.5),
                                    n_boot=50, n_permutations=50, **QUIET)
    table = hd.fairness_table().set_index("summary")
    assert list(table.index) == ["overall", "worst", "delta", "std"]
    assert table.loc["worst", "value"] == hd.by_group["hd95"].max()  # lower is better
    assert hd.settings()["one_empty"] == "diagonal" and hd.settings()["n_one_empty_pairs"] == 2
    nsd = segmentation_group_metrics(pred, true, sensitive_features=groups, metric="nsd", tolerance=1.0,
                                     n_boot=0, n_permutations=0, **QUIET)
    assert nsd.by_group["nsd"]["a"] < 1 and nsd.by_group["nsd"]["c"] < nsd.by_group["nsd"]["b"]
    with pytest.warns(GroupMetricWarning, match="cdr_error: 1 of 12 samples are undefined"):  # the empty prediction
        cdr = segmentation_group_metrics(pred, true, sensitive_features=groups, metric="cdr_error", n_boot=0, n_permutations=0, **QUIET)
    assert cdr.by_group["cdr_error"]["b"] == 0.0  # a vertical shift keeps the vertical CDR
    with pytest.raises(ValueError, match="metric must be one of"):
        segmentation_group_metrics(pred, true, sensitive_features=groups, metric="hd")


def test_undefined_group_warns_and_is_nan():
    values = np.r_[np.full(5, np.nan), np.linspace(0.5, 0.9, 10)]
    groups = np.repeat(["empty", "x", "y"], 5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = segmentation_group_metrics_from_values(values, sensitive_features=groups, n_boot=20, n_permutations=20, **QUIET)
    messages = [str(w.message) for w in caught if issubclass(w.category, GroupMetricWarning)]
    assert any("'empty'" in m and "undefined" in m for m in messages)
    assert np.isnan(result.by_group["dice"]["empty"])
    table = result.fairness_table().set_index("summary")
    assert np.isnan(table.loc["delta", "value"]) and np.isnan(table.loc["es_std", "value"])  # never "fair"


# --- patients --------------------------------------------------------------------------------------


def test_patient_means_by_hand():
    out = patient_means([0.2, 0.4, np.nan, 0.9, np.nan], ["p2", "p2", "p1", "p1", "p3"],
                        sensitive_features=pd.Series(["F", "F", "M", "M", "F"], name="sex"))
    assert list(out.patient_ids) == ["p1", "p2", "p3"]
    np.testing.assert_allclose(out.values, [0.9, 0.3, np.nan])
    assert list(out.n_samples) == [2, 2, 1]
    assert list(out.sensitive_features["sex"]) == ["M", "F", "F"]
    with pytest.raises(ValueError, match="differ between samples of patient 'p1'"):
        patient_means([1, 2, 3], ["p1", "p1", "p2"], sensitive_features=["F", "M", "F"])
    with pytest.raises(ValueError, match="different lengths"):
        patient_means([1, 2, 3], ["p1", "p1"])


def test_patient_aggregation_in_group_metrics():
    values = np.array([0.9, 0.7, 0.5, 0.6, 0.6, 0.4])
    patients = np.array([1, 1, 2, 3, 3, 4])
    sex = np.array(["F", "F", "F", "M", "M", "M"])
    result = segmentation_group_metrics_from_values(values, sensitive_features=sex, patient_ids=patients,
                                                    n_boot=0, n_permutations=0, **QUIET)
    # patients: 1 -> 0.8 (F), 2 -> 0.5 (F), 3 -> 0.6 (M), 4 -> 0.4 (M)
    assert result.by_group["dice"]["F"] == pytest.approx(0.65)
    assert result.by_group["dice"]["M"] == pytest.approx(0.5)
    assert result.values["dice"][0] == pytest.approx((0.8 + 0.5 + 0.6 + 0.4) / 4)
    assert result.settings()["n_patients"] == 4 and result.settings()["aggregation"] == "mean per patient"


# --- cup-to-disc ratio -----------------------------------------------------------------------------


def _fundus(disc_rows, cup_rows, disc_cols=(3, 13), cup_cols=(6, 10), size=16):
    """A hand-drawn FairSeg mask: rim 1 over the disc box, cup 2 over the cup box."""
    mask = np.zeros((size, size), int)
    mask[disc_rows[0] : disc_rows[1], disc_cols[0] : disc_cols[1]] = 1
    if cup_rows is not None:
        mask[cup_rows[0] : cup_rows[1], cup_cols[0] : cup_cols[1]] = 2
    return mask


def test_vertical_cdr_hand_drawn():
    masks = np.stack([
        _fundus((2, 10), (4, 8)),  # disc 8 rows, cup 4 rows -> 0.5
        _fundus((2, 10), (4, 9)),  # cup 5 rows -> 0.625
        _fundus((2, 10), None),  # no cup -> 0
        np.zeros((16, 16), int),  # no disc -> NaN
        _fundus((2, 10), (5, 7), cup_cols=(3, 13)),  # wide flat cup: vertical 2/8, not horizontal 10/10
    ])
    cdr = vertical_cup_to_disc_ratio(masks)
    np.testing.assert_allclose(cdr, [0.5, 0.625, 0.0, np.nan, 0.25])
    # a cup with a gap still spans its rows; the disc is rim ∪ cup (a cup sticking out of the rim counts)
    ring = _fundus((3, 9), (4, 8))
    ring[5:7, 6:10] = 1
    ring[1:3, 7] = 2
    assert vertical_cup_to_disc_ratio(ring[None])[0] == pytest.approx(7 / 8)


def test_cdr_error_per_sample():
    true = np.stack([_fundus((2, 10), (4, 8)), _fundus((2, 10), (4, 8)), _fundus((2, 10), (4, 8))])
    pred = np.stack([_fundus((2, 10), (4, 9)), _fundus((1, 11), (4, 8)), np.zeros((16, 16), int)])
    result = cup_to_disc_ratio_error(pred, true)
    np.testing.assert_allclose(result.values, [0.125, 0.1, np.nan])
    np.testing.assert_allclose(result.cdr_pred, [0.625, 0.4, np.nan])
    assert result.n_undefined == 1 and result.settings()["n_undefined_cdr"] == 1
    with pytest.raises(ValueError, match="negative labels.*rim -1, cup -2"):
        cup_to_disc_ratio_error(-pred, true)
    with pytest.raises(ValueError, match="H, W"):
        cup_to_disc_ratio_error(pred[..., None], true[..., None])


def test_bad_masks_and_missing_attributes():
    masks = np.zeros((3, 4, 4), int)
    with pytest.raises(ValueError, match="y_pred must be an integer label mask.*0.7"):
        dice_per_sample(masks + 0.7, masks)
    with pytest.raises(ValueError, match="y_true must be an integer label mask"):
        iou_per_sample(masks, masks.astype(str))
    with pytest.raises(ValueError, match="different lengths"):
        segmentation_group_metrics_from_values([0.5, 0.6, 0.7], sensitive_features=["a", "b"])
    with pytest.raises(KeyError, match="unknown metric 'dicee'"):
        segmentation_group_metrics_from_values([0.5, 0.6], sensitive_features=["a", "b"], metric="dicee")
    # group_metrics' own missing= (attribute values) passes through next to HD95's one_empty=
    values = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    sex = np.array(["F", "F", None, "M", "M", None], dtype=object)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GroupMetricWarning)
        kept = segmentation_group_metrics_from_values(values, sensitive_features=sex, missing="category", n_boot=10,
                                                      n_permutations=10, **QUIET)
        dropped = segmentation_group_metrics_from_values(values, sensitive_features=sex, n_boot=10, n_permutations=10, **QUIET)
    assert len(kept.groups) == 3 and len(dropped.groups) == 2 and dropped.n_excluded_missing == 2
    assert dropped.values["dice"][0] == pytest.approx(values.mean())  # overall keeps every sample
