"""Segmentation overlap per sample and its fairness summaries (METRICS.md "Utility per group").

Dice (DSC) = 2|P∩T| / (|P|+|T|); IoU = |P∩T| / |P∪T|; foreground classes only (background is never
a class), computed per sample (image or volume), then per class averaged, then averaged per group.
When prediction and truth are both empty the conventions differ: nnU-Net gives NaN (excluded and
counted, our default), FairMedFM's torchmetrics call gives 0, some give 1 — ``empty=`` names it
and the choice is recorded with the result.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

EMPTY_CONVENTIONS = {"nan": np.nan, "zero": 0.0, "one": 1.0}


@dataclass(frozen=True)
class OverlapResult:
    values: np.ndarray  # per sample (mean over classes of the defined class values)
    per_class: np.ndarray  # (n_samples, n_classes)
    n_empty: int  # sample-class pairs with empty prediction and empty truth
    empty: str
    metric: str

    def settings(self) -> dict:
        return {"metric": self.metric, "empty": self.empty, "n_empty_pairs": self.n_empty}


def _overlap(y_pred, y_true, *, metric: str, classes=None, empty: str = "nan") -> OverlapResult:
    if empty not in EMPTY_CONVENTIONS:
        raise ValueError(f"empty must be one of {sorted(EMPTY_CONVENTIONS)}; got {empty!r}")
    pred = np.asarray(y_pred)
    true = np.asarray(y_true)
    if pred.shape != true.shape:
        raise ValueError(f"y_pred and y_true must have the same shape; got {pred.shape} and {true.shape}")
    if pred.ndim < 2:
        raise ValueError(f"masks need shape (n_samples, *spatial); got {pred.shape}")
    if classes is None:
        found = np.union1d(np.unique(pred), np.unique(true))
        classes = [int(c) for c in found if c != 0] or [1]
    n = pred.shape[0]
    flat_pred = pred.reshape(n, -1)
    flat_true = true.reshape(n, -1)
    per_class = np.empty((n, len(classes)))
    n_empty = 0
    for k, c in enumerate(classes):
        p = flat_pred == c
        t = flat_true == c
        intersection = np.logical_and(p, t).sum(axis=1).astype(np.float64)
        p_sum, t_sum = p.sum(axis=1).astype(np.float64), t.sum(axis=1).astype(np.float64)
        denominator = p_sum + t_sum if metric == "dice" else p_sum + t_sum - intersection
        numerator = 2 * intersection if metric == "dice" else intersection
        both_empty = denominator == 0
        n_empty += int(both_empty.sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            per_class[:, k] = np.where(both_empty, EMPTY_CONVENTIONS[empty], numerator / np.where(both_empty, 1, denominator))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows stay NaN
        values = np.nanmean(per_class, axis=1)
    return OverlapResult(values, per_class, n_empty, empty, metric)


def dice_per_sample(y_pred, y_true, *, classes=None, empty: str = "nan") -> OverlapResult:
    """Dice per sample for integer masks of shape (n_samples, *spatial)."""
    return _overlap(y_pred, y_true, metric="dice", classes=classes, empty=empty)


def iou_per_sample(y_pred, y_true, *, classes=None, empty: str = "nan") -> OverlapResult:
    """IoU (Jaccard) per sample for integer masks of shape (n_samples, *spatial)."""
    return _overlap(y_pred, y_true, metric="iou", classes=classes, empty=empty)


def segmentation_group_metrics(y_pred, y_true, *, sensitive_features, metric: str = "dice", empty: str = "nan", **kwargs):
    """Per-group mean Dice/IoU with CIs, gaps, skewness and the three ES forms (ES-Dice, ES-IoU).

    M(D) is the mean over all samples (FairMedFM DSC_ES). Returns a ``GroupMetricResult`` whose
    settings record the empty-mask convention.
    """
    from medequity.metrics.frame import group_metrics

    if metric not in ("dice", "iou"):
        raise ValueError(f"metric must be 'dice' or 'iou'; got {metric!r}")
    overlap = _overlap(y_pred, y_true, metric=metric, empty=empty)
    result = group_metrics(sample_values=overlap.values, sensitive_features=sensitive_features, metrics=(metric,), **kwargs)
    result.extra_settings.update(overlap.settings())
    return result
