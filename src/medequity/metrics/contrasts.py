"""Each group against all audited samples: differences whose intervals and tests agree.

A gap (max − min over groups) is a *size*: its bootstrap interval can never contain 0, so it
cannot say whether a difference is real. Significance is asked of a contrast that can be 0:

    d_g = M(D_g) − M(D_included)

the metric on group g minus the metric on every sample with a known group (for AUC and the
label-conditional rates, identical group distributions give d_g = 0 in expectation whatever the
group sizes and prevalences). One family per (attribute, metric): its G contrasts are tested
together by the single-step bootstrap min-P procedure (Westfall & Young 1993, *Resampling-Based
Multiple Testing*, §2.6) on percentile p-values:

* the marginal p-value of "d_g = 0" inverts the percentile interval of the replicates d*_g:
  p_g(v) = 2 · min(P*(d*_g ≤ v), P*(d*_g ≥ v)) (with +1 smoothing), at v = 0;
* every replicate b gets the same p-values for its own values, and m*_b = min_g p_g(d*_{b,g});
* the adjusted p-value of group g is P*(m* ≤ p_g(0)); the simultaneous interval of group g is
  {v : p_g(v) ≥ γ}, a percentile interval at the critical marginal level γ (a quantile of m*).

An interval excludes 0 exactly when its adjusted p-value is below α = 1 − ci (p < α): a reader
cannot get two answers. The family-wise error is controlled like Holm's, and min-P uses the
strong correlation between the contrasts (they share the pooled value); Holm itself has no
interval that agrees with it. The omnibus test "no group differs from the pool" is the smallest
adjusted p-value. Percentile p-values, unlike studentized ones, respect the skew of bounded
metrics near 1 (a small group with a high AUC has a small standard error, which made a
studentized max-T reject too often: 0.12 at α = 0.05 with six groups, the smallest of 150).
Calibration (type-I error and power by simulation) is measured in
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


def min_p_contrasts(value, replicates, ci: float = 0.95) -> ContrastFamily:
    """Single-step min-P simultaneous intervals and adjusted p-values for G contrasts.

    ``value``: the observed contrasts (G,); ``replicates``: their bootstrap replicates (B, G).
    Replicates where a contrast of the family is undefined (NaN) are dropped; contrasts whose
    observed value is undefined, or whose replicates do not vary, are left out of the family
    (NaN results). With k the largest count of replicates with m* ≤ p_g(0) that still gives
    p_adjusted < α, γ is the (k+1)-th smallest m*: p_adjusted < α holds exactly when
    p_g(0) < γ, i.e. when the interval {v : p_g(v) ≥ γ} excludes 0.
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1); got {ci}")
    value = np.asarray(value, dtype=np.float64).reshape(-1)
    reps = np.asarray(replicates, dtype=np.float64)
    if reps.ndim != 2 or reps.shape[1] != value.size:
        raise ValueError(f"replicates must have shape (B, {value.size}); got {reps.shape}")
    nan = np.full(value.size, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, as intended
        se = np.nanstd(reps, axis=0, ddof=1) if reps.shape[0] > 1 else nan.copy()
    family = np.flatnonzero(np.isfinite(value) & np.isfinite(se) & (se > 0))
    if family.size == 0:
        return ContrastFamily(value, nan, nan.copy(), nan.copy(), nan.copy(), se, float("nan"), 0)
    kept = reps[:, family]
    kept = kept[np.all(np.isfinite(kept), axis=1)]
    b = kept.shape[0]
    if b == 0:
        return ContrastFamily(value, nan, nan.copy(), nan.copy(), nan.copy(), se, float("nan"), 0)
    columns = [np.sort(kept[:, j]) for j in range(family.size)]
    p_zero = np.array([_percentile_p(col, np.zeros(1))[0] for col in columns])
    m_star = np.sort(np.min(np.column_stack([_percentile_p(col, kept[:, j]) for j, col in enumerate(columns)]), axis=1))
    alpha = 1.0 - ci
    k = int(np.ceil(alpha * (b + 1) - 1 - 1e-9)) - 1  # counts e with (1 + e)/(b + 1) < α: e <= k
    level = float(m_star[k]) if 0 <= k < b else 0.0
    at_most = np.searchsorted(m_star, p_zero, side="right")  # #{m* <= p_g(0)}
    p_adjusted, p_marginal, low, high = nan.copy(), nan.copy(), nan.copy(), nan.copy()
    p_adjusted[family] = np.minimum(1.0, (1.0 + at_most) / (b + 1.0))
    p_marginal[family] = p_zero
    for j, g in enumerate(family):
        low[g], high[g] = _interval(columns[j], level)
    return ContrastFamily(value, low, high, p_adjusted, p_marginal, se, level, b)
