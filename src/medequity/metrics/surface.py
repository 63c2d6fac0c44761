"""Boundary metrics per sample: HD95 and normalised surface Dice (NSD), 2D and 3D, with spacing.

Both follow MONAI 1.6 (``compute_hausdorff_distance(percentile=95)``, ``compute_surface_dice``
without sub-voxels), checked against it in the tests:

- The boundary of a binary mask is the set of mask voxels that a cross-shaped (connectivity 1)
  binary erosion removes, voxels outside the image counting as background (a mask touching the
  image border has a boundary there).
- Distances are exact Euclidean distances in physical units (``spacing`` per axis) from each
  boundary voxel of one mask to the nearest boundary voxel of the other, in both directions.
- HD95 (``pooling="max_directed"``, MONAI): max over the two directions of the 95th percentile
  (linear interpolation) of that direction's distances. ``pooling="pooled"`` (MedPy ``hd95``):
  the percentile of both directions' distances together. ``percentile=100`` is the Hausdorff distance.
- NSD at tolerance τ: (#{d ≤ τ} over both directions) / (number of boundary voxels of both masks).
  Boundaries are counted in voxels, not surface areas (DeepMind's ``surface-distance`` and MONAI's
  ``use_subvoxels=True`` weight by area; not implemented).

MONAI computes distances in float32; we compute them in float64, so values agree to float32
rounding (relative 1e-6), not beyond.

Empty masks (per sample and class), named and recorded in :meth:`SurfaceResult.settings`:

- both empty: ``empty="nan"`` (default; excluded from means and counted, as MONAI), ``"zero"``,
  and for NSD also ``"one"``. For HD95 ``"zero"`` means a distance of 0 (perfect agreement).
- one mask empty (a prediction on an empty truth, or an empty prediction of a non-empty truth):
  NSD is 0 (no boundary within tolerance; MONAI). HD95 follows ``one_empty``: ``"inf"`` (the
  distance to an empty set; MONAI gives inf or NaN), ``"nan"`` (excluded and counted) or
  ``"diagonal"`` (a finite worst case: the length of the image diagonal in physical units).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medequity.metrics.masks import EMPTY_CONVENTIONS, check_masks, resolve_classes
from medequity.metrics.weighted import mean_metric, register_metric

HD_EMPTY_CONVENTIONS = {"nan": np.nan, "zero": 0.0}
HD_ONE_EMPTY_CONVENTIONS = ("inf", "nan", "diagonal")
HD_POOLING = ("max_directed", "pooled")

register_metric(mean_metric("hd95", "mean per-sample HD95 in physical units, undefined samples excluded (lower is better)",
                            higher_is_better=False))
register_metric(mean_metric("nsd", "mean per-sample normalised surface Dice at a tolerance, undefined samples excluded"))


@dataclass(frozen=True)
class SurfaceResult:
    values: np.ndarray  # per sample: mean over classes of the defined class values
    per_class: np.ndarray  # (n_samples, n_classes)
    classes: tuple[int, ...]
    n_empty: int  # sample-class pairs with both masks empty
    n_one_empty: int  # sample-class pairs with exactly one mask empty
    metric: str
    empty: str
    one_empty: str | None  # HD95 only
    spacing: np.ndarray  # (n_samples, n_spatial)
    extra: dict

    def settings(self) -> dict:
        out = {"metric": self.metric, "empty": self.empty, "n_empty_pairs": self.n_empty, "n_one_empty_pairs": self.n_one_empty}
        if self.one_empty is not None:
            out["one_empty"] = self.one_empty
        return {**out, **self.extra}


def check_spacing(spacing, n_samples: int, n_spatial: int) -> np.ndarray:
    """Voxel spacing as an array (n_samples, n_spatial): None (1 per axis), a number (isotropic),
    one value per spatial axis, or one row per sample."""
    if spacing is None:
        return np.ones((n_samples, n_spatial))
    array = np.asarray(spacing, dtype=np.float64)
    if array.ndim == 0:
        array = np.full((n_samples, n_spatial), float(array))
    elif array.ndim == 1:
        if array.size != n_spatial:
            raise ValueError(f"spacing has {array.size} values but the masks have {n_spatial} spatial dimensions")
        array = np.broadcast_to(array, (n_samples, n_spatial))
    elif array.ndim == 2:
        if array.shape != (n_samples, n_spatial):
            raise ValueError(
                f"spacing per sample must have shape (n_samples, n_spatial) = {(n_samples, n_spatial)}; got {array.shape}"
            )
    else:
        raise ValueError(f"spacing must be a number, one value per spatial axis or one row per sample; got shape {array.shape}")
    if not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise ValueError(f"spacing must be finite and positive; got {np.unique(array)[:6]}")
    return np.ascontiguousarray(array)


def _crop(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cropped to the bounding box of their union plus a margin of 1 (inside the image)."""
    union = pred | true
    box = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        where = np.flatnonzero(union.any(axis=other))
        box.append(slice(max(int(where[0]) - 1, 0), int(where[-1]) + 2))
    return pred[tuple(box)], true[tuple(box)]


def boundary(mask: np.ndarray) -> np.ndarray:
    """Voxels of a binary mask removed by a connectivity-1 erosion (outside the image = background)."""
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask)


def surface_distances(pred, true, spacing=None) -> tuple[np.ndarray, np.ndarray]:
    """Distances (physical units) from each boundary voxel of ``pred`` to the nearest boundary voxel
    of ``true``, and from ``true`` to ``pred``, for two non-empty binary masks of one sample."""
    pred, true = np.asarray(pred, dtype=bool), np.asarray(true, dtype=bool)
    if pred.shape != true.shape:
        raise ValueError(f"pred and true must have the same shape; got {pred.shape} and {true.shape}")
    if not pred.any() or not true.any():
        raise ValueError("surface distances need two non-empty masks")
    sampling = check_spacing(spacing, 1, pred.ndim)[0]
    pred, true = _crop(pred, true)
    edge_p, edge_t = boundary(pred), boundary(true)
    to_true = ndimage.distance_transform_edt(~edge_t, sampling=sampling)[edge_p]
    to_pred = ndimage.distance_transform_edt(~edge_p, sampling=sampling)[edge_t]
    return np.asarray(to_true, dtype=np.float64), np.asarray(to_pred, dtype=np.float64)


def _surface(y_pred, y_true, *, metric: str, spacing, classes, empty: str, one_empty: str | None,
             percentile: float = 95.0, pooling: str = "max_directed", tolerance=None) -> SurfaceResult:
    pred, true = check_masks(y_pred, y_true, spatial_dims=(2, 3))
    n, n_spatial = pred.shape[0], pred.ndim - 1
    spacings = check_spacing(spacing, n, n_spatial)
    class_list = resolve_classes(pred, true, classes)
    tolerances = None
    if metric == "nsd":
        if tolerance is None:
            raise ValueError("nsd needs tolerance= (physical units, one number or one per class)")
        tolerances = np.broadcast_to(np.asarray(tolerance, dtype=np.float64), (len(class_list),)) \
            if np.ndim(tolerance) == 0 else np.asarray(tolerance, dtype=np.float64)
        if tolerances.shape != (len(class_list),):
            raise ValueError(f"tolerance needs one value or one per class ({len(class_list)}); got {np.shape(tolerance)}")
        if not np.all(np.isfinite(tolerances)) or np.any(tolerances < 0):
            raise ValueError(f"tolerance must be finite and >= 0; got {tolerances}")
    per_class = np.empty((n, len(class_list)))
    n_empty = n_one = 0
    diagonal = np.sqrt(((np.asarray(pred.shape[1:]) * spacings) ** 2).sum(axis=1))
    for i in range(n):
        for k, c in enumerate(class_list):
            p, t = pred[i] == c, true[i] == c
            has_p, has_t = bool(p.any()), bool(t.any())
            if not has_p and not has_t:
                n_empty += 1
                per_class[i, k] = EMPTY_CONVENTIONS[empty]
                continue
            if not (has_p and has_t):
                n_one += 1
                if metric == "nsd":
                    per_class[i, k] = 0.0
                else:
                    per_class[i, k] = {"inf": np.inf, "nan": np.nan, "diagonal": diagonal[i]}[str(one_empty)]
                continue
            to_true, to_pred = surface_distances(p, t, spacings[i])
            if metric == "nsd":
                assert tolerances is not None
                tau = tolerances[k]
                per_class[i, k] = (np.sum(to_true <= tau) + np.sum(to_pred <= tau)) / (to_true.size + to_pred.size)
            elif pooling == "pooled":
                per_class[i, k] = np.percentile(np.concatenate([to_true, to_pred]), percentile)
            else:
                per_class[i, k] = max(np.percentile(to_true, percentile), np.percentile(to_pred, percentile))
    with np.errstate(invalid="ignore"):
        defined = ~np.isnan(per_class)
        counts = defined.sum(axis=1)
        sums = np.where(defined, per_class, 0.0).sum(axis=1)
        values = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    extra: dict = {}
    if metric == "nsd":
        assert tolerances is not None
        extra["tolerance"] = [float(x) for x in tolerances]
    else:
        extra.update(percentile=float(percentile), pooling=pooling)
    return SurfaceResult(values, per_class, tuple(class_list), n_empty, n_one, metric, empty, one_empty, spacings, extra)


def hd95_per_sample(y_pred, y_true, *, spacing=None, classes=None, empty: str = "nan", one_empty: str = "inf",
                    percentile: float = 95.0, pooling: str = "max_directed") -> SurfaceResult:
    """HD95 per sample and class for integer label masks (n_samples, H, W[, D]), in the units of
    ``spacing``; per sample the mean over classes. See the module docstring for the conventions."""
    if empty not in HD_EMPTY_CONVENTIONS:
        raise ValueError(f"empty must be one of {sorted(HD_EMPTY_CONVENTIONS)} for HD95; got {empty!r}")
    if one_empty not in HD_ONE_EMPTY_CONVENTIONS:
        raise ValueError(f"one_empty must be one of {list(HD_ONE_EMPTY_CONVENTIONS)}; got {one_empty!r}")
    if pooling not in HD_POOLING:
        raise ValueError(f"pooling must be one of {list(HD_POOLING)}; got {pooling!r}")
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100]; got {percentile}")
    return _surface(y_pred, y_true, metric="hd95", spacing=spacing, classes=classes, empty=empty, one_empty=one_empty,
                    percentile=percentile, pooling=pooling)


def nsd_per_sample(y_pred, y_true, *, tolerance, spacing=None, classes=None, empty: str = "nan") -> SurfaceResult:
    """Normalised surface Dice per sample and class at ``tolerance`` (physical units, one value or
    one per class) for integer label masks (n_samples, H, W[, D]); per sample the mean over classes."""
    if empty not in EMPTY_CONVENTIONS:
        raise ValueError(f"empty must be one of {sorted(EMPTY_CONVENTIONS)}; got {empty!r}")
    return _surface(y_pred, y_true, metric="nsd", spacing=spacing, classes=classes, empty=empty, one_empty=None, tolerance=tolerance)
