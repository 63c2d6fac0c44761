"""Group-specific thresholds by fairlearn's ``ThresholdOptimizer`` (Hardt, Price, Srebro 2016).

Hardt et al., "Equality of opportunity in supervised learning", NeurIPS 2016 (§4, the derived
predictor), as implemented by fairlearn: for each group a threshold — randomised between two
thresholds where needed — is chosen on the validation scores so that the named constraint holds
(``equalized_odds`` by default; also ``demographic_parity``, ``true_positive_rate_parity``,
``false_positive_rate_parity``, ``true_negative_rate_parity``, ``false_negative_rate_parity``)
while the objective (``accuracy_score`` by default; ``balanced_accuracy_score`` …) is maximised.
The review (§2.2.3, "calibration") lists this as post-processing.

The trained model is left as it is; ``finalize`` fits the optimiser with ``prefit=True`` on the
whole validation split's scores and groups, and ``postprocess`` returns hard predictions per
group (randomised with the fixed ``seed``, as fairlearn does). Scores are passed through
unchanged, so AUC-type metrics are those of the underlying model. Samples of a group not seen on
validation (including unknown, −1, when validation had none) fall back to ``score ≥ 0.5``.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from medequity.methods.base import Method, register_method


class ScorePassThrough(BaseEstimator):
    """A fitted 'estimator' whose prediction is the score column it is given."""

    def fit(self, X, y=None):
        self.fitted_ = True
        return self

    def predict(self, X):
        return np.asarray(X, dtype=np.float64)[:, 0]


@register_method
class ThresholdOptimizerMethod(Method):
    """Post-processing with fairlearn's ThresholdOptimizer (Hardt et al. 2016) on validation scores."""

    name = "threshold_optimizer"
    defaults = {"constraints": "equalized_odds", "objective": "accuracy_score", "grid_size": 1000, "seed": 0}
    needs_groups_at_inference = True

    def __init__(self, **params):
        super().__init__(**params)
        self.optimizer = None
        self._fitted_groups: set[int] = set()

    def fit_postprocessor(self, scores: np.ndarray, labels: np.ndarray, groups: np.ndarray, group_names=None) -> None:
        from fairlearn.postprocessing import ThresholdOptimizer

        labels, groups = np.asarray(labels).astype(int), np.asarray(groups)
        for g in np.unique(groups):  # fairlearn's own message names an integer code, not the group
            classes = np.unique(labels[groups == g])
            if classes.size < 2:
                name = group_names[g] if group_names is not None and 0 <= g < len(group_names) else g
                raise ValueError(
                    f"threshold_optimizer needs both classes in every group of the validation split; group {name!r} "
                    f"has only label {int(classes[0])} ({int((groups == g).sum())} samples). Use a coarser attribute, "
                    "more data or a larger validation split")

        self.optimizer = ThresholdOptimizer(
            estimator=ScorePassThrough().fit(None), constraints=self.params["constraints"],
            objective=self.params["objective"], grid_size=self.params["grid_size"], prefit=True,
            predict_method="predict",
        )
        self.optimizer.fit(np.asarray(scores, dtype=np.float64)[:, None], labels, sensitive_features=groups)
        self._fitted_groups = {int(g) for g in np.unique(groups)}
        self.log["thresholds"] = [repr(self.optimizer.interpolated_thresholder_.interpolation_dict)]

    def finalize(self, model, train, val, predict) -> None:
        self.fit_postprocessor(predict(model, val), val.labels, val.groups, val.group_names)

    def postprocess(self, scores, groups):
        if self.optimizer is None:
            raise RuntimeError("threshold_optimizer is not fitted: train the model first (finalize fits it)")
        scores = np.asarray(scores, dtype=np.float64)
        groups = np.asarray(groups)
        predictions = (scores >= 0.5).astype(np.int64)
        seen = np.isin(groups, list(self._fitted_groups))
        if seen.any():
            predictions[seen] = self.optimizer.predict(scores[seen, None], sensitive_features=groups[seen],
                                                       random_state=self.params["seed"]).astype(np.int64)
        return scores, predictions
