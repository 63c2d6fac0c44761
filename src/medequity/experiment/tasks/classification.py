"""Binary classification: a score P(y=1) and a decision per sample."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medequity.data import GROUP_PREFIX
from medequity.data.base import MedicalDataset
from medequity.data.transforms import build_transform
from medequity.experiment.spec import ExperimentSpec
from medequity.experiment.tasks.base import SUMMARY_COLUMNS, TASKS, Task, tidy_results
from medequity.metrics import GroupMetricResult, group_metrics
from medequity.metrics.causal import ADF_SUMMARY
from medequity.metrics.thresholds import resolve_threshold
from medequity.models import Backbone, create_backbone
from medequity.training.data import SplitData, make_split_data

if TYPE_CHECKING:
    from medequity.experiment.train import TrainedModel


@TASKS.register("classification")
class Classification(Task):
    """Binary classification: a score P(y=1) and a decision per sample; per-group AUC, threshold
    metrics, gaps with bootstrap CIs and permutation tests, and ADF (Fair Diagnosis)."""

    name = "classification"

    def build_backbone(self, spec: ExperimentSpec, model_options: dict[str, Any]) -> Backbone:
        return create_backbone(spec.model, **model_options)

    def make_views(self, spec: ExperimentSpec, parts: dict[str, MedicalDataset], backbone: Backbone,
                   group_names: tuple[str, ...]) -> tuple[Any, dict[str, SplitData]]:
        transform = build_transform(spec.transform or backbone.transform_config())
        return transform, {view: make_split_data(part, spec.attribute, transform, group_names) for view, part in parts.items()}

    def predict(self, trained: TrainedModel) -> tuple[pd.DataFrame, dict]:
        """Scores on val and test, the method's post-processing, decisions at the threshold fitted on val."""
        spec, data, method, trainer = trained.prepared.spec, trained.data, trained.method, trained.trainer
        scores = {name: trainer.predict(trained.model, method, data[name], trained.config) for name in ("val", "test")}
        post = {name: method.postprocess(scores[name], data[name].groups) for name in ("val", "test")}
        threshold = resolve_threshold(spec.threshold) if isinstance(spec.threshold, (int, float)) else \
            resolve_threshold(spec.threshold, y_val=data["val"].labels, score_val=post["val"][0])
        frames = []
        for name in ("val", "test"):
            score, pred = post[name]
            frames.append(self.predictions_table(name, data[name], score, threshold.predict(score) if pred is None else pred))
        return pd.concat(frames, ignore_index=True), threshold.to_dict()

    def predictions_table(self, split: str, data: SplitData, score: np.ndarray, pred: np.ndarray) -> pd.DataFrame:
        table = data.table
        frame = pd.DataFrame({"split": split, "sample_id": table["sample_id"].astype(str).to_numpy(),
                              "label": data.labels, "score": score, "pred": pred.astype(np.int8)})
        for column in table.columns:
            if column.startswith(GROUP_PREFIX):
                frame[column] = table[column].astype(object).to_numpy()
        return frame

    def evaluate(self, test: pd.DataFrame, attributes, *, n_boot: int, n_permutations: int,
                 seed: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, GroupMetricResult]]:
        results = evaluate_predictions(test, attributes, n_boot=n_boot, n_permutations=n_permutations, seed=seed)
        metrics, summaries = tidy_results(results)
        summaries = pd.concat([summaries, adf_summaries(results)], ignore_index=True)
        return metrics, summaries, results


def evaluate_predictions(test: pd.DataFrame, attributes, *, n_boot: int, n_permutations: int,
                         seed: int) -> dict[str, GroupMetricResult]:
    """Per-group metrics with bootstrap CIs and gap tests of a test predictions table, per attribute.

    Called the way :func:`medequity.audit.audit` calls :func:`group_metrics` (its defaults, the
    table's hard predictions), so :func:`~medequity.experiment.save.save_run` can hand these
    results to the audit as they are.
    """
    return {attribute: group_metrics(test["label"].to_numpy(), test["score"].to_numpy(), y_pred=test["pred"].to_numpy(),
                                     sensitive_features=test[GROUP_PREFIX + attribute].rename(attribute), n_boot=n_boot,
                                     n_permutations=n_permutations, random_state=seed)
            for attribute in attributes}


def adf_summaries(results: dict[str, GroupMetricResult]) -> pd.DataFrame:
    """ADF = I(S;Ŷ|Y) of the test decisions per attribute, with its bootstrap CI, as summary rows
    (metric ``adf``): Fair Diagnosis' causal fairness, reported for every run so benchmarks can
    compare methods on it. :func:`group_metrics` computes it from the same replicates as the other
    metrics (the audit report reads the same values)."""
    rows = []
    for attribute, result in results.items():
        adf = result.adf or {"value": np.nan, "ci_low": np.nan, "ci_high": np.nan}
        rows.append({"attribute": attribute, "metric": "adf", "summary": ADF_SUMMARY, "value": adf["value"],
                     "ci_low": adf["ci_low"], "ci_high": adf["ci_high"], "p_value": np.nan, "p_permutation": np.nan})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
