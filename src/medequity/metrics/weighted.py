"""Per-group metrics as weighted statistics, vectorised over bootstrap replicates.

Every metric here is a function of sample weights ``W`` of shape ``(B, m)``: row ``b`` holds how
many times each of the ``m`` samples appears in replicate ``b`` (all ones for the point estimate,
multinomial counts for a bootstrap replicate, 0/1 membership for a permutation replicate). Writing
metrics this way lets one sort of the scores serve all replicates, and turns the bootstrap into
matrix products and cumulative sums instead of a Python loop calling scikit-learn per replicate
(fairlearn's ``MetricFrame(n_boot=...)`` recomputes everything through pandas per replicate).

Each :class:`MetricSpec` splits a metric into ``prepare`` (once per sample set: sorting, binning,
indicator vectors) and ``compute`` (per chunk of replicates).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from medequity.registry import Registry

BCE_LOG_CLAMP = -100.0  # torch.nn.BCELoss clamps log at -100


@dataclass(frozen=True)
class SampleSet:
    """What a metric may look at: labels, scores, hard predictions (any may be None)."""

    y: np.ndarray | None
    score: np.ndarray | None
    pred: np.ndarray | None
    values: np.ndarray | None = None  # per-sample values (e.g. Dice) for "mean" metrics
    ece_bins: np.ndarray | None = None  # bin index of each sample, fixed on the evaluated set
    n_bins: int = 10

    def require(self, name: str) -> np.ndarray:
        """The array ``name`` (``y``, ``score``, ``pred``, ``values``, ``ece_bins``) a metric needs."""
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"this metric needs {name!r}, which was not given")
        return value


@dataclass(frozen=True)
class MetricSpec:
    name: str
    description: str
    prepare: Callable[[SampleSet], Any]
    compute: Callable[[Any, np.ndarray], np.ndarray]
    higher_is_better: bool = True
    needs: str = "score"  # "score" | "pred" | "values"
    # Permutation null for the gap test: True shuffles group labels within each label (the metric
    # is a property of P(score | y, group)), False shuffles them across all samples.
    label_conditional: bool = True
    requires: str = "both"  # which samples must exist for a defined value: both|pos|neg|pred_pos|pred_neg|any
    # Linear metrics are a function of weighted column sums: ``prepare`` returns an (m, k) matrix and
    # the value is ``finish(W @ matrix)``. The engine then computes all of them with one matrix
    # product per group, and the sums of disjoint sets add (overall = groups + excluded samples).
    finish: Callable[[np.ndarray], np.ndarray] | None = None
    binned: bool = False  # ECE: the matrix depends on per-set bins unless the bins are fixed ("unit")
    # ``prepare_at(data, by_score)``: the plan of the samples at positions ``by_score`` of ``data``
    # (listed in ascending score order), computed on the weights of all of ``data``. The engine then
    # takes a group's samples from one sort of everything and gathers only the columns it needs.
    prepare_at: Callable[[SampleSet, np.ndarray], Any] | None = None


METRICS: Registry[MetricSpec] = Registry("metric")


def register_metric(spec: MetricSpec) -> MetricSpec:
    METRICS.register(spec.name)(lambda: spec)
    return spec


def get_metric(name: str) -> MetricSpec:
    return METRICS.create(name)


_REQUIREMENT_TEXT = {
    "both": "it has samples of only one class",
    "pos": "it has no positive samples",
    "neg": "it has no negative samples",
    "pred_pos": "no sample is predicted positive",
    "pred_neg": "no sample is predicted negative",
    "any": "it has no samples",
}


def undefined_message(metric: str, group, attribute: str) -> str:
    """Why ``metric`` is NaN for a group, in the words every report and warning uses (METRICS.md
    "Bad input": NaN for that group plus a warning that the report shows)."""
    reason = _REQUIREMENT_TEXT.get(get_metric(metric).requires, "its value is undefined")
    return f"{metric} is undefined (NaN) for group {group!r} of {attribute!r}: {reason}"


def linear_metric(name: str, description: str, prepare: Callable[[SampleSet], np.ndarray],
                  finish: Callable[[np.ndarray], np.ndarray], **kwargs) -> MetricSpec:
    """A :class:`MetricSpec` whose value is ``finish(W @ prepare(data))``."""
    return MetricSpec(name, description, prepare, lambda matrix, W: finish(W @ matrix), finish=finish, **kwargs)


def _ratio_of_sums(sums: np.ndarray) -> np.ndarray:
    return _safe_divide(sums[:, 0], sums[:, 1])


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


# --- ROC AUC -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _AucPlan:
    pos_idx: np.ndarray | slice  # positive samples (a slice when they are contiguous)
    neg_idx: np.ndarray | slice  # negatives in score order (a slice when already contiguous)
    lo: np.ndarray  # per positive: number of negatives with a strictly lower score
    hi: np.ndarray | None  # ... with a lower or equal score; None when no positive ties a negative


def _as_slice_if_contiguous(index: np.ndarray) -> np.ndarray | slice:
    """Column slices are views; fancy indexing copies. Data arranged by stratum and score (as the
    bootstrap engine does) makes each group's positives and negatives contiguous runs."""
    if index.size and index[-1] - index[0] + 1 == index.size and np.all(np.diff(index) == 1):
        return slice(int(index[0]), int(index[-1]) + 1)
    return index


def _prepare_auc(data: SampleSet) -> _AucPlan:
    y, score = data.require("y"), data.require("score")
    return auc_plan(y, score, np.argsort(score, kind="stable"))


def auc_plan(y: np.ndarray, score: np.ndarray, by_score: np.ndarray) -> _AucPlan:
    """The AUC plan of the samples at positions ``by_score`` of ``y``/``score``, listed in
    ascending score order. A group's positions can be taken from one sort of all samples (the
    subset of a sorted order is sorted), so groups are not sorted again."""
    labels = y[by_score]
    neg_idx, pos_idx = by_score[labels == 0], by_score[labels == 1]
    neg_sorted = score[neg_idx]
    lo = np.searchsorted(neg_sorted, score[pos_idx], side="left")
    hi = np.searchsorted(neg_sorted, score[pos_idx], side="right")
    return _AucPlan(
        _as_slice_if_contiguous(pos_idx),
        _as_slice_if_contiguous(neg_idx),
        lo,
        None if np.array_equal(lo, hi) else hi,
    )


def _columns(W: np.ndarray, index: np.ndarray | slice) -> np.ndarray:
    # np.take is several times faster than W[:, index] for a forward (ascending) index
    return W[:, index] if isinstance(index, slice) else np.take(W, index, axis=1)


_SCRATCH = threading.local()


def _scratch(shape: tuple[int, int], dtype) -> np.ndarray:
    """A reused per-thread buffer: a fresh (B, n) array per group and chunk costs more in page faults
    than the cumulative sum written into it."""
    size = shape[0] * shape[1]
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    key = np.dtype(dtype).str
    if key not in buffers or buffers[key].size < size:
        buffers[key] = np.empty(size, dtype=dtype)
    return buffers[key][:size].reshape(shape)


def _compute_auc(plan: _AucPlan, W: np.ndarray) -> np.ndarray:
    """Weighted Mann–Whitney AUC; ties count 1/2, as scikit-learn's ``roc_auc_score``.

    AUC = Σ_i∈pos w_i (N_below(i) + ½ N_tied(i)) / (W_pos · W_neg), where the negative weights
    below/tied come from one cumulative sum over the negatives in score order. Integer weights
    (bootstrap counts) are summed as integers: exact, and the cumulative sum is several times
    faster than in floating point; the products are summed in float64 (exact below 2^53).
    """
    pos_w, neg_w = _columns(W, plan.pos_idx), _columns(W, plan.neg_idx)
    if pos_w.shape[1] == 0 or neg_w.shape[1] == 0:
        return np.full(W.shape[0], np.nan)
    # counts stay in their integer type: a running total never exceeds the n resampled samples
    accumulate = W.dtype if np.issubdtype(W.dtype, np.integer) else np.float64
    neg_cum = _scratch((W.shape[0], neg_w.shape[1] + 1), accumulate)
    neg_cum[:, 0] = 0
    np.cumsum(neg_w, axis=1, out=neg_cum[:, 1:])
    if plan.hi is None:
        numerator = np.einsum("bi,bi->b", pos_w, neg_cum[:, plan.lo], dtype=np.float64)
    else:
        numerator = 0.5 * np.einsum("bi,bi->b", pos_w, neg_cum[:, plan.lo] + neg_cum[:, plan.hi], dtype=np.float64)
    return _safe_divide(numerator, pos_w.sum(axis=1, dtype=np.float64) * neg_cum[:, -1])


register_metric(
    MetricSpec(
        "auc",
        "ROC AUC (ties count 1/2, as scikit-learn)",
        _prepare_auc,
        _compute_auc,
        requires="both",
        prepare_at=lambda data, by_score: auc_plan(data.require("y"), data.require("score"), by_score),
    )
)


# --- rates at a decision threshold ---------------------------------------------------------------


def _confusion_rate(numerator_cell: Callable, denominator_cell: Callable):
    def prepare(data: SampleSet) -> np.ndarray:
        y = data.require("y").astype(bool)
        pred = data.require("pred").astype(bool)
        return np.column_stack([numerator_cell(y, pred), denominator_cell(y, pred)]).astype(np.float64)

    return prepare


_RATES = {
    # name: (description, numerator, denominator, higher_is_better, label_conditional, requires)
    "acc": ("accuracy", lambda y, p: y == p, lambda y, p: np.ones_like(y), True, False, "any"),
    "tpr": ("true positive rate (sensitivity, recall)", lambda y, p: y & p, lambda y, p: y, True, True, "pos"),
    "tnr": ("true negative rate (specificity)", lambda y, p: ~y & ~p, lambda y, p: ~y, True, True, "neg"),
    "fpr": ("false positive rate (over-diagnosis)", lambda y, p: ~y & p, lambda y, p: ~y, False, True, "neg"),
    "fnr": ("false negative rate (under-diagnosis)", lambda y, p: y & ~p, lambda y, p: y, False, True, "pos"),
    "ppv": ("positive predictive value (precision)", lambda y, p: y & p, lambda y, p: p, True, False, "pred_pos"),
    "npv": ("negative predictive value", lambda y, p: ~y & ~p, lambda y, p: ~p, True, False, "pred_neg"),
    "selection_rate": ("selection rate P(yhat = 1)", lambda y, p: p, lambda y, p: np.ones_like(y), True, False, "any"),
}

for _name, (_desc, _num, _den, _hib, _cond, _req) in _RATES.items():
    register_metric(linear_metric(_name, _desc, _confusion_rate(_num, _den), _ratio_of_sums, higher_is_better=_hib,
                                  needs="pred", label_conditional=_cond, requires=_req))


# --- calibration and loss ----------------------------------------------------------------------


def binary_cross_entropy_terms(y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Per-sample BCE with log clamped at -100, as ``torch.nn.BCELoss``."""
    with np.errstate(divide="ignore"):
        log_p = np.maximum(np.log(score), BCE_LOG_CLAMP)
        log_q = np.maximum(np.log1p(-score), BCE_LOG_CLAMP)
    return -(y * log_p + (1 - y) * log_q)


def _prepare_bce(data: SampleSet) -> np.ndarray:
    losses = binary_cross_entropy_terms(data.require("y"), data.require("score"))
    return np.column_stack([losses, np.ones_like(losses)])


register_metric(
    linear_metric("bce", "binary cross-entropy (log clamped at -100, as torch BCELoss)", _prepare_bce, _ratio_of_sums,
                  higher_is_better=False, label_conditional=False, requires="any")
)


def _prepare_ece(data: SampleSet) -> np.ndarray:
    # Columns: per bin the score sum, the positive count and the sample count.
    score, y = data.require("score"), data.require("y")
    k, rows, bins = data.n_bins, np.arange(score.size), data.require("ece_bins")
    matrix = np.zeros((score.size, 3 * k))  # filled in place: no (n, k) one-hot products to stack
    matrix[rows, bins] = score
    matrix[rows, k + bins] = y
    matrix[rows, 2 * k + bins] = 1.0
    return matrix


def _finish_ece(sums: np.ndarray) -> np.ndarray:
    k = sums.shape[1] // 3
    score_sum, pos_sum, count = sums[:, :k], sums[:, k : 2 * k], sums[:, 2 * k :]
    return _safe_divide(np.abs(score_sum - pos_sum).sum(axis=1), count.sum(axis=1))


register_metric(
    linear_metric("ece", "expected calibration error (sample-weighted over non-empty bins)", _prepare_ece, _finish_ece,
                  higher_is_better=False, label_conditional=False, requires="any", binned=True)
)


# --- means of per-sample values (segmentation Dice/IoU) ------------------------------------------


def mean_metric(name: str, description: str, *, higher_is_better: bool = True) -> MetricSpec:
    """The mean of per-sample values (Dice, HD95, ...), undefined (NaN) samples excluded."""
    return linear_metric(name, description, _prepare_mean, _ratio_of_sums, higher_is_better=higher_is_better,
                         needs="values", label_conditional=False, requires="any")


def _prepare_mean(data: SampleSet) -> np.ndarray:
    values = np.asarray(data.values, dtype=np.float64)
    defined = np.isfinite(values)
    return np.column_stack([np.where(defined, values, 0.0), defined.astype(np.float64)])


for _name, _desc in {
    "mean": "mean of per-sample values, undefined samples excluded",
    "dice": "mean per-sample Dice (foreground classes), undefined samples excluded",
    "iou": "mean per-sample IoU (foreground classes), undefined samples excluded",
}.items():
    register_metric(mean_metric(_name, _desc))


def evaluate(name: str, data: SampleSet, W: np.ndarray | None = None) -> np.ndarray:
    """Compute metric ``name`` for weight rows ``W`` (default: one row of ones, the point estimate)."""
    spec = get_metric(name)
    n = next(a.size for a in (data.y, data.score, data.pred, data.values) if a is not None)
    if W is None:
        W = np.ones((1, n))
    return spec.compute(spec.prepare(data), W)
