"""Calibration: ECE with three binning conventions, BCE, and calibration curves.

FairMedFM bins over the *range of the scores* (``pandas.cut`` of the scores into 10 equal-width
bins); the classic definition (Guo et al. 2017) bins [0, 1]; equal-count bins are an option.
ECE = Σ_bins (n_bin / n) · |mean score − fraction positive| over non-empty bins.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medequity.metrics._validation import check_binary, check_same_length, check_scores
from medequity.metrics.weighted import SampleSet, binary_cross_entropy_terms, evaluate

BINNINGS = ("unit", "score_range", "quantile")


def ece_bin_index(y_score, n_bins: int = 10, bins: str = "unit") -> np.ndarray:
    """Bin of each score. ``unit``: equal-width on [0, 1], right-closed (0 falls in the first bin).
    ``score_range``: equal-width over [min, max] of the scores, right-closed, as ``pandas.cut``.
    ``quantile``: equal-count bins by rank (ties may straddle a bin edge)."""
    score = np.asarray(y_score, dtype=np.float64)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1; got {n_bins}")
    if bins == "unit":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    elif bins == "score_range":
        edges = np.linspace(score.min(), score.max(), n_bins + 1)
    elif bins == "quantile":
        ranks = np.argsort(np.argsort(score, kind="stable"), kind="stable")
        return (ranks * n_bins // score.size).astype(np.int64)
    else:
        raise ValueError(f"bins must be one of {BINNINGS}; got {bins!r}")
    return np.digitize(score, edges[1:-1], right=True).astype(np.int64)


def expected_calibration_error(y_true, y_prob, *, n_bins: int = 10, bins: str = "unit") -> float:
    """Expected calibration error of probabilities ``y_prob`` (see module docstring)."""
    y = check_binary(y_true, "y_true")
    prob = check_scores(y_prob, "y_prob")
    check_same_length(y_true=y, y_prob=prob)
    data = SampleSet(y=y, score=prob, pred=None, ece_bins=ece_bin_index(prob, n_bins, bins), n_bins=n_bins)
    return float(evaluate("ece", data)[0])


def binary_cross_entropy(y_true, y_prob) -> float:
    """Mean BCE with log clamped at -100 (as ``torch.nn.BCELoss``)."""
    y = check_binary(y_true, "y_true")
    prob = check_scores(y_prob, "y_prob")
    check_same_length(y_true=y, y_prob=prob)
    return float(binary_cross_entropy_terms(y, prob).mean())


def calibration_curve(y_true, y_prob, *, n_bins: int = 10, bins: str = "unit") -> pd.DataFrame:
    """Per non-empty bin: mean predicted probability, fraction positive, count (for plots)."""
    y = check_binary(y_true, "y_true")
    prob = check_scores(y_prob, "y_prob")
    check_same_length(y_true=y, y_prob=prob)
    index = ece_bin_index(prob, n_bins, bins)
    frame = pd.DataFrame({"bin": index, "score": prob, "y": y})
    curve = frame.groupby("bin").agg(mean_predicted=("score", "mean"), fraction_positive=("y", "mean"), count=("y", "size"))
    return curve.reset_index()
