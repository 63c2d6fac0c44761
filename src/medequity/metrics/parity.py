"""Sample-level fairness metrics, fairlearn/scikit-learn style (METRICS.md "Parity criteria").

Each function takes ``y_true``, ``y_pred`` (hard 0/1 predictions) or ``y_score`` and
``sensitive_features=`` and returns one number. They share one engine (:func:`group_values`)
with the bootstrap, so a value here equals the point estimate in any report.
"""

from __future__ import annotations

import numpy as np

from medequity.metrics import aggregate
from medequity.metrics._validation import check_binary, check_same_length, check_scores, warn_group
from medequity.metrics.calibration import ece_bin_index
from medequity.metrics.groups import encode_groups
from medequity.metrics.thresholds import best_f1_threshold
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
) -> tuple[float, np.ndarray, tuple[str, ...]]:
    """(overall value, per-group values, group names) of one metric — no resampling."""
    y = check_binary(y_true, "y_true")
    pred = check_binary(y_pred, "y_pred") if y_pred is not None else None
    score = check_scores(y_score, "y_score", probability=metric in ("bce", "ece")) if y_score is not None else None
    n = check_same_length(y_true=y, y_pred=pred, y_score=score)
    groups = encode_groups(sensitive_features, n, missing=missing)

    def sample_set(index):
        s = None if score is None else score[index]
        bins = None if s is None else ece_bin_index(s, n_bins, ece_bins)
        return SampleSet(y[index], s, None if pred is None else pred[index], None, bins, n_bins)

    overall = float(evaluate(metric, sample_set(np.arange(n)))[0])
    per_group = np.array([evaluate(metric, sample_set(index))[0] for index in groups.indices()])
    for name, value in zip(groups.names, per_group):
        if np.isnan(value):  # the gap built on it is NaN too: say which group and why
            warn_group(undefined_message(metric, name, groups.attribute))
    return overall, per_group, groups.names


def _gap(metric: str, y_true, sensitive_features, **kwargs) -> float:
    _, values, _ = group_values(metric, y_true, sensitive_features=sensitive_features, **kwargs)
    return float(aggregate.gap(values))


def demographic_parity_difference(y_true, y_pred, *, sensitive_features) -> float:
    """DP = max_g P(ŷ=1|g) − min_g P(ŷ=1|g) (review Table 1; fairlearn)."""
    return _gap("selection_rate", y_true, sensitive_features, y_pred=y_pred)


def demographic_parity_ratio(y_true, y_pred, *, sensitive_features) -> float:
    """min_g P(ŷ=1|g) / max_g P(ŷ=1|g) (fairlearn)."""
    _, values, _ = group_values("selection_rate", y_true, sensitive_features=sensitive_features, y_pred=y_pred)
    return float(aggregate.ratio(values))


def equal_opportunity_difference(y_true, y_pred, *, sensitive_features) -> float:
    """EO = max_g TPR_g − min_g TPR_g (review Table 1; Fair Diagnosis)."""
    return _gap("tpr", y_true, sensitive_features, y_pred=y_pred)


def equalized_odds_difference(y_true, y_pred, *, sensitive_features, agg: str = "worst_case") -> float:
    """fairlearn ``equalized_odds_difference`` (FairTune EOddsD): max(TPR gap, FPR gap);
    ``agg="mean"`` gives the mean of the two gaps."""
    tpr_gap = _gap("tpr", y_true, sensitive_features, y_pred=y_pred)
    fpr_gap = _gap("fpr", y_true, sensitive_features, y_pred=y_pred)
    if agg == "worst_case":
        return max(tpr_gap, fpr_gap)
    if agg == "mean":
        return 0.5 * (tpr_gap + fpr_gap)
    raise ValueError(f"agg must be 'worst_case' or 'mean'; got {agg!r}")


def equalized_odds_half_sum(y_true, y_pred, *, sensitive_features) -> float:
    """½|ΔTPR| + ½|ΔFPR| — the seed review's and FairMedFM paper eq. 1 form (binary attribute;
    with more groups each Δ is the max − min gap, which makes it fairlearn's ``agg="mean"``)."""
    return equalized_odds_difference(y_true, y_pred, sensitive_features=sensitive_features, agg="mean")


def fairmedfm_equalized_odds(y_true, y_score, *, sensitive_features, threshold: float | None = None) -> float:
    """FairMedFM code's "EqOdds" (higher is fairer, reported ~96%): 1 − (TPR gap + TNR gap)/2 with
    predictions ``score > t`` at the best-F1 threshold of the evaluated set (their choice)."""
    t = best_f1_threshold(y_true, y_score) if threshold is None else threshold
    y_pred = (np.asarray(y_score, dtype=np.float64) > t).astype(np.int8)
    tpr_gap = _gap("tpr", y_true, sensitive_features, y_pred=y_pred)
    tnr_gap = _gap("tnr", y_true, sensitive_features, y_pred=y_pred)
    return 1.0 - 0.5 * (tpr_gap + tnr_gap)


def accuracy_parity_difference(y_true, y_pred, *, sensitive_features) -> float:
    """Gap of accuracy between groups."""
    return _gap("acc", y_true, sensitive_features, y_pred=y_pred)


def auc_gap(y_true, y_score, *, sensitive_features) -> float:
    """Δ AUC = max_g AUC_g − min_g AUC_g (NaN if a group has one class)."""
    return _gap("auc", y_true, sensitive_features, y_score=y_score)


def ece_gap(y_true, y_prob, *, sensitive_features, bins: str = "unit", n_bins: int = 10) -> float:
    """Gap of expected calibration error between groups."""
    return _gap("ece", y_true, sensitive_features, y_score=y_prob, ece_bins=bins, n_bins=n_bins)


def bce_gap(y_true, y_prob, *, sensitive_features) -> float:
    """Gap of binary cross-entropy between groups."""
    return _gap("bce", y_true, sensitive_features, y_score=y_prob)


def underdiagnosis_rates(y_true, y_pred, *, sensitive_features) -> dict:
    """Seyyed-Kalantari et al.: per-group FNR (under-diagnosis) and FPR (over-diagnosis) and gaps."""
    _, fnr, names = group_values("fnr", y_true, sensitive_features=sensitive_features, y_pred=y_pred)
    _, fpr, _ = group_values("fpr", y_true, sensitive_features=sensitive_features, y_pred=y_pred)
    return {
        "groups": list(names),
        "fnr": dict(zip(names, fnr.tolist())),
        "fpr": dict(zip(names, fpr.tolist())),
        "fnr_gap": float(aggregate.gap(fnr)),
        "fpr_gap": float(aggregate.gap(fpr)),
    }


def _summary_of(metric, y_true, y_score, sensitive_features, fn):
    overall, values, _ = group_values(metric, y_true, sensitive_features=sensitive_features, y_score=y_score)
    return float(fn(overall, values))


def equity_scaled_auc(y_true, y_score, *, sensitive_features, disparity: str = "std") -> float:
    """ES-AUC = AUC / (1 + disparity); see :func:`medequity.metrics.aggregate.equity_scaled` for
    which paper uses which ``disparity``."""
    return _summary_of(
        "auc", y_true, y_score, sensitive_features, lambda o, v: aggregate.equity_scaled(o, v, disparity=disparity)
    )


def auc_mean_psd(y_true, y_score, *, sensitive_features) -> float:
    """FairDi MeanPSD of AUC."""
    return _summary_of("auc", y_true, y_score, sensitive_features, aggregate.mean_psd)


def auc_max_psd(y_true, y_score, *, sensitive_features) -> float:
    """FairDi MaxPSD of AUC."""
    return _summary_of("auc", y_true, y_score, sensitive_features, aggregate.max_psd)


def worst_group_auc(y_true, y_score, *, sensitive_features) -> float:
    """min_g AUC_g."""
    return _summary_of("auc", y_true, y_score, sensitive_features, lambda o, v: aggregate.worst_group(v))


def auc_skewness(y_true, y_score, *, sensitive_features) -> float:
    """FairMedFM skewness of AUC."""
    return _summary_of("auc", y_true, y_score, sensitive_features, lambda o, v: aggregate.skewness(v))
