"""The metrics engine against independent references: scikit-learn, fairlearn, pandas, hand loops.

Random inputs include heavy ties (scores rounded to one decimal), tiny groups (3–5 samples),
2–5 groups, and string / int / None group values.
"""

import functools
import warnings
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from fairlearn import metrics as flm
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mutual_info_score,
    precision_recall_curve,
    precision_score,
    roc_auc_score,
    roc_curve,
)

from medequity.metrics import (
    GroupMetricWarning,
    Threshold,
    adf,
    best_f1_threshold,
    binary_cross_entropy,
    demographic_parity_difference,
    dice_per_sample,
    ece_bin_index,
    equal_opportunity_difference,
    equalized_odds_difference,
    equalized_odds_half_sum,
    expected_calibration_error,
    gap,
    gap_to_overall,
    group_metrics,
    group_values,
    iou_per_sample,
    ratio,
    youden_threshold,
)

SEEDS = list(range(12))


def make_case(seed: int, *, ties: bool | None = None, kind: str | None = None):
    """Random labels/scores/groups. Every group has >= 1 positive and >= 1 negative."""
    rng = np.random.default_rng(seed)
    n_groups = int(rng.integers(2, 6))
    ties = bool(seed % 2) if ties is None else ties
    kind = ["str", "int", "mixed"][seed % 3] if kind is None else kind
    sizes = [int(rng.integers(3, 6)) if rng.random() < 0.4 else int(rng.integers(6, 60)) for _ in range(n_groups)]
    ys, scores, labels = [], [], []
    names = {
        "str": [f"grp{i}" for i in range(n_groups)],
        "int": [10 * i + 3 for i in range(n_groups)],
        "mixed": ["F", 2, "old", 7, "x"][:n_groups],
    }[kind]
    for g, m in enumerate(sizes):
        y = (rng.random(m) < rng.uniform(0.2, 0.8)).astype(int)
        y[0], y[1] = 1, 0
        s = np.clip(0.5 * y + rng.normal(0.25, 0.3, m) + 0.1 * g, 0.0, 1.0)
        if ties:
            s = np.round(s, 1)
        ys.append(y)
        scores.append(s)
        labels += [names[g]] * m
    perm = rng.permutation(sum(sizes))
    y = np.concatenate(ys)[perm]
    s = np.concatenate(scores)[perm]
    g = np.array(labels, dtype=object)[perm]
    return y, s, g


def quiet_group_metrics(*args, **kwargs):
    kwargs.setdefault("n_boot", 0)
    kwargs.setdefault("n_permutations", 0)
    kwargs.setdefault("min_group_size", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GroupMetricWarning)
        return group_metrics(*args, **kwargs)


# --- per-group AUC and rates -------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_group_auc_equals_sklearn_per_group(seed):
    y, s, g = make_case(seed)
    result = quiet_group_metrics(y, s, sensitive_features=g, metrics=("auc",))
    assert result.values["auc"][0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    # numbers sort as numbers ('3' before '13'), the rest as text
    expected_names = sorted({str(v) for v in g}, key=lambda v: (0, float(v), v) if v.lstrip("-").isdigit() else (1, 0.0, v))
    assert list(result.groups) == expected_names
    for name, value in zip(result.groups, result.by_group["auc"]):
        mask = np.array([str(v) == name for v in g])
        assert value == pytest.approx(roc_auc_score(y[mask], s[mask]), abs=1e-12), name
        row = result.counts.loc[name]
        assert (row["n"], row["n_pos"], row["n_neg"]) == (mask.sum(), y[mask].sum(), (1 - y[mask]).sum())


def _fairlearn_frame(y, pred, g):
    metrics = {
        "tpr": flm.true_positive_rate,
        "tnr": flm.true_negative_rate,
        "fpr": flm.false_positive_rate,
        "fnr": flm.false_negative_rate,
        "selection_rate": flm.selection_rate,
        "acc": accuracy_score,
        "ppv": functools.partial(precision_score, zero_division=np.nan),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return flm.MetricFrame(metrics=metrics, y_true=y, y_pred=pred, sensitive_features=pd.Series(g.astype(str), name="g"))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_group_rates_equal_fairlearn_metricframe(seed, threshold):
    y, s, g = make_case(seed)
    pred = (s > threshold).astype(int)  # METRICS.md: prediction is score > t, strict
    result = quiet_group_metrics(y, s, sensitive_features=g, threshold=threshold)
    assert result.threshold.value == threshold and result.threshold.rule == "fixed"
    mf = _fairlearn_frame(y, pred, g)
    for metric in ("tpr", "tnr", "fpr", "fnr", "selection_rate", "acc", "ppv"):
        ours = result.by_group[metric]
        theirs = mf.by_group[metric].reindex(list(result.groups))
        np.testing.assert_allclose(ours.to_numpy(), theirs.to_numpy(dtype=float), atol=1e-12, err_msg=metric)
        assert result.values[metric][0] == pytest.approx(float(mf.overall[metric]), abs=1e-12, nan_ok=True)


@pytest.mark.parametrize("seed", SEEDS[:6])
def test_group_rates_with_given_predictions_and_npv_by_hand(seed):
    y, s, g = make_case(seed)
    pred = np.random.default_rng(seed + 100).integers(0, 2, y.size)
    result = quiet_group_metrics(y, None, sensitive_features=g, y_pred=pred, metrics=("npv", "acc"))
    for name, npv, acc in zip(result.groups, result.by_group["npv"], result.by_group["acc"]):
        mask = g.astype(str) == name
        neg_pred = mask & (pred == 0)
        expected = np.nan if neg_pred.sum() == 0 else np.sum(neg_pred & (y == 0)) / neg_pred.sum()
        assert npv == pytest.approx(expected, nan_ok=True, abs=1e-12)
        assert acc == pytest.approx(np.mean(y[mask] == pred[mask]), abs=1e-12)


# --- parity functions vs fairlearn --------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_parity_functions_equal_fairlearn(seed):
    y, s, g = make_case(seed)
    pred = (s > 0.5).astype(int)
    sf = g.astype(str)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dp = flm.demographic_parity_difference(y, pred, sensitive_features=sf)
        eod = flm.equalized_odds_difference(y, pred, sensitive_features=sf)
        eod_mean = flm.equalized_odds_difference(y, pred, sensitive_features=sf, agg="mean")
        eop = flm.equal_opportunity_difference(y, pred, sensitive_features=sf)
    assert demographic_parity_difference(y, pred, sensitive_features=g) == pytest.approx(dp, abs=1e-12)
    assert equalized_odds_difference(y, pred, sensitive_features=g) == pytest.approx(eod, abs=1e-12)
    assert equalized_odds_difference(y, pred, sensitive_features=g, agg="mean") == pytest.approx(eod_mean, abs=1e-12)
    assert equalized_odds_half_sum(y, pred, sensitive_features=g) == pytest.approx(eod_mean, abs=1e-12)
    assert equal_opportunity_difference(y, pred, sensitive_features=g) == pytest.approx(eop, abs=1e-12)


def test_equalized_odds_half_sum_binary_by_hand():
    # Group A: TPR 1/2, FPR 0; group B: TPR 1, FPR 1/2.
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    p = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    g = np.array(["A"] * 4 + ["B"] * 4)
    assert equalized_odds_half_sum(y, p, sensitive_features=g) == pytest.approx(0.5 * 0.5 + 0.5 * 0.5)
    assert equalized_odds_difference(y, p, sensitive_features=g) == pytest.approx(0.5)
    assert demographic_parity_difference(y, p, sensitive_features=g) == pytest.approx(3 / 4 - 1 / 4)


@pytest.mark.parametrize("seed", SEEDS)
def test_gap_gap_to_overall_ratio_equal_fairlearn(seed):
    y, s, g = make_case(seed)
    result = quiet_group_metrics(y, s, sensitive_features=g, threshold=0.5, metrics=("auc", "selection_rate", "acc", "tpr"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mf = flm.MetricFrame(
            metrics={"auc": roc_auc_score},
            y_true=y,
            y_pred=s,
            sensitive_features=g.astype(str),
        )
        mf_pred = flm.MetricFrame(
            metrics={"selection_rate": flm.selection_rate, "acc": accuracy_score, "tpr": flm.true_positive_rate},
            y_true=y,
            y_pred=(s > 0.5).astype(int),
            sensitive_features=g.astype(str),
        )
    for frame, metrics in ((mf, ("auc",)), (mf_pred, ("selection_rate", "acc", "tpr"))):
        between = frame.difference(method="between_groups")
        to_overall = frame.difference(method="to_overall")
        ratios = frame.ratio(method="between_groups")
        for metric in metrics:
            values = result.values[metric]
            assert float(gap(values[1:])) == pytest.approx(between[metric], abs=1e-12)
            assert float(gap_to_overall(values[0], values[1:])) == pytest.approx(to_overall[metric], abs=1e-12)
            assert float(ratio(values[1:])) == pytest.approx(ratios[metric], abs=1e-12)
            assert result.summary(metric, "gap") == pytest.approx(between[metric], abs=1e-12)
            assert result.summary(metric, "gap_to_overall") == pytest.approx(to_overall[metric], abs=1e-12)
            assert result.summary(metric, "ratio") == pytest.approx(ratios[metric], abs=1e-12)


# --- BCE -----------------------------------------------------------------------------------------


def _bce_by_hand(y, s):
    total = 0.0
    for yi, si in zip(y, s):
        log_p = max(np.log(si), -100.0) if si > 0 else -100.0
        log_q = max(np.log(1.0 - si), -100.0) if si < 1 else -100.0
        total += -(yi * log_p + (1 - yi) * log_q)
    return total / len(y)


def test_bce_clamps_log_at_minus_100_like_torch():
    y = np.array([1, 0, 1, 0, 1])
    s = np.array([0.0, 1.0, 1.0, 0.0, 1e-50])
    # torch.nn.BCELoss: 100 for a confident wrong 0/1, 0 for a confident right one, and
    # log(1e-50) = -115 is clamped to -100.
    assert binary_cross_entropy(y, s) == pytest.approx((100 + 100 + 0 + 0 + 100) / 5, abs=1e-12)
    assert binary_cross_entropy(y, s) == pytest.approx(_bce_by_hand(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS[:6])
def test_bce_equals_hand_formula_and_sklearn_log_loss(seed):
    y, s, g = make_case(seed, ties=False)
    s = np.clip(s, 1e-4, 1 - 1e-4)  # no clamping: sklearn's log_loss applies
    assert binary_cross_entropy(y, s) == pytest.approx(log_loss(y, s, labels=[0, 1]), rel=1e-10)
    assert binary_cross_entropy(y, s) == pytest.approx(_bce_by_hand(y, s), rel=1e-10)
    result = quiet_group_metrics(y, s, sensitive_features=g, metrics=("bce",))
    for name, value in zip(result.groups, result.by_group["bce"]):
        mask = g.astype(str) == name
        assert value == pytest.approx(log_loss(y[mask], s[mask], labels=[0, 1]), rel=1e-10)


def test_bce_with_exact_zero_and_one_scores_in_groups():
    y, s, g = make_case(3, ties=True)
    s = np.where(np.arange(s.size) % 4 == 0, 1.0 - y, s)  # confidently wrong: clamped terms
    result = quiet_group_metrics(y, s, sensitive_features=g, metrics=("bce",))
    assert result.values["bce"][0] == pytest.approx(_bce_by_hand(y, s), rel=1e-10)
    for name, value in zip(result.groups, result.by_group["bce"]):
        mask = g.astype(str) == name
        assert value == pytest.approx(_bce_by_hand(y[mask], s[mask]), rel=1e-10)


# --- ECE -----------------------------------------------------------------------------------------


def _ece_from_bins(y, s, bins):
    frame = pd.DataFrame({"bin": bins, "s": s, "y": y})
    total = 0.0
    for _, part in frame.groupby("bin"):
        total += len(part) / len(frame) * abs(part.s.mean() - part.y.mean())
    return total


def _ece_unit_loop(y, s, n_bins=10):
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for k in range(n_bins):
        lo, hi = edges[k], edges[k + 1]
        in_bin = (s > lo) & (s <= hi) if k > 0 else (s >= lo) & (s <= hi)
        if in_bin.any():
            total += in_bin.sum() / s.size * abs(s[in_bin].mean() - y[in_bin].mean())
    return total


@pytest.mark.parametrize("seed", SEEDS)
def test_ece_score_range_equals_pandas_cut(seed):
    y, s, g = make_case(seed)
    cut = pd.cut(s, 10, labels=False)
    np.testing.assert_array_equal(ece_bin_index(s, 10, "score_range"), cut)
    assert expected_calibration_error(y, s, bins="score_range") == pytest.approx(_ece_from_bins(y, s, cut), abs=1e-12)
    # per group: the bins span that group's scores (ECE as a metric M(D_g) of the group's data)
    result = quiet_group_metrics(y, s, sensitive_features=g, metrics=("ece",), ece_bins="score_range")
    assert result.values["ece"][0] == pytest.approx(_ece_from_bins(y, s, cut), abs=1e-12)
    for name, value in zip(result.groups, result.by_group["ece"]):
        mask = g.astype(str) == name
        if np.ptp(s[mask]) == 0:
            expected = abs(s[mask].mean() - y[mask].mean())
        else:
            expected = _ece_from_bins(y[mask], s[mask], pd.cut(s[mask], 10, labels=False))
        assert value == pytest.approx(expected, abs=1e-12), name


@pytest.mark.parametrize("seed", SEEDS)
def test_ece_unit_equals_hand_loop(seed):
    y, s, g = make_case(seed)
    assert expected_calibration_error(y, s) == pytest.approx(_ece_unit_loop(y, s), abs=1e-12)
    assert expected_calibration_error(y, s, n_bins=7) == pytest.approx(_ece_unit_loop(y, s, 7), abs=1e-12)
    result = quiet_group_metrics(y, s, sensitive_features=g, metrics=("ece",))
    for name, value in zip(result.groups, result.by_group["ece"]):
        mask = g.astype(str) == name
        assert value == pytest.approx(_ece_unit_loop(y[mask], s[mask]), abs=1e-12), name


def test_ece_by_hand_small_example():
    # unit bins: 0.05 and 0.15 in bins 0 and 1; 0.95 twice in bin 9
    y = np.array([0, 1, 1, 0])
    s = np.array([0.05, 0.15, 0.95, 0.95])
    expected = 0.25 * 0.05 + 0.25 * 0.85 + 0.5 * abs(0.95 - 0.5)
    assert expected_calibration_error(y, s) == pytest.approx(expected, abs=1e-12)
    # 0 and 1 are inside the unit range
    assert expected_calibration_error([0, 1], [0.0, 1.0]) == pytest.approx(0.0, abs=1e-15)


def test_ece_quantile_bins_have_equal_counts():
    rng = np.random.default_rng(1)
    s = rng.random(100)
    y = (rng.random(100) < s).astype(int)
    bins = ece_bin_index(s, 10, "quantile")
    assert np.bincount(bins).tolist() == [10] * 10
    # equal-count bins are ordered by score
    assert all(s[bins == k].max() < s[bins == k + 1].min() for k in range(9))
    assert expected_calibration_error(y, s, bins="quantile") == pytest.approx(_ece_from_bins(y, s, bins), abs=1e-12)


# --- thresholds ----------------------------------------------------------------------------------


def _brute_force(y, s, criterion):
    """Exact (Fraction) best threshold of ``score >= t`` over the scores in the data."""
    best, best_t = None, None
    for t in sorted(set(s.tolist())):  # ascending: keep the first (lowest) maximiser
        p = s >= t
        tp, fp = int(np.sum(p & (y == 1))), int(np.sum(p & (y == 0)))
        fn, tn = int(np.sum(~p & (y == 1))), int(np.sum(~p & (y == 0)))
        if criterion == "f1":
            value = Fraction(2 * tp, 2 * tp + fp + fn) if tp else Fraction(0)
        else:
            value = Fraction(tp, tp + fn) - Fraction(fp, fp + tn)
        if best is None or value > best:
            best, best_t = value, t
    return best_t, best


def _sklearn_best_f1(y, s):
    """The best-F1 threshold as FairMedFM and MEDFAIR fit it with scikit-learn."""
    precision, recall, thresholds = precision_recall_curve(y, s)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    return thresholds[np.argmax(f1[:-1])]  # the last point (recall 0) has no threshold


@pytest.mark.parametrize("seed", SEEDS + [100 + k for k in range(12)])
def test_best_f1_threshold_brute_force(seed):
    y, s, _ = make_case(seed)
    t = best_f1_threshold(y, s)
    assert t == _sklearn_best_f1(y, s)  # the score value scikit-learn reports, not a midpoint
    assert t in set(s.tolist())
    _, f1_ref = _brute_force(y, s, "f1")
    assert f1_score(y, (s >= t).astype(int)) == pytest.approx(float(f1_ref), abs=1e-12)
    assert Threshold(t, "best_f1", "evaluated set").predict(s).tolist() == (s >= t).astype(int).tolist()


def test_best_f1_threshold_lowest_on_ties_by_hand():
    # t=0.2 -> preds [1,1,1,1]: tp 2, fp 2 -> F1 = 2/3; t=0.4 -> [0,1,1,1]: tp 2, fp 1 -> 4/5;
    # t=0.6 -> [0,0,1,1]: tp 2, fp 0 -> 1; t=0.8 -> [0,0,0,1]: 2/3. Best is 0.6 (>=: 0.6 positive).
    y = np.array([0, 0, 1, 1])
    s = np.array([0.2, 0.4, 0.6, 0.8])
    assert best_f1_threshold(y, s) == 0.6
    # A real tie: y=[1,0,0,1], s=[.1,.2,.3,.4]: t=.1: tp2 fp2 -> 2/3; t=.2: tp1 fp2 -> 2/5;
    # t=.3: tp1 fp1 -> 1/2; t=.4: tp1 fp0 -> 2/3 (tie with t=.1): the lowest wins.
    y = np.array([1, 0, 0, 1])
    s = np.array([0.1, 0.2, 0.3, 0.4])
    assert best_f1_threshold(y, s) == 0.1


@pytest.mark.parametrize("seed", SEEDS + [100 + k for k in range(12)])
def test_youden_threshold_brute_force_and_sklearn(seed):
    y, s, _ = make_case(seed)
    t = youden_threshold(y, s)
    t_ref, j_ref = _brute_force(y, s, "youden")
    assert t == t_ref
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    assert np.max(tpr - fpr) == pytest.approx(float(j_ref), abs=1e-12)
    assert t in thresholds  # a roc_curve threshold (score >= t), not a midpoint


def test_group_metrics_threshold_rules_recorded():
    y, s, g = make_case(5)
    r = quiet_group_metrics(y, s, sensitive_features=g, metrics=("tpr",), threshold="youden")
    assert r.threshold.rule == "youden" and r.threshold.fitted_on == "evaluated set"
    assert r.threshold.value == _brute_force(y, s, "youden")[0]
    yv, sv, _ = make_case(6)
    r = quiet_group_metrics(y, s, sensitive_features=g, metrics=("tpr",), threshold="best_f1", y_val=yv, score_val=sv)
    assert r.threshold.fitted_on == "validation set"
    t_val = _sklearn_best_f1(yv, sv)
    assert r.threshold.value == t_val
    pred = s >= t_val
    for name, value in zip(r.groups, r.by_group["tpr"]):
        mask = (g.astype(str) == name) & (y == 1)
        assert value == pytest.approx(pred[mask].mean(), abs=1e-12)


# --- ADF -----------------------------------------------------------------------------------------


def test_adf_small_contingency_by_hand():
    # y=0: S perfectly determines Ŷ (I = log 2); y=1: Ŷ independent of S (I = 0); P(y) = 1/2 each.
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array(["a", "a", "b", "b", "a", "a", "b", "b"])
    p = np.array([1, 1, 0, 0, 1, 0, 1, 0])
    assert adf(y, p, sensitive_features=s) == pytest.approx(0.5 * np.log(2), abs=1e-12)
    assert adf(y, p, sensitive_features=s, base=2) == pytest.approx(0.5, abs=1e-12)


def test_adf_unbalanced_contingency_by_hand():
    # One stratum (y=0 only) with counts n[s, ŷ] = [[3, 1], [1, 1]]
    y = np.zeros(6, dtype=int)
    s = np.array([0, 0, 0, 0, 1, 1])
    p = np.array([1, 1, 1, 0, 1, 0])
    n = np.array([[1, 3], [1, 1]], dtype=float)  # [s, ŷ]: (s=0: ŷ0=1, ŷ1=3), (s=1: 1, 1)
    joint = n / n.sum()
    ps, pyh = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    expected = float(np.sum(joint * np.log(joint / (ps * pyh))))
    assert adf(y, p, sensitive_features=s) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_adf_equals_stratified_sklearn_mutual_information(seed):
    rng = np.random.default_rng(seed)
    n = 300
    s = rng.integers(0, int(rng.integers(2, 5)), n)
    y = rng.integers(0, 2, n)
    p = ((rng.random(n) < 0.3 + 0.1 * s) ^ (y == 1)).astype(int)
    expected = sum(np.mean(y == v) * mutual_info_score(s[y == v], p[y == v]) for v in (0, 1))
    assert adf(y, p, sensitive_features=s) == pytest.approx(expected, abs=1e-12)


def test_adf_zero_when_prediction_depends_only_on_label():
    rng = np.random.default_rng(0)
    n = 20000
    s = rng.integers(0, 3, n)
    y = (rng.random(n) < 0.2 + 0.2 * s).astype(int)  # prevalence differs by group (S -> Y)
    assert adf(y, y, sensitive_features=s) == pytest.approx(0.0, abs=1e-15)
    noisy = np.where(rng.random(n) < 0.2, 1 - y, y)  # noise independent of S
    assert 0 <= adf(y, noisy, sensitive_features=s) < 1e-3
    assert demographic_parity_difference(y, noisy, sensitive_features=s) > 0.2  # DP is not 0
    shortcut = np.where(rng.random(n) < 0.2, (s == 2).astype(int), y)  # direct S -> Ŷ path
    assert adf(y, shortcut, sensitive_features=s) > 10 * adf(y, noisy, sensitive_features=s)


# --- Dice / IoU ----------------------------------------------------------------------------------


def test_dice_iou_hand_cases():
    pred = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 1]])
    true = np.array([[1, 0, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    d = dice_per_sample(pred, true)
    i = iou_per_sample(pred, true)
    np.testing.assert_allclose(d.values, [2 * 1 / 4, 1.0, 0.0])
    np.testing.assert_allclose(i.values, [1 / 3, 1.0, 0.0])
    assert d.n_empty == 0


def test_dice_ignores_background():
    # Mostly background, foreground missed: Dice must be 0, not inflated by background agreement.
    pred = np.zeros((1, 10, 10), dtype=int)
    true = np.zeros((1, 10, 10), dtype=int)
    true[0, 0, 0] = 1
    assert dice_per_sample(pred, true).values[0] == 0.0
    assert iou_per_sample(pred, true).values[0] == 0.0


@pytest.mark.parametrize("empty, expected", [("nan", np.nan), ("zero", 0.0), ("one", 1.0)])
def test_dice_empty_conventions(empty, expected):
    pred = np.array([[0, 0, 0], [1, 1, 0]])
    true = np.array([[0, 0, 0], [1, 0, 0]])
    d = dice_per_sample(pred, true, empty=empty)
    i = iou_per_sample(pred, true, empty=empty)
    assert d.values[0] == pytest.approx(expected, nan_ok=True)
    assert i.values[0] == pytest.approx(expected, nan_ok=True)
    assert d.values[1] == pytest.approx(2 / 3) and i.values[1] == pytest.approx(1 / 2)
    assert d.n_empty == 1 and d.settings()["empty"] == empty


def test_dice_default_is_nan_and_counted():
    d = dice_per_sample(np.zeros((2, 4), int), np.zeros((2, 4), int))
    assert np.all(np.isnan(d.values)) and d.n_empty == 2 and d.empty == "nan"


def test_dice_multiclass_per_class_then_mean():
    pred = np.array([[1, 1, 2, 2, 0, 0]])
    true = np.array([[1, 0, 2, 2, 2, 0]])
    # class 1: |P|=2 |T|=1 ∩=1 -> 2/3; class 2: |P|=2 |T|=3 ∩=2 -> 4/5
    d = dice_per_sample(pred, true)
    np.testing.assert_allclose(d.per_class[0], [2 / 3, 4 / 5])
    assert d.values[0] == pytest.approx((2 / 3 + 4 / 5) / 2)
    i = iou_per_sample(pred, true)
    np.testing.assert_allclose(i.per_class[0], [1 / 2, 2 / 3])
    # a class absent from both prediction and truth of a sample is excluded (NaN default)
    pred2 = np.array([[1, 1, 0], [2, 0, 0]])
    true2 = np.array([[1, 0, 0], [2, 0, 0]])
    d2 = dice_per_sample(pred2, true2)
    np.testing.assert_allclose(d2.values, [2 / 3, 1.0])
    assert d2.n_empty == 2


def test_segmentation_group_metrics_mean_dice_per_group():
    from medequity.metrics import segmentation_group_metrics

    rng = np.random.default_rng(0)
    pred = (rng.random((40, 8, 8)) < 0.5).astype(int)
    true = (rng.random((40, 8, 8)) < 0.5).astype(int)
    pred[0] = true[0] = 0  # one empty pair: excluded from the means
    groups = np.array(["a", "b"] * 20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GroupMetricWarning)
        result = segmentation_group_metrics(pred, true, sensitive_features=groups, n_boot=0, n_permutations=0, min_group_size=1)
    per_sample = []
    for k in range(40):
        p, t = pred[k].ravel() == 1, true[k].ravel() == 1
        per_sample.append(np.nan if p.sum() + t.sum() == 0 else 2 * np.sum(p & t) / (p.sum() + t.sum()))
    per_sample = np.array(per_sample)
    assert result.values["dice"][0] == pytest.approx(np.nanmean(per_sample), abs=1e-12)
    for name, value in zip(result.groups, result.by_group["dice"]):
        assert value == pytest.approx(np.nanmean(per_sample[groups == name]), abs=1e-12)
    assert result.settings()["empty"] == "nan" and result.settings()["n_empty_pairs"] == 1


# --- intersections and missing values ------------------------------------------------------------


def test_intersections_of_two_attributes():
    rng = np.random.default_rng(3)
    n = 400
    sex = rng.choice(["F", "M"], n)
    age = rng.choice(["<40", "40-60", ">60"], n)
    y = rng.integers(0, 2, n)
    s = np.round(rng.random(n), 1)
    frame = pd.DataFrame({"sex": sex, "age": age})
    result = quiet_group_metrics(y, s, sensitive_features=frame, metrics=("auc",))
    assert result.attribute == "sex & age"
    assert sorted(result.groups) == sorted(f"{a} & {b}" for a in ("F", "M") for b in ("<40", "40-60", ">60"))
    for name, value in zip(result.groups, result.by_group["auc"]):
        a, b = name.split(" & ")
        mask = (sex == a) & (age == b)
        assert value == pytest.approx(roc_auc_score(y[mask], s[mask]), abs=1e-12)
    # dict input gives the same groups and values
    same = quiet_group_metrics(y, s, sensitive_features={"sex": sex, "age": age}, metrics=("auc",))
    assert same.groups == result.groups
    np.testing.assert_allclose(same.values["auc"], result.values["auc"])


def test_missing_values_dropped_with_count():
    y, s, g = make_case(2, kind="str")
    g = g.copy()
    missing = np.zeros(g.size, dtype=bool)
    missing[::7] = True
    g[missing] = None
    with pytest.warns(GroupMetricWarning, match="missing"):
        result = group_metrics(y, s, sensitive_features=g, metrics=("auc",), n_boot=0, n_permutations=0, min_group_size=1)
    assert result.n_excluded_missing == missing.sum()
    assert "missing" not in result.groups
    assert int(result.counts.loc[list(result.groups), "n"].sum()) == (~missing).sum()
    for name, value in zip(result.groups, result.by_group["auc"]):
        mask = np.array([v == name for v in g])
        assert value == pytest.approx(roc_auc_score(y[mask], s[mask]), abs=1e-12)


def test_missing_values_kept_as_category():
    y, s, g = make_case(4, kind="int")
    g = g.copy()
    g[:10] = None
    g[0] = np.nan
    y[:2] = [0, 1]
    result = quiet_group_metrics(y, s, sensitive_features=g, metrics=("auc",), missing="category")
    assert "missing" in result.groups and result.n_excluded_missing == 0
    j = result.groups.index("missing")
    assert result.counts.loc["missing", "n"] == 10
    assert result.by_group["auc"].iloc[j] == pytest.approx(roc_auc_score(y[:10], s[:10]), abs=1e-12)


def test_missing_values_in_parity_functions():
    y, s, g = make_case(7, kind="mixed")
    g = g.copy()
    g[::5] = None
    pred = (s > 0.5).astype(int)
    keep = np.array([v is not None for v in g])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = flm.demographic_parity_difference(y[keep], pred[keep], sensitive_features=g[keep].astype(str))
    with pytest.warns(GroupMetricWarning, match="missing"):
        assert demographic_parity_difference(y, pred, sensitive_features=g) == pytest.approx(expected, abs=1e-12)
    with pytest.warns(GroupMetricWarning, match="missing"):
        overall, values, names = group_values("selection_rate", y, sensitive_features=g, y_pred=pred)
    assert "missing" not in names and len(names) == len({str(v) for v in g[keep]})


# --- the remaining sample-level functions ------------------------------------------------------


def _sklearn_group_aucs(y, s, g):
    names = sorted({str(v) for v in g})
    return roc_auc_score(y, s), np.array([roc_auc_score(y[g.astype(str) == k], s[g.astype(str) == k]) for k in names])


@pytest.mark.parametrize("seed", SEEDS[:6])
def test_sample_level_auc_summaries_vs_sklearn_and_formulas(seed):
    from medequity.metrics import auc_gap, auc_max_psd, auc_mean_psd, auc_skewness, equity_scaled_auc, worst_group_auc

    y, s, g = make_case(seed)
    overall, groups = _sklearn_group_aucs(y, s, g)
    assert auc_gap(y, s, sensitive_features=g) == pytest.approx(groups.max() - groups.min(), abs=1e-12)
    assert worst_group_auc(y, s, sensitive_features=g) == pytest.approx(groups.min(), abs=1e-12)
    assert auc_mean_psd(y, s, sensitive_features=g) == pytest.approx(np.std(groups) / overall, abs=1e-12)
    assert auc_max_psd(y, s, sensitive_features=g) == pytest.approx((groups.max() - groups.min()) / overall, abs=1e-12)
    if groups.max() < 1:
        expected_skew = (1 - groups.min()) / (1 - groups.max())
        assert auc_skewness(y, s, sensitive_features=g) == pytest.approx(expected_skew, rel=1e-10)
    disparities = {
        "std": np.std(groups),
        "mean_abs_dev": np.mean(np.abs(overall - groups)),
        "sum_abs_dev": np.sum(np.abs(overall - groups)),
    }
    for kind, d in disparities.items():
        assert equity_scaled_auc(y, s, sensitive_features=g, disparity=kind) == pytest.approx(overall / (1 + d), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS[:6])
def test_other_parity_functions_vs_fairlearn(seed):
    from medequity.metrics import (
        accuracy_parity_difference,
        bce_gap,
        demographic_parity_ratio,
        ece_gap,
        fairmedfm_equalized_odds,
        underdiagnosis_rates,
    )

    y, s, g = make_case(seed)
    sf = g.astype(str)
    pred = (s > 0.5).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert demographic_parity_ratio(y, pred, sensitive_features=g) == pytest.approx(
            flm.demographic_parity_ratio(y, pred, sensitive_features=sf), abs=1e-12
        )
        mf = flm.MetricFrame(
            metrics={"fnr": flm.false_negative_rate, "fpr": flm.false_positive_rate, "acc": accuracy_score,
                     "tpr": flm.true_positive_rate, "tnr": flm.true_negative_rate},
            y_true=y, y_pred=pred, sensitive_features=sf,
        )
    rates = underdiagnosis_rates(y, pred, sensitive_features=g)
    for name in rates["groups"]:
        assert rates["fnr"][name] == pytest.approx(mf.by_group.loc[name, "fnr"], abs=1e-12)
        assert rates["fpr"][name] == pytest.approx(mf.by_group.loc[name, "fpr"], abs=1e-12)
    diff = mf.difference()
    assert rates["fnr_gap"] == pytest.approx(diff["fnr"], abs=1e-12)
    assert rates["fpr_gap"] == pytest.approx(diff["fpr"], abs=1e-12)
    assert accuracy_parity_difference(y, pred, sensitive_features=g) == pytest.approx(diff["acc"], abs=1e-12)
    # FairMedFM "EqOdds" at a given threshold: 1 - (TPR gap + TNR gap) / 2
    assert fairmedfm_equalized_odds(y, s, sensitive_features=g, threshold=0.5) == pytest.approx(
        1 - (diff["tpr"] + diff["tnr"]) / 2, abs=1e-12
    )
    # ... and by default FairMedFM's rule: scikit-learn's best-F1 score t, then predictions s > t
    t = _sklearn_best_f1(y, s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mf_t = flm.MetricFrame(metrics={"tpr": flm.true_positive_rate, "tnr": flm.true_negative_rate},
                               y_true=y, y_pred=(s > t).astype(int), sensitive_features=sf)
    d = mf_t.difference()
    assert fairmedfm_equalized_odds(y, s, sensitive_features=g) == pytest.approx(1 - (d["tpr"] + d["tnr"]) / 2, abs=1e-12)
    # calibration gaps
    ece = [_ece_unit_loop(y[sf == k], s[sf == k]) for k in sorted(set(sf))]
    assert ece_gap(y, s, sensitive_features=g) == pytest.approx(max(ece) - min(ece), abs=1e-12)
    ece_r = [_ece_from_bins(y[sf == k], s[sf == k], pd.cut(s[sf == k], 10, labels=False)) if np.ptp(s[sf == k]) > 0
             else abs(s[sf == k].mean() - y[sf == k].mean()) for k in sorted(set(sf))]
    assert ece_gap(y, s, sensitive_features=g, bins="score_range") == pytest.approx(max(ece_r) - min(ece_r), abs=1e-12)
    bce = [_bce_by_hand(y[sf == k], s[sf == k]) for k in sorted(set(sf))]
    assert bce_gap(y, s, sensitive_features=g) == pytest.approx(max(bce) - min(bce), rel=1e-10)


@pytest.mark.parametrize("seed", SEEDS[:4])
def test_calibration_curve_vs_sklearn(seed):
    from sklearn.calibration import calibration_curve as sk_curve

    from medequity.metrics import calibration_curve

    y, s, _ = make_case(seed, ties=False)
    prob_true, prob_pred = sk_curve(y, s, n_bins=10, strategy="uniform")
    curve = calibration_curve(y, s)
    np.testing.assert_allclose(curve.fraction_positive, prob_true, atol=1e-12)
    np.testing.assert_allclose(curve.mean_predicted, prob_pred, atol=1e-12)
    assert curve["count"].sum() == y.size


def test_adf_weighted_equals_adf_on_repeated_samples():
    from medequity.metrics.causal import adf_cell_index, adf_weighted

    rng = np.random.default_rng(0)
    n = 80
    y, p, s = rng.integers(0, 2, n), rng.integers(0, 2, n), rng.integers(0, 3, n)
    W = rng.integers(0, 4, size=(5, n)).astype(float)
    cells = adf_cell_index(y, s, p, 3)
    got = adf_weighted(cells, 3, W)
    for b in range(5):
        idx = np.repeat(np.arange(n), W[b].astype(int))
        assert got[b] == pytest.approx(adf(y[idx], p[idx], sensitive_features=s[idx]), abs=1e-12)
    assert adf_weighted(cells, 3, np.ones((1, n)))[0] == pytest.approx(adf(y, p, sensitive_features=s), abs=1e-12)


def test_group_metrics_adf_is_adf_with_a_bootstrap_interval_of_the_same_replicates():
    rng = np.random.default_rng(3)
    n = 600
    y, s = rng.integers(0, 2, n), rng.choice(["a", "b", "c"], n)
    p = (rng.random(n) < np.where(s == "a", 0.7, 0.4)).astype(int)  # decisions that depend on the group
    s_missing = s.astype(object)
    s_missing[:30] = None  # unknown group: left out of ADF, as adf() drops it
    result = quiet_group_metrics(y, rng.random(n), y_pred=p, sensitive_features=s_missing, metrics=("tpr",), n_boot=300)
    known = np.array([v is not None for v in s_missing])
    assert result.adf["value"] == pytest.approx(adf(y[known], p[known], sensitive_features=s[known]), abs=1e-12)
    assert result.adf["ci_low"] < result.adf["value"] < result.adf["ci_high"]


@pytest.mark.parametrize("value", [0.5, 1, np.int64(0), np.float32(0.25), np.float64(0.75)])
def test_fixed_threshold_accepts_numpy_numbers(value):
    y, s, g = make_case(1)
    r = quiet_group_metrics(y, s, sensitive_features=g, metrics=("selection_rate",), threshold=value)
    assert r.threshold.rule == "fixed" and r.threshold.value == float(value)
    assert r.values["selection_rate"][0] == pytest.approx(np.mean(s > float(value)), abs=1e-12)
