"""Validation of segmentation label masks shared by the overlap (Dice, IoU) and surface (HD95,
NSD) metrics: integer labels ≥ 0, equal shapes, the classes to score, the empty-mask conventions."""

from __future__ import annotations

import numpy as np

EMPTY_CONVENTIONS = {"nan": np.nan, "zero": 0.0, "one": 1.0}


def check_labels(mask, name: str) -> np.ndarray:
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
    return check_labels(array.astype(np.int64), name)


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
    return check_labels(pred, "y_pred"), check_labels(true, "y_true")


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
