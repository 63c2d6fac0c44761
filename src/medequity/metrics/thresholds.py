"""Decision thresholds (METRICS.md, "Decision thresholds").

A hard prediction is ``score > t`` (strict), as FairMedFM and MEDFAIR threshold their scores.
Rules: a fixed value; the best-F1 threshold on the evaluated set (what FairMedFM and MEDFAIR do on
the *test* set — a label leak, kept for reproducing their numbers); Youden's J; and a threshold
chosen on validation data and applied to test (the honest default for reports). The rule used is
recorded in a :class:`Threshold` and travels with every result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from medequity.metrics._validation import check_binary, check_same_length, check_scores

RULES = ("fixed", "best_f1", "youden")


@dataclass(frozen=True)
class Threshold:
    value: float
    rule: str  # "fixed" | "best_f1" | "youden"
    fitted_on: str  # "none" | "evaluated set" | "validation set"

    def predict(self, y_score) -> np.ndarray:
        return (np.asarray(y_score, dtype=np.float64) > self.value).astype(np.int8)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if self.rule == "fixed":
            return f"fixed threshold {self.value:g}"
        return f"{self.rule} threshold {self.value:.4g} chosen on the {self.fitted_on}"


def _candidate_counts(y: np.ndarray, score: np.ndarray):
    """For every candidate threshold (each distinct score, plus one below all scores), the
    counts of predicted positives ``score > t``: returns thresholds ascending, tp, fp."""
    order = np.argsort(score, kind="stable")
    s_sorted, y_sorted = score[order], y[order]
    distinct = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    thresholds = s_sorted[distinct]
    # Samples with score <= t are predicted negative; cumulative counts at each block end.
    pos_at_or_below = np.cumsum(y_sorted)[distinct]
    neg_at_or_below = np.cumsum(1 - y_sorted)[distinct]
    total_pos, total_neg = y.sum(), y.size - y.sum()
    below_all = np.nextafter(thresholds[0], -np.inf)
    thresholds = np.r_[below_all, thresholds]
    tp = total_pos - np.r_[0, pos_at_or_below]
    fp = total_neg - np.r_[0, neg_at_or_below]
    return thresholds, tp.astype(np.float64), fp.astype(np.float64), float(total_pos), float(total_neg)


def best_f1_threshold(y_true, y_score) -> float:
    """Threshold maximising F1 of ``score > t``; on ties the lowest such threshold."""
    y = check_binary(y_true, "y_true")
    score = check_scores(y_score, "y_score", probability=False)
    check_same_length(y_true=y, y_score=score)
    thresholds, tp, fp, total_pos, _ = _candidate_counts(y, score)
    fn = total_pos - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    return float(thresholds[int(np.argmax(f1))])


def youden_threshold(y_true, y_score) -> float:
    """Threshold maximising Youden's J = TPR − FPR of ``score > t``; on ties the lowest."""
    y = check_binary(y_true, "y_true")
    score = check_scores(y_score, "y_score", probability=False)
    check_same_length(y_true=y, y_score=score)
    thresholds, tp, fp, total_pos, total_neg = _candidate_counts(y, score)
    if total_pos == 0 or total_neg == 0:
        raise ValueError("Youden's J needs both classes in y_true")
    j = tp / total_pos - fp / total_neg
    return float(thresholds[int(np.argmax(j))])


def resolve_threshold(
    threshold,
    y_true=None,
    y_score=None,
    *,
    y_val=None,
    score_val=None,
) -> Threshold:
    """Turn a threshold setting into a recorded :class:`Threshold`.

    ``threshold`` is a number (fixed), a :class:`Threshold` (used as is), or a rule name
    ``"best_f1"``/``"youden"``; a rule is fitted on ``(y_val, score_val)`` when given (validation
    set, the honest choice), else on the evaluated ``(y_true, y_score)``.
    """
    if isinstance(threshold, Threshold):
        return threshold
    if isinstance(threshold, (int, float, np.integer, np.floating)) and not isinstance(threshold, (bool, np.bool_)):
        return Threshold(float(threshold), "fixed", "none")
    if threshold not in ("best_f1", "youden"):
        raise ValueError(f"threshold must be a number or one of 'best_f1', 'youden'; got {threshold!r}")
    fit = best_f1_threshold if threshold == "best_f1" else youden_threshold
    if y_val is not None and score_val is not None:
        return Threshold(fit(y_val, score_val), threshold, "validation set")
    if y_true is None or y_score is None:
        raise ValueError(f"threshold rule {threshold!r} needs labels and scores to be fitted on")
    return Threshold(fit(y_true, y_score), threshold, "evaluated set")
