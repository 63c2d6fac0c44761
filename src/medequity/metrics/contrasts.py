"""Each group against all audited samples: differences whose intervals and tests agree.

A gap (max − min over groups) is a *size*: its bootstrap interval can never contain 0, so it
cannot say whether a difference is real. Significance is asked of a contrast that can be 0:

    d_g = M(D_g) − M(D_included)

the metric on group g minus the metric on every sample with a known group (for AUC and the
label-conditional rates, identical group distributions give d_g = 0 in expectation whatever the
group sizes and prevalences). One family per (attribute, metric): its G contrasts are tested
together by the single-step bootstrap min-P procedure (Westfall & Young 1993, *Resampling-Based
Multiple Testing*, §2.6):

* the marginal p-value of "d_g = v" ranks a statistic among its bootstrap replicates:
  p_g(v) = 2 · min(P*(T*_g ≤ T_g(v)), P*(T*_g ≥ T_g(v))) (with +1 smoothing);
* every replicate b gets the same p-values for its own values, and m*_b = min_g p_g(T*_{b,g});
* the adjusted p-value of group g is P*(m* ≤ p_g(0)); the simultaneous interval of group g is
  {v : p_g(v) ≥ γ} at the critical marginal level γ (a quantile of m*).

The statistic is the bootstrap-t (Efron & Tibshirani 1993, *An Introduction to the Bootstrap*,
§12.5; Hall 1992, *The Bootstrap and Edgeworth Expansion*, §3.6) where the metric has a plug-in
standard error — AUC (Hanley & McNeil 1982) and the rates with a denominator fixed by the
stratification (binomial): T*_g = (d*_g − d_g)/se*_g with each replicate's SE computed from that
replicate's own values, and T_g(v) = (d_g − v)/se_g; the interval is then
[d_g − se_g·t_hi, d_g − se_g·t_lo]. Other metrics use percentile p-values (T*_g = d*_g,
T_g(v) = v). Percentile p-values were too liberal with small groups: the single-step family
reaches marginal levels near 1 %, where a percentile tail is too light for a group with ~45
positives (type-I error 0.070–0.077 at α = 0.05 with six groups; a studentized pivot's tails are
right to second order). The SE is the replicate's own, not the observed one, so a small group
with a high AUC (a small plug-in SE) does not make the test liberal, as a max-T with a normal
reference and fixed plug-in SEs did (0.12 at α = 0.05 with six groups, the smallest of 150).

An interval excludes 0 exactly when its adjusted p-value is below α = 1 − ci (p < α): a reader
cannot get two answers. The family-wise error is controlled like Holm's, and min-P uses the
strong correlation between the contrasts (they share the pooled value); Holm itself has no
interval that agrees with it. The omnibus test "no group differs from the pool" is the smallest
adjusted p-value. Calibration (type-I error and power by simulation) is measured in
``benchmarks/audit_gap_calibration.py``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ContrastFamily:
    """Simultaneous inference for the contrasts of one (attribute, metric) family."""

    value: np.ndarray  # (G,) d_g
    ci_low: np.ndarray  # (G,) simultaneous interval
    ci_high: np.ndarray
    p_adjusted: np.ndarray  # (G,) min-P adjusted p-values
    p_marginal: np.ndarray  # (G,) unadjusted percentile p-values of d_g = 0
    se: np.ndarray  # (G,) bootstrap standard errors (for information)
    critical_level: float  # γ: the marginal percentile level of the simultaneous intervals
    n_replicates: int  # replicates where every contrast of the family was defined

    @property
    def p_omnibus(self) -> float:
        """p-value of "no group differs from the pool" (the smallest adjusted p-value)."""
        finite = self.p_adjusted[np.isfinite(self.p_adjusted)]
        return float(finite.min()) if finite.size else float("nan")


def _percentile_p(sorted_reps: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Two-sided percentile p-values 2·min(P*(d* ≤ v), P*(d* ≥ v)) with +1 smoothing."""
    b = sorted_reps.size
    at_most = np.searchsorted(sorted_reps, v, side="right")
    at_least = b - np.searchsorted(sorted_reps, v, side="left")
    return np.minimum(1.0, 2.0 * (np.minimum(at_most, at_least) + 1.0) / (b + 1.0))


def _interval(sorted_reps: np.ndarray, level: float) -> tuple[float, float]:
    """{v : p(v) ≥ level}: with r = level·(B+1)/2 − 1 it runs from the ⌈r⌉-th smallest replicate
    to the ⌈r⌉-th largest (unbounded when r ≤ 0)."""
    b = sorted_reps.size
    if level <= 0:
        return -np.inf, np.inf
    rank = int(np.ceil(level * (b + 1) / 2.0 - 1.0 - 1e-9))
    if rank <= 0:
        return -np.inf, np.inf
    rank = min(rank, b)
    return float(sorted_reps[rank - 1]), float(sorted_reps[b - rank])


def hanley_mcneil_variance(auc, n_pos, n_neg) -> np.ndarray:
    """Variance of an AUC from its value and class counts (Hanley & McNeil 1982, *Radiology*
    143:29, eq. 2: Q1 = A/(2 − A), Q2 = 2A²/(1 + A)).

    The AUC is first pulled towards 1/2 by half a pair, (A·mn + 1/2)/(mn + 1), so that a replicate
    with A = 1 does not get a zero variance (which would make its studentized value infinite).
    """
    n_pos, n_neg = np.asarray(n_pos, dtype=np.float64), np.asarray(n_neg, dtype=np.float64)
    pairs = n_pos * n_neg
    a = (np.asarray(auc, dtype=np.float64) * pairs + 0.5) / (pairs + 1.0)
    q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
    return (a * (1.0 - a) + (n_pos - 1.0) * (q1 - a * a) + (n_neg - 1.0) * (q2 - a * a)) / pairs


def binomial_variance(rate, n) -> np.ndarray:
    """p(1 − p)/n of a rate over n samples, p pulled to (k + 1)/(n + 2) (Laplace) so that a rate
    of 0 or 1 does not get a zero variance."""
    n = np.asarray(n, dtype=np.float64)
    p = (np.asarray(rate, dtype=np.float64) * n + 1.0) / (n + 2.0)
    return p * (1.0 - p) / n


# Rates whose denominator is fixed by the group × label stratified bootstrap: which count it is.
_RATE_DENOMINATORS = {"tpr": "pos", "fnr": "pos", "tnr": "neg", "fpr": "neg", "acc": "all", "selection_rate": "all"}


def contrast_standard_errors(metric: str, group_values, n_pos, n_neg) -> np.ndarray | None:
    """Plug-in standard errors of d_g = M(group g) − M(pool), for the bootstrap-t of :func:`min_p_contrasts`.

    ``group_values`` (..., G) are the groups' point values or replicates (the SE of each replicate
    is computed from that replicate's own values); ``n_pos``/``n_neg`` (G,) are the groups' class
    counts. A rate's pooled value is the w-weighted mean of the groups' (w_g: group g's share of
    the denominator), and the groups are resampled independently, so
    Var(d_g) = (1 − w_g)²·V_g + Σ_{k≠g} w_k²·V_k = (1 − 2 w_g)·V_g + Σ_k w_k²·V_k exactly; the
    same form, with w_g the share of samples, approximates the pooled AUC (its cross-group pairs
    behave like the within-group ones when the groups do not differ). V is
    :func:`hanley_mcneil_variance` for AUC and :func:`binomial_variance` for the rates with a
    stratum-fixed denominator; other metrics, or a table without labels, return None (the caller
    then uses percentile p-values). Only how the SE varies from replicate to replicate matters to
    the bootstrap-t: a constant factor cancels between the observed and the replicate statistics.
    """
    n_pos, n_neg = np.asarray(n_pos, dtype=np.float64), np.asarray(n_neg, dtype=np.float64)
    group_values = np.asarray(group_values, dtype=np.float64)
    if metric == "auc":
        denominator = n_pos + n_neg
        variance = hanley_mcneil_variance(group_values, n_pos, n_neg)
    elif metric in _RATE_DENOMINATORS:
        denominator = {"pos": n_pos, "neg": n_neg, "all": n_pos + n_neg}[_RATE_DENOMINATORS[metric]]
        variance = binomial_variance(group_values, denominator)
    else:
        return None
    if not np.all(np.isfinite(denominator)):  # no labels: no class counts
        return None
    share = denominator / denominator.sum()
    pooled = np.sum(share**2 * variance, axis=-1, keepdims=True)  # NaN when a group is undefined
    with np.errstate(invalid="ignore"):
        return np.sqrt((1.0 - 2.0 * share) * variance + pooled)


def min_p_contrasts(value, replicates, ci: float = 0.95, se=None, se_replicates=None) -> ContrastFamily:
    """Single-step min-P simultaneous intervals and adjusted p-values for G contrasts.

    ``value``: the observed contrasts (G,); ``replicates``: their bootstrap replicates (B, G).
    With ``se`` (G,) and ``se_replicates`` (B, G), standard errors of the observed contrasts and of
    each replicate (e.g. from :func:`contrast_standard_errors`), the p-values are bootstrap-t
    (studentized) ones; without them, percentile ones. Replicates where a contrast of the family
    (or its SE) is undefined are dropped; contrasts whose observed value or SE is undefined, or
    whose replicates do not vary, are left out of the family (NaN results). With k the largest
    count of replicates with m* ≤ p_g(0) that still gives p_adjusted < α, γ is the (k+1)-th
    smallest m*: p_adjusted < α holds exactly when p_g(0) < γ, i.e. when the interval
    {v : p_g(v) ≥ γ} excludes 0.
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1); got {ci}")
    value = np.asarray(value, dtype=np.float64).reshape(-1)
    reps = np.asarray(replicates, dtype=np.float64)
    if reps.ndim != 2 or reps.shape[1] != value.size:
        raise ValueError(f"replicates must have shape (B, {value.size}); got {reps.shape}")
    studentized = se is not None or se_replicates is not None
    if studentized:
        if se is None or se_replicates is None:
            raise ValueError("the bootstrap-t needs both se (G,) and se_replicates (B, G); give both or neither")
        se_obs = np.asarray(se, dtype=np.float64).reshape(-1)
        se_reps = np.asarray(se_replicates, dtype=np.float64)
        if se_obs.shape != value.shape or se_reps.shape != reps.shape:
            raise ValueError(f"se must have shape {value.shape} and se_replicates {reps.shape}; "
                             f"got {se_obs.shape} and {se_reps.shape}")
        # A replicate whose SE is undefined or 0 has no studentized value: drop it like a NaN one.
        reps = np.where(np.isfinite(se_reps) & (se_reps > 0), reps, np.nan)
    nan = np.full(value.size, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, as intended
        boot_se = np.nanstd(reps, axis=0, ddof=1) if reps.shape[0] > 1 else nan.copy()
    defined = np.isfinite(value) & np.isfinite(boot_se) & (boot_se > 0)
    if studentized:
        defined &= np.isfinite(se_obs) & (se_obs > 0)
    family = np.flatnonzero(defined)
    kept_rows = np.all(np.isfinite(reps[:, family]), axis=1)
    b = int(kept_rows.sum())
    if family.size == 0 or b == 0:
        return ContrastFamily(value, nan, nan.copy(), nan.copy(), nan.copy(), boot_se, float("nan"), 0)
    # The statistic whose replicates are ranked: d* itself (percentile), or the pivot
    # t* = (d* − d̂)/se* (bootstrap-t, Efron & Tibshirani 1993, §12.5), whose observed value for
    # "d_g = v" is (d̂ − v)/se.
    stats = reps[np.ix_(kept_rows, family)]
    if studentized:
        stats = (stats - value[family]) / se_reps[np.ix_(kept_rows, family)]

    def observed(j: int, v: float) -> float:
        g = family[j]
        return (value[g] - v) / se_obs[g] if studentized else v

    columns = [np.sort(stats[:, j]) for j in range(family.size)]
    p_zero = np.array([_percentile_p(col, np.array([observed(j, 0.0)]))[0] for j, col in enumerate(columns)])
    m_star = np.sort(np.min(np.column_stack([_percentile_p(col, stats[:, j]) for j, col in enumerate(columns)]), axis=1))
    alpha = 1.0 - ci
    k = int(np.ceil(alpha * (b + 1) - 1 - 1e-9)) - 1  # counts e with (1 + e)/(b + 1) < α: e <= k
    level = float(m_star[k]) if 0 <= k < b else 0.0
    at_most = np.searchsorted(m_star, p_zero, side="right")  # #{m* <= p_g(0)}
    p_adjusted, p_marginal, low, high = nan.copy(), nan.copy(), nan.copy(), nan.copy()
    p_adjusted[family] = np.minimum(1.0, (1.0 + at_most) / (b + 1.0))
    p_marginal[family] = p_zero
    for j, g in enumerate(family):
        lo, hi = _interval(columns[j], level)
        if studentized:  # (d̂ − v)/se in [lo, hi]  <=>  v in [d̂ − se·hi, d̂ − se·lo]
            lo, hi = value[g] - se_obs[g] * hi, value[g] - se_obs[g] * lo
        low[g], high[g] = lo, hi
    return ContrastFamily(value, low, high, p_adjusted, p_marginal, boot_se, level, b)
