"""Per-group evaluation with stratified bootstrap CIs and permutation tests: :func:`group_metrics`.

The sample-level engine behind every fairness number of the library (fairlearn's ``MetricFrame``
is the model of the API and the reference for values): per-group metric values with n, n_pos,
n_neg, bootstrap percentile intervals for every group value and every gap summary of
:mod:`medequity.metrics.aggregate`, and a permutation test of "gap = 0".
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from medequity.metrics import aggregate
from medequity.metrics._validation import (
    GroupMetricWarning,
    check_binary,
    check_same_length,
    check_scores,
    warn_group,
)
from medequity.metrics.bootstrap import (
    DEFAULT_MAX_ELEMENTS,
    map_chunks,
    percentile_interval,
    permuted_codes,
    stratified_counts,
)
from medequity.metrics.calibration import ece_bin_index
from medequity.metrics.causal import adf_from_counts
from medequity.metrics.contrasts import ContrastFamily, contrast_standard_errors, min_p_contrasts
from medequity.metrics.groups import Groups, encode_groups
from medequity.metrics.thresholds import Threshold, resolve_threshold
from medequity.metrics.weighted import SampleSet, get_metric, undefined_message

DEFAULT_METRICS = ("auc", "acc", "tpr", "tnr", "fpr", "fnr", "ppv", "selection_rate", "ece", "bce")
SCORE_ONLY_METRICS = ("auc", "ece", "bce")
ADF_KEY = "_adf"  # evaluator output holding ADF per replicate (not a per-group metric)
CONTRAST_COLUMNS = ["attribute", "metric", "group", "group_value", "pooled_value", "difference", "ci_low", "ci_high",
                    "se", "p_adjusted", "significant"]


class _Evaluator:
    """Samples arranged group-contiguously, with each metric prepared once per sample set.

    Column 0 of every value array is the overall set (all samples, including those excluded from
    the groups because their attribute is missing); column g+1 is group g.
    """

    def __init__(self, y, score, pred, values, groups: Groups, metrics, *, ece_bins="unit", n_bins=10, stratify=True):
        codes = np.where(groups.codes >= 0, groups.codes, groups.n_groups)  # excluded samples last
        strat_label = y if (stratify and y is not None) else np.zeros(codes.size, dtype=np.int8)
        # Stratum-contiguous, and sorted by score inside each stratum, so that every group's
        # negatives/positives are contiguous score-ordered runs (AUC then slices, not gathers).
        # Within a group the order is by label when stratified and by score otherwise.
        key = codes * 2 + strat_label if stratify else codes
        secondary = score if score is not None else np.zeros(codes.size)
        self.order = np.lexsort((secondary, key))
        sorted_key = key[self.order] if stratify else np.zeros(codes.size)
        self.strata_bounds = np.r_[0, np.flatnonzero(np.diff(sorted_key)) + 1, codes.size]
        take = lambda a: None if a is None else a[self.order]  # noqa: E731
        self.y, self.score, self.pred, self.values = take(y), take(score), take(pred), take(values)
        self.codes = codes[self.order]
        self.n_groups = groups.n_groups
        group_bounds = np.searchsorted(self.codes, np.arange(self.n_groups + 1))
        self.slices = [slice(0, codes.size)] + [slice(group_bounds[g], group_bounds[g + 1]) for g in range(self.n_groups)]
        # The pool the contrasts compare each group with: every sample with a known group. It is the
        # overall set unless samples were excluded for a missing attribute (then one more column).
        self.has_excluded = bool(group_bounds[-1] < codes.size)
        if self.has_excluded:
            self.slices.append(slice(0, int(group_bounds[-1])))
        self.metrics = list(metrics)
        self.specs = {name: get_metric(name) for name in self.metrics}
        self.ece_bins, self.n_bins = ece_bins, n_bins
        # Linear metrics (rates, BCE, means, ECE on fixed bins) share one matrix product per group:
        # one pass over the replicate weights instead of two per metric and sample set, and the
        # overall and pooled sums are sums of the groups' (plus the excluded samples').
        self.linear = [m for m in self.metrics
                       if self.specs[m].finish is not None and not (self.specs[m].binned and ece_bins != "unit")]
        self.other = [m for m in self.metrics if m not in self.linear]
        self.parts = self.slices[1 : 1 + self.n_groups] + ([slice(int(group_bounds[-1]), codes.size)] if self.has_excluded else [])
        # ADF (Fair Diagnosis eq. 24) is a function of each group's (y, ŷ) cell counts: four more
        # columns of the same product give it for every replicate (no bootstrap of its own).
        self.with_adf = self.y is not None and self.pred is not None
        if self.linear or self.with_adf:
            everyone = self.sample_set(slice(None))
            blocks = [self.specs[m].prepare(everyone) for m in self.linear]
            if self.y is not None and self.pred is not None:  # with_adf
                y1, p1 = self.y.astype(np.float64), self.pred.astype(np.float64)
                blocks.append(np.column_stack([(1 - y1) * (1 - p1), (1 - y1) * p1, y1 * (1 - p1), y1 * p1]))
            self.linear_matrix = np.hstack(blocks)
            self.linear_bounds = np.cumsum([0] + [block.shape[1] for block in blocks])
        self.plans = {name: [self._prepare(name, sl) for sl in self.slices] for name in self.other}

    def sample_set(self, sl: slice | np.ndarray) -> SampleSet:
        part = lambda a: None if a is None else a[sl]  # noqa: E731
        score = part(self.score)
        bins = ece_bin_index(score, self.n_bins, self.ece_bins) if score is not None and score.size else None
        return SampleSet(part(self.y), score, part(self.pred), part(self.values), bins, self.n_bins)

    def _prepare(self, name: str, sl):
        return self.specs[name].prepare(self.sample_set(sl))

    def values_for(self, W: np.ndarray) -> dict[str, np.ndarray]:
        """Metric values (b, G+2) for weight rows W: overall, the G groups, then the pool."""
        out = {}
        if self.linear or self.with_adf:
            sums = [W[:, sl] @ self.linear_matrix[sl] for sl in self.parts]
            groups = sums[: self.n_groups]
            pooled = np.sum(groups, axis=0)
            overall = pooled + sums[-1] if self.has_excluded else pooled
            for i, name in enumerate(self.linear):
                cols = slice(int(self.linear_bounds[i]), int(self.linear_bounds[i + 1]))
                finish = self.specs[name].finish
                assert finish is not None
                out[name] = np.column_stack([finish(part[:, cols]) for part in (overall, *groups, pooled)])
            if self.with_adf:
                cells = np.stack([g[:, -4:] for g in groups], axis=1).reshape(W.shape[0], self.n_groups, 2, 2)
                out[ADF_KEY] = adf_from_counts(cells.transpose(0, 2, 1, 3))[:, None]  # (b, 2 [y], S, 2 [ŷ])
        for name in self.other:
            spec, plans = self.specs[name], self.plans[name]
            columns = [spec.compute(plan, W[:, sl]) for plan, sl in zip(plans, self.slices)]
            if not self.has_excluded:
                columns.append(columns[0])
            out[name] = np.column_stack(columns)
        return out

    def bootstrap(self, n_boot: int, seed: np.random.SeedSequence, max_elements: int, n_jobs) -> dict[str, np.ndarray]:
        """Metric values (n_boot, G+2) over stratified bootstrap replicates (see ``values_for``)."""
        work = lambda b, rng: self.values_for(stratified_counts(self.strata_bounds, b, rng))  # noqa: E731
        chunks = map_chunks(work, n_boot, self.codes.size, seed, max_elements=max_elements, n_jobs=n_jobs)
        return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}

    def _ece(self, data: SampleSet, member: np.ndarray) -> float:
        """ECE of the samples in ``member``, binned on their own scores (as the point estimate)."""
        score, y = data.require("score")[member], data.require("y")[member]
        index = ece_bin_index(score, self.n_bins, self.ece_bins)
        return float(np.abs(np.bincount(index, weights=score - y, minlength=self.n_bins)).sum() / score.size)

    def permutation_gaps(self, n_perm: int, seed: np.random.SeedSequence, max_elements: int, n_jobs) -> dict[str, np.ndarray]:
        """Gap (max − min over groups) of each metric under random relabelling of the groups."""
        included = np.flatnonzero(self.codes < self.n_groups)
        codes = self.codes[included]
        data = self.sample_set(included)
        results = {}
        for name, metric_seed in zip(self.metrics, seed.spawn(len(self.metrics))):
            spec = self.specs[name]
            if spec.label_conditional and data.y is not None:
                strata = [np.flatnonzero(data.y == 0), np.flatnonzero(data.y == 1)]
            else:
                strata = [np.arange(codes.size)]
            plan = spec.prepare(data)
            # "score_range"/"quantile" ECE bins depend on each group's own scores (as in the observed
            # gap), so every relabelled group is re-binned; fixed "unit" bins use the weighted path.
            rebin = name == "ece" and self.ece_bins != "unit"

            def work(b, rng, spec=spec, plan=plan, strata=strata, rebin=rebin):
                perm = permuted_codes(codes, strata, b, rng)
                if rebin:
                    per_group = np.array([[self._ece(data, row == g) for g in range(self.n_groups)] for row in perm])
                else:
                    per_group = np.column_stack(
                        [spec.compute(plan, (perm == g).astype(np.float64)) for g in range(self.n_groups)]
                    )
                return aggregate.gap(per_group)

            budget = max(1, max_elements // max(self.n_groups, 1))
            chunks = map_chunks(work, n_perm, codes.size, metric_seed, max_elements=budget, n_jobs=n_jobs)
            results[name] = np.concatenate(chunks)
        return results


@dataclass
class GroupMetricResult:
    """Per-group values, CIs and gap summaries of one sensitive attribute (or intersection)."""

    attribute: str
    groups: tuple[str, ...]
    metrics: tuple[str, ...]
    values: dict[str, np.ndarray]  # metric -> (G+1,) overall then groups
    counts: pd.DataFrame  # per group: n, n_pos, n_neg, small
    threshold: Threshold | None
    n_boot: int
    ci: float
    stratified: bool
    random_state: int | None
    replicates: dict[str, np.ndarray] = field(default_factory=dict)  # metric -> (B, G+1)
    permutation_gaps: dict[str, np.ndarray] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    n_excluded_missing: int = 0
    extra_settings: dict = field(default_factory=dict)  # e.g. the empty-mask convention of Dice
    pooled: dict[str, float] = field(default_factory=dict)  # metric -> value on every sample with a group
    pooled_replicates: dict[str, np.ndarray] = field(default_factory=dict)  # metric -> (B,)
    adf: dict | None = None  # ADF I(S;Ŷ|Y) in nats with its percentile CI, when labels and decisions exist

    # -- tables -----------------------------------------------------------------------------------
    @property
    def overall(self) -> pd.Series:
        return pd.Series({m: self.values[m][0] for m in self.metrics}, name="overall")

    @property
    def by_group(self) -> pd.DataFrame:
        frame = pd.DataFrame({m: self.values[m][1:] for m in self.metrics}, index=pd.Index(self.groups, name="group"))
        return frame

    def _interval(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        if metric not in self.replicates:
            nan = np.full(len(self.groups) + 1, np.nan)
            return nan, nan
        return percentile_interval(self.replicates[metric], self.ci)

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per (group incl. 'overall', metric) with CI and counts."""
        rows = []
        names = ("overall",) + self.groups
        for metric in self.metrics:
            low, high = self._interval(metric)
            for j, group in enumerate(names):
                count = self.counts.loc[group] if group in self.counts.index else None
                rows.append(
                    {
                        "attribute": self.attribute,
                        "group": group,
                        "metric": metric,
                        "value": self.values[metric][j],
                        "ci_low": low[j],
                        "ci_high": high[j],
                        "n": int(count["n"]) if count is not None else np.nan,
                        "n_pos": count["n_pos"] if count is not None else np.nan,
                        "n_neg": count["n_neg"] if count is not None else np.nan,
                        "small_group": bool(count["small"]) if count is not None else False,
                    }
                )
        return pd.DataFrame(rows)

    def contrast_family(self, metric: str) -> ContrastFamily | None:
        """Min-P inference for "group g − pool" of ``metric`` (None without bootstrap replicates)."""
        if metric not in self.replicates or metric not in self.pooled_replicates:
            return None
        point = self.values[metric][1:] - self.pooled[metric]
        reps = self.replicates[metric][:, 1:] - self.pooled_replicates[metric][:, None]
        # Bootstrap-t where the metric has a plug-in SE (AUC, rates): percentile p-values are too
        # liberal for small groups (benchmarks/audit_gap_calibration.py).
        n_pos, n_neg = (self.counts.loc[list(self.groups), c].to_numpy(np.float64) for c in ("n_pos", "n_neg"))
        se = contrast_standard_errors(metric, self.values[metric][1:], self.pooled[metric], n_pos, n_neg)
        if se is None:
            return min_p_contrasts(point, reps, self.ci)
        se_reps = contrast_standard_errors(metric, self.replicates[metric][:, 1:], self.pooled_replicates[metric], n_pos, n_neg)
        return min_p_contrasts(point, reps, self.ci, se=se, se_replicates=se_reps)

    def contrasts(self) -> pd.DataFrame:
        """One row per (metric, group): d_g = M(group) − M(all audited samples) with a simultaneous
        interval and a min-P adjusted p-value that agree (see :mod:`medequity.metrics.contrasts`).
        ``significant`` is p_adjusted < 1 − ci, i.e. the interval excludes 0."""
        rows = []
        for metric in self.metrics:
            family = self.contrast_family(metric)
            for g, group in enumerate(self.groups):
                value = self.values[metric][g + 1] - self.pooled.get(metric, np.nan)
                low = high = p = se = np.nan
                if family is not None:
                    low, high, p, se = family.ci_low[g], family.ci_high[g], family.p_adjusted[g], family.se[g]
                rows.append({
                    "attribute": self.attribute, "metric": metric, "group": group,
                    "group_value": float(self.values[metric][g + 1]), "pooled_value": float(self.pooled.get(metric, np.nan)),
                    "difference": float(value), "ci_low": float(low), "ci_high": float(high), "se": float(se),
                    "p_adjusted": float(p), "significant": bool(np.isfinite(p) and p < 1 - self.ci),
                })
        return pd.DataFrame(rows, columns=CONTRAST_COLUMNS)

    def summaries(self) -> pd.DataFrame:
        """Every gap summary of every metric with its bootstrap CI (a size, not a test).

        ``p_value`` of the gap row is the omnibus test "no group differs from the pool" (the
        smallest min-P adjusted p-value of :meth:`contrasts`); with ``n_permutations`` the
        permutation test of "max − min = 0" is given as ``p_permutation``.
        """
        rows = []
        for metric in self.metrics:
            higher = get_metric(metric).higher_is_better
            point = aggregate.summarize(self.values[metric][0], self.values[metric][1:], higher_is_better=higher)
            reps = None
            if metric in self.replicates:
                r = self.replicates[metric]
                reps = aggregate.summarize(r[:, 0], r[:, 1:], higher_is_better=higher)
            for summary, value in point.items():
                low = high = np.float64(np.nan)
                if reps is not None:
                    low, high = (np.float64(bound) for bound in percentile_interval(reps[summary], self.ci))
                p_value = p_permutation = np.nan
                if summary == "gap":
                    family = self.contrast_family(metric)
                    p_value = family.p_omnibus if family is not None and np.isfinite(value) else np.nan
                    if metric in self.permutation_gaps and np.isfinite(value):
                        null = self.permutation_gaps[metric]
                        null = null[np.isfinite(null)]
                        p_permutation = (np.sum(null >= value - 1e-12) + 1) / (null.size + 1)
                rows.append(
                    {
                        "attribute": self.attribute,
                        "metric": metric,
                        "summary": summary,
                        "value": float(value),
                        "ci_low": float(low),
                        "ci_high": float(high),
                        "p_value": float(p_value),
                        "p_permutation": float(p_permutation),
                    }
                )
        return pd.DataFrame(rows)

    def summary(self, metric: str, summary: str = "gap") -> float:
        table = self.summaries()
        row = table[(table.metric == metric) & (table.summary == summary)]
        if row.empty:
            raise KeyError(f"no summary {summary!r} for metric {metric!r}")
        return float(row.value.iloc[0])

    def settings(self) -> dict:
        return {
            "attribute": self.attribute,
            "threshold": None if self.threshold is None else self.threshold.to_dict(),
            "n_boot": self.n_boot,
            "ci": self.ci,
            "bootstrap": "stratified by group x label" if self.stratified else "plain (non-stratified)",
            "random_state": self.random_state,
            "n_excluded_missing": self.n_excluded_missing,
            **self.extra_settings,
        }


def _counts_table(y, pred, groups: Groups, min_group_size: int) -> pd.DataFrame:
    rows = {}
    everyone = np.arange(groups.codes.size)
    for name, index in zip(("overall",) + groups.names, [everyone] + groups.indices()):
        row = {"n": index.size}
        if y is not None:
            row["n_pos"] = int(y[index].sum())
            row["n_neg"] = int(index.size - y[index].sum())
        else:
            row["n_pos"] = row["n_neg"] = np.nan
        if pred is not None:
            row["n_pred_pos"] = int(pred[index].sum())
            row["n_pred_neg"] = int(index.size - pred[index].sum())
        row["small"] = index.size < min_group_size
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def _explain_nans(result_values, metrics, counts: pd.DataFrame, attribute: str) -> list[str]:
    return [undefined_message(metric, group, attribute) for metric in metrics
            for g, group in enumerate(counts.index[1:]) if np.isnan(result_values[metric][g + 1])]


def group_metrics(
    y_true=None,
    y_score=None,
    *,
    sensitive_features,
    metrics=None,
    y_pred=None,
    sample_values=None,
    threshold="best_f1",
    y_val=None,
    score_val=None,
    n_boot: int = 1000,
    n_permutations: int = 0,
    ci: float = 0.95,
    stratify: bool = True,
    ece_bins: str = "unit",
    n_bins: int = 10,
    min_group_size: int = 30,
    missing: str = "drop",
    random_state: int | None = 0,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    n_jobs: int | None = None,
) -> GroupMetricResult:
    """Per-group metrics of a binary classifier with bootstrap CIs and gap tests.

    Parameters follow fairlearn/scikit-learn: ``y_true`` binary labels, ``y_score`` probabilities
    of the positive class, ``sensitive_features`` one attribute or several (a DataFrame/dict:
    their intersections are the groups). Hard predictions come from ``y_pred`` if given, else from
    ``score > t`` with ``threshold`` a number, ``"best_f1"`` or ``"youden"`` (fitted on
    ``y_val``/``score_val`` when given, else on the evaluated set). ``sample_values`` (e.g. per-
    image Dice) enable the ``"mean"`` metric for segmentation. ``n_boot=0`` skips the bootstrap,
    ``n_permutations=0`` the gap test. Groups with fewer than ``min_group_size`` samples are
    flagged. Undefined per-group values are NaN with a :class:`GroupMetricWarning`. The same
    ``random_state`` gives identical results for any ``n_jobs`` (threads over replicate chunks).
    """
    y = check_binary(y_true, "y_true") if y_true is not None else None
    score = check_scores(y_score, "y_score", probability=False) if y_score is not None else None
    pred = check_binary(y_pred, "y_pred") if y_pred is not None else None
    values = None if sample_values is None else np.asarray(sample_values, dtype=np.float64).reshape(-1)
    n = check_same_length(y_true=y, y_score=score, y_pred=pred, sample_values=values)
    if metrics is None:
        metrics = ("mean",) if values is not None else DEFAULT_METRICS
        if score is None and values is None:
            metrics = tuple(m for m in DEFAULT_METRICS if m not in SCORE_ONLY_METRICS)
    metrics = tuple(metrics)
    specs = {m: get_metric(m) for m in metrics}
    needs = {spec.needs for spec in specs.values()}
    if "values" in needs and values is None:
        raise ValueError("metric 'mean' needs sample_values (per-sample values such as Dice)")
    score_metrics = [m for m, spec in specs.items() if spec.needs == "score"]
    if score_metrics and (y is None or score is None):
        raise ValueError(f"metrics {score_metrics} need y_true and y_score")
    if any(m in ("bce", "ece") for m in metrics):
        check_scores(score, "y_score", probability=True)
    resolved = None
    if "pred" in needs:
        if y is None:
            raise ValueError("threshold metrics need y_true")
        if pred is None:
            if score is None:
                raise ValueError("threshold metrics need y_pred or y_score")
            resolved = resolve_threshold(threshold, y, score, y_val=y_val, score_val=score_val)
            pred = resolved.predict(score)
    if n_boot < 0 or n_permutations < 0:
        raise ValueError("n_boot and n_permutations must be >= 0")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1); got {ci}")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GroupMetricWarning)
        groups = encode_groups(sensitive_features, n, missing=missing, min_group_size=min_group_size)
    messages = [str(w.message) for w in caught]

    evaluator = _Evaluator(y, score, pred, values, groups, metrics, ece_bins=ece_bins, n_bins=n_bins, stratify=stratify)
    point_all = {name: v[0] for name, v in evaluator.values_for(np.ones((1, n))).items()}
    adf_point = point_all.pop(ADF_KEY, None)
    point = {name: v[:-1] for name, v in point_all.items()}
    counts = _counts_table(y, pred, groups, min_group_size)
    messages += _explain_nans(point, metrics, counts, groups.attribute)

    # Independent, reproducible streams for the bootstrap and the permutation test.
    boot_seed, perm_seed = np.random.SeedSequence(random_state).spawn(2)
    stacked_all = evaluator.bootstrap(n_boot, boot_seed, max_elements, n_jobs) if n_boot else {}
    adf_reps = stacked_all.pop(ADF_KEY, None)
    stacked = {name: v[:, :-1] for name, v in stacked_all.items()}
    adf = None
    if adf_point is not None:
        low = high = np.nan
        if adf_reps is not None:
            low, high = (float(v) for v in percentile_interval(adf_reps[:, 0], ci))
        adf = {"value": float(adf_point[0]), "ci_low": low, "ci_high": high, "base": "e (nats)"}
    perm = evaluator.permutation_gaps(n_permutations, perm_seed, max_elements, n_jobs) if n_permutations else {}

    for message in messages:
        warn_group(message)
    return GroupMetricResult(
        attribute=groups.attribute,
        groups=groups.names,
        metrics=metrics,
        values=point,
        counts=counts,
        threshold=resolved,
        n_boot=n_boot,
        ci=ci,
        stratified=stratify,
        random_state=random_state,
        replicates=stacked,
        permutation_gaps=perm,
        warnings=messages,
        n_excluded_missing=groups.n_excluded_missing,
        pooled={name: float(v[-1]) for name, v in point_all.items()},
        adf=adf,
        pooled_replicates={name: v[:, -1] for name, v in stacked_all.items()},
    )
