"""Several attributes on one set of bootstrap replicates (``group_metrics_shared``, used by the audit).

The shared path must give exactly the point values of ``group_metrics`` attribute by attribute,
exactly ``group_metrics`` itself for one attribute, and intervals that agree with an independent
per-attribute bootstrap within Monte Carlo error. Integer replicate weights must give the values of
float64 weights.
"""

import warnings

import numpy as np
import pandas as pd
import pytest

from medequity.metrics import GroupMetricWarning, group_metrics
from medequity.metrics.bootstrap import stratified_counts
from medequity.metrics.frame import SHARED_BOOTSTRAP, _Evaluator, group_metrics_shared
from medequity.metrics.groups import encode_groups

METRICS = ("auc", "tpr", "fpr", "ppv", "ece", "bce")


def make_frame(n, seed=0):
    """Two attributes; the AUC deficit of race "B" also lowers the AUC of the sex group it is common in,
    so the cells of sex x race differ (the case where a finer stratification could matter)."""
    rng = np.random.default_rng(seed)
    race = rng.choice(["A", "B", "C"], n, p=[0.6, 0.25, 0.15])
    sex = np.where(rng.random(n) < np.where(race == "B", 0.7, 0.4), "F", "M")
    y = rng.binomial(1, 0.35, n)
    strength = np.where(race == "B", 0.8, 1.8)
    score = np.round(1 / (1 + np.exp(-(rng.normal(size=n) + strength * y - 0.8))), 3)  # ties
    sex = sex.astype(object)
    sex[rng.random(n) < 0.03] = None  # missing sex: excluded from sex's groups, in every overall set
    return pd.DataFrame({"y": y, "score": score, "sex": sex, "race": race})


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GroupMetricWarning)
        return fn(*args, **kwargs)


def features(frame):
    return [frame["sex"], frame["race"], frame[["sex", "race"]]]


def test_shared_point_values_equal_group_metrics_per_attribute():
    frame = make_frame(1500, seed=1)
    y, s = frame.y.to_numpy(), frame.score.to_numpy()
    shared = quiet(group_metrics_shared, y, s, sensitive_features=features(frame), metrics=METRICS, threshold=0.5,
                   n_boot=50, random_state=3)
    for feature, result in zip(features(frame), shared):
        alone = quiet(group_metrics, y, s, sensitive_features=feature, metrics=METRICS, threshold=0.5, n_boot=0)
        assert result.groups == alone.groups and result.attribute == alone.attribute
        for metric in METRICS:
            np.testing.assert_allclose(result.values[metric], alone.values[metric], atol=1e-12, err_msg=metric)
            assert result.pooled[metric] == pytest.approx(alone.pooled[metric], abs=1e-12)
        assert result.adf is not None and alone.adf is not None
        assert result.adf["value"] == pytest.approx(alone.adf["value"], abs=1e-12)
        pd.testing.assert_frame_equal(result.counts, alone.counts)
        assert result.warnings == alone.warnings
        assert result.settings()["bootstrap"] == SHARED_BOOTSTRAP
        # every replicate keeps each group's positives and negatives: AUC defined everywhere
        assert np.isfinite(result.replicates["auc"]).all()


def test_one_attribute_is_exactly_group_metrics():
    frame = make_frame(400, seed=2)
    y, s = frame.y.to_numpy(), frame.score.to_numpy()
    (shared,) = quiet(group_metrics_shared, y, s, sensitive_features=[frame["race"]], metrics=METRICS, threshold=0.5,
                      n_boot=80, n_permutations=30, random_state=7)
    alone = quiet(group_metrics, y, s, sensitive_features=frame["race"], metrics=METRICS, threshold=0.5, n_boot=80,
                  n_permutations=30, random_state=7)
    for metric in METRICS:
        np.testing.assert_array_equal(shared.replicates[metric], alone.replicates[metric])
        np.testing.assert_array_equal(shared.pooled_replicates[metric], alone.pooled_replicates[metric])
        np.testing.assert_array_equal(shared.permutation_gaps[metric], alone.permutation_gaps[metric])
    assert shared.settings() == alone.settings()


def test_an_attribute_that_cannot_be_coded_is_returned_as_its_error():
    frame = make_frame(300, seed=3)
    y, s = frame.y.to_numpy(), frame.score.to_numpy()
    bad = pd.Series(np.arange(5))  # 5 rows for 300 samples
    race, error = quiet(group_metrics_shared, y, s, sensitive_features=[frame["race"], bad], metrics=("auc",), n_boot=20)
    assert isinstance(error, ValueError) and "rows" in str(error)
    assert race.groups == ("A", "B", "C")


def test_shared_intervals_agree_with_independent_per_attribute_bootstrap():
    """Same law within Monte Carlo error: bootstrap standard errors and 95% percentile bounds of every
    group, the pool contrasts' spread, for each attribute, against group_metrics run alone (its own
    group x label strata, an independent stream). With B = 1000 replicates the relative MC error of
    an SE is about 1/sqrt(2B) per estimate, 3.2% for a difference (tolerance 15%); a 2.5% quantile
    has an MC error of about 0.085 SE per estimate (tolerance 0.5 SE). Not identical in law: the
    shared strata hold the race composition inside each sex group fixed, and race "B" differs in
    AUC, so sex's SEs are smaller by about 6% on this data (measured with B = 6000; race's and the
    intersection's agree to 1-2%); the tolerance covers that, a wrong resampling (unstratified,
    weights counted twice, a group's pool from another attribute) does not fit in it."""
    frame = make_frame(1200, seed=4)
    y, s = frame.y.to_numpy(), frame.score.to_numpy()
    n_boot = 1000
    shared = quiet(group_metrics_shared, y, s, sensitive_features=features(frame), metrics=("auc", "tpr"),
                   threshold=0.5, n_boot=n_boot, random_state=11)
    for feature, result in zip(features(frame), shared):
        alone = quiet(group_metrics, y, s, sensitive_features=feature, metrics=("auc", "tpr"), threshold=0.5,
                      n_boot=n_boot, random_state=12)
        for metric in ("auc", "tpr"):
            a, b = result.replicates[metric], alone.replicates[metric]
            se_a, se_b = a.std(axis=0, ddof=1), b.std(axis=0, ddof=1)
            np.testing.assert_allclose(se_a, se_b, rtol=0.15, err_msg=f"{result.attribute} {metric} SE")
            low_a, high_a = np.quantile(a, [0.025, 0.975], axis=0)
            low_b, high_b = np.quantile(b, [0.025, 0.975], axis=0)
            assert np.all(np.abs(low_a - low_b) < 0.5 * se_b), (result.attribute, metric, low_a, low_b)
            assert np.all(np.abs(high_a - high_b) < 0.5 * se_b), (result.attribute, metric, high_a, high_b)
            contrast_a = a[:, 1:] - result.pooled_replicates[metric][:, None]
            contrast_b = b[:, 1:] - alone.pooled_replicates[metric][:, None]
            np.testing.assert_allclose(contrast_a.std(axis=0, ddof=1), contrast_b.std(axis=0, ddof=1), rtol=0.15,
                                       err_msg=f"{result.attribute} {metric} contrast SE")


def test_integer_weights_give_the_float64_values():
    """The engine sums integer counts exactly; float64 weights (the reference) give the same values."""
    frame = make_frame(600, seed=5)
    y, s = frame.y.to_numpy(), frame.score.to_numpy()
    pred = (s > 0.5).astype(int)
    groupings = [quiet(encode_groups, f, y.size) for f in features(frame)]
    evaluator = _Evaluator(y, s, pred, None, groupings, METRICS)
    W = stratified_counts(evaluator.strata_bounds, 25, np.random.default_rng(0), dtype=np.int32)
    exact = evaluator.values_all(W)
    reference = evaluator.values_all(W.astype(np.float64))
    for by_int, by_float in zip(exact, reference):
        for metric in by_float:
            np.testing.assert_allclose(by_int[metric], by_float[metric], rtol=0, atol=1e-12, err_msg=metric)


def test_shared_false_is_group_metrics_per_attribute():
    frame = make_frame(500, seed=6)
    y, s = frame.y.to_numpy(), frame.score.to_numpy()
    separate = quiet(group_metrics_shared, y, s, sensitive_features=features(frame), metrics=("auc", "tpr", "ece"),
                     threshold=0.5, n_boot=60, random_state=9, shared=False)
    for feature, result in zip(features(frame), separate):
        alone = quiet(group_metrics, y, s, sensitive_features=feature, metrics=("auc", "tpr", "ece"), threshold=0.5,
                      n_boot=60, random_state=9)
        for metric in ("auc", "tpr", "ece"):
            np.testing.assert_array_equal(result.replicates[metric], alone.replicates[metric])
        assert result.settings() == alone.settings()
