"""Bad input (METRICS.md): whole-input problems raise ValueError naming the argument; per-group
problems give NaN for that group plus a GroupMetricWarning, never a "perfectly fair" 0."""

import re
import warnings

import numpy as np
import pandas as pd
import pytest

from medequity.metrics import (
    GroupMetricWarning,
    adf,
    auc_gap,
    binary_cross_entropy,
    compare_methods,
    demographic_parity_difference,
    dice_per_sample,
    encode_groups,
    equal_opportunity_difference,
    equalized_odds_difference,
    equity_scaled,
    expected_calibration_error,
    gap,
    gap_to_overall,
    group_metrics,
    paired_bootstrap,
    resolve_threshold,
    select_model,
    worst_group_auc,
    youden_threshold,
)

rng = np.random.default_rng(0)
N = 60
Y = np.array([0, 1] * (N // 2))
S = rng.random(N)
G = np.array(["a", "b", "c"] * (N // 3))


def gm(y=Y, s=S, g=G, **kwargs):
    kwargs.setdefault("n_boot", 0)
    kwargs.setdefault("n_permutations", 0)
    kwargs.setdefault("min_group_size", 1)
    return group_metrics(y, s, sensitive_features=g, **kwargs)


# --- whole-input errors name the argument ------------------------------------------------------


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda: gm(s=S[:-1]), "y_score"),
        (lambda: gm(y=Y[:-2]), "y_true"),
        (lambda: gm(g=G[:-1]), "sensitive_features"),
        (lambda: gm(s=None, y_pred=Y[:-1]), "y_pred"),
        (lambda: demographic_parity_difference(Y, Y[:-1], sensitive_features=G), "y_pred"),
        (lambda: expected_calibration_error(Y, S[:-1]), "y_prob"),
        (lambda: binary_cross_entropy(Y[:-1], S), "y_prob"),
        (lambda: adf(Y, Y, sensitive_features=G[:5]), "sensitive_features"),
        (lambda: paired_bootstrap(Y, S, S[:-1], sensitive_features=G, n_boot=5), "score_b"),
    ],
)
def test_mismatched_lengths(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_scores(bad):
    s = S.copy()
    s[7] = bad
    with pytest.raises(ValueError, match=r"y_score.*NaN/inf.*index 7"):
        gm(s=s, metrics=("auc",))
    with pytest.raises(ValueError, match="y_score"):
        auc_gap(Y, s, sensitive_features=G)
    with pytest.raises(ValueError, match="y_prob"):
        expected_calibration_error(Y, s)
    with pytest.raises(ValueError, match="score_a"):
        paired_bootstrap(Y, s, S, sensitive_features=G, n_boot=5)


@pytest.mark.parametrize("bad", [-0.01, 1.5])
def test_scores_outside_unit_interval_for_probability_metrics(bad):
    s = S.copy()
    s[3] = bad
    with pytest.raises(ValueError, match=r"y_prob.*\[0, 1\]"):
        expected_calibration_error(Y, s)
    with pytest.raises(ValueError, match=r"y_prob.*\[0, 1\]"):
        binary_cross_entropy(Y, s)
    for metric in ("ece", "bce"):
        with pytest.raises(ValueError, match=r"y_score.*\[0, 1\]"):
            gm(s=s, metrics=(metric, "auc"))
    # AUC is rank-based: logits are fine for it
    logits = np.log(S / (1 - S))
    result = gm(s=logits, metrics=("auc",))
    assert np.all(np.isfinite(result.values["auc"]))


@pytest.mark.parametrize("labels", [[0, 1, 2] * 20, [-1, 1] * 30, ["yes", "no"] * 30, [0.0, 0.5] * 30])
def test_non_binary_labels(labels):
    y = np.array(labels, dtype=object if isinstance(labels[0], str) else None)
    with pytest.raises(ValueError, match="y_true"):
        gm(y=y, metrics=("auc",))
    with pytest.raises(ValueError, match="y_true"):
        expected_calibration_error(y, S)
    with pytest.raises(ValueError, match="y_true"):
        adf(y, Y, sensitive_features=G)


def test_non_binary_predictions_and_nan_labels():
    with pytest.raises(ValueError, match="y_pred"):
        equalized_odds_difference(Y, np.r_[2, Y[1:]], sensitive_features=G)
    y = Y.astype(float)
    y[4] = np.nan
    with pytest.raises(ValueError, match="y_true"):
        gm(y=y, metrics=("auc",))


def test_boolean_and_string_digit_labels_are_accepted():
    a = gm(y=Y.astype(bool), metrics=("auc",))
    b = gm(y=Y.astype(str), metrics=("auc",))
    np.testing.assert_array_equal(a.values["auc"], b.values["auc"])


@pytest.mark.parametrize("groups", [np.array(["a"] * N), np.array([None] * (N - 5) + ["a"] * 5, dtype=object)])
def test_fewer_than_two_groups(groups):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GroupMetricWarning)
        with pytest.raises(ValueError, match="sensitive_features.*at least two groups"):
            gm(g=groups)
        with pytest.raises(ValueError, match="sensitive_features"):
            demographic_parity_difference(Y, Y, sensitive_features=groups)


def test_aggregate_input_errors():
    with pytest.raises(ValueError, match="group_values"):
        gap([0.8])
    with pytest.raises(ValueError, match="group_values"):
        equity_scaled(0.8, 0.8, disparity="std")
    with pytest.raises(ValueError, match="overall"):
        gap_to_overall([0.8, 0.7], [0.8, 0.7])
    with pytest.raises(ValueError, match="disparity"):
        equity_scaled(0.8, [0.8, 0.7], disparity="variance")


def test_option_errors_name_the_option():
    with pytest.raises(ValueError, match="bins"):
        expected_calibration_error(Y, S, bins="log")
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(Y, S, n_bins=0)
    with pytest.raises(ValueError, match="threshold"):
        gm(threshold="median")
    with pytest.raises(ValueError, match="threshold"):
        resolve_threshold("f1")
    with pytest.raises(ValueError, match="missing"):
        gm(missing="ignore")
    with pytest.raises(ValueError, match="n_boot"):
        gm(n_boot=-1)
    with pytest.raises(ValueError, match="agg"):
        equalized_odds_difference(Y, Y, sensitive_features=G, agg="max")
    with pytest.raises(ValueError, match="empty"):
        dice_per_sample(np.zeros((1, 4), int), np.zeros((1, 4), int), empty="skip")
    with pytest.raises(ValueError, match="y_pred and y_true"):
        dice_per_sample(np.zeros((2, 4), int), np.zeros((2, 5), int))
    with pytest.raises(ValueError, match="y_true"):
        gm(y=Y[:0], s=S[:0], g=G[:0])
    with pytest.raises(ValueError, match="y_score.*one-dimensional"):
        gm(s=np.c_[S, S])
    with pytest.raises(ValueError, match="both classes"):
        youden_threshold(np.ones(5), np.linspace(0, 1, 5))


def test_ci_out_of_range_is_rejected_at_the_call():
    """ci is validated when group_metrics is called, not later when a report asks for the table."""
    with pytest.raises(ValueError, match="ci"):
        gm(ci=1.5, n_boot=10)
    with pytest.raises(ValueError, match="ci"):
        gm(ci=0.0, n_boot=10)


def test_model_selection_and_ranking_input_errors():
    table = pd.DataFrame({"overall": [0.8, 0.7], "a": [0.8, 0.6], "b": [0.7, 0.7]})
    with pytest.raises(ValueError, match="rule"):
        select_model(table, rule="best", group_columns=["a", "b"])
    with pytest.raises(ValueError, match=r"columns \['c'\]"):
        select_model(table, group_columns=["a", "c"])
    with pytest.raises(ValueError, match="max_gap"):
        select_model(table, rule="constrained", group_columns=["a", "b"])
    with pytest.raises(ValueError, match="at least 3 methods"):
        compare_methods(pd.DataFrame({"x": [1, 2, 3], "y": [2, 3, 4]}))
    with pytest.raises(ValueError, match="at least 2 settings"):
        compare_methods(pd.DataFrame({"x": [1, np.nan], "y": [2, 3], "z": [3, 1]}))


# --- per-group problems: NaN plus a warning, never a fair-looking 0 ------------------------------


def _one_class_case():
    y = Y.copy()
    y[G == "c"] = 1  # group c: positives only
    return y


def test_one_class_group_gives_nan_auc_and_warning():
    y = _one_class_case()
    with pytest.warns(GroupMetricWarning) as record:
        result = gm(y=y, n_boot=100, n_permutations=100)
    messages = [str(w.message) for w in record]
    assert any(re.search(r"auc is undefined \(NaN\) for group 'c'.*only one class", m) for m in messages)
    assert any(re.search(r"tnr is undefined \(NaN\) for group 'c'.*no negative samples", m) for m in messages)
    auc = result.by_group["auc"]
    assert np.isnan(auc["c"]) and np.isfinite(auc["a"]) and np.isfinite(auc["b"])
    assert np.isnan(result.by_group["tnr"]["c"]) and np.isnan(result.by_group["fpr"]["c"])
    assert np.isfinite(result.by_group["tpr"]["c"])
    assert any("group 'c'" in w and "auc" in w for w in result.warnings)
    summaries = result.summaries().set_index(["metric", "summary"])
    for summary in ("gap", "gap_to_overall", "ratio", "worst", "es_std", "mean_psd", "max_psd"):
        row = summaries.loc[("auc", summary)]
        assert np.isnan(row.value), summary
        assert np.isnan(row.ci_low) and np.isnan(row.ci_high), summary  # never a [0, 0] interval
    assert np.isnan(summaries.loc[("auc", "gap"), "p_value"])
    frame = result.to_frame().set_index(["metric", "group"])
    assert np.isnan(frame.loc[("auc", "c"), "ci_low"]) and np.isnan(frame.loc[("auc", "c"), "ci_high"])
    assert frame.loc[("auc", "c"), "n_neg"] == 0


def test_one_class_group_in_sample_level_functions_is_nan_not_zero():
    y = _one_class_case()
    with pytest.warns(GroupMetricWarning, match="auc is undefined"):
        assert np.isnan(auc_gap(y, S, sensitive_features=G))
    with pytest.warns(GroupMetricWarning, match="auc is undefined"):
        assert np.isnan(worst_group_auc(y, S, sensitive_features=G))
    # A group without positives has no TPR: the equal-opportunity gap is NaN (fairlearn says 0).
    y2 = Y.copy()
    y2[G == "b"] = 0
    pred = (S > 0.5).astype(int)
    with pytest.warns(GroupMetricWarning, match="tpr is undefined .* 'b'.*no positive samples"):
        assert np.isnan(equal_opportunity_difference(y2, pred, sensitive_features=G))
    with pytest.warns(GroupMetricWarning, match="tpr is undefined"):
        assert np.isnan(equalized_odds_difference(y2, pred, sensitive_features=G))


def test_small_groups_flagged_in_counts():
    g = G.astype(object)
    g[:4] = "tiny"
    with pytest.warns(GroupMetricWarning, match=r"\['tiny'\].*fewer than 10"):
        result = group_metrics(Y, S, sensitive_features=g, n_boot=0, n_permutations=0, min_group_size=10)
    assert result.counts.loc["tiny", "small"]
    assert result.counts.loc["tiny", "n"] == 4
    assert not result.counts.loc["overall", "small"]
    frame = result.to_frame()
    assert frame[frame.group == "tiny"].small_group.all()
    assert not frame[frame.group == "a"].small_group.any()
    assert "tiny" in result.groups  # flagged, not dropped
    with pytest.warns(GroupMetricWarning):
        dropped = encode_groups(g, min_group_size=10, drop_small=True)
    assert "tiny" not in dropped.names and dropped.n_excluded_small == 4


Y12 = np.array(([0] * 6 + [1] * 6) * (N // 12))


def test_missing_group_values_do_not_crash_sorting():
    g = np.array([None, "b", 3, np.nan, "a", 2.0] * 10, dtype=object)
    with pytest.warns(GroupMetricWarning, match="20 samples have a missing"):
        result = gm(y=Y12, g=g, metrics=("auc",))
    assert np.all(np.isfinite(result.values["auc"]))
    assert result.groups == ("2", "3", "a", "b") and result.n_excluded_missing == 20
    result = gm(y=Y12, g=g, metrics=("auc",), missing="category")
    assert "missing" in result.groups and result.counts.loc["missing", "n"] == 20


def test_distinct_group_values_with_the_same_name_are_not_merged():
    """1 and '1' are different hashable values: merging them into one group silently would mix
    two groups; the same for a real value 'missing' beside missing values kept as a category."""
    with pytest.raises(ValueError, match=r"sensitive_features.*\['1', '2'\]"):
        encode_groups(np.array([1, "1", 2, "2"], dtype=object))
    with pytest.raises(ValueError, match=r"sensitive_features.*\['missing'\]"):
        encode_groups(np.array(["missing", None, "a", "b"], dtype=object), missing="category")
    # equal values of different types are one value, and 'missing' without missing values is fine
    assert encode_groups(np.array([1, 1.0, 2, 2.0], dtype=object)).names == ("1", "2")
    assert encode_groups(np.array(["missing", "a"], dtype=object), missing="category").names == ("a", "missing")


def test_sample_level_gaps_warn_which_group_is_undefined():
    """METRICS.md "Bad input": NaN for that group plus a warning — also from the one-number
    functions, not only from group_metrics."""
    import numpy as np

    from medequity.metrics import auc_gap, equal_opportunity_difference

    y = np.array([0, 1, 0, 1, 1, 1])
    score = np.array([0.1, 0.9, 0.2, 0.8, 0.7, 0.6])
    sex = np.array(["F", "F", "F", "F", "M", "M"])
    with pytest.warns(GroupMetricWarning, match=r"auc is undefined \(NaN\) for group 'M'.*only one class"):
        assert np.isnan(auc_gap(y, score, sensitive_features=sex))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # TPR is defined in both groups (small ones allowed here): no warning
        assert equal_opportunity_difference(y, (score > 0.5).astype(int), sensitive_features=sex, min_group_size=1) == 0.0
