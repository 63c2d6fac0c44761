"""Group-vs-pool contrasts: min-P intervals and adjusted p-values that cannot disagree."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from medequity.metrics import GroupMetricWarning, group_metrics
from medequity.metrics.contrasts import (
    binomial_variance,
    contrast_standard_errors,
    hanley_mcneil_variance,
    min_p_contrasts,
)


def run(*args, **kwargs):
    kwargs.setdefault("min_group_size", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GroupMetricWarning)
        return group_metrics(*args, **kwargs)


def test_hand_computed_family():
    # Two contrasts, B = 5 replicates, ci = 0.5 (alpha = 0.5). Percentile p-values with +1
    # smoothing: p(v) = 2 * min(#{d* <= v} + 1, #{d* >= v} + 1) / 6, capped at 1.
    value = np.array([0.3, -0.1])
    reps = np.array([[0.2, 0.0], [0.4, -0.2], [0.3, -0.1], [0.5, -0.1], [0.1, -0.1]])
    family = min_p_contrasts(value, reps, ci=0.5)
    # group 0: all replicates > 0 -> p(0) = 2 * (0 + 1) / 6 = 1/3; group 1: #{<= 0} = 5, #{>= 0} = 1
    # -> p(0) = 2 * 2 / 6 = 2/3.
    np.testing.assert_allclose(family.p_marginal, [1 / 3, 2 / 3])
    # each replicate's own p-values, by hand (column 0 sorted: .1 .2 .3 .4 .5; column 1: -.2 -.1 -.1 -.1 0)
    p0 = {0.1: 2 * 2 / 6, 0.2: 2 * 3 / 6, 0.3: 1.0, 0.4: 2 * 3 / 6, 0.5: 2 * 2 / 6}
    p1 = {-0.2: 2 * 2 / 6, -0.1: 1.0, 0.0: 2 * 2 / 6}
    m_star = sorted(min(p0[round(a, 1)], p1[round(b, 1)]) for a, b in reps)  # [2/3, 2/3, 2/3, 1, 1]
    # adjusted p = (1 + #{m* <= p(0)}) / 6
    expected = [(1 + sum(m <= p + 1e-12 for m in m_star)) / 6 for p in (1 / 3, 2 / 3)]
    np.testing.assert_allclose(family.p_adjusted, np.minimum(1, expected))
    # alpha = 0.5: (1 + e)/6 < 0.5 <=> e <= 1, so gamma is the 2nd smallest m*
    assert family.critical_level == pytest.approx(m_star[1])
    # interval {v : p(v) >= 2/3}: r = (2/3) * 6 / 2 - 1 = 1 -> from the smallest to the largest replicate
    np.testing.assert_allclose(family.ci_low, [0.1, -0.2])
    np.testing.assert_allclose(family.ci_high, [0.5, 0.0])
    assert family.p_omnibus == pytest.approx(min(expected))


def test_hand_computed_bootstrap_t_family():
    # The same layout studentized: t* = (d* - d)/se*, observed t(v) = (d - v)/se. Integers keep the
    # ties exact. Column 0: t* = (-1, 2, 0, 2, -2), t(0) = 3; column 1: t* = (2, -1, 0, 0, 0), t(0) = -2.
    value, se = np.array([3.0, -1.0]), np.array([1.0, 0.5])
    reps = np.array([[2, 0], [4, -2], [3, -1], [5, -1], [1, -1]], dtype=float)
    se_reps = np.array([[1, 0.5], [0.5, 1], [1, 0.5], [1, 0.5], [1, 0.5]])
    family = min_p_contrasts(value, reps, ci=0.5, se=se, se_replicates=se_reps)
    # t(0) = 3 is above every t*_0 and t(0) = -2 below every t*_1: p = 2 * (0 + 1) / 6 each
    np.testing.assert_allclose(family.p_marginal, [1 / 3, 1 / 3])
    # replicate p-values: column 0 gives (1, 1, 1, 1, 2/3), column 1 (2/3, 2/3, 1, 1, 1)
    m_star = [2 / 3, 2 / 3, 2 / 3, 1, 1]
    # no m* is <= 1/3: adjusted p = 1/6 for both; gamma = 2nd smallest m* = 2/3
    np.testing.assert_allclose(family.p_adjusted, [1 / 6, 1 / 6])
    assert family.critical_level == pytest.approx(m_star[1])
    # {t : p(t) >= 2/3} runs from the smallest to the largest t*: column 0 [-2, 2], column 1 [-1, 2];
    # v = d - se * t: column 0 [3 - 2, 3 + 2], column 1 [-1 - 0.5 * 2, -1 + 0.5 * 1]
    np.testing.assert_allclose(family.ci_low, [1.0, -2.0])
    np.testing.assert_allclose(family.ci_high, [5.0, -0.5])
    # the bootstrap SE reported is that of d*, not of t*
    np.testing.assert_allclose(family.se, reps.std(axis=0, ddof=1))


def test_replicates_without_a_standard_error_are_dropped():
    value = np.array([0.2, -0.1])
    rng = np.random.default_rng(1)
    reps = value + rng.normal(0, 0.05, size=(300, 2))
    se_reps = np.full((300, 2), 0.05)
    se_reps[:7, 0] = 0.0
    se_reps[7:10, 1] = np.nan
    family = min_p_contrasts(value, reps, se=[0.05, 0.05], se_replicates=se_reps)
    assert family.n_replicates == 290
    with pytest.raises(ValueError, match="both se"):
        min_p_contrasts(value, reps, se=[0.05, 0.05])
    with pytest.raises(ValueError, match="se_replicates"):
        min_p_contrasts(value, reps, se=[0.05, 0.05], se_replicates=se_reps[:, :1])


def test_hanley_mcneil_variance_is_exact_for_exponential_scores():
    # Hanley & McNeil's Q1 = A/(2 - A), Q2 = 2A^2/(1 + A) are exact when negatives ~ Exp(1) and
    # positives ~ Exp(rate r), A = 1/(1 + r): compare with the variance of simulated Mann-Whitney AUCs.
    rng = np.random.default_rng(0)
    m, n, r, sims = 9, 14, 0.5, 40_000
    pos = rng.exponential(1 / r, size=(sims, m))
    neg = rng.exponential(1.0, size=(sims, n))
    auc = (pos[:, :, None] > neg[:, None, :]).mean(axis=(1, 2))
    assert auc.mean() == pytest.approx(1 / (1 + r), abs=0.002)
    # the half-pair pull towards 1/2 changes the variance by well under 1% at mn = 126
    assert hanley_mcneil_variance(1 / (1 + r), m, n) == pytest.approx(auc.var(), rel=0.03)
    assert hanley_mcneil_variance(1.0, m, n) > 0  # a perfect replicate still has an SE


def test_binomial_variance_by_hand():
    assert binomial_variance(0.5, 10) == pytest.approx(0.5 * 0.5 / 10)
    assert binomial_variance(1.0, 8) == pytest.approx(0.9 * 0.1 / 8)  # (8 + 1)/(8 + 2) = 0.9


def test_contrast_standard_errors_match_the_bootstrap():
    # The plug-in SE of d_g = M(g) - M(pool) against the spread of the engine's own replicates.
    y, s, g = _cohort(4000, [0, 0.3, 0.0], seed=5, shares=[0.6, 0.3, 0.1])
    result = run(y, s, sensitive_features=g, metrics=("auc", "tpr", "fpr", "ece"), threshold=0.5, n_boot=1500)
    counts = result.counts.loc[list(result.groups)]
    # Rates: the binomial formula is the bootstrap's own variance (up to Monte Carlo error). AUC:
    # Hanley-McNeil assumes exponential scores and overstates binormal ones' SE by 10-20 %, a
    # factor that cancels between the observed and the replicate t of the bootstrap-t.
    for metric, low, high in (("auc", 1.0, 1.3), ("tpr", 0.95, 1.05), ("fpr", 0.95, 1.05)):
        se = contrast_standard_errors(metric, result.values[metric][1:], counts.n_pos.to_numpy(float),
                                      counts.n_neg.to_numpy(float))
        ratio = se / result.contrast_family(metric).se
        assert ((ratio > low) & (ratio < high)).all(), (metric, ratio)
    assert contrast_standard_errors("ece", result.values["ece"][1:], counts.n_pos.to_numpy(float),
                                    counts.n_neg.to_numpy(float)) is None
    assert contrast_standard_errors("tpr", [0.5, 0.5], [np.nan, np.nan], [np.nan, np.nan]) is None  # no labels


def test_contrast_standard_error_of_a_rate_by_hand():
    # TPR of three groups with 10, 30, 60 positives: the pool is the 0.1/0.3/0.6-weighted mean, so
    # Var(d_0) = 0.9^2 V_0 + 0.3^2 V_1 + 0.6^2 V_2 with V = p(1 - p)/n at p = (k + 1)/(n + 2).
    tpr, n_pos = np.array([0.5, 0.8, 0.9]), np.array([10.0, 30.0, 60.0])
    p = (tpr * n_pos + 1) / (n_pos + 2)
    v = p * (1 - p) / n_pos
    expected = np.sqrt(0.9**2 * v[0] + 0.3**2 * v[1] + 0.6**2 * v[2])
    se = contrast_standard_errors("tpr", tpr, n_pos, np.full(3, 50.0))
    assert se[0] == pytest.approx(expected)
    # replicates (B, G) get one SE each, from their own values
    reps = np.array([tpr, [0.6, 0.7, 0.9]])
    assert contrast_standard_errors("tpr", reps, n_pos, np.full(3, 50.0)).shape == (2, 3)


@settings(max_examples=200, deadline=None)
@given(
    g=st.integers(2, 6),
    b=st.integers(5, 300),
    seed=st.integers(0, 10_000),
    ci=st.sampled_from([0.8, 0.9, 0.95, 0.99]),
    shift=st.floats(-3, 3),
)
def test_interval_excludes_zero_exactly_when_adjusted_p_below_alpha(g, b, seed, ci, shift):
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.01, 1, g)
    value = rng.normal(shift, 1, g) * scale
    reps = value + rng.standard_t(4, size=(b, g)) * scale
    # percentile p-values, then bootstrap-t ones (SEs that vary with the replicate, as a plug-in SE does)
    se = scale * rng.uniform(0.5, 1.5, g)
    se_reps = scale * rng.uniform(0.2, 2.0, (b, g))
    for family in (min_p_contrasts(value, reps, ci=ci), min_p_contrasts(value, reps, ci, se=se, se_replicates=se_reps)):
        excludes_zero = (family.ci_low > 0) | (family.ci_high < 0)
        significant = family.p_adjusted < 1 - ci
        np.testing.assert_array_equal(excludes_zero, significant)
        assert family.p_omnibus == pytest.approx(family.p_adjusted.min())


def test_undefined_contrasts_leave_the_family():
    value = np.array([0.2, np.nan, -0.1])
    rng = np.random.default_rng(0)
    reps = value + rng.normal(0, 0.05, size=(200, 3))
    family = min_p_contrasts(value, reps)
    assert np.isnan(family.p_adjusted[1]) and np.isnan(family.ci_low[1])
    assert np.isfinite(family.p_adjusted[[0, 2]]).all()


def test_bad_shapes_and_levels_are_refused():
    with pytest.raises(ValueError, match="shape"):
        min_p_contrasts([0.1, 0.2], np.zeros((10, 3)))
    with pytest.raises(ValueError, match="ci must be in"):
        min_p_contrasts([0.1, 0.2], np.zeros((10, 2)), ci=1.5)


def _cohort(n, deficits, seed, shares=None):
    """Groups with AUC deficits (signal strength per group), group sizes by ``shares``."""
    rng = np.random.default_rng(seed)
    names = [f"g{k}" for k in range(len(deficits))]
    g = rng.choice(names, n, p=shares)
    y = rng.binomial(1, 0.3, n)
    strength = np.array([1.8 - d for d in deficits])[np.searchsorted(names, g)]
    s = 1 / (1 + np.exp(-(rng.normal(size=n) + strength * y - 0.9)))
    return y, s, g


def test_contrast_is_group_auc_minus_pooled_auc_with_missing_rows_excluded():
    y, s, g = _cohort(600, [0, 0.5, 1.0], seed=1)
    g = g.astype(object)
    g[:40] = None  # missing attribute: excluded from the groups and from the pool
    result = run(y, s, sensitive_features=g, metrics=("auc",), n_boot=200)
    known = np.array([v is not None for v in g])
    pooled = roc_auc_score(y[known], s[known])
    assert result.pooled["auc"] == pytest.approx(pooled, abs=1e-12)
    assert result.values["auc"][0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)  # overall keeps them
    table = result.contrasts().set_index("group")
    for name in ("g0", "g1", "g2"):
        member = known & (g == name)
        expected = roc_auc_score(y[member], s[member]) - pooled
        assert table.loc[name, "difference"] == pytest.approx(expected, abs=1e-12)


def test_a_real_deficit_is_flagged_and_the_gap_p_value_is_the_omnibus():
    # The audit case of issue 14: a minority with a large AUC deficit among several small groups.
    y, s, g = _cohort(5000, [0, 0.9, 0.1, 0.0, 0.2], seed=3, shares=[0.6, 0.15, 0.12, 0.08, 0.05])
    result = run(y, s, sensitive_features=g, metrics=("auc", "tpr"), threshold=0.5, n_boot=500)
    table = result.contrasts().set_index(["metric", "group"])
    worst = table.loc[("auc", "g1")]
    assert worst.significant and worst.ci_high < 0 and worst.p_adjusted < 0.01
    summaries = result.summaries().set_index(["metric", "summary"])
    family_p = table.loc["auc"].p_adjusted.min()
    assert summaries.loc[("auc", "gap"), "p_value"] == pytest.approx(family_p)
    assert np.isnan(summaries.loc[("auc", "worst"), "p_value"])


def test_no_difference_gives_intervals_that_cover_zero():
    y, s, g = _cohort(3000, [0, 0, 0], seed=11, shares=[0.6, 0.3, 0.1])
    result = run(y, s, sensitive_features=g, metrics=("auc",), n_boot=400)
    table = result.contrasts()
    assert (table.ci_low < 0).all() and (table.ci_high > 0).all()
    assert not table.significant.any()
