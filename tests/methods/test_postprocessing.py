"""Post-processing: fairlearn ThresholdOptimizer (Hardt et al. 2016) and reject-option
classification (Kamiran et al. 2012)."""

from __future__ import annotations

import numpy as np
import pytest

from medequity.methods import create_method
from medequity.methods.reject_option import fairness_gap


def biased_scores(n=2000, seed=0):
    """Scores of a model that under-calls disease in group 1: its scores are shifted down by 0.15."""
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 2, n)
    labels = (rng.random(n) < 0.5).astype(int)
    scores = np.clip(0.5 + 0.25 * (2 * labels - 1) + rng.normal(0, 0.15, n) - 0.15 * groups, 0.001, 0.999)
    return scores, labels, groups


def tpr_gap(labels, predictions, groups):
    return fairness_gap("equal_opportunity", labels, predictions, groups)


# --- ThresholdOptimizer --------------------------------------------------------------------------


def test_threshold_optimizer_narrows_the_tpr_gap_on_validation():
    scores, labels, groups = biased_scores()
    method = create_method("threshold_optimizer")  # equalized odds, accuracy objective
    method.fit_postprocessor(scores, labels, groups)
    _, predictions = method.postprocess(scores, groups)
    plain = (scores >= 0.5).astype(int)
    before, after = tpr_gap(labels, plain, groups), tpr_gap(labels, predictions, groups)
    # measured: 0.185 → 0.003 (the derived predictor equalises TPR up to randomisation noise)
    assert before > 0.15 and after < 0.02
    assert set(np.unique(predictions)) <= {0, 1}
    # seeded randomisation: the same inputs give the same predictions
    np.testing.assert_array_equal(predictions, method.postprocess(scores, groups)[1])


def test_threshold_optimizer_demographic_parity_and_unknown_groups():
    scores, labels, groups = biased_scores(seed=1)
    method = create_method("threshold_optimizer", constraints="demographic_parity")
    method.fit_postprocessor(scores, labels, groups)
    _, predictions = method.postprocess(scores, groups)
    plain = (scores >= 0.5).astype(int)
    dp_before = fairness_gap("demographic_parity", labels, plain, groups)
    dp_after = fairness_gap("demographic_parity", labels, predictions, groups)
    assert dp_after < dp_before / 3
    unknown = np.array([0.2, 0.7, 0.5])
    _, fallback = method.postprocess(unknown, np.array([-1, -1, -1]))
    np.testing.assert_array_equal(fallback, [0, 1, 1])  # unseen group: plain score >= 0.5


def test_threshold_optimizer_end_to_end(run_tiny_experiment, assert_finite_run):
    result = run_tiny_experiment("threshold_optimizer", epochs=1)
    assert_finite_run(result)
    assert set(result.predictions["pred"].unique()) <= {0, 1}
    assert type(result.method).needs_groups_at_inference


# --- reject-option classification ------------------------------------------------------------------


def test_reject_option_assignments_inside_and_outside_the_critical_region():
    method = create_method("reject_option")
    scores = np.array([0.05, 0.45, 0.55, 0.95, 0.05, 0.45, 0.55, 0.95, 0.52])
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1, -1])
    predictions = method.decide(scores, groups, margin=0.1, privileged=0)
    # outside |s − 0.5| ≤ 0.1: plain threshold; inside: privileged (0) → 0, unprivileged (1) → 1,
    # unknown group keeps the plain decision
    np.testing.assert_array_equal(predictions, [0, 0, 0, 1, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(method.decide(scores, groups, 0.0, 0), (scores >= 0.5).astype(int))
    favourable_zero = create_method("reject_option", favourable_label=0)
    np.testing.assert_array_equal(favourable_zero.decide(scores, groups, 0.1, 0), [0, 1, 1, 1, 0, 0, 0, 1, 1])


def test_reject_option_narrows_the_demographic_parity_gap_within_the_accuracy_bound():
    scores, labels, groups = biased_scores(seed=2)
    method = create_method("reject_option", max_accuracy_loss=0.05)
    method.fit_postprocessor(scores, labels, groups)
    assert method.privileged == 0  # group 1's scores are shifted down: fewer positive calls
    _, predictions = method.postprocess(scores, groups)
    plain = (scores >= 0.5).astype(int)
    before = fairness_gap("demographic_parity", labels, plain, groups)
    after = fairness_gap("demographic_parity", labels, predictions, groups)
    assert 0 < method.margin <= 0.5
    assert before > 0.15 and after < 0.02  # measured: 0.158 → 0.006 with margin 0.10
    assert (predictions == labels).mean() >= (plain == labels).mean() - 0.05
    outside = np.abs(scores - 0.5) > method.margin
    np.testing.assert_array_equal(predictions[outside], plain[outside])


def test_reject_option_with_three_groups_uses_the_highest_selection_rate_as_privileged():
    rng = np.random.default_rng(3)
    groups = np.repeat([0, 1, 2], 400)
    labels = (rng.random(1200) < 0.5).astype(int)
    shift = np.array([0.0, 0.1, -0.1])[groups]  # group 1 is called positive most often
    scores = np.clip(0.5 + 0.2 * (2 * labels - 1) + rng.normal(0, 0.15, 1200) + shift, 0, 1)
    method = create_method("reject_option", max_accuracy_loss=0.1)
    method.fit_postprocessor(scores, labels, groups)
    assert method.privileged == 1
    _, predictions = method.postprocess(scores, groups)
    plain = (scores >= 0.5).astype(int)
    assert fairness_gap("demographic_parity", labels, predictions, groups) < \
        fairness_gap("demographic_parity", labels, plain, groups)


def test_reject_option_rejects_unknown_metrics():
    with pytest.raises(ValueError, match="metric"):
        create_method("reject_option", metric="accuracy")


def test_reject_option_end_to_end(run_tiny_experiment, assert_finite_run):
    result = run_tiny_experiment("reject_option", epochs=1)
    assert_finite_run(result)
    assert set(result.predictions["pred"].unique()) <= {0, 1}
    assert result.method_log["reject_option_privileged_group"][0] in ("female", "male")
