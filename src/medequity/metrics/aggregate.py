"""Aggregate-level fairness summaries: functions of an overall value and the group values.

These let numbers printed in papers be checked directly, and they are what the bootstrap applies
to every replicate: each function accepts ``group_values`` of shape ``(..., G)`` and ``overall`` of
shape ``(...)``, and returns shape ``(...)``. A NaN group value makes the summary NaN — an
undefined group is never read as "perfectly fair".

Scale: the summaries built on ``1 − M`` or ``1 + disparity`` (:func:`skewness`,
:func:`equity_scaled`, :func:`group_disparity`) and the relative spreads (:func:`mean_psd`,
:func:`max_psd`) are defined on fractions in [0, 1]. Papers print them in percent; these functions
raise ``ValueError`` on a value outside [0, 1] rather than guess (``equity_scaled(76.07, [75.51,
76.04], ...)`` would otherwise return 60.13 for FairMedFM's 75.87): pass 0.7607, not 76.07.
:func:`gap`, :func:`ratio`, :func:`gap_to_overall` and :func:`worst_group` take any scale.
"""

from __future__ import annotations

import numpy as np

from medequity.metrics._validation import check_fractions

# The three published disparity terms of equity scaling; callers must name one (see equity_scaled).
DISPARITIES = ("std", "mean_abs_dev", "sum_abs_dev")


def _values(group_values) -> np.ndarray:
    values = np.asarray(group_values, dtype=np.float64)
    if values.ndim == 0 or values.shape[-1] < 2:
        raise ValueError(f"group_values needs at least two groups on its last axis; got shape {values.shape}")
    return values


def _overall(overall, values: np.ndarray) -> np.ndarray:
    overall = np.asarray(overall, dtype=np.float64)
    if overall.shape != values.shape[:-1]:
        raise ValueError(f"overall has shape {overall.shape}; expected {values.shape[:-1]} to match group_values")
    return overall


def _fraction_values(group_values, function: str) -> np.ndarray:
    values = _values(group_values)
    check_fractions(values, "group_values", function)
    return values


def _fraction_overall(overall, values: np.ndarray, function: str) -> np.ndarray:
    overall = _overall(overall, values)
    check_fractions(overall, "overall", function)
    return overall


def gap(group_values) -> np.ndarray:
    """Δ = max_g M(D_g) − min_g M(D_g) (fairlearn ``difference(method="between_groups")``)."""
    values = _values(group_values)
    return values.max(axis=-1) - values.min(axis=-1)


def gap_to_overall(overall, group_values) -> np.ndarray:
    """max_g |M(D_g) − M(D)| (fairlearn ``difference(method="to_overall")``)."""
    values = _values(group_values)
    return np.abs(values - _overall(overall, values)[..., None]).max(axis=-1)


def ratio(group_values) -> np.ndarray:
    """min_g M(D_g) / max_g M(D_g) (fairlearn ``ratio(method="between_groups")``); 1 is fair."""
    values = _values(group_values)
    with np.errstate(divide="ignore", invalid="ignore"):
        return values.min(axis=-1) / values.max(axis=-1)


def worst_group(group_values, *, higher_is_better: bool = True) -> np.ndarray:
    """The worst group value: min for utilities, max for losses/error rates."""
    values = _values(group_values)
    return values.min(axis=-1) if higher_is_better else values.max(axis=-1)


def skewness(group_values) -> np.ndarray:
    """FairMedFM skewness = max_g (1 − M_g) / min_g (1 − M_g); 1 is fair, NaN if a group has M = 1."""
    errors = 1.0 - _fraction_values(group_values, "skewness")
    with np.errstate(divide="ignore", invalid="ignore"):
        result = errors.max(axis=-1) / errors.min(axis=-1)
    return np.where(errors.min(axis=-1) > 0, result, np.nan)


def group_disparity(overall, group_values, disparity: str) -> np.ndarray:
    """The disparity term of equity scaling, one of :data:`DISPARITIES` (see :func:`equity_scaled`)."""
    values = _fraction_values(group_values, "group_disparity")
    overall = _fraction_overall(overall, values, "group_disparity")
    return _disparity(overall, values, disparity)


def _disparity(overall: np.ndarray, values: np.ndarray, disparity: str) -> np.ndarray:
    if disparity == "std":
        return values.std(axis=-1)
    deviations = np.abs(overall[..., None] - values)
    if disparity == "mean_abs_dev":
        return deviations.mean(axis=-1)
    if disparity == "sum_abs_dev":
        return deviations.sum(axis=-1)
    raise ValueError(f"disparity must be one of {DISPARITIES}; got {disparity!r}")


def equity_scaled(overall, group_values, *, disparity: str) -> np.ndarray:
    """Equity-scaled metric ES = M(D) / (1 + disparity), on fractions in [0, 1].

    Three papers use three disparity terms under the one name "ES", so the form is a required,
    named choice:

    ``disparity="std"``: population std of the group values — FairMedFM eq. 2 (AUC_ES, DSC_ES).
    ``disparity="mean_abs_dev"``: (1/G) Σ_g |M(D) − M(D_g)| — FairDi eq. 4 (ES-AUC).
    ``disparity="sum_abs_dev"``: Σ_g |M(D) − M(D_g)| — Harvard FairVision/FairSeg ES-AUC, ES-Dice,
    FairDi eq. 9–10 (ES-Dice, ES-IoU).
    """
    values = _fraction_values(group_values, "equity_scaled")
    overall = _fraction_overall(overall, values, "equity_scaled")
    return overall / (1.0 + _disparity(overall, values, disparity))


def mean_psd(overall, group_values) -> np.ndarray:
    """FairDi MeanPSD = std_g(M(D_g)) / M(D) (population std over groups), on fractions."""
    values = _fraction_values(group_values, "mean_psd")
    overall = _fraction_overall(overall, values, "mean_psd")
    with np.errstate(divide="ignore", invalid="ignore"):
        return values.std(axis=-1) / overall


def max_psd(overall, group_values) -> np.ndarray:
    """FairDi MaxPSD = (max_g M(D_g) − min_g M(D_g)) / M(D), on fractions."""
    values = _fraction_values(group_values, "max_psd")
    overall = _fraction_overall(overall, values, "max_psd")
    with np.errstate(divide="ignore", invalid="ignore"):
        return gap(values) / overall


def summarize(overall, group_values, *, higher_is_better: bool = True) -> dict[str, np.ndarray]:
    """Every summary at once (used by reports and the bootstrap). For utilities
    (``higher_is_better``) this includes skewness, the three ES forms and the PSDs, which need
    fractions: values outside [0, 1] raise ``ValueError`` (see the module docstring)."""
    values = _values(group_values)
    overall = _overall(overall, values)
    summaries = {
        "gap": gap(values),
        "gap_to_overall": gap_to_overall(overall, values),
        "ratio": ratio(values),
        "worst": worst_group(values, higher_is_better=higher_is_better),
    }
    if higher_is_better:
        summaries.update(
            {
                "skewness": skewness(values),
                "es_std": equity_scaled(overall, values, disparity="std"),
                "es_mean_abs_dev": equity_scaled(overall, values, disparity="mean_abs_dev"),
                "es_sum_abs_dev": equity_scaled(overall, values, disparity="sum_abs_dev"),
                "mean_psd": mean_psd(overall, values),
                "max_psd": max_psd(overall, values),
            }
        )
    return summaries
