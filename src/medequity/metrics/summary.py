"""One per-group AUC summary of a whole split (no bootstrap): what model selection, ablation tables
and post-hoc methods read.

``group_auc_summary(labels, scores, codes, names)`` returns a flat dict of floats::

    auc              overall AUC (every sample, also those with code -1)
    auc:<name>       AUC of each group (NaN for a group with one class or no samples)
    worst_group_auc  min over groups           auc_gap   max − min over groups
    es_auc_std       AUC / (1 + std_g AUC_g)            — FairMedFM AUC_ES (the trainer's "es_auc")
    es_auc_mad       AUC / (1 + mean_g |AUC − AUC_g|)   — FairDi eq. 4 ES-AUC
    mean_psd         std_g AUC_g / AUC                  — FairDi MeanPSD
    max_psd          (max_g − min_g AUC_g) / AUC        — FairDi MaxPSD
    bce              mean BCE (log clamped at −100, as torch.nn.BCELoss); NaN if scores are not in [0, 1]
    n                number of samples;  n_groups_defined  groups with a defined AUC

A group with one class has AUC NaN and a :class:`~medequity.metrics.GroupMetricWarning` names it
(METRICS.md "Bad input"). What the summaries over groups do with it is ``undefined``:
``"propagate"`` (default; as :mod:`medequity.metrics.aggregate`): any undefined group makes them NaN;
``"skip"``: they are taken over the groups with a defined AUC (model selection on a small
validation split). Either way a disparity needs two groups: with fewer, gap, ES, PSD are NaN, and
the worst group is the one group's AUC (or NaN).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medequity.metrics import aggregate
from medequity.metrics._validation import check_binary, check_same_length, check_scores, warn_group
from medequity.metrics.weighted import SampleSet, binary_cross_entropy_terms, evaluate, undefined_message

UNDEFINED = ("propagate", "skip")
SUMMARY_KEYS = ("auc", "worst_group_auc", "auc_gap", "es_auc_std", "es_auc_mad", "mean_psd", "max_psd", "bce", "n",
                "n_groups_defined")


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(evaluate("auc", SampleSet(labels, scores, None))[0])


def _check_codes(codes, n: int, n_groups: int) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 1 or len(codes) != n:
        raise ValueError(f"codes must be one code per sample ({n}); got shape {codes.shape}")
    if codes.dtype.kind not in "iu":
        raise ValueError(f"codes must be integer group codes (-1 = unknown); got dtype {codes.dtype}")
    codes = codes.astype(np.int64)
    if codes.size and (codes.min() < -1 or codes.max() >= n_groups):
        raise ValueError(f"codes must be in [-1, {n_groups - 1}] for {n_groups} group names; "
                         f"found range [{codes.min()}, {codes.max()}]")
    return codes


def group_aucs(labels, scores, codes, n_groups: int) -> np.ndarray:
    """AUC of each group code ``0..n_groups-1`` (NaN where a group lacks a class), no warnings."""
    y = check_binary(labels, "labels")
    s = check_scores(scores, "scores", probability=False)
    check_same_length(labels=y, scores=s)
    codes = _check_codes(codes, len(y), n_groups)
    return np.array([_auc(y[codes == g], s[codes == g]) for g in range(n_groups)], dtype=np.float64)


def group_auc_summary(labels, scores, codes, names: Sequence[str], *, undefined: str = "propagate",
                      attribute: str = "group", warn: bool = True) -> dict[str, float]:
    """Overall and per-group AUC with worst group, gap, both ES-AUC forms, MeanPSD, MaxPSD and BCE
    (see the module docstring for the keys). ``codes[i]`` is the position of sample ``i``'s group in
    ``names``, ``-1`` for unknown (counted in the overall AUC and BCE only)."""
    if undefined not in UNDEFINED:
        raise ValueError(f"undefined must be one of {UNDEFINED}; got {undefined!r}")
    names = tuple(str(name) for name in names)
    y = check_binary(labels, "labels")
    s = check_scores(scores, "scores", probability=False)
    n = check_same_length(labels=y, scores=s)
    codes = _check_codes(codes, n, len(names))

    overall = _auc(y, s)
    values = np.array([_auc(y[codes == g], s[codes == g]) for g in range(len(names))], dtype=np.float64)
    defined = np.isfinite(values)
    if warn:
        for name in np.asarray(names, dtype=object)[~defined]:
            warn_group(undefined_message("auc", name, attribute))
    probabilities = s.min() >= 0.0 and s.max() <= 1.0
    summary: dict[str, float] = {"auc": overall}
    summary.update({f"auc:{name}": float(v) for name, v in zip(names, values)})

    used = values[defined] if undefined == "skip" else values
    nan = float("nan")
    if used.size >= 2:
        overall_arr = np.float64(overall)
        summary.update(
            worst_group_auc=float(aggregate.worst_group(used)),
            auc_gap=float(aggregate.gap(used)),
            es_auc_std=float(aggregate.equity_scaled(overall_arr, used, disparity="std")),
            es_auc_mad=float(aggregate.equity_scaled(overall_arr, used, disparity="mean_abs_dev")),
            mean_psd=float(aggregate.mean_psd(overall_arr, used)),
            max_psd=float(aggregate.max_psd(overall_arr, used)),
        )
    else:  # one group (or none): no disparity to measure
        summary.update(worst_group_auc=float(used[0]) if used.size else nan, auc_gap=nan, es_auc_std=nan,
                       es_auc_mad=nan, mean_psd=nan, max_psd=nan)
    summary["bce"] = float(binary_cross_entropy_terms(y, s).mean()) if probabilities else nan
    summary["n"] = n
    summary["n_groups_defined"] = int(defined.sum())
    return summary
