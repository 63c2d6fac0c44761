"""Sample-level fairness metrics, fairlearn/scikit-learn style (METRICS.md "Parity criteria").

Each function takes ``y_true``, ``y_pred`` (hard 0/1 predictions) or ``y_score`` and
``sensitive_features=`` and returns one number. They share one engine (:func:`group_values`)
with the bootstrap, so a value here equals the point estimate in any report, and they warn as
:func:`medequity.metrics.group_metrics` does: a :class:`GroupMetricWarning` for a group with fewer
than ``min_group_size`` samples (default 30) and for a group whose value is undefined (NaN).

Hard predictions: these functions take ``y_pred`` as given (fairlearn's convention). Where a
function thresholds scores itself (:func:`fairmedfm_equalized_odds`) it says which comparison it
uses; see :mod:`medequity.metrics.thresholds` for ``score > t`` (fixed thresholds, FairMedFM,
MEDFAIR, fairlearn's ``ThresholdOptimizer``) vs ``score >= t`` (scikit-learn's curves).
"""

from __future__ import annotations

import numpy as np

from medequity.metrics import aggregate
from medequity.metrics._validation import (
    MIN_GROUP_SIZE,
    check_binary,
    check_same_length,
    check_scores,
    warn_group,
)
from medequity.metrics.calibration import ece_bin_index
from medequity.metrics.groups import encode_groups
from medequity.metrics.thresholds import Threshold, best_f1_threshold
from medequity.metrics.weighted import SampleSet, evaluate, undefined_message


def group_values(
    metric: str,
    y_true,
    *,
    sensitive_features,
    y_pred=None,
    y_score=None,
    ece_bins: str = "unit",
    n_bins: int = 10,
    missing: str = "drop",
    min_group_size: int = MIN_GROUP_SIZE,
) -> tuple[float, np.ndarray, tuple[str, ...]]:
    """(overall value, per-group values, group names) of one metric — no resampling. Groups with
    fewer than ``min_group_size`` samples get a :class:`GroupMetricWarning`, as in ``group_metrics``."""
    return _group_values(
        (metric,), y_true, sensitive_features=sensitive_features, y_pred=y_pred, y_score=y_score, ece_bins=ece_bins,
        n_bins=n_bins, missing=missing, min_group_size=min_group_size,
    )[metric]


def _group_values(
    metrics: tuple[str, ...],
    y_true,
    *,
    sensitive_features,
    y_pred=None,
    y_score=None,
    ece_bins: str = "unit",
    n_bins: int = 10,
    missing: str = "drop",
    min_group_size: int = MIN_GROUP_SIZE,
) -> dict[str, tuple[float, np.ndarray, tuple[str, ...]]]:
    """:func:`group_values` of several metrics on one grouping (each group warning said once)."""
    y = check_binary(y_true, "y_true")
    pred = check_binary(y_pred, "y_pred") if y_pred is not None else None
    probability = any(metric in ("bce", "ece") for metric in metrics)
    score = check_scores(y_score, "y_score", probability=probability) if y_score is not None else None
    n = check_same_length(y_true=y, y_pred=pred, y_score=score)
    groups = encode_groups(sensitive_features, n, missing=missing, min_group_size=min_group_size)

    def sample_set(index):
        s = None if score is None else score[index]
        bins = None if s is None else ece_bin_index(s, n_bins, ece_bins)
        return SampleSet(y[index], s, None if pred is None else pred[index], None, bins, n_bins)

    sets = [sample_set(np.arange(n))] + [sample_set(index) for index in groups.indices()]
    out = {}
    for metric in metrics:
        overall, *per_group = (float(evaluate(metric, data)[0]) for data in sets)
        for name, value in zip(groups.names, per_group):
            if np.isnan(value):  # the gap built on it is NaN too: say which group and why
                warn_group(undefined_message(metric, name, groups.attribute))
        out[metric] = (overall, np.array(per_group), groups.names)
    return out


def _gaps(metrics: tuple[str, ...], y_true, sensitive_features, **kwargs) -> list[float]:
    found = _group_values(metrics, y_true, sensitive_features=sensitive_features, **kwargs)
    return [float(aggregate.gap(found[metric][1])) for metric in metrics]


def _gap(metric: str, y_true, sensitive_features, **kwargs) -> float:
    return _gaps((metric,), y_true, sensitive_features, **kwargs)[0]


def demographic_parity_difference(y_true, y_pred, *, sensitive_features, min_group_size: int = MIN_GROUP_SIZE) -> float:
    """DP = max_g P(ŷ=1|g) − min_g P(ŷ=1|g) (review Table 1; fairlearn)."""
    return _gap("selection_rate", y_true, sensitive_features, y_pred=y_pred, min_group_size=min_group_size)


def demographic_parity_ratio(y_true, y_pred, *, sensitive_features, min_group_size: int = MIN_GROUP_SIZE) -> float:
    """min_g P(ŷ=1|g) / max_g P(ŷ=1|g) (fairlearn)."""
    _, values, _ = group_values("selection_rate", y_true, sensitive_features=sensitive_features, y_pred=y_pred,
                                min_group_size=min_group_size)
    return float(aggregate.ratio(values))


def equal_opportunity_difference(y_true, y_pred, *, sensitive_features, min_group_size: int = MIN_GROUP_SIZE) -> float:
    """EO = max_g TPR_g − min_g TPR_g (review Table 1; Fair Diagnosis)."""
    return _gap("tpr", y_true, sensitive_features, y_pred=y_pred, min_group_size=min_group_size)


def equalized_odds_difference(
    y_true, y_pred, *, sensitive_features, agg: str = "worst_case", min_group_size: int = MIN_GROUP_SIZE
) -> float:
    """fairlearn ``equalized_odds_difference`` (FairTune EOddsD): max(TPR gap, FPR gap);
    ``agg="mean"`` gives the mean of the two gaps."""
    if agg not in ("worst_case", "mean"):
        raise ValueError(f"agg must be 'worst_case' or 'mean'; got {agg!r}")
    tpr_gap, fpr_gap = _gaps(("tpr", "fpr"), y_true, sensitive_features, y_pred=y_pred, min_group_size=min_group_size)
    return max(tpr_gap, fpr_gap) if agg == "worst_case" else 0.5 * (tpr_gap + fpr_gap)


def equalized_odds_half_sum(y_true, y_pred, *, sensitive_features, min_group_size: int = MIN_GROUP_SIZE) -> float:
    """½|ΔTPR| + ½|ΔFPR| — the seed review's and FairMedFM paper eq. 1 form (binary attribute;
    with more groups each Δ is the max − min gap, which makes it fairlearn's ``agg="mean"``)."""
    return equalized_odds_difference(y_true, y_pred, sensitive_features=sensitive_features, agg="mean",
                                     min_group_size=min_group_size)


def fairmedfm_equalized_odds(
    y_true,
    y_score,
    *,
    sensitive_features,
    threshold: float | Threshold | None = None,
    min_group_size: int = MIN_GROUP_SIZE,
) -> float:
    """FairMedFM code's "EqOdds" (higher is fairer, reported ~96%): 1 − (TPR gap + TNR gap)/2.

    By default its threshold rule exactly: ``t`` is scikit-learn's best-F1 threshold on the
    evaluated set (:func:`~medequity.metrics.thresholds.best_f1_threshold`: the score maximising F1
    of ``score >= t``), and the predictions are ``score > t`` (strict), so samples scoring exactly
    ``t`` are negative — not the positive set whose F1 was maximised. A number ``threshold`` is
    applied the same way (``score > threshold``, fixed-threshold convention); a
    :class:`~medequity.metrics.thresholds.Threshold` by its own rule (``>=`` for fitted rules).
    """
    score = check_scores(y_score, "y_score", probability=False)
    if isinstance(threshold, Threshold):
        y_pred = threshold.predict(score)
    else:
        t = best_f1_threshold(y_true, score) if threshold is None else float(threshold)
        y_pred = (score > t).astype(np.int8)  # FairMedFM's strict comparison, even at a fitted t
    tpr_gap, tnr_gap = _gaps(("tpr", "tnr"), y_true, sensitive_features, y_pred=y_pred, min_group_size=min_group_size)
    return 1.0 - 0.5 * (tpr_gap + tnr_gap)


def accuracy_parity_difference(y_true, y_pred, *, sensitive_features, min_group_size: int = MIN_GROUP_SIZE) -> float:
    """Gap of accuracy between groups."""
    return _gap("acc", y_true, sensitive_features, y_pred=y_pred, min_group_size=min_group_size)


def auc_gap(y_true, y_score, *, sensitive_features, min_group_size: int = MIN_GROUP_SIZE) -> float:
    """Δ AUC = max_g AUC_g − min_g AUC_g (NaN if a group has one class)."""
    return _gap("auc", y_true, sensitive_features, y_score=y_score, min_group_size=min_group_size)


def ece_gap(
    y_true, y_prob, *, sensitive_features, bins: str = "unit", n_bins: int = 10, min_group_size: int = MIN_GROUP_SIZE
) -> float:
    """Gap of expected calibration error between groups."""
    return _gap("ece", y_true, sensitive_features, y_score=y_prob, ece_bins=bins, n_bins=n_bins,
                min_group_size=min_group_size)


def bce_gap(y_true, y_prob, *, sensitive_features, min_group_size: int = MIN_GROUP_SIZE) -> float:
    """Gap of binary cross-entropy between groups."""
    return _gap("bce", y_true, sensitive_features, y_score=y_prob, min_group_size=min_group_size)


def underdiagnosis_rates(y_true, y_pred, *, sensitive_features, min_group_size: int = MIN_GROUP_SIZE) -> dict:
    """Seyyed-Kalantari et al.: per-group FNR (under-diagnosis) and FPR (over-diagnosis) and gaps."""
    found = _group_values(("fnr", "fpr"), y_true, sensitive_features=sensitive_features, y_pred=y_pred,
                          min_group_size=min_group_size)
    (_, fnr, names), (_, fpr, _) = found["fnr"], found["fpr"]
    return {
        "groups": list(names),
        "fnr": dict(zip(names, fnr.tolist())),
        "fpr": dict(zip(names, fpr.tolist())),
        "fnr_gap": float(aggregate.gap(fnr)),
        "fpr_gap": float(aggregate.gap(fpr)),
    }


def _summary_of(metric, y_true, y_score, sensitive_features, fn, min_group_size):
    overall, values, _ = group_values(metric, y_true, sensitive_features=sensitive_features, y_score=y_score,
                                      min_group_size=min_group_size)
    return float(fn(overall, values))


def equity_scaled_auc(
    y_true, y_score, *, sensitive_features, disparity: str, min_group_size: int = MIN_GROUP_SIZE
) -> float:
    """ES-AUC = AUC / (1 + disparity); ``disparity`` is a required choice ("std" FairMedFM,
    "mean_abs_dev" FairDi, "sum_abs_dev" FairVision/FairSeg): see
    :func:`medequity.metrics.aggregate.equity_scaled`."""
    return _summary_of("auc", y_true, y_score, sensitive_features,
                       lambda o, v: aggregate.equity_scaled(o, v, disparity=disparity), min_group_size)


def auc_mean_psd(y_true, y_score, *, sensitive_features, min_group_size: int = MIN_GROUP_SIZE) -> float:
    """FairDi MeanPSD of AUC."""
    return _summary_of("auc", y_true, y_score, sensitive_features, aggregate.mean_psd, min_group_size)


def auc_max_psd(y_true, y_score, *, sensitive_features, min_group_size: int = MIN_GROUP_SIZE) -> float:
    """FairDi MaxPSD of AUC."""
    return _summary_of("auc", y_true, y_score, sensitive_features, aggregate.max_psd, min_group_size)


def worst_group_auc(y_true, y_score, *, sensitive_features, min_group_size: int = MIN_GROUP_SIZE) -> float:
    """min_g AUC_g."""
    return _summary_of("auc", y_true, y_score, sensitive_features, lambda o, v: aggregate.worst_group(v),
                       min_group_size)


def auc_skewness(y_true, y_score, *, sensitive_features, min_group_size: int = MIN_GROUP_SIZE) -> float:
    """FairMedFM skewness of AUC."""
    return _summary_of("auc", y_true, y_score, sensitive_features, lambda o, v: aggregate.skewness(v), min_group_size)
