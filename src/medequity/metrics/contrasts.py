"""Each group against all audited samples: differences whose intervals and tests agree.

A gap (max − min over groups) is a *size*: its bootstrap interval can never contain 0, so it
cannot say whether a difference is real. Significance is asked of a contrast that can be 0:

    d_g = M(D_g) − M(D_included)

the metric on group g minus the metric on every sample with a known group (for AUC and the
label-conditional rates, identical group distributions give d_g = 0 in expectation whatever the
group sizes and prevalences). One family per (attribute, metric): the G contrasts are tested
together by the single-step bootstrap max-T procedure (Westfall & Young 1993, *Resampling-Based
Multiple Testing*, §2.6; Romano & Wolf 2005): with bootstrap replicates d*_g and their standard
errors se_g,

    T*_b = max_g |d*_{b,g} − d_g| / se_g,   c = the critical value of T* at level α,

the simultaneous interval of group g is d_g ± c·se_g and its adjusted p-value is
P*(T* ≥ |d_g| / se_g). Both come from the same distribution, so an interval excludes 0 exactly
when its adjusted p-value is below α = 1 − ci (p < α): a reader cannot get two answers. The family-wise
error is controlled like Holm's (max-T also uses the strong correlation between the contrasts,
which all share the pooled value); the omnibus test "no group differs" is the smallest adjusted
p-value. Holm itself has no interval that agrees with it, which is why it is not used here.
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
    p_adjusted: np.ndarray  # (G,) max-T adjusted p-values
    se: np.ndarray  # (G,) bootstrap standard errors
    critical: float  # c: interval half-width in units of se
    n_replicates: int  # replicates where every contrast was defined

    @property
    def p_omnibus(self) -> float:
        """p-value of "no group differs from the pool" (the smallest adjusted p-value)."""
        finite = self.p_adjusted[np.isfinite(self.p_adjusted)]
        return float(finite.min()) if finite.size else float("nan")


def max_t_contrasts(value, replicates, ci: float = 0.95) -> ContrastFamily:
    """Single-step max-T simultaneous intervals and adjusted p-values for G contrasts.

    ``value``: the observed contrasts (G,); ``replicates``: their bootstrap replicates (B, G).
    Replicates where a contrast is undefined (NaN) are dropped; contrasts whose observed value is
    undefined, or whose replicates do not vary, are left out of the family (NaN results).

    p_g = (1 + #{b: T*_b ≥ t_g}) / (B + 1) with t_g = |d_g| / se_g. With k the largest count of
    exceedances that still gives p < α, c is the (k+1)-th largest T*: p_g < α holds exactly when
    t_g > c, i.e. when the interval d_g ± c·se_g excludes 0.
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
    family = np.isfinite(value) & np.isfinite(se) & (se > 0)
    if not family.any():
        return ContrastFamily(value, nan, nan.copy(), nan.copy(), se, float("nan"), 0)
    centred = np.abs(reps[:, family] - value[family]) / se[family]
    centred = centred[np.all(np.isfinite(centred), axis=1)]
    b = centred.shape[0]
    t_max = np.sort(centred.max(axis=1))[::-1] if b else np.empty(0)
    alpha = 1.0 - ci
    k = int(np.ceil(alpha * (b + 1) - 1 - 1e-9)) - 1  # exceedances e with (1 + e)/(b + 1) < α: e <= k
    critical = float(t_max[k]) if 0 <= k < b else float("inf")
    t_observed = np.abs(value[family]) / se[family]
    exceed = b - np.searchsorted(t_max[::-1], t_observed, side="left")  # #{T* >= t}
    p = nan.copy()
    p[family] = np.minimum(1.0, (1.0 + exceed) / (b + 1.0))
    low, high = nan.copy(), nan.copy()
    low[family] = value[family] - critical * se[family]
    high[family] = value[family] + critical * se[family]
    return ContrastFamily(value, low, high, p, se, critical, b)
