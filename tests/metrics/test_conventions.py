"""Metric conventions checked against scikit-learn / fairlearn on tied scores (issue 14):
threshold comparison rules, FairMedFM's EqOdds threshold, small-group warnings of the sample-level
functions, percentages passed to fraction-only summaries, and the required ES form."""

import warnings

import numpy as np
import pytest
from fairlearn import metrics as flm
from sklearn.metrics import precision_recall_curve

from medequity.metrics import (
    GroupMetricWarning,
    Threshold,
    accuracy_parity_difference,
    auc_mean_psd,
    best_f1_threshold,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
    equity_scaled,
    equity_scaled_auc,
    fairmedfm_equalized_odds,
    group_disparity,
    group_metrics,
    max_psd,
    mean_psd,
    resolve_threshold,
    skewness,
    summarize,
    underdiagnosis_rates,
)

# --- FairMedFM's EqOdds threshold rule ---------------------------------------------------------------


def _fairmedfm_reference(y, s, groups):
    """FairMedFM's EqOdds written from its description: t = the scikit-learn precision_recall_curve
    threshold with the best F1 (of score >= t), predictions score > t, then 1 − (ΔTPR + ΔTNR)/2."""
    precision, recall, thresholds = precision_recall_curve(y, s)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    t = thresholds[np.argmax(f1[:-1])]
    pred = (s > t).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fairlearn warns on tiny groups too
        frame = flm.MetricFrame(metrics={"tpr": flm.true_positive_rate, "tnr": flm.true_negative_rate},
                                y_true=y, y_pred=pred, sensitive_features=groups)
    gaps = frame.difference()
    return t, 1 - (gaps["tpr"] + gaps["tnr"]) / 2


def _tied_case(seed, n=400, decimals=2):
    rng = np.random.default_rng(seed)
    groups = rng.choice(["A", "B", "C"], n, p=[0.5, 0.3, 0.2])
    y = (rng.random(n) < 0.4).astype(int)
    shift = np.select([groups == "A", groups == "B"], [0.0, 0.08], 0.15)
    s = np.clip(np.round(0.35 + 0.25 * y + shift + rng.normal(0, 0.18, n), decimals), 0, 1)
    return y, s, groups


def test_fairmedfm_equalized_odds_by_hand():
    # Scores 0.2 0.4 0.6 0.6 0.6 0.8 0.9 (+0.2); best F1 of score >= t is at t = 0.6 (tp 4, fp 1: 8/9).
    # FairMedFM then predicts score > 0.6: only 0.8 and 0.9 are positive. A: TPR 1/2, TNR 1;
    # B: TPR 1/2, TNR 1 -> EqOdds 1. The positive set whose F1 was maximised (score >= 0.6) gives
    # A: TPR 1, TNR 1/2; B: TPR 1, TNR 1 -> 1 − (0 + 1/2)/2 = 0.75.
    y = np.array([1, 1, 0, 0, 1, 0, 0, 1])
    s = np.array([0.8, 0.6, 0.6, 0.2, 0.6, 0.4, 0.2, 0.9])
    g = np.array(["A"] * 4 + ["B"] * 4)
    assert best_f1_threshold(y, s) == 0.6  # the score scikit-learn reports (the strict-rule value was 0.4)
    assert fairmedfm_equalized_odds(y, s, sensitive_features=g, min_group_size=1) == 1.0
    fitted = resolve_threshold("best_f1", y, s)
    assert fitted.operator == ">=" and fitted.predict(s).tolist() == [1, 1, 1, 0, 1, 0, 0, 1]
    assert fairmedfm_equalized_odds(y, s, sensitive_features=g, threshold=fitted, min_group_size=1) == 0.75
    assert fairmedfm_equalized_odds(y, s, sensitive_features=g, threshold=0.6, min_group_size=1) == 1.0  # fixed: >


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("decimals", [1, 2])
def test_fairmedfm_equalized_odds_matches_the_sklearn_rule_on_tied_scores(seed, decimals):
    y, s, g = _tied_case(seed, decimals=decimals)
    t_ref, eqodds_ref = _fairmedfm_reference(y, s, g)
    assert best_f1_threshold(y, s) == t_ref
    assert fairmedfm_equalized_odds(y, s, sensitive_features=g) == pytest.approx(eqodds_ref, abs=1e-12)


def test_strict_rule_matters_on_tied_scores():
    """The reason the default follows FairMedFM: on tied scores > and >= at the same t differ."""
    differences = []
    for seed in range(8):
        y, s, g = _tied_case(seed, decimals=1)
        fitted = resolve_threshold("best_f1", y, s)
        differences.append(abs(fairmedfm_equalized_odds(y, s, sensitive_features=g)
                               - fairmedfm_equalized_odds(y, s, sensitive_features=g, threshold=fitted)))
    assert max(differences) > 0.01


# --- the threshold records its rule, comparison and the data it was fitted on ------------------------


def test_threshold_records_where_it_was_fitted():
    y, s, g = _tied_case(0)
    quiet = {"n_boot": 0, "n_permutations": 0, "metrics": ("tpr",)}
    fitted_here = group_metrics(y, s, sensitive_features=g, threshold="best_f1", **quiet).threshold
    assert (fitted_here.fitted_on, fitted_here.operator) == ("evaluated set", ">=")
    y_val, s_val, _ = _tied_case(1)
    on_validation = group_metrics(y, s, sensitive_features=g, threshold="youden", y_val=y_val, score_val=s_val,
                                  **quiet)
    assert on_validation.threshold.fitted_on == "validation set"
    assert on_validation.settings()["threshold"] == {"value": on_validation.threshold.value, "rule": "youden",
                                                     "fitted_on": "validation set", "operator": ">="}
    fixed = group_metrics(y, s, sensitive_features=g, threshold=0.5, **quiet)
    assert fixed.settings()["threshold"] == {"value": 0.5, "rule": "fixed", "fitted_on": "none", "operator": ">"}
    assert Threshold.from_dict(fitted_here.to_dict()) == fitted_here
    # fixed: strict, so a score equal to t is negative; fitted: t is a score and is positive
    assert Threshold(0.5, "fixed", "none").predict([0.4, 0.5, 0.6]).tolist() == [0, 0, 1]
    assert Threshold(0.5, "best_f1", "validation set").predict([0.4, 0.5, 0.6]).tolist() == [0, 1, 1]


def test_threshold_rejects_unknown_rule_or_origin():
    with pytest.raises(ValueError, match="rule"):
        Threshold(0.5, "f1", "none")
    with pytest.raises(ValueError, match="fitted_on"):
        Threshold.from_dict({"value": 0.5, "rule": "best_f1", "fitted_on": "test"})


# --- sample-level functions warn on tiny groups as group_metrics does --------------------------------


def _one_sample_group():
    rng = np.random.default_rng(3)
    y = np.r_[rng.integers(0, 2, 80), 1]
    pred = np.r_[rng.integers(0, 2, 80), 1]
    g = np.append(np.where(np.arange(80) % 2 == 0, "F", "M"), "X")
    return y, pred, g


@pytest.mark.parametrize(
    "function",
    [demographic_parity_difference, demographic_parity_ratio, equal_opportunity_difference,
     equalized_odds_difference, accuracy_parity_difference, underdiagnosis_rates],
)
def test_parity_functions_warn_on_a_one_sample_group(function):
    y, pred, g = _one_sample_group()
    with pytest.warns(GroupMetricWarning, match=r"\['X'\].*fewer than 30 samples"):
        function(y, pred, sensitive_features=g)


def test_small_group_warning_same_as_group_metrics_and_value_unchanged():
    y, pred, g = _one_sample_group()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dp = demographic_parity_difference(y, pred, sensitive_features=g)
    mine = [str(w.message) for w in caught if issubclass(w.category, GroupMetricWarning)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = group_metrics(y, y_pred=pred, sensitive_features=g, metrics=("selection_rate",), n_boot=0,
                                  n_permutations=0)
    assert mine == [m for m in reference.warnings if "fewer than" in m] and len(mine) == 1
    assert dp == pytest.approx(flm.demographic_parity_difference(y, pred, sensitive_features=g), abs=1e-12)


def test_small_group_boundary_and_option():
    # 30 samples is enough (as group_metrics' min_group_size=30); 29 is not.
    rng = np.random.default_rng(0)
    for size, warns in ((30, False), (29, True)):
        y = rng.integers(0, 2, 60 + size)
        pred = rng.integers(0, 2, 60 + size)
        g = np.array(["F"] * 60 + ["M"] * size)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            demographic_parity_difference(y, pred, sensitive_features=g)
        assert any("fewer than 30" in str(w.message) for w in caught) is warns
    with warnings.catch_warnings():
        warnings.simplefilter("error", GroupMetricWarning)  # a lower bound, as in group_metrics
        demographic_parity_difference(y, pred, sensitive_features=g, min_group_size=10)


# --- fraction-only summaries refuse percentages -------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: equity_scaled(76.07, [75.51, 76.04], disparity="std"),
        lambda: equity_scaled(0.7607, [75.51, 76.04], disparity="sum_abs_dev"),
        lambda: equity_scaled(76.07, [0.7551, 0.7604], disparity="mean_abs_dev"),
        lambda: group_disparity(83.55, [84.47, 82.74], "std"),
        lambda: skewness([84.47, 82.74]),
        lambda: mean_psd(88.90, [88.26, 89.56]),
        lambda: max_psd(88.90, [88.26, 89.56]),
        lambda: summarize(83.55, [84.47, 82.74]),
    ],
)
def test_percentages_raise_and_say_to_pass_fractions(call):
    with pytest.raises(ValueError, match=r"fractions in \[0, 1\].*divide by 100"):
        call()


def test_fractions_reproduce_the_papers_and_other_scales_stay_allowed():
    # FairMedFM Table 2 (percent in the paper): LP AUC_ES 75.87; SAM DSC_ES 82.83.
    assert round(100 * float(equity_scaled(0.7607, [0.7551, 0.7604], disparity="std")), 2) == 75.87
    assert round(100 * float(equity_scaled(0.8355, [0.8447, 0.8274], disparity="std")), 2) == 82.83
    # NaN (an undefined group) and one rounding ulp above 1 are not percentages
    assert np.isnan(equity_scaled(0.8, [0.8, np.nan], disparity="std"))
    assert float(equity_scaled(1 + 1e-15, [1.0, 1.0], disparity="std")) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="found -0.1"):
        skewness([0.5, -0.1])
    # losses (BCE can exceed 1) get only the scale-free summaries, which take any values
    losses = summarize(1.7, np.array([1.2, 2.4]), higher_is_better=False)
    assert float(losses["gap"]) == pytest.approx(1.2) and float(losses["worst"]) == 2.4
    assert "es_std" not in losses


def test_bootstrap_shaped_inputs_checked_everywhere():
    replicates = np.array([[0.80, 0.82], [0.79, np.nan], [0.81, 0.83]])
    overall = np.array([0.81, 0.80, 0.82])
    assert equity_scaled(overall, replicates, disparity="std").shape == (3,)
    with pytest.raises(ValueError, match="found 83"):
        equity_scaled(overall, replicates * np.array([[1, 1], [1, 1], [1, 100]]), disparity="std")


# --- the ES form is a required choice ------------------------------------------------------------------


def test_equity_scaled_form_must_be_named():
    with pytest.raises(TypeError, match="disparity"):
        equity_scaled(0.8, [0.8, 0.7])  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        group_disparity(0.8, [0.8, 0.7])  # type: ignore[call-arg]
    y, s, g = _tied_case(2)
    with pytest.raises(TypeError, match="disparity"):
        equity_scaled_auc(y, s, sensitive_features=g)  # type: ignore[call-arg]
    # the three forms differ on the same input: 0.8 / (1 + 0.05), / (1 + 0.05), / (1 + 0.1)
    assert float(equity_scaled(0.8, [0.85, 0.75], disparity="std")) == pytest.approx(0.8 / 1.05)
    assert float(equity_scaled(0.8, [0.85, 0.75], disparity="mean_abs_dev")) == pytest.approx(0.8 / 1.05)
    assert float(equity_scaled(0.8, [0.85, 0.75], disparity="sum_abs_dev")) == pytest.approx(0.8 / 1.1)
    assert float(equity_scaled(0.8, [0.9, 0.8, 0.7], disparity="std")) == pytest.approx(0.8 / (1 + np.sqrt(0.02 / 3)))
    assert float(equity_scaled(0.8, [0.9, 0.8, 0.7], disparity="mean_abs_dev")) == pytest.approx(0.8 / (1 + 0.2 / 3))


def test_sample_level_summaries_warn_on_small_groups_too():
    y, s, g = _tied_case(4, n=120)
    g = g.astype(object)
    g[:5] = "Z"  # a 5-sample group
    y[:2], y[2:5] = 1, 0  # with both classes, so its AUC is defined
    with pytest.warns(GroupMetricWarning, match=r"'Z'\].*fewer than 30"):
        auc_mean_psd(y, s, sensitive_features=g)
