"""Tasks: what a model predicts, how its views are built and how its predictions are tabled and
measured.

The task is a field of :class:`~medequity.experiment.spec.ExperimentSpec`; it selects the model
factory and views (:meth:`Task.build_backbone`, :meth:`Task.make_views`), the predictions table
(:meth:`Task.predict`) and the metrics (:meth:`Task.evaluate`); nothing else in the experiment
layer branches on it. A new task is one module in this package with a class registered in
:data:`TASKS` (found automatically).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from medequity.data.base import MedicalDataset
from medequity.experiment.spec import ExperimentSpec
from medequity.metrics import GroupMetricResult
from medequity.registry import Registry
from medequity.training.data import SplitData

if TYPE_CHECKING:
    from medequity.experiment.train import TrainedModel

SUMMARY_COLUMNS = ["attribute", "metric", "summary", "value", "ci_low", "ci_high", "p_value", "p_permutation"]


class Task:
    """How one kind of prediction is made, tabled and evaluated."""

    name: ClassVar[str] = "base"
    #: Training settings (TrainConfig fields) this task needs unless the spec says otherwise
    #: (segmentation: select checkpoints by worst-group Dice, not AUC).
    train_defaults: ClassVar[dict[str, Any]] = {}

    def build_backbone(self, spec: ExperimentSpec, model_options: dict[str, Any]) -> Any:
        """The model the usage builds on, from local weights (``model_options["checkpoint"]``)."""
        raise NotImplementedError

    def make_views(self, spec: ExperimentSpec, parts: dict[str, MedicalDataset], backbone: Any,
                   group_names: tuple[str, ...]) -> tuple[Any, dict[str, SplitData]]:
        """(the input transform or profile, the view of each split)."""
        raise NotImplementedError

    def predict(self, trained: TrainedModel) -> tuple[pd.DataFrame, dict]:
        """(the val and test predictions table, the decision rule used: a threshold record)."""
        raise NotImplementedError

    def evaluate(self, test: pd.DataFrame, attributes, *, n_boot: int, n_permutations: int,
                 seed: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, GroupMetricResult]]:
        """(metrics, summaries, per-attribute results) of the test predictions table."""
        raise NotImplementedError


TASKS: Registry[Task] = Registry("task")


def create_task(name: str) -> Task:
    return TASKS.create(name)


def tidy_results(results: Mapping[str, GroupMetricResult]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metrics, summaries): the tidy tables of a run, one block per attribute."""
    metrics = [result.to_frame().assign(attribute=attribute) for attribute, result in results.items()]
    summaries = [result.summaries().assign(attribute=attribute) for attribute, result in results.items()]
    return pd.concat(metrics, ignore_index=True), pd.concat(summaries, ignore_index=True)
