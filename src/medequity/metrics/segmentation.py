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


def _check_labels(mask, name: str) -> np.ndarray:
    array = np.asarray(mask)
    if array.dtype == bool:
        return array.astype(np.int64)
    if array.dtype.kind in "iu":
        if array.size and array.min() < 0:
            raise ValueError(
                f"{name} has negative labels (min {array.min()}); labels are classes >= 0 with 0 background"
                " (FairSeg .npz codes rim -1, cup -2: map them to 1 and 2 first)"
            )
        return array
    if array.dtype.kind != "f":
        raise ValueError(f"{name} must be an integer label mask; got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be an integer label mask; it contains NaN/inf")
    fractional = array != np.round(array)
    if fractional.any():
        raise ValueError(
            f"{name} must be an integer label mask; got non-integer values such as {array[fractional][0]:.4g}"
            " (threshold probabilities or take the argmax first)"
        )
    return _check_labels(array.astype(np.int64), name)


def check_masks(y_pred, y_true, *, spatial_dims: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Two integer label masks of one shape (n_samples, *spatial); bool and integral floats accepted."""
    pred = np.asarray(y_pred)
    true = np.asarray(y_true)
    if pred.shape != true.shape:
        raise ValueError(f"y_pred and y_true must have the same shape; got {pred.shape} and {true.shape}")
    if pred.ndim < 2 or pred.shape[0] == 0:
        raise ValueError(f"masks need shape (n_samples, *spatial) with n_samples >= 1; got {pred.shape}")
    if spatial_dims is not None and pred.ndim - 1 not in spatial_dims:
        raise ValueError(
            f"masks need shape (n_samples, H, W) or (n_samples, H, W, D); got {pred.shape}"
            f" ({pred.ndim - 1} spatial dimensions; add the sample axis for a single image)"
        )
    return _check_labels(pred, "y_pred"), _check_labels(true, "y_true")


def resolve_classes(pred: np.ndarray, true: np.ndarray, classes) -> list[int]:
    """The foreground classes scored: given, or every non-zero label present in either mask ([1] if none)."""
    if classes is None:
        found = np.union1d(np.unique(pred), np.unique(true))
        return [int(c) for c in found if c != 0] or [1]
    result = [int(c) for c in np.atleast_1d(classes)]
    if not result:
        raise ValueError("classes is empty")
    if 0 in result:
        raise ValueError("classes must not contain 0 (background is never a class)")
    return result


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
    pred, true = check_masks(y_pred, y_true)
    classes = resolve_classes(pred, true, classes)
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
