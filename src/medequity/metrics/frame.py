"""Per-group evaluation with stratified bootstrap CIs and permutation tests: :func:`group_metrics`.

The sample-level engine behind every fairness number of the library (fairlearn's ``MetricFrame``
is the model of the API and the reference for values): per-group metric values with n, n_pos,
n_neg, bootstrap percentile intervals for every group value and every gap summary of
:mod:`medequity.metrics.aggregate`, and a permutation test of "gap = 0".
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
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
from medequity.metrics.weighted import _as_slice_if_contiguous as _as_slice

DEFAULT_METRICS = ("auc", "acc", "tpr", "tnr", "fpr", "fnr", "ppv", "selection_rate", "ece", "bce")
SCORE_ONLY_METRICS = ("auc", "ece", "bce")
ADF_KEY = "_adf"  # evaluator output holding ADF per replicate (not a per-group metric)
CONTRAST_COLUMNS = ["attribute", "metric", "group", "group_value", "pooled_value", "difference", "ci_low", "ci_high",
                    "se", "p_adjusted", "significant"]


def _dense(keys: np.ndarray) -> np.ndarray:
    """Non-negative integer keys renumbered 0, 1, ... in their order (np.unique without a sort when
    the keys are small, as cells of a few attributes are)."""
    if keys.size == 0 or int(keys.max()) > 4 * keys.size:
        return np.unique(keys, return_inverse=True)[1].reshape(-1)
    present = np.zeros(int(keys.max()) + 1, dtype=bool)
    present[keys] = True
    return (np.cumsum(present) - 1)[keys]


class _Evaluator:
    """Samples arranged stratum-contiguously, with each metric prepared once per sample set.

    ``groups`` is one grouping or several (the attributes of an audit), evaluated on the same
    weights. Samples are arranged by *cell* — the combination of every grouping's code, samples
    excluded from a grouping (missing attribute) having their own code — then label, then score;
    the bootstrap strata are cell × label. With one grouping the cells are its groups (plus the
    excluded samples), i.e. the group × label stratification of METRICS.md. With several, every
    group of every grouping is a union of cells, so each keeps its positives and negatives in
    every replicate, and one set of replicates serves them all (one draw, one pass of the linear
    metrics, one overall AUC); the resampling is then stratified by the finer cells too.

    Per grouping, column 0 of every value array is the overall set (all samples, including those
    excluded from the groups because their attribute is missing); column g+1 is group g; the last
    column is the pool the contrasts compare with (every sample with a known group).
    """

    def __init__(self, y, score, pred, values, groups: Groups | Sequence[Groups], metrics, *, ece_bins="unit", n_bins=10,
                 stratify=True):
        self.groupings = [groups] if isinstance(groups, Groups) else list(groups)
        n = self.n = int(self.groupings[0].codes.size)
        code_columns = [np.where(g.codes >= 0, g.codes, g.n_groups).astype(np.int64) for g in self.groupings]
        cells = code_columns[0]
        for codes, grouping in zip(code_columns[1:], self.groupings[1:]):
            cells = _dense(cells * (grouping.n_groups + 1) + codes)
        strat_label = y if (stratify and y is not None) else np.zeros(n, dtype=np.int8)
        # Stratum-contiguous, and sorted by score inside each stratum, so that a cell's negatives and
        # positives are contiguous score-ordered runs (with one grouping, AUC then slices, not gathers).
        key = cells * 2 + strat_label if stratify else cells
        secondary = score if score is not None else np.zeros(n)
        self.order = np.lexsort((secondary, key))
        sorted_key = key[self.order] if stratify else np.zeros(n)
        self.strata_bounds = np.r_[0, np.flatnonzero(np.diff(sorted_key)) + 1, n]
        take = lambda a: None if a is None else a[self.order]  # noqa: E731
        self.y, self.score, self.pred, self.values = take(y), take(score), take(pred), take(values)
        self.cells = cells[self.order]
        self.codes = [codes[self.order] for codes in code_columns]  # per grouping; excluded = n_groups
        n_cells = int(self.cells.max()) + 1 if n else 0
        self.cell_bounds = np.searchsorted(self.cells, np.arange(n_cells + 1))
        first = np.minimum(self.cell_bounds[:-1], max(n - 1, 0))  # an empty cell's code is never used
        self.cell_codes = [codes[first] if n else codes[:0] for codes in self.codes]
        self.metrics = list(metrics)
        self.specs = {name: get_metric(name) for name in self.metrics}
        self.ece_bins, self.n_bins = ece_bins, n_bins
        # Linear metrics (rates, BCE, means, ECE on fixed bins) share the weighted column sums of
        # one matrix; the sums of the groups, the pool and the overall set add up from the cells'.
        self.linear = [m for m in self.metrics
                       if self.specs[m].finish is not None and not (self.specs[m].binned and ece_bins != "unit")]
        self.other = [m for m in self.metrics if m not in self.linear]
        # ADF (Fair Diagnosis eq. 24) is a function of each group's (y, ŷ) cell counts: four more
        # columns of the same sums give it for every replicate (no bootstrap of its own).
        self.with_adf = self.y is not None and self.pred is not None
        if self.linear or self.with_adf:
            self._prepare_linear()
        # A second arrangement for rank metrics (AUC): by label, then score. Every set's negatives
        # (positives) are then an ascending subset of one sorted run — the overall set's are slices,
        # a group's a forward gather — where the stratum arrangement would need a random gather per
        # set. Replicate weights are carried over once per chunk (``np.take``).
        self.to_score: np.ndarray | None = None
        if self.score is not None and self.y is not None:
            self.to_score = np.lexsort((self.score, self.y))
            self.scored = SampleSet(self.y[self.to_score], self.score[self.to_score], None)
        self.sets: dict[object, np.ndarray | slice] = {"all": slice(0, n)}
        self.set_keys = []  # per grouping: the sets of its value columns (overall, groups, pool)
        for k, grouping in enumerate(self.groupings):
            keys: list[object] = ["all"]
            for g in range(grouping.n_groups):
                self.sets[(k, g)] = _as_slice(np.flatnonzero(self.codes[k] == g))
                keys.append((k, g))
            if self.has_excluded(k):
                self.sets[(k, "pool")] = _as_slice(np.flatnonzero(self.codes[k] < grouping.n_groups))
                keys.append((k, "pool"))
            else:
                keys.append("all")
            self.set_keys.append(keys)
        self.plans = {name: {key: self._prepare(name, sl) for key, sl in self.sets.items()} for name in self.other}

    def has_excluded(self, k: int) -> bool:
        return bool(np.any(self.codes[k] == self.groupings[k].n_groups))

    def _prepare_linear(self) -> None:
        everyone = self.sample_set(slice(None))
        blocks = [self.specs[m].prepare(everyone) for m in self.linear]
        if self.y is not None and self.pred is not None:  # with_adf
            y1, p1 = self.y.astype(np.float64), self.pred.astype(np.float64)
            blocks.append(np.column_stack([(1 - y1) * (1 - p1), (1 - y1) * p1, y1 * (1 - p1), y1 * p1]))
        self.linear_bounds = np.cumsum([0] + [block.shape[1] for block in blocks])
        self.n_columns = int(self.linear_bounds[-1])
        # Integer-valued columns (indicators of label, decision, ECE bin; counts) are constant along
        # runs of the arrangement (a cell's samples with one label and, as the decisions and fixed
        # ECE bins are monotone in the score, long runs): their sums are exact integer run totals
        # times the run's row. Only the other columns (scores, losses) need a floating-point product.
        # Column by column, so that no second copy of an (n, k) matrix is made.
        change = np.diff(self.cells) != 0
        columns = [(int(offset) + j, block[:, j]) for offset, block in zip(self.linear_bounds[:-1], blocks)
                   for j in range(block.shape[1])]
        is_integral = [bool(np.array_equal(column, np.trunc(column))) for _, column in columns]
        integral = [entry for entry, whole in zip(columns, is_integral) if whole]
        floating = [entry for entry, whole in zip(columns, is_integral) if not whole]
        for _, column in integral:
            change |= column[1:] != column[:-1]
        self.run_starts = np.r_[0, np.flatnonzero(change) + 1] if self.n else np.zeros(0, dtype=np.intp)
        self.int_columns = np.array([c for c, _ in integral], dtype=np.intp)
        self.float_columns = np.array([c for c, _ in floating], dtype=np.intp)
        self.run_rows = np.column_stack([column[self.run_starts] for _, column in integral] or
                                        [np.zeros((self.run_starts.size, 0))])
        self.float_matrix = np.column_stack([column for _, column in floating] or [np.zeros((self.n, 0))])
        del blocks, columns, integral, floating
        run_cells = self.cells[self.run_starts]
        # per grouping and code (groups, then the excluded samples): its runs and its cells
        self.run_members = [[np.flatnonzero(codes[run_cells] == g) for g in range(grouping.n_groups + 1)]
                            for codes, grouping in zip(self.cell_codes, self.groupings)]
        self.cell_onehot = [np.equal.outer(codes, np.arange(grouping.n_groups + 1)).astype(np.float64)
                            for codes, grouping in zip(self.cell_codes, self.groupings)]

    def sample_set(self, sl: slice | np.ndarray) -> SampleSet:
        part = lambda a: None if a is None else a[sl]  # noqa: E731
        score = part(self.score)
        bins = ece_bin_index(score, self.n_bins, self.ece_bins) if score is not None and score.size else None
        return SampleSet(part(self.y), score, part(self.pred), part(self.values), bins, self.n_bins)

    def _prepare(self, name: str, sl):
        """(columns of the weights, plan) of metric ``name`` on the samples ``sl``."""
        spec = self.specs[name]
        if spec.prepare_at is not None and self.to_score is not None:
            member = np.zeros(self.n, dtype=bool)
            member[sl] = True
            return None, spec.prepare_at(self.scored, np.flatnonzero(member[self.to_score]))
        return sl, spec.prepare(self.sample_set(sl))

    def _code_sums(self, W: np.ndarray) -> list[np.ndarray]:
        """Per grouping, the weighted column sums (b, G+1, K) of its groups and excluded samples."""
        b = W.shape[0]
        runs = np.add.reduceat(W, self.run_starts, axis=1).astype(np.float64) if self.n else np.zeros((b, 0))
        cell_float = np.stack([W[:, start:end].astype(np.float64) @ self.float_matrix[start:end]
                               for start, end in zip(self.cell_bounds[:-1], self.cell_bounds[1:])], axis=1) \
            if self.float_columns.size else None
        out = []
        for k, grouping in enumerate(self.groupings):
            sums = np.empty((b, grouping.n_groups + 1, self.n_columns))
            for g, members in enumerate(self.run_members[k]):
                sums[:, g, self.int_columns] = runs[:, members] @ self.run_rows[members]
            if cell_float is not None:
                sums[:, :, self.float_columns] = np.einsum("bck,cg->bgk", cell_float, self.cell_onehot[k])
            out.append(sums)
        return out

    def values_for(self, W: np.ndarray) -> dict[str, np.ndarray]:
        """Metric values (b, G+2) of the first grouping for weight rows W: overall, the G groups, the pool."""
        return self.values_all(W)[0]

    def values_all(self, W: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Per grouping, metric values (b, G+2) for weight rows W (integer counts are fastest)."""
        outs: list[dict[str, np.ndarray]] = [{} for _ in self.groupings]
        if self.linear or self.with_adf:
            for k, (out, sums) in enumerate(zip(outs, self._code_sums(W))):
                n_groups = self.groupings[k].n_groups
                groups = [sums[:, g] for g in range(n_groups)]
                pooled = sums[:, :n_groups].sum(axis=1)
                overall = pooled + sums[:, n_groups]
                for i, name in enumerate(self.linear):
                    cols = slice(int(self.linear_bounds[i]), int(self.linear_bounds[i + 1]))
                    finish = self.specs[name].finish
                    assert finish is not None
                    out[name] = np.column_stack([finish(part[:, cols]) for part in (overall, *groups, pooled)])
                if self.with_adf:
                    cells = sums[:, :n_groups, -4:].reshape(W.shape[0], n_groups, 2, 2)
                    out[ADF_KEY] = adf_from_counts(cells.transpose(0, 2, 1, 3))[:, None]  # (b, 2 [y], S, 2 [ŷ])
        scored = np.take(W, self.to_score, axis=1) if self.to_score is not None and self.other else None
        for name in self.other:
            spec, plans = self.specs[name], self.plans[name]
            done: dict[object, np.ndarray] = {}  # the overall set is computed once for every grouping
            for out, keys in zip(outs, self.set_keys):
                for key in keys:
                    if key not in done:
                        columns, plan = plans[key]  # columns None: a plan on the (label, score) arrangement
                        weights = scored if columns is None else W[:, columns]
                        assert weights is not None
                        done[key] = spec.compute(plan, weights)
                out[name] = np.column_stack([done[key] for key in keys])
        return outs

    def bootstrap(self, n_boot: int, seed: np.random.SeedSequence, max_elements: int, n_jobs) -> list[dict[str, np.ndarray]]:
        """Per grouping, metric values (n_boot, G+2) over stratified bootstrap replicates (see ``values_all``)."""
        work = lambda b, rng: self.values_all(stratified_counts(self.strata_bounds, b, rng, dtype=np.int32))  # noqa: E731
        chunks = map_chunks(work, n_boot, self.n, seed, max_elements=max_elements, n_jobs=n_jobs)
        return [{name: np.concatenate([c[k][name] for c in chunks]) for name in chunks[0][k]}
                for k in range(len(self.groupings))]

    def _ece(self, data: SampleSet, member: np.ndarray) -> float:
        """ECE of the samples in ``member``, binned on their own scores (as the point estimate)."""
        score, y = data.require("score")[member], data.require("y")[member]
        index = ece_bin_index(score, self.n_bins, self.ece_bins)
        return float(np.abs(np.bincount(index, weights=score - y, minlength=self.n_bins)).sum() / score.size)

    def permutation_gaps(self, n_perm: int, seed: np.random.SeedSequence, max_elements: int, n_jobs,
                         k: int = 0) -> dict[str, np.ndarray]:
        """Gap (max − min over groups) of each metric of grouping ``k`` under random relabelling of its groups."""
        n_groups = self.groupings[k].n_groups
        included = np.flatnonzero(self.codes[k] < n_groups)
        codes = self.codes[k][included]
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

            def work(b, rng, spec=spec, plan=plan, strata=strata, rebin=rebin, codes=codes, data=data, n_groups=n_groups):
                perm = permuted_codes(codes, strata, b, rng)
                if rebin:
                    per_group = np.array([[self._ece(data, row == g) for g in range(n_groups)] for row in perm])
                else:
                    per_group = np.column_stack(
                        [spec.compute(plan, (perm == g).astype(np.float64)) for g in range(n_groups)]
                    )
                return aggregate.gap(per_group)

            budget = max(1, max_elements // max(n_groups, 1))
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
        se = contrast_standard_errors(metric, self.values[metric][1:], n_pos, n_neg)
        if se is None:
            return min_p_contrasts(point, reps, self.ci)
        se_reps = contrast_standard_errors(metric, self.replicates[metric][:, 1:], n_pos, n_neg)
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
    inputs = _check_inputs(y_true, y_score, y_pred, sample_values, metrics, threshold, y_val, score_val, n_boot,
                           n_permutations, ci)
    messages, groups = _encode(sensitive_features, inputs.n, missing, min_group_size)
    evaluator = _Evaluator(inputs.y, inputs.score, inputs.pred, inputs.values, groups, inputs.metrics, ece_bins=ece_bins,
                           n_bins=n_bins, stratify=stratify)
    settings = _Settings(n_boot, n_permutations, ci, stratify, min_group_size, random_state, max_elements, n_jobs)
    (result,) = _evaluate(evaluator, [messages], inputs, settings)
    return result


SHARED_BOOTSTRAP = ("percentile, one set of replicates for every attribute audited together, stratified by the cells "
                    "of all of them (each group of each attribute is a union of cells) x label")


def group_metrics_shared(
    y_true=None,
    y_score=None,
    *,
    sensitive_features: Sequence,
    metrics=None,
    y_pred=None,
    threshold="best_f1",
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
    shared: bool = True,
) -> list[GroupMetricResult | ValueError]:
    """:func:`group_metrics` of several attributes (or intersections) of the same predictions, on one
    set of bootstrap replicates: one element of ``sensitive_features`` per result, in order.

    The point values are those of :func:`group_metrics`; so are the permutation tests (each
    attribute uses the same stream). The bootstrap draws once, within the cells of all attributes
    together × label (the finest partition every group is a union of), and evaluates every
    attribute on those weights: the overall AUC and the linear metrics' sums are computed once,
    not once per attribute. Each group keeps its positives and negatives in every replicate, as
    with group × label strata; the cell composition inside a group is held fixed too, a finer
    stratification. It removes the variation of a group's cell composition from its replicates:
    where the cells inside a group differ in the metric, the group's bootstrap SE is smaller than
    with its own group × label strata (measured: up to 6% for sex when race cells inside it differ
    in AUC by 0.1-0.2, B = 6000; no difference for the finest attribute). ``shared=False`` gives
    each attribute its own replicates, exactly :func:`group_metrics` per attribute (slower: each
    attribute draws and sums its own replicates). With one attribute both are exactly
    :func:`group_metrics`. An attribute whose groups cannot be coded gives its ``ValueError`` in
    its place; the others are still computed.
    """
    inputs = _check_inputs(y_true, y_score, y_pred, None, metrics, threshold, None, None, n_boot, n_permutations, ci)
    encoded: list[tuple[list[str], Groups] | ValueError] = []
    for features in sensitive_features:
        try:
            encoded.append(_encode(features, inputs.n, missing, min_group_size))
        except ValueError as exc:
            encoded.append(exc)
    usable = [e for e in encoded if not isinstance(e, ValueError)]
    results: list[GroupMetricResult] = []
    settings = _Settings(n_boot, n_permutations, ci, stratify, min_group_size, random_state, max_elements, n_jobs)
    if usable and shared:
        evaluator = _Evaluator(inputs.y, inputs.score, inputs.pred, None, [groups for _, groups in usable], inputs.metrics,
                               ece_bins=ece_bins, n_bins=n_bins, stratify=stratify)
        note = SHARED_BOOTSTRAP if len(usable) > 1 and stratify and n_boot else None
        results = _evaluate(evaluator, [messages for messages, _ in usable], inputs, settings, note)
    for messages, groups in usable if not shared else []:
        evaluator = _Evaluator(inputs.y, inputs.score, inputs.pred, None, groups, inputs.metrics, ece_bins=ece_bins,
                               n_bins=n_bins, stratify=stratify)
        results += _evaluate(evaluator, [messages], inputs, settings)
    done = iter(results)
    return [e if isinstance(e, ValueError) else next(done) for e in encoded]


@dataclass(frozen=True)
class _Inputs:
    y: np.ndarray | None
    score: np.ndarray | None
    pred: np.ndarray | None
    values: np.ndarray | None
    n: int
    metrics: tuple[str, ...]
    threshold: Threshold | None


@dataclass(frozen=True)
class _Settings:
    n_boot: int
    n_permutations: int
    ci: float
    stratify: bool
    min_group_size: int
    random_state: int | None
    max_elements: int
    n_jobs: int | None


def _check_inputs(y_true, y_score, y_pred, sample_values, metrics, threshold, y_val, score_val, n_boot: int,
                  n_permutations: int, ci: float) -> _Inputs:
    """Labels, scores, decisions and metrics of :func:`group_metrics`, checked; decisions from the threshold."""
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

    return _Inputs(y, score, pred, values, n, metrics, resolved)


def _encode(sensitive_features, n: int, missing: str, min_group_size: int) -> tuple[list[str], Groups]:
    """The groups of ``sensitive_features`` and the warnings their coding gave (reported later, in order)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GroupMetricWarning)
        groups = encode_groups(sensitive_features, n, missing=missing, min_group_size=min_group_size)
    return [str(w.message) for w in caught], groups


def _evaluate(evaluator: _Evaluator, messages: list[list[str]], inputs: _Inputs, settings: _Settings,
              shared_note: str | None = None) -> list[GroupMetricResult]:
    """Point values, bootstrap replicates and permutation gaps of every grouping of ``evaluator``."""
    ones = np.ones((1, inputs.n), dtype=np.int32)
    points = [{name: v[0] for name, v in out.items()} for out in evaluator.values_all(ones)]
    # Independent, reproducible streams for the bootstrap and the permutation test.
    boot_seed, perm_seed = np.random.SeedSequence(settings.random_state).spawn(2)
    boots = (evaluator.bootstrap(settings.n_boot, boot_seed, settings.max_elements, settings.n_jobs) if settings.n_boot
             else [{} for _ in evaluator.groupings])
    results = []
    for k, (groups, point_all, stacked_all, notes) in enumerate(zip(evaluator.groupings, points, boots, messages)):
        adf_point = point_all.pop(ADF_KEY, None)
        point = {name: v[:-1] for name, v in point_all.items()}
        counts = _counts_table(inputs.y, inputs.pred, groups, settings.min_group_size)
        notes = notes + _explain_nans(point, inputs.metrics, counts, groups.attribute)
        adf_reps = stacked_all.pop(ADF_KEY, None)
        adf = None
        if adf_point is not None:
            low = high = np.nan
            if adf_reps is not None:
                low, high = (float(v) for v in percentile_interval(adf_reps[:, 0], settings.ci))
            adf = {"value": float(adf_point[0]), "ci_low": low, "ci_high": high, "base": "e (nats)"}
        # each grouping's test uses the same stream: its p-values are those of group_metrics alone
        perm = (evaluator.permutation_gaps(settings.n_permutations, perm_seed, settings.max_elements, settings.n_jobs, k)
                if settings.n_permutations else {})
        for message in notes:
            warn_group(message)
        results.append(GroupMetricResult(
            attribute=groups.attribute,
            groups=groups.names,
            metrics=inputs.metrics,
            values=point,
            counts=counts,
            threshold=inputs.threshold,
            n_boot=settings.n_boot,
            ci=settings.ci,
            stratified=settings.stratify,
            random_state=settings.random_state,
            replicates={name: v[:, :-1] for name, v in stacked_all.items()},
            permutation_gaps=perm,
            warnings=notes,
            n_excluded_missing=groups.n_excluded_missing,
            extra_settings={} if shared_note is None else {"bootstrap": shared_note},
            pooled={name: float(v[-1]) for name, v in point_all.items()},
            adf=adf,
            pooled_replicates={name: v[:, -1] for name, v in stacked_all.items()},
        ))
    return results
