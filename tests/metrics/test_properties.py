"""Property-based checks (hypothesis) of the per-group engine and the aggregate summaries."""

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from medequity.metrics import (
    GroupMetricWarning,
    equity_scaled,
    gap,
    gap_to_overall,
    group_values,
    max_psd,
    mean_psd,
    ratio,
    skewness,
    summarize,
    worst_group,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
unit = st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def labelled_groups(draw):
    """Labels, integer score levels (0..20, many ties), 2-4 groups each with both classes."""
    n_groups = draw(st.integers(2, 4))
    ys, levels, groups = [], [], []
    for k in range(n_groups):
        m = draw(st.integers(2, 12))
        y = draw(st.lists(st.integers(0, 1), min_size=m, max_size=m))
        y[0], y[1] = 0, 1
        ys += y
        levels += draw(st.lists(st.integers(0, 20), min_size=m, max_size=m))
        groups += [f"g{k}"] * m
    return np.array(ys), np.array(levels), np.array(groups)


def _auc(y, s, g):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GroupMetricWarning)
        return group_values("auc", y, sensitive_features=g, y_score=s)


@SETTINGS
@given(labelled_groups(), st.sampled_from(["square", "exp", "logit", "affine"]))
def test_auc_invariant_to_strictly_monotone_transforms(data, transform):
    y, levels, g = data
    s = levels / 20.0
    t = {
        "square": lambda x: (x + 0.1) ** 2,
        "exp": lambda x: np.exp(3 * x) - 7,
        "logit": lambda x: np.log((x + 0.01) / (1.01 - x)),
        "affine": lambda x: -5 + 100 * x,
    }[transform](s)
    assert len(np.unique(t)) == len(np.unique(s))  # still strictly monotone in floating point
    o1, v1, _ = _auc(y, s, g)
    o2, v2, _ = _auc(y, t, g)
    assert o1 == pytest.approx(o2, abs=1e-12)
    np.testing.assert_allclose(v1, v2, atol=1e-12)


@SETTINGS
@given(labelled_groups(), st.randoms(use_true_random=False))
def test_gaps_symmetric_in_group_order(data, random):
    y, levels, g = data
    s = levels / 20.0
    names = sorted(set(g))
    shuffled = names[:]
    random.shuffle(shuffled)
    relabel = {a: "z" + b for a, b in zip(names, shuffled)}  # new names sort in another order
    g2 = np.array([relabel[v] for v in g])
    o1, v1, n1 = _auc(y, s, g)
    o2, v2, n2 = _auc(y, s, g2)
    by_name = dict(zip(n2, v2))
    np.testing.assert_allclose(v1, [by_name[relabel[n]] for n in n1], atol=1e-12)
    s1, s2 = summarize(o1, v1), summarize(o2, v2)
    for key in s1:
        assert float(s1[key]) == pytest.approx(float(s2[key]), abs=1e-12, nan_ok=True), key


group_vectors = hnp.arrays(np.float64, st.integers(2, 6), elements=unit)


@SETTINGS
@given(unit, group_vectors, st.sampled_from(["std", "mean_abs_dev", "sum_abs_dev"]))
def test_equity_scaled_at_most_overall(overall, values, disparity):
    es = float(equity_scaled(overall, values, disparity=disparity))
    assert 0 <= es <= overall + 1e-15


@SETTINGS
@given(unit, group_vectors)
def test_basic_summary_ranges(overall, values):
    assert float(gap(values)) >= 0
    assert float(gap(values)) == pytest.approx(values.max() - values.min())
    assert float(gap_to_overall(overall, values)) >= 0
    assert float(worst_group(values)) == values.min()
    assert float(worst_group(values, higher_is_better=False)) == values.max()
    r = float(ratio(values))
    if values.max() > 0:
        assert 0 <= r <= 1
    sk = float(skewness(values))
    if values.max() < 1:
        assert sk >= 1 - 1e-12
    else:
        assert np.isnan(sk)  # a group with M = 1 has zero error: undefined, never "fair"


@SETTINGS
@given(unit, st.integers(2, 6), st.sampled_from(["std", "mean_abs_dev", "sum_abs_dev"]))
def test_equity_scaled_equals_overall_when_groups_equal(value, n_groups, disparity):
    values = np.full(n_groups, value)
    # (np.std of equal floats may be ~1e-16, not exactly 0)
    assert float(equity_scaled(value, values, disparity=disparity)) == pytest.approx(value, rel=1e-12, abs=1e-15)
    assert float(gap(values)) == 0
    if value > 0:
        assert float(mean_psd(value, values)) == pytest.approx(0, abs=1e-12)
        assert float(max_psd(value, values)) == 0
        assert float(ratio(values)) == 1
    if value < 1:
        assert float(skewness(values)) == 1


@SETTINGS
@given(
    hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=3, min_side=2, max_side=4), elements=unit),
)
def test_aggregates_vectorised_over_leading_axes(values):
    overall = values.mean(axis=-1) * 0.9 + 0.05
    functions = {
        "gap": lambda o, v: gap(v),
        "gap_to_overall": gap_to_overall,
        "ratio": lambda o, v: ratio(v),
        "worst": lambda o, v: worst_group(v),
        "skewness": lambda o, v: skewness(v),
        "es_std": lambda o, v: equity_scaled(o, v, disparity="std"),
        "es_mad": lambda o, v: equity_scaled(o, v, disparity="mean_abs_dev"),
        "es_sad": lambda o, v: equity_scaled(o, v, disparity="sum_abs_dev"),
        "mean_psd": mean_psd,
        "max_psd": max_psd,
    }
    with np.errstate(all="ignore"):
        for name, fn in functions.items():
            batched = np.asarray(fn(overall, values))
            assert batched.shape == values.shape[:-1], name
            for index in np.ndindex(values.shape[:-1]):
                single = float(fn(overall[index], values[index]))
                assert batched[index] == pytest.approx(single, abs=1e-15, nan_ok=True), name
        batched = summarize(overall, values)
        for index in np.ndindex(values.shape[:-1]):
            single = summarize(overall[index], values[index])
            for key in single:
                assert batched[key][index] == pytest.approx(float(single[key]), abs=1e-15, nan_ok=True)


@SETTINGS
@given(unit, group_vectors)
def test_nan_group_value_makes_every_summary_nan(overall, values):
    values = values.copy()
    values[0] = np.nan
    for key, value in summarize(overall, values).items():
        assert np.isnan(value), key
