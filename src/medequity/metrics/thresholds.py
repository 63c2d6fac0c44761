"""Decision thresholds (METRICS.md, "Decision thresholds").

Rules: a fixed value; the best-F1 threshold on the evaluated set (what FairMedFM and MEDFAIR do on
the *test* set — a label leak, kept for reproducing their numbers); Youden's J; and a threshold
chosen on validation data and applied to test (the honest default for reports). The rule used, and
the data it was fitted on, are recorded in a :class:`Threshold` and travel with every result.

Two comparison conventions are in use, and a :class:`Threshold` says which one it applies
(:attr:`Threshold.operator`):

- a **fixed** threshold ``t`` predicts ``score > t`` (strict), as FairMedFM and MEDFAIR threshold
  their scores and as fairlearn's ``ThresholdOptimizer`` does (``ThresholdOperation(">", t)``; its
  ``t`` is the midpoint between two adjacent scores, so no score equals it);
- a **fitted** threshold (best F1, Youden's J) is the score value scikit-learn's
  ``precision_recall_curve`` / ``roc_curve`` report — a score present in the data, never a
  midpoint — and predicts ``score >= t``, the positive set at which those curves evaluated it.

FairMedFM mixes the two: it fits ``t`` as scikit-learn's best-F1 threshold (``>=``) and then
predicts ``score > t``, so the samples scoring exactly ``t`` turn negative;
:func:`medequity.metrics.parity.fairmedfm_equalized_odds` reproduces that.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from medequity.metrics._validation import check_binary, check_same_length, check_scores

RULES = ("fixed", "best_f1", "youden")
FITTED_ON = ("none", "evaluated set", "validation set")


@dataclass(frozen=True)
class Threshold:
    value: float
    rule: str  # "fixed" | "best_f1" | "youden"
    # "none" (fixed), "evaluated set" (fitted on the data it is evaluated on: optimistic, a label
    # leak) or "validation set".
    fitted_on: str

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"Threshold rule must be one of {RULES}; got {self.rule!r}")
        if self.fitted_on not in FITTED_ON:
            raise ValueError(f"Threshold fitted_on must be one of {FITTED_ON}; got {self.fitted_on!r}")

    @property
    def operator(self) -> str:
        """``">"`` for a fixed threshold, ``">="`` for a fitted one (see the module docstring)."""
        return ">" if self.rule == "fixed" else ">="

    def predict(self, y_score) -> np.ndarray:
        score = np.asarray(y_score, dtype=np.float64)
        return (score > self.value if self.rule == "fixed" else score >= self.value).astype(np.int8)

    def to_dict(self) -> dict:
        return {**asdict(self), "operator": self.operator}

    @classmethod
    def from_dict(cls, data: dict) -> Threshold:
        """The inverse of :meth:`to_dict` (``operator`` follows from the rule)."""
        return cls(float(data["value"]), str(data["rule"]), str(data["fitted_on"]))

    def describe(self) -> str:
        if self.rule == "fixed":
            return f"fixed threshold: score > {self.value:g}"
        return f"{self.rule} threshold: score >= {self.value:.4g}, chosen on the {self.fitted_on}"


def _curve_counts(y: np.ndarray, score: np.ndarray):
    """The points of scikit-learn's precision-recall / ROC curves: every distinct score ``t``
    (ascending) with the counts of ``score >= t``. Returns thresholds, tp, fp, P, N."""
    order = np.argsort(score, kind="stable")
    s_sorted, y_sorted = score[order], y[order]
    first = np.r_[True, s_sorted[1:] != s_sorted[:-1]]  # first sample of each block of tied scores
    # Samples strictly below t are predicted negative: counts before each block starts.
    pos_below = (np.cumsum(y_sorted) - y_sorted)[first]
    neg_below = (np.cumsum(1 - y_sorted) - (1 - y_sorted))[first]
    total_pos = float(y.sum())
    total_neg = float(y.size) - total_pos
    return s_sorted[first], total_pos - pos_below, total_neg - neg_below, total_pos, total_neg


def _fit_inputs(y_true, y_score):
    y = check_binary(y_true, "y_true")
    score = check_scores(y_score, "y_score", probability=False)
    check_same_length(y_true=y, y_score=score)
    return _curve_counts(y, score)


def best_f1_threshold(y_true, y_score) -> float:
    """The score ``t`` maximising F1 of ``score >= t``: scikit-learn's ``precision_recall_curve``
    threshold at the best F1, the threshold FairMedFM and MEDFAIR fit. F1 is computed as they do,
    2PR / (P + R) from scikit-learn's precision and recall (0 where no positive is found), and the
    first maximum in ascending threshold order is taken (on ties the lowest threshold)."""
    thresholds, tp, fp, total_pos, _ = _fit_inputs(y_true, y_score)
    precision = tp / (tp + fp)  # tp + fp >= 1: every candidate is a score in the data
    recall = tp / total_pos if total_pos else np.ones_like(tp)  # scikit-learn's convention
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(tp > 0, 2 * precision * recall / (precision + recall), 0.0)
    return float(thresholds[int(np.argmax(f1))])


def youden_threshold(y_true, y_score) -> float:
    """The score ``t`` maximising Youden's J = TPR − FPR of ``score >= t`` (a ``roc_curve``
    threshold); on ties the lowest."""
    thresholds, tp, fp, total_pos, total_neg = _fit_inputs(y_true, y_score)
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

    ``threshold`` is a number (fixed, ``score > t``), a :class:`Threshold` (used as is), or a rule
    name ``"best_f1"``/``"youden"`` (``score >= t``); a rule is fitted on ``(y_val, score_val)``
    when given (``fitted_on="validation set"``, the honest choice), else on the evaluated
    ``(y_true, y_score)`` (``fitted_on="evaluated set"``: optimistic, the labels chose it).
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
