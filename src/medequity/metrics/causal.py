"""Approximate Diagnosis Fairness (Fair Diagnosis, eq. 24).

ADF = I(S; Ŷ | Y) = Σ_y P(y) Σ_{s,ŷ} P(s,ŷ|y) log[ P(s,ŷ|y) / (P(s|y) P(ŷ|y)) ], a plug-in
estimate from counts of hard predictions. 0 when predictions carry no information about the
sensitive attribute beyond the label: a prevalence difference alone (the indirect path S→Y) gives
ADF ≈ 0 while DP ≠ 0; a shortcut (the direct path S→X→Ŷ) gives ADF > 0. The paper reports values
×1e-3 in nats; ``base`` selects the logarithm (natural by default).
"""

from __future__ import annotations

import numpy as np

from medequity.metrics._validation import check_binary, check_same_length
from medequity.metrics.groups import encode_groups

ADF_SUMMARY = "I(S;Yhat|Y) nats"  # its summary label in tidy tables (audit gaps.csv, bench summaries)


def adf_from_counts(counts: np.ndarray, base: float = np.e) -> np.ndarray:
    """ADF from cell counts of shape (..., 2 [y], S, 2 [ŷ]); vectorised over leading axes."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(axis=(-3, -2, -1), keepdims=True)
    per_y = counts.sum(axis=(-2, -1), keepdims=True)
    p_s_given_y = counts.sum(axis=-1, keepdims=True)
    p_yhat_given_y = counts.sum(axis=-2, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = counts * per_y / (p_s_given_y * p_yhat_given_y)
        terms = np.where(counts > 0, counts / total * np.log(ratio), 0.0)
    return terms.sum(axis=(-3, -2, -1)) / np.log(base)


def adf(y_true, y_pred, *, sensitive_features, base: float = np.e) -> float:
    """Approximate Diagnosis Fairness I(S; Ŷ | Y) of hard predictions (see module docstring)."""
    y = check_binary(y_true, "y_true")
    pred = check_binary(y_pred, "y_pred")
    n = check_same_length(y_true=y, y_pred=pred)
    groups = encode_groups(sensitive_features, n)
    keep = groups.codes >= 0
    counts = np.zeros((2, groups.n_groups, 2))
    np.add.at(counts, (y[keep], groups.codes[keep], pred[keep]), 1.0)
    return float(adf_from_counts(counts, base))


def adf_cell_index(y: np.ndarray, codes: np.ndarray, pred: np.ndarray, n_groups: int) -> np.ndarray:
    """Flat cell index (y, s, ŷ) of each sample, for weighted (bootstrap) counting."""
    return (y.astype(np.int64) * n_groups + codes) * 2 + pred.astype(np.int64)


def adf_weighted(cells: np.ndarray, n_groups: int, W: np.ndarray, base: float = np.e) -> np.ndarray:
    """ADF for each weight row of W (b, n): counts per cell are weighted sums."""
    onehot = np.zeros((cells.size, 4 * n_groups))
    onehot[np.arange(cells.size), cells] = 1.0
    counts = (W @ onehot).reshape(W.shape[0], 2, n_groups, 2)
    return adf_from_counts(counts, base)
