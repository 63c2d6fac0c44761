"""Paired comparison of two models on the same test set (METRICS.md "Uncertainty and significance").

Both models are evaluated on the *same* bootstrap replicates (same resampling weights), so the
difference of any summary (e.g. the AUC gap, worst-group AUC, ES-AUC) has a paired bootstrap
distribution: its percentile CI and a two-sided p-value for "no difference".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medequity.metrics import aggregate
from medequity.metrics._validation import check_binary, check_same_length, check_scores
from medequity.metrics.bootstrap import DEFAULT_MAX_ELEMENTS, map_chunks, percentile_interval, stratified_counts, two_sided_p_value
from medequity.metrics.frame import _Evaluator
from medequity.metrics.groups import encode_groups
from medequity.metrics.thresholds import resolve_threshold
from medequity.metrics.weighted import get_metric


@dataclass(frozen=True)
class PairedComparison:
    metric: str
    summary: str
    value_a: float
    value_b: float
    difference: float  # a − b
    ci_low: float
    ci_high: float
    p_value: float
    n_boot: int

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def _summary_fn(summary: str, higher_is_better: bool):
    if summary == "overall":
        return lambda vals: vals[:, 0]
    return lambda vals: aggregate.summarize(vals[:, 0], vals[:, 1:], higher_is_better=higher_is_better)[summary]


def paired_bootstrap(
    y_true,
    score_a,
    score_b,
    *,
    sensitive_features,
    metric: str = "auc",
    summary: str = "gap",
    threshold="best_f1",
    n_boot: int = 1000,
    ci: float = 0.95,
    random_state: int | None = 0,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    n_jobs: int | None = None,
) -> PairedComparison:
    """Compare ``summary`` of ``metric`` between model A and model B (A − B) on the same samples.

    ``summary`` is ``"overall"`` or any key of :func:`medequity.metrics.aggregate.summarize`
    (``gap``, ``worst``, ``es_std``, …). Threshold rules are fitted per model.
    """
    y = check_binary(y_true, "y_true")
    a = check_scores(score_a, "score_a", probability=False)
    b = check_scores(score_b, "score_b", probability=False)
    n = check_same_length(y_true=y, score_a=a, score_b=b)
    spec = get_metric(metric)
    groups = encode_groups(sensitive_features, n)
    evaluators = []
    for score in (a, b):
        pred = resolve_threshold(threshold, y, score).predict(score) if spec.needs == "pred" else None
        evaluators.append(_Evaluator(y, score, pred, None, groups, [metric]))
    # Both evaluators arrange samples by (stratum, score); weights must refer to the same samples,
    # so draw them in original order and permute into each evaluator's arrangement.
    strata_order = evaluators[0].order
    fn = _summary_fn(summary, spec.higher_is_better)
    point = [float(fn(ev.values_for(np.ones((1, n)))[metric])[0]) for ev in evaluators]
    bounds = evaluators[0].strata_bounds

    def work(size, rng):
        W_arranged = stratified_counts(bounds, size, rng)  # in evaluator A's arrangement
        W = np.empty_like(W_arranged)
        W[:, strata_order] = W_arranged  # back to original sample order
        values = [fn(ev.values_for(W[:, ev.order])[metric]) for ev in evaluators]
        return values[0] - values[1]

    differences = np.concatenate(
        map_chunks(work, n_boot, n, np.random.SeedSequence(random_state), max_elements=max_elements, n_jobs=n_jobs)
    )
    low, high = percentile_interval(differences, ci)
    return PairedComparison(
        metric, summary, point[0], point[1], point[0] - point[1], float(low), float(high),
        two_sided_p_value(differences), n_boot,
    )
