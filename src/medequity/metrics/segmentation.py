"""Segmentation overlap per sample and its fairness summaries (METRICS.md "Utility per group").

Dice (DSC) = 2|P∩T| / (|P|+|T|); IoU = |P∩T| / |P∪T|; foreground classes only (background is never
a class), computed per sample (image or volume), then per class averaged, then averaged per group.
When prediction and truth are both empty the conventions differ: nnU-Net gives NaN (excluded and
counted, our default), FairMedFM's torchmetrics call gives 0, some give 1 — ``empty=`` names it
and the choice is recorded with the result.

Also here: masks are validated (:func:`check_masks`: one shape, integer labels >= 0); per-patient
means (:func:`patient_means`); group summaries of any per-sample value (Dice, IoU, HD95 and NSD from
:mod:`medequity.metrics.surface`, CDR error) through :func:`~medequity.metrics.frame.group_metrics`
with the FairMedFM (Δ, STD, Skew, DSC_ES) and FairSeg (ES-Dice/ES-IoU) summaries
(:func:`segmentation_disparities`, :meth:`SegmentationGroupResult.fairness_table`); and the fundus
vertical cup-to-disc ratio (FairSeg coding: rim 1, cup 2, disc = rim ∪ cup).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd

from medequity.metrics import aggregate
from medequity.metrics._validation import warn_group
from medequity.metrics.bootstrap import percentile_interval, permuted_codes
from medequity.metrics.frame import GroupMetricResult, group_metrics
from medequity.metrics.groups import encode_groups
from medequity.metrics.masks import EMPTY_CONVENTIONS, check_labels, check_masks, resolve_classes  # noqa: F401  (public here too)
from medequity.metrics.weighted import get_metric, mean_metric, register_metric


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


# --- patients --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatientValues:
    patient_ids: np.ndarray  # sorted unique ids
    values: np.ndarray  # mean over each patient's defined sample values (NaN if none is defined)
    n_samples: np.ndarray  # samples per patient
    sensitive_features: pd.DataFrame | None  # one row per patient (constant within a patient)


def patient_means(sample_values, patient_ids, sensitive_features=None) -> PatientValues:
    """Mean of each patient's per-sample values (images/slices/volumes of one patient), NaN samples
    excluded; the patient's sensitive features, which must be the same on all its samples."""
    values = np.asarray(sample_values, dtype=np.float64).reshape(-1)
    ids = np.asarray(patient_ids).reshape(-1)
    if ids.size != values.size:
        raise ValueError(f"inputs have different lengths: sample_values={values.size}, patient_ids={ids.size}")
    if values.size == 0:
        raise ValueError("sample_values is empty")
    if pd.isna(pd.Series(ids)).any():
        raise ValueError("patient_ids contains missing values")
    unique, codes = np.unique(ids, return_inverse=True)
    defined = ~np.isnan(values)
    sums = np.bincount(codes, weights=np.where(defined, values, 0.0), minlength=unique.size)
    counts = np.bincount(codes, weights=defined.astype(np.float64), minlength=unique.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    n_samples = np.bincount(codes, minlength=unique.size)
    features = None
    if sensitive_features is not None:
        frame = sensitive_features.copy() if isinstance(sensitive_features, pd.DataFrame) else None
        if frame is None:
            frame = pd.DataFrame(sensitive_features) if isinstance(sensitive_features, dict) else \
                pd.DataFrame({getattr(sensitive_features, "name", None) or "sensitive_feature": np.asarray(sensitive_features).reshape(-1)})
        if len(frame) != values.size:
            raise ValueError(f"inputs have different lengths: sample_values={values.size}, sensitive_features={len(frame)}")
        frame = frame.reset_index(drop=True)
        varying = frame.groupby(codes).nunique(dropna=False).max(axis=1) > 1
        if varying.any():
            first = unique[int(np.flatnonzero(varying.to_numpy())[0])].item()
            raise ValueError(f"sensitive_features differ between samples of patient {first!r} ({int(varying.sum())} patients)")
        features = frame.groupby(codes).first().reset_index(drop=True)
        features.index = pd.Index(unique, name="patient_id")
    return PatientValues(unique, means, n_samples, features)


# --- group summaries -------------------------------------------------------------------------------

DISPARITY_KEYS = ("delta", "std", "skew", "es_std", "es_sum_abs_dev")


def segmentation_disparities(overall, group_values, *, higher_is_better: bool = True) -> dict[str, np.ndarray]:
    """FairMedFM / FairSeg summaries of group means (aggregate level; fractions, not percent).

    ``worst`` min_g (max_g for losses such as HD95); ``delta`` Δ = max − min (DSC_Δ); ``std``
    population std of the group means (DSC_STD); for utilities in [0, 1] also ``skew``
    max_g(1 − D_g)/min_g(1 − D_g) (DSC_Skew), ``es_std`` overall/(1 + std) (FairMedFM eq. 2,
    DSC_ES; overall = mean over all samples) and ``es_sum_abs_dev`` overall/(1 + Σ_g |overall − D_g|)
    (FairSeg ES-Dice/ES-IoU, FairDi eqs. 9–10). Vectorised: ``group_values`` (..., G), ``overall`` (...).
    """
    values = aggregate._values(group_values)
    overall = aggregate._overall(overall, values)
    out = {
        "overall": overall,
        "worst": aggregate.worst_group(values, higher_is_better=higher_is_better),
        "delta": aggregate.gap(values),
        "std": values.std(axis=-1),
    }
    if higher_is_better:
        out.update(
            skew=aggregate.skewness(values),
            es_std=aggregate.equity_scaled(overall, values, disparity="std"),
            es_sum_abs_dev=aggregate.equity_scaled(overall, values, disparity="sum_abs_dev"),
        )
    return out


def _disparity_terms(overall: np.ndarray, values: np.ndarray, higher_is_better: bool) -> dict[str, np.ndarray]:
    """The unfairness each summary measures (larger = less fair), for the permutation test."""
    out = {"delta": aggregate.gap(values), "std": values.std(axis=-1)}
    if higher_is_better:
        out.update(
            skew=aggregate.skewness(values),
            es_std=out["std"],
            es_sum_abs_dev=aggregate.group_disparity(overall, values, "sum_abs_dev"),
        )
    return out


@dataclass
class SegmentationGroupResult(GroupMetricResult):
    """A :class:`GroupMetricResult` of one per-sample segmentation metric, with the FairMedFM/FairSeg
    summaries (:meth:`fairness_table`) and permutation nulls of each disparity term."""

    metric: str = "dice"
    higher_is_better: bool = True
    disparity_nulls: dict[str, np.ndarray] = field(default_factory=dict)

    def fairness_table(self) -> pd.DataFrame:
        """One row per summary (overall, worst, delta, std, and for utilities skew, es_std,
        es_sum_abs_dev): value, percentile bootstrap CI, and the permutation p-value of "no
        disparity". ``p_value`` of every disparity row is the omnibus test "no group differs from the
        pool" (min-P over the group-vs-pool contrasts, :meth:`contrasts`: it agrees with their
        intervals); ``p_permutation`` is each statistic's own permutation test when
        ``n_permutations`` > 0 (delta: the group_metrics gap test)."""
        values = self.values[self.metric]
        point = segmentation_disparities(values[0], values[1:], higher_is_better=self.higher_is_better)
        reps = None
        if self.metric in self.replicates:
            r = self.replicates[self.metric]
            reps = segmentation_disparities(r[:, 0], r[:, 1:], higher_is_better=self.higher_is_better)
        observed = _disparity_terms(values[0], values[1:], self.higher_is_better)
        family = self.contrast_family(self.metric)
        omnibus = family.p_omnibus if family is not None else np.nan
        rows = []
        for key, value in point.items():
            low = high = np.nan
            if reps is not None:
                low, high = (float(b) for b in percentile_interval(reps[key], self.ci))
            p_value = p_permutation = np.nan
            null = self.permutation_gaps.get(self.metric) if key == "delta" else self.disparity_nulls.get(key)
            if key in observed and np.isfinite(observed[key]):
                p_value = omnibus
                if null is not None:
                    null = null[np.isfinite(null)]
                    p_permutation = (np.sum(null >= observed[key] - 1e-12) + 1) / (null.size + 1)
            rows.append({"attribute": self.attribute, "metric": self.metric, "summary": key, "value": float(value),
                         "ci_low": low, "ci_high": high, "p_value": float(p_value), "p_permutation": float(p_permutation)})
        return pd.DataFrame(rows)


def _permutation_disparities(values, codes, n_groups, overall, n_permutations, seed, higher_is_better) -> dict[str, np.ndarray]:
    included = np.flatnonzero(codes >= 0)
    v, c = values[included], codes[included]
    defined = np.isfinite(v)
    v = np.where(defined, v, 0.0)
    rng = np.random.default_rng(seed)
    chunks: dict[str, list[np.ndarray]] = {}
    per_chunk = max(1, (1 << 22) // max(c.size * max(n_groups, 1), 1))
    done = 0
    while done < n_permutations:
        b = min(per_chunk, n_permutations - done)
        perm = permuted_codes(c, [np.arange(c.size)], b, rng)
        member = perm[:, :, None] == np.arange(n_groups)  # (b, n, G)
        with np.errstate(invalid="ignore", divide="ignore"):
            sums = np.einsum("bng,n->bg", member, v)
            counts = np.einsum("bng,n->bg", member, defined.astype(np.float64))
            means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        for key, term in _disparity_terms(np.full(b, overall), means, higher_is_better).items():
            chunks.setdefault(key, []).append(term)
        done += b
    return {key: np.concatenate(parts) for key, parts in chunks.items()}


def _check_feature_length(features, n: int) -> None:
    if isinstance(features, dict):
        lengths = {len(np.asarray(v).reshape(-1)) for v in features.values()}
    elif isinstance(features, (pd.DataFrame, pd.Series)):
        lengths = {len(features)}
    else:
        lengths = {len(np.asarray(features).reshape(-1))} if np.ndim(features) < 2 else {len(features)}
    if lengths != {n}:
        raise ValueError(f"inputs have different lengths: sample_values={n}, sensitive_features={sorted(lengths)}")


def segmentation_group_metrics_from_values(sample_values, *, sensitive_features, metric: str = "dice",
                                           patient_ids=None, settings: dict | None = None, **kwargs) -> SegmentationGroupResult:
    """Per-group means of per-sample values (Dice, IoU, HD95, NSD, CDR error, ...) with stratified
    bootstrap CIs and permutation tests, through :func:`group_metrics` (any number of groups; a
    DataFrame/dict of attributes gives their intersections). ``patient_ids``: average each
    patient's samples first (:func:`patient_means`); the groups are then patients. ``kwargs`` go to
    :func:`group_metrics` (``n_boot``, ``n_permutations``, ``ci``, ``min_group_size``, ``missing``,
    ``random_state``, ...). NaN values are excluded from the means and counted."""
    get_metric(metric)  # a clear error for an unknown metric name
    values = np.asarray(sample_values, dtype=np.float64).reshape(-1)
    if np.isinf(values).any():
        raise ValueError(
            f"sample_values has {int(np.isinf(values).sum())} infinite values (HD95 with one empty mask):"
            " means over groups need a finite convention, e.g. one_empty='diagonal' or one_empty='nan'"
        )
    extra = dict(settings or {})
    features = sensitive_features
    if patient_ids is not None:
        per_patient = patient_means(values, patient_ids, sensitive_features)
        values, features = per_patient.values, per_patient.sensitive_features
        extra.update(aggregation="mean per patient", n_patients=int(per_patient.patient_ids.size))
    else:
        _check_feature_length(features, values.size)
    n_undefined = int(np.isnan(values).sum())
    extra["n_undefined_samples"] = n_undefined
    if n_undefined:
        warn_group(f"{metric}: {n_undefined} of {values.size} samples are undefined (NaN) and excluded from the means")
    result = group_metrics(sample_values=values, sensitive_features=features, metrics=(metric,), **kwargs)
    result.extra_settings.update(extra)
    higher = get_metric(metric).higher_is_better
    nulls: dict[str, np.ndarray] = {}
    n_perm = kwargs.get("n_permutations", 0)
    if n_perm:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            groups = encode_groups(features, values.size, missing=kwargs.get("missing", "drop"))
        seed = np.random.SeedSequence(kwargs.get("random_state", 0)).spawn(3)[2]
        nulls = _permutation_disparities(values, groups.codes, groups.n_groups, result.values[metric][0], n_perm, seed, higher)
    base = {f.name: getattr(result, f.name) for f in fields(GroupMetricResult)}
    return SegmentationGroupResult(**base, metric=metric, higher_is_better=higher, disparity_nulls=nulls)


SEGMENTATION_METRICS = ("dice", "iou", "hd95", "nsd", "cdr_error")


def segmentation_group_metrics(y_pred, y_true, *, sensitive_features, metric: str = "dice", empty: str = "nan",
                               classes=None, spacing=None, tolerance=None, one_empty: str = "diagonal",
                               percentile: float = 95.0, pooling: str = "max_directed", patient_ids=None,
                               **kwargs) -> SegmentationGroupResult:
    """Per-group mean Dice/IoU/HD95/NSD/CDR error of label masks with CIs, gaps, skewness, STD and
    the ES forms (DSC_ES, ES-Dice, ES-IoU): :func:`segmentation_group_metrics_from_values` on the
    per-sample values. M(D) is the mean over all samples (FairMedFM DSC_ES). ``one_empty`` (HD95 with
    one empty mask) defaults to ``"diagonal"`` here so that means stay finite. The settings record
    the empty-mask conventions."""
    from medequity.metrics.surface import SurfaceResult, hd95_per_sample, nsd_per_sample

    if metric not in SEGMENTATION_METRICS:
        raise ValueError(f"metric must be one of {list(SEGMENTATION_METRICS)}; got {metric!r}")
    per_sample: OverlapResult | CDRResult | SurfaceResult
    if metric in ("dice", "iou"):
        per_sample = _overlap(y_pred, y_true, metric=metric, classes=classes, empty=empty)
    elif metric == "hd95":
        per_sample = hd95_per_sample(y_pred, y_true, spacing=spacing, classes=classes, empty=empty, one_empty=one_empty,
                                     percentile=percentile, pooling=pooling)
    elif metric == "nsd":
        per_sample = nsd_per_sample(y_pred, y_true, tolerance=tolerance, spacing=spacing, classes=classes, empty=empty)
    else:
        per_sample = cup_to_disc_ratio_error(y_pred, y_true)
    return segmentation_group_metrics_from_values(per_sample.values, sensitive_features=sensitive_features, metric=metric,
                                                  patient_ids=patient_ids, settings=per_sample.settings(), **kwargs)


# --- fundus cup-to-disc ratio ------------------------------------------------------------------------

register_metric(mean_metric("cdr_error", "mean |vertical CDR predicted - true|, undefined samples excluded (lower is better)",
                            higher_is_better=False))


def vertical_extent(mask) -> np.ndarray:
    """Rows spanned (last − first + 1) by a binary mask per sample (n, H, W); 0 if empty."""
    binary: np.ndarray = np.asarray(mask, dtype=bool)
    rows: np.ndarray = np.any(binary, axis=2)
    any_row = rows.any(axis=1)
    first = rows.argmax(axis=1)
    last = rows.shape[1] - 1 - rows[:, ::-1].argmax(axis=1)
    return np.where(any_row, last - first + 1, 0)


def vertical_cup_to_disc_ratio(masks, *, rim_label: int = 1, cup_label: int = 2) -> np.ndarray:
    """Vertical CDR per image from label masks (n, H, W) in FairSeg coding (rim 1, cup 2, disc = rim ∪
    cup): rows spanned by the cup / rows spanned by the disc (rows = axis 1, top to bottom). No cup: 0;
    no disc: NaN."""
    labels = check_labels(masks, "masks")
    if labels.ndim != 3:
        raise ValueError(f"masks need shape (n_samples, H, W); got {labels.shape}")
    cup = labels == cup_label
    disc = cup | (labels == rim_label)
    cup_h, disc_h = vertical_extent(cup), vertical_extent(disc)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(disc_h > 0, cup_h / np.maximum(disc_h, 1), np.nan)


@dataclass(frozen=True)
class CDRResult:
    values: np.ndarray  # |CDR_pred − CDR_true| per sample, NaN where either disc is empty
    cdr_pred: np.ndarray
    cdr_true: np.ndarray
    n_undefined: int

    def settings(self) -> dict:
        return {"metric": "cdr_error", "cdr": "vertical extent of cup / disc (disc = rim ∪ cup)", "n_undefined_cdr": self.n_undefined}


def cup_to_disc_ratio_error(y_pred, y_true, *, rim_label: int = 1, cup_label: int = 2) -> CDRResult:
    """|vertical CDR of the prediction − vertical CDR of the truth| per image; NaN (counted) where
    either mask has no disc."""
    pred, true = check_masks(y_pred, y_true, spatial_dims=(2,))
    cdr_pred = vertical_cup_to_disc_ratio(pred, rim_label=rim_label, cup_label=cup_label)
    cdr_true = vertical_cup_to_disc_ratio(true, rim_label=rim_label, cup_label=cup_label)
    error = np.abs(cdr_pred - cdr_true)
    return CDRResult(error, cdr_pred, cdr_true, int(np.isnan(error).sum()))
