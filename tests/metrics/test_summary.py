"""metrics.summary.group_auc_summary: against scikit-learn and hand-computed values."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from medequity.metrics import GroupMetricWarning, group_auc_summary, group_aucs


def _data(seed=0, n=300, n_groups=3):
    rng = np.random.default_rng(seed)
    codes = rng.integers(-1, n_groups, n)
    y = rng.integers(0, 2, n)
    scores = np.clip(0.35 * y + 0.1 * codes + rng.normal(0.3, 0.2, n), 0.001, 0.999)
    return y, scores, codes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_summary_matches_sklearn_and_the_formulas(seed):
    y, s, codes = _data(seed)
    names = ("a", "b", "c")
    out = group_auc_summary(y, s, codes, names)
    overall = roc_auc_score(y, s)  # every sample, also those with code -1
    groups = np.array([roc_auc_score(y[codes == g], s[codes == g]) for g in range(3)])
    assert out["auc"] == pytest.approx(overall, abs=1e-12)
    for name, value in zip(names, groups):
        assert out[f"auc:{name}"] == pytest.approx(value, abs=1e-12)
    assert out["worst_group_auc"] == pytest.approx(groups.min())
    assert out["auc_gap"] == pytest.approx(groups.max() - groups.min())
    assert out["es_auc_std"] == pytest.approx(overall / (1 + groups.std()))  # population std (FairMedFM)
    assert out["es_auc_mad"] == pytest.approx(overall / (1 + np.mean(np.abs(overall - groups))))  # FairDi eq. 4
    assert out["mean_psd"] == pytest.approx(groups.std() / overall)
    assert out["max_psd"] == pytest.approx((groups.max() - groups.min()) / overall)
    assert out["bce"] == pytest.approx(log_loss(y, s))
    assert out["n"] == len(y) and out["n_groups_defined"] == 3
    np.testing.assert_allclose(group_aucs(y, s, codes, 3), groups, atol=1e-12)


def test_hand_computed_values():
    # group a: pos 0.9, 0.4 / neg 0.5 → pairs (0.9>0.5) 1, (0.4<0.5) 0 → AUC 0.5
    # group b: pos 0.8 / neg 0.2, 0.8 → 1 + ½ (tie) → AUC 0.75
    y = np.array([1, 1, 0, 1, 0, 0])
    s = np.array([0.9, 0.4, 0.5, 0.8, 0.2, 0.8])
    codes = np.array([0, 0, 0, 1, 1, 1])
    out = group_auc_summary(y, s, codes, ["a", "b"])
    assert out["auc:a"] == 0.5 and out["auc:b"] == 0.75
    # overall: pos {0.9, 0.4, 0.8} × neg {0.5, 0.2, 0.8}: 0.9 → 3; 0.4 → 1; 0.8 → 2 + ½ (tie) → 6.5/9
    assert out["auc"] == pytest.approx(6.5 / 9)
    assert out["worst_group_auc"] == 0.5 and out["auc_gap"] == 0.25
    assert out["es_auc_std"] == pytest.approx((6.5 / 9) / (1 + 0.125))
    assert out["es_auc_mad"] == pytest.approx((6.5 / 9) / (1 + (abs(6.5 / 9 - 0.5) + abs(6.5 / 9 - 0.75)) / 2))


def test_one_class_group_is_nan_with_a_warning_and_propagates_or_is_skipped():
    y, s, codes = _data(3)
    y = y.copy()
    y[codes == 1] = 1  # group "b" has positives only
    with pytest.warns(GroupMetricWarning, match=r"auc is undefined \(NaN\) for group 'b' of 'sex'"):
        out = group_auc_summary(y, s, codes, ["a", "b", "c"], attribute="sex")
    assert np.isnan(out["auc:b"]) and np.isfinite(out["auc:a"]) and out["n_groups_defined"] == 2
    for key in ("worst_group_auc", "auc_gap", "es_auc_std", "es_auc_mad", "mean_psd", "max_psd"):
        assert np.isnan(out[key]), key  # an undefined group is never read as "fair"
    assert np.isfinite(out["auc"])

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warn=False: silent
        skipped = group_auc_summary(y, s, codes, ["a", "b", "c"], undefined="skip", warn=False)
    defined = np.array([skipped["auc:a"], skipped["auc:c"]])
    assert skipped["worst_group_auc"] == pytest.approx(defined.min())
    assert skipped["es_auc_std"] == pytest.approx(skipped["auc"] / (1 + defined.std()))
    assert skipped["auc_gap"] == pytest.approx(abs(defined[0] - defined[1]))


def test_fewer_than_two_groups_give_no_disparity():
    y, s, codes = _data(4, n_groups=1)
    out = group_auc_summary(y, s, codes, ["only"])
    assert out["worst_group_auc"] == pytest.approx(out["auc:only"])
    assert all(np.isnan(out[k]) for k in ("auc_gap", "es_auc_std", "es_auc_mad", "mean_psd", "max_psd"))
    y2 = y.copy()
    y2[codes == 0] = 0
    with pytest.warns(GroupMetricWarning):
        out = group_auc_summary(y2, s, codes, ["only"], undefined="skip")
    assert np.isnan(out["worst_group_auc"])


def test_logits_have_auc_but_no_bce_and_bad_input_raises():
    y, s, codes = _data(5)
    logits = np.log(s / (1 - s))
    out = group_auc_summary(y, logits, codes, ["a", "b", "c"])
    assert out["auc"] == pytest.approx(roc_auc_score(y, s)) and np.isnan(out["bce"])
    with pytest.raises(ValueError, match="codes must be in"):
        group_auc_summary(y, s, codes, ["a", "b"])
    with pytest.raises(ValueError, match="different lengths"):
        group_auc_summary(y[:-1], s, codes, ["a", "b", "c"])
    with pytest.raises(ValueError, match="undefined must be"):
        group_auc_summary(y, s, codes, ["a", "b", "c"], undefined="drop")
