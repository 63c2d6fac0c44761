"""Reject-option classification (Kamiran, Karim, Zhang 2012; review §2.2.3).

Kamiran et al., "Decision theory for discrimination-aware classification", ICDM 2012, §III-A:
decisions near the boundary are the least certain, so inside the critical region

    |score − t| ≤ θ          (t = 0.5, the classification threshold)

the *unprivileged* group gets the favourable outcome and the *privileged* group the unfavourable
one; outside it the plain decision ``score ≥ t`` stands. θ is chosen on the validation split
from a grid over [0, min(t, 1 − t)] to minimise the named gap — ``demographic_parity`` (largest
difference in selection rate, the default), ``equal_opportunity`` (TPR) or ``equalized_odds``
(max of TPR and FPR differences) — among the θ whose validation accuracy is at most
``max_accuracy_loss`` below that of θ = 0; ties go to the smallest θ.

More than two groups: the privileged group is the one with the highest selection rate of the
favourable outcome under the plain threshold on validation; every other known group is treated
as unprivileged (Kamiran et al. define the method for one binary attribute). Samples of unknown
group (−1) keep the plain decision. ``favourable_label`` is 1 by default (a positive finding leads
to care); set it to 0 if the negative outcome is the favourable one.
"""

from __future__ import annotations

import numpy as np

from medequity.methods.base import Method, register_method

GAP_METRICS = ("demographic_parity", "equal_opportunity", "equalized_odds")


def _rate(values: np.ndarray, mask: np.ndarray) -> float:
    return float(values[mask].mean()) if mask.any() else float("nan")


def fairness_gap(metric: str, labels: np.ndarray, predictions: np.ndarray, groups: np.ndarray) -> float:
    """Largest between-group difference of the named rate (groups < 0 ignored)."""
    codes = [g for g in np.unique(groups) if g >= 0]

    def spread(rates):
        rates = [r for r in rates if np.isfinite(r)]
        return max(rates) - min(rates) if len(rates) >= 2 else 0.0

    selection = spread([_rate(predictions, groups == g) for g in codes])
    tpr = spread([_rate(predictions, (groups == g) & (labels == 1)) for g in codes])
    fpr = spread([_rate(predictions, (groups == g) & (labels == 0)) for g in codes])
    return {"demographic_parity": selection, "equal_opportunity": tpr, "equalized_odds": max(tpr, fpr)}[metric]


@register_method
class RejectOptionClassification(Method):
    """Kamiran et al. 2012 reject-option classification, θ tuned on validation."""

    name = "reject_option"
    defaults = {"metric": "demographic_parity", "max_accuracy_loss": 0.05, "n_margins": 50,
                "threshold": 0.5, "favourable_label": 1}
    needs_groups_at_inference = True

    def __init__(self, **params):
        super().__init__(**params)
        if self.params["metric"] not in GAP_METRICS:
            raise ValueError(f"metric must be one of {GAP_METRICS}; got {self.params['metric']!r}")
        if self.params["favourable_label"] not in (0, 1):
            raise ValueError("favourable_label must be 0 or 1")
        self.margin: float | None = None
        self.privileged: int | None = None

    def decide(self, scores: np.ndarray, groups: np.ndarray, margin: float, privileged: int) -> np.ndarray:
        """Plain decisions outside the critical region; inside, favourable for the unprivileged."""
        scores, groups = np.asarray(scores, dtype=np.float64), np.asarray(groups)
        threshold, favourable = self.params["threshold"], self.params["favourable_label"]
        predictions = (scores >= threshold).astype(np.int64)
        critical = np.abs(scores - threshold) <= margin
        predictions[critical & (groups == privileged)] = 1 - favourable
        predictions[critical & (groups >= 0) & (groups != privileged)] = favourable
        return predictions

    def fit_postprocessor(self, scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> None:
        scores, labels, groups = np.asarray(scores, dtype=np.float64), np.asarray(labels), np.asarray(groups)
        plain = (scores >= self.params["threshold"]).astype(np.int64)
        favourable = plain == self.params["favourable_label"]
        codes = [int(g) for g in np.unique(groups) if g >= 0]
        self.privileged = max(codes, key=lambda g: favourable[groups == g].mean())
        widest = min(self.params["threshold"], 1 - self.params["threshold"])
        margins = np.linspace(0.0, widest, int(self.params["n_margins"]) + 1)
        base_accuracy = float((plain == labels).mean())
        best = None
        rows = []
        for margin in margins:
            predictions = self.decide(scores, groups, margin, self.privileged)
            accuracy = float((predictions == labels).mean())
            gap = fairness_gap(self.params["metric"], labels, predictions, groups)
            rows.append((float(margin), accuracy, gap))
            if accuracy >= base_accuracy - self.params["max_accuracy_loss"] - 1e-12 and (best is None or gap < best[1] - 1e-12):
                best = (float(margin), gap)
        self.margin = best[0]
        self.log["reject_option_margin"] = [self.margin]
        self.log["reject_option_privileged_group"] = [self.privileged]
        self.log["reject_option_search"] = rows

    def finalize(self, model, train, val, predict) -> None:
        self.fit_postprocessor(predict(model, val), val.labels, val.groups)
        self.log["reject_option_privileged_group"] = [val.group_names[self.privileged]]

    def postprocess(self, scores, groups):
        if self.margin is None:
            raise RuntimeError("reject_option is not fitted: train the model first (finalize fits it)")
        return np.asarray(scores, dtype=np.float64), self.decide(scores, groups, self.margin, self.privileged)
