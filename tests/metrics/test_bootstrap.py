"""Bootstrap CIs, the permutation test of "gap = 0" and the paired bootstrap.

The reference bootstrap is a slow loop calling scikit-learn on index-resampled data; it draws the
same multinomial counts as the engine (``stratified_counts`` over the group x label strata) but
lays the samples out itself (sorted by group, label, score; tied samples are interchangeable, so
the replicate values do not depend on which tied sample is which).
"""

import warnings

import numpy as np
import pytest
from sklearn.metrics import recall_score, roc_auc_score

from medequity.metrics import GroupMetricWarning, group_metrics, paired_bootstrap
from medequity.metrics.bootstrap import stratified_counts


def make_data(seed, sizes=(60, 40, 25), effect=(0.0, 0.3, 0.6), ties=True):
    rng = np.random.default_rng(seed)
    ys, ss, gs = [], [], []
    for k, (m, e) in enumerate(zip(sizes, effect)):
        y = (rng.random(m) < 0.4).astype(int)
        y[:2] = [0, 1]
        s = 1 / (1 + np.exp(-(rng.normal(size=m) + (1.5 - e * 2) * y)))
        ys.append(y)
        ss.append(np.round(s, 1) if ties else s)
        gs += [f"g{k}"] * m
    perm = rng.permutation(sum(sizes))
    return np.concatenate(ys)[perm], np.concatenate(ss)[perm], np.array(gs)[perm]


def run(*args, **kwargs):
    kwargs.setdefault("min_group_size", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GroupMetricWarning)
        return group_metrics(*args, **kwargs)


def reference_bootstrap(y, s, g, n_boot, random_state, threshold=None, weights_only=False):
    """Slow percentile bootstrap: index repeats from the engine's multinomial counts."""
    names = sorted(set(g))
    code = np.array([names.index(v) for v in g])
    arrangement = np.lexsort((s, y, code))  # group, then label, then score
    key = (code * 2 + y)[arrangement]
    bounds = np.r_[0, np.flatnonzero(np.diff(key)) + 1, y.size]
    boot_seed = np.random.SeedSequence(random_state).spawn(2)[0]
    rng = np.random.default_rng(boot_seed.spawn(1)[0])
    W = stratified_counts(bounds, n_boot, rng)
    if weights_only:
        return None, None, W, bounds
    auc = np.empty((n_boot, len(names) + 1))
    tpr = np.empty((n_boot, len(names) + 1))
    for b in range(n_boot):
        idx = np.repeat(arrangement, W[b].astype(int))
        yb, sb, cb = y[idx], s[idx], code[idx]
        auc[b, 0] = roc_auc_score(yb, sb)
        if threshold is not None:
            tpr[b, 0] = recall_score(yb, sb > threshold)
        for k in range(len(names)):
            m = cb == k
            auc[b, k + 1] = roc_auc_score(yb[m], sb[m])
            if threshold is not None:
                tpr[b, k + 1] = recall_score(yb[m], sb[m] > threshold)
    return auc, tpr, W, bounds


# --- agreement with a slow reference -----------------------------------------------------------


@pytest.mark.parametrize("seed, random_state", [(0, 0), (1, 123)])
def test_replicates_and_cis_equal_slow_sklearn_reference(seed, random_state):
    y, s, g = make_data(seed)
    n_boot = 100
    result = run(y, s, sensitive_features=g, metrics=("auc", "tpr"), threshold=0.5, n_boot=n_boot,
                 n_permutations=0, random_state=random_state)
    ref_auc, ref_tpr, _, _ = reference_bootstrap(y, s, g, n_boot, random_state, threshold=0.5)
    np.testing.assert_allclose(result.replicates["auc"], ref_auc, atol=1e-12)
    np.testing.assert_allclose(result.replicates["tpr"], ref_tpr, atol=1e-12)
    # percentile intervals: np.quantile of the reference replicates
    table = result.to_frame().set_index(["metric", "group"])
    for j, group in enumerate(("overall",) + result.groups):
        low, high = np.quantile(ref_auc[:, j], [0.025, 0.975])
        assert table.loc[("auc", group), "ci_low"] == pytest.approx(low, abs=1e-12)
        assert table.loc[("auc", group), "ci_high"] == pytest.approx(high, abs=1e-12)
    summaries = result.summaries().set_index(["metric", "summary"])
    ref_gap = ref_auc[:, 1:].max(axis=1) - ref_auc[:, 1:].min(axis=1)
    low, high = np.quantile(ref_gap, [0.025, 0.975])
    assert summaries.loc[("auc", "gap"), "ci_low"] == pytest.approx(low, abs=1e-12)
    assert summaries.loc[("auc", "gap"), "ci_high"] == pytest.approx(high, abs=1e-12)
    ref_worst = ref_auc[:, 1:].min(axis=1)
    low, high = np.quantile(ref_worst, [0.05, 0.95])
    result.ci = 0.90
    summaries = result.summaries().set_index(["metric", "summary"])
    assert summaries.loc[("auc", "worst"), "ci_low"] == pytest.approx(low, abs=1e-12)
    assert summaries.loc[("auc", "worst"), "ci_high"] == pytest.approx(high, abs=1e-12)


def test_stratified_weights_keep_every_stratum_size():
    y, s, g = make_data(3)
    _, _, W, bounds = reference_bootstrap(y, s, g, 50, 0, weights_only=True)
    for start, end in zip(bounds[:-1], bounds[1:]):
        np.testing.assert_array_equal(W[:, start:end].sum(axis=1), end - start)
    assert np.all(W == np.round(W)) and W.min() >= 0


def test_stratified_replicates_keep_tiny_groups_defined():
    """A group with one positive and one negative keeps both in every stratified replicate."""
    y, s, g = make_data(4, sizes=(80, 2, 3), ties=True)
    result = run(y, s, sensitive_features=g, metrics=("auc", "tpr", "tnr"), threshold=0.5, n_boot=300, n_permutations=0)
    for metric in ("auc", "tpr", "tnr"):
        assert np.all(np.isfinite(result.replicates[metric])), metric
    # Without stratification the 2-sample group loses a class in about half of the replicates.
    plain = run(y, s, sensitive_features=g, metrics=("auc",), n_boot=300, n_permutations=0, stratify=False)
    assert np.isnan(plain.replicates["auc"][:, 2]).mean() > 0.3
    assert plain.settings()["bootstrap"] == "plain (non-stratified)"


# --- reproducibility ---------------------------------------------------------------------------


def test_fixed_seed_reproducible_and_independent_of_n_jobs():
    y, s, g = make_data(5)
    kwargs = dict(metrics=("auc", "acc", "ece"), threshold=0.5, n_boot=200, n_permutations=100, random_state=42,
                  max_elements=2000)  # many chunks
    a = run(y, s, sensitive_features=g, n_jobs=1, **kwargs)
    b = run(y, s, sensitive_features=g, n_jobs=2, **kwargs)
    c = run(y, s, sensitive_features=g, n_jobs=1, **kwargs)
    for metric in kwargs["metrics"]:
        np.testing.assert_array_equal(a.replicates[metric], b.replicates[metric])
        np.testing.assert_array_equal(a.replicates[metric], c.replicates[metric])
        np.testing.assert_array_equal(a.permutation_gaps[metric], b.permutation_gaps[metric])
    d = run(y, s, sensitive_features=g, n_jobs=1, **{**kwargs, "random_state": 43})
    assert not np.array_equal(a.replicates["auc"], d.replicates["auc"])
    assert a.summaries().equals(b.summaries())


# --- statistical behaviour ---------------------------------------------------------------------


def test_ci_contains_point_estimate_typical_case():
    y, s, g = make_data(6, sizes=(300, 300, 300), ties=False)
    result = run(y, s, sensitive_features=g, metrics=("auc", "acc", "bce"), threshold=0.5, n_boot=300, n_permutations=0)
    frame = result.to_frame()
    assert np.all(frame.ci_low <= frame.value) and np.all(frame.value <= frame.ci_high)
    assert np.all(frame.ci_high - frame.ci_low > 0)
    summaries = result.summaries()
    for summary in ("gap_to_overall", "worst", "es_std", "es_mean_abs_dev", "mean_psd"):
        row = summaries[(summaries.metric == "auc") & (summaries.summary == summary)].iloc[0]
        assert row.ci_low <= row.value <= row.ci_high, summary


def test_ci_width_shrinks_like_one_over_sqrt_n():
    widths = []
    for m in (200, 800):
        y, s, g = make_data(7, sizes=(m, m), effect=(0.0, 0.0), ties=False)
        result = run(y, s, sensitive_features=g, metrics=("auc",), n_boot=400, n_permutations=0)
        frame = result.to_frame()
        row = frame[frame.group == "overall"].iloc[0]
        widths.append(row.ci_high - row.ci_low)
    assert 1.5 < widths[0] / widths[1] < 2.7  # sqrt(4) = 2


def test_permutation_p_values_uniformish_when_groups_exchangeable():
    p_values = []
    for seed in range(30):
        rng = np.random.default_rng(1000 + seed)
        n = 120
        y = rng.integers(0, 2, n)
        s = 1 / (1 + np.exp(-(rng.normal(size=n) + y)))
        g = rng.choice(["a", "b", "c"], n)
        result = run(y, s, sensitive_features=g, metrics=("auc",), n_boot=0, n_permutations=199, random_state=seed)
        summaries = result.summaries()
        p_values.append(summaries[(summaries.metric == "auc") & (summaries.summary == "gap")].p_permutation.iloc[0])
    p_values = np.array(p_values)
    assert np.all((p_values > 0) & (p_values <= 1))
    assert 0.3 < p_values.mean() < 0.7
    assert np.mean(p_values < 0.05) <= 0.2
    assert np.median(p_values) > 0.2


def test_permutation_p_value_tiny_when_one_group_clearly_worse():
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 2, n)
    g = np.array(["good", "bad"] * (n // 2))
    signal = np.where(g == "good", 2.5, 0.0)
    s = 1 / (1 + np.exp(-(rng.normal(size=n) + signal * y)))
    result = run(y, s, sensitive_features=g, metrics=("auc",), n_boot=0, n_permutations=499)
    summaries = result.summaries()
    p = summaries[(summaries.metric == "auc") & (summaries.summary == "gap")].p_permutation.iloc[0]
    assert p == pytest.approx(1 / 500)
    # only the gap carries a permutation p-value
    assert summaries[summaries.summary != "gap"].p_permutation.isna().all()


# --- paired bootstrap --------------------------------------------------------------------------


@pytest.mark.parametrize("summary", ["overall", "gap", "worst", "es_std"])
def test_paired_bootstrap_model_against_itself(summary):
    y, s, g = make_data(8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GroupMetricWarning)
        cmp = paired_bootstrap(y, s, s.copy(), sensitive_features=g, summary=summary, n_boot=200)
    assert cmp.difference == 0.0 and cmp.value_a == cmp.value_b
    assert cmp.ci_low == 0.0 and cmp.ci_high == 0.0
    assert cmp.p_value == 1.0


def test_paired_bootstrap_clearly_better_model():
    rng = np.random.default_rng(9)
    n = 600
    y = rng.integers(0, 2, n)
    g = rng.choice(["a", "b"], n)
    good = 1 / (1 + np.exp(-(rng.normal(size=n) + 2.0 * y)))
    poor = 1 / (1 + np.exp(-(rng.normal(size=n) + 0.3 * y)))
    cmp = paired_bootstrap(y, good, poor, sensitive_features=g, summary="overall", n_boot=300)
    assert cmp.value_a == pytest.approx(roc_auc_score(y, good), abs=1e-12)
    assert cmp.value_b == pytest.approx(roc_auc_score(y, poor), abs=1e-12)
    assert cmp.ci_low > 0 and cmp.p_value < 0.01
    worst = paired_bootstrap(y, good, poor, sensitive_features=g, summary="worst", n_boot=300)
    assert worst.ci_low > 0


def test_paired_bootstrap_is_paired():
    """B = A plus tiny noise: the paired CI of the difference is far narrower than either model's
    own CI (an unpaired comparison could not detect anything)."""
    rng = np.random.default_rng(10)
    n = 500
    y = rng.integers(0, 2, n)
    g = rng.choice(["a", "b"], n)
    a = 1 / (1 + np.exp(-(rng.normal(size=n) + y)))
    b = np.clip(a + rng.normal(scale=0.01, size=n), 0, 1)
    cmp = paired_bootstrap(y, a, b, sensitive_features=g, summary="overall", n_boot=300)
    single = run(y, a, sensitive_features=g, metrics=("auc",), n_boot=300, n_permutations=0).to_frame()
    own_width = float(single[single.group == "overall"].eval("ci_high - ci_low").iloc[0])
    assert (cmp.ci_high - cmp.ci_low) < own_width / 5
    assert cmp.difference == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b), abs=1e-12)


# --- the permutation null uses the same statistic as the observed gap ----------------------------


def _hand_ece(y, s, bins, n_bins):
    import pandas as pd

    if bins == "score_range":
        index = pd.cut(s, n_bins, labels=False) if np.ptp(s) > 0 else np.zeros(s.size, int)
    elif bins == "unit":
        index = np.clip(np.ceil(s * n_bins).astype(int) - 1, 0, n_bins - 1)
    else:  # equal-count bins by rank (stable)
        index = np.argsort(np.argsort(s, kind="stable"), kind="stable") * n_bins // s.size
    return sum(abs(np.sum(s[index == k] - y[index == k])) for k in range(n_bins)) / s.size


@pytest.mark.parametrize("bins", ["unit", "score_range", "quantile"])
@pytest.mark.parametrize("seed", [0, 3, 4])
def test_permutation_null_support_is_the_exact_relabelling_distribution(bins, seed):
    """Enumerate every relabelling of a 5 + 5 sample set (252 of them) and compute the ECE gap by
    hand, each group binned on its own scores like the observed value; every permutation
    replicate must be one of these values, and so must the observed gap."""
    import itertools

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 10)
    s = np.round(rng.random(10), 3)
    s = s + np.arange(10) * 1e-6  # distinct scores: no tie-order ambiguity for the quantile bins
    g = np.array(list("aaaaabbbbb"))
    result = run(y, s, sensitive_features=g, metrics=("ece",), ece_bins=bins, n_bins=3, n_boot=0, n_permutations=500)
    support = []
    for members in itertools.combinations(range(10), 5):
        a = np.isin(np.arange(10), members)
        support.append(abs(_hand_ece(y[a], s[a], bins, 3) - _hand_ece(y[~a], s[~a], bins, 3)))
    support = np.array(support)
    observed = result.summary("ece", "gap")
    a = g == "a"
    assert observed == pytest.approx(abs(_hand_ece(y[a], s[a], bins, 3) - _hand_ece(y[~a], s[~a], bins, 3)), abs=1e-12)
    null = result.permutation_gaps["ece"]
    distance = np.abs(null[:, None] - support[None, :]).min(axis=1)
    assert distance.max() < 1e-12
    # and the p-value is the exact relabelling p-value up to Monte Carlo error
    exact = np.mean(support >= observed - 1e-12)
    p = result.summaries().query("metric == 'ece' and summary == 'gap'").p_permutation.iloc[0]
    assert p == pytest.approx(exact, abs=0.08)


# --- every default metric, missing attribute values, and the paired bootstrap vs references -----


def _hand_bce(y, s):
    with np.errstate(divide="ignore"):
        return float(np.mean(-(y * np.maximum(np.log(s), -100) + (1 - y) * np.maximum(np.log(1 - s), -100))))


def _hand_metrics(y, s, pred):
    tp, fp = np.sum((y == 1) & (pred == 1)), np.sum((y == 0) & (pred == 1))
    fn, tn = np.sum((y == 1) & (pred == 0)), np.sum((y == 0) & (pred == 0))
    nan = float("nan")
    return {
        "acc": (tp + tn) / y.size,
        "tnr": tn / (tn + fp) if tn + fp else nan,
        "fpr": fp / (tn + fp) if tn + fp else nan,
        "fnr": fn / (tp + fn) if tp + fn else nan,
        "ppv": tp / (tp + fp) if tp + fp else nan,
        "selection_rate": pred.mean(),
        "bce": _hand_bce(y, s),
        "ece": _hand_ece(y, s, "unit", 10),
    }


def test_all_default_metrics_replicates_equal_reference_with_missing_attribute():
    """Samples with a missing attribute are in the overall column only (their own strata)."""
    y, s, g = make_data(11, sizes=(40, 30, 12))
    g = g.astype(object)
    g[::9] = None
    metrics = ("acc", "tnr", "fpr", "fnr", "ppv", "selection_rate", "bce", "ece")
    n_boot = 60
    result = run(y, s, sensitive_features=g, metrics=metrics, threshold=0.45, n_boot=n_boot, n_permutations=0,
                 random_state=5)
    assert result.n_excluded_missing == int(np.sum(g == None))  # noqa: E711
    names = sorted({v for v in g if v is not None})
    code = np.array([len(names) if v is None else names.index(v) for v in g])
    arrangement = np.lexsort((s, y, code))
    key = (code * 2 + y)[arrangement]
    bounds = np.r_[0, np.flatnonzero(np.diff(key)) + 1, y.size]
    rng = np.random.default_rng(np.random.SeedSequence(5).spawn(2)[0].spawn(1)[0])
    W = stratified_counts(bounds, n_boot, rng)
    pred = (s > 0.45).astype(int)
    for b in range(n_boot):
        idx = np.repeat(arrangement, W[b].astype(int))
        columns = [_hand_metrics(y[idx], s[idx], pred[idx])]
        for k in range(len(names)):
            m = idx[code[idx] == k]
            columns.append(_hand_metrics(y[m], s[m], pred[m]))
        for metric in metrics:
            expected = [c[metric] for c in columns]
            np.testing.assert_allclose(result.replicates[metric][b], expected, atol=1e-10, err_msg=metric)


@pytest.mark.parametrize("summary", ["overall", "gap", "worst"])
def test_paired_bootstrap_equals_slow_reference(summary):
    rng = np.random.default_rng(12)
    n = 150
    y = rng.integers(0, 2, n)
    g = rng.choice(["a", "b", "c"], n)
    a = np.round(1 / (1 + np.exp(-(rng.normal(size=n) + 1.5 * y))), 1)  # ties in A
    b = 1 / (1 + np.exp(-(rng.normal(size=n) + 0.8 * y * (g == "a"))))
    n_boot = 80
    cmp = paired_bootstrap(y, a, b, sensitive_features=g, summary=summary, n_boot=n_boot, random_state=3)
    names = sorted(set(g))
    code = np.array([names.index(v) for v in g])
    arrangement = np.lexsort((a, y, code))  # resampling weights are laid out by model A's scores
    key = (code * 2 + y)[arrangement]
    bounds = np.r_[0, np.flatnonzero(np.diff(key)) + 1, n]
    W = stratified_counts(bounds, n_boot, np.random.default_rng(np.random.SeedSequence(3).spawn(1)[0]))

    def stat(idx, score):
        values = [roc_auc_score(y[idx], score[idx])]
        values += [roc_auc_score(y[idx][code[idx] == k], score[idx][code[idx] == k]) for k in range(3)]
        return {"overall": values[0], "gap": max(values[1:]) - min(values[1:]), "worst": min(values[1:])}[summary]

    everyone = np.arange(n)
    assert cmp.value_a == pytest.approx(stat(everyone, a), abs=1e-12)
    assert cmp.value_b == pytest.approx(stat(everyone, b), abs=1e-12)
    diffs = []
    for r in range(n_boot):
        idx = np.repeat(arrangement, W[r].astype(int))
        diffs.append(stat(idx, a) - stat(idx, b))
    diffs = np.array(diffs)
    low, high = np.quantile(diffs, [0.025, 0.975])
    assert cmp.ci_low == pytest.approx(low, abs=1e-12) and cmp.ci_high == pytest.approx(high, abs=1e-12)
    p = min(1.0, 2 * min((np.sum(diffs <= 0) + 1) / (n_boot + 1), (np.sum(diffs >= 0) + 1) / (n_boot + 1)))
    assert cmp.p_value == pytest.approx(p, abs=1e-12)
