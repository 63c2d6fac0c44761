"""What defines one experiment (:class:`ExperimentSpec`, plain YAML/JSON data) and what it gives
(:class:`RunResult`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from medequity.metrics import GroupMetricResult
from medequity.metrics.groups import canonical_attribute

SPLITS = ("train", "val", "test")


class SpecError(ValueError):
    """A spec that cannot run; the message names the field, what was given and what is valid
    (:func:`medequity.experiment.validation.validate_spec` checks a spec before any work)."""


@dataclass
class ExperimentSpec:
    """Everything that defines one run; plain data (YAML/JSON), never code."""

    dataset: str = "synthetic"
    dataset_options: dict[str, Any] = field(default_factory=dict)
    root: str | None = None
    attribute: str = "sex"
    task: str = "classification"  # selects the predictions table and the metrics (experiment.tasks)
    model: str = "small_cnn"
    model_options: dict[str, Any] = field(default_factory=dict)  # e.g. checkpoint, input_size
    transform: dict[str, Any] | None = None  # default: what the backbone expects
    usage: str = "lp"
    usage_params: dict[str, Any] = field(default_factory=dict)
    method: str = "erm"
    method_params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields
    split_file: str | None = None
    split_seed: int = 0
    threshold: str | float = "best_f1"  # fitted on validation, applied to test
    n_boot: int = 200
    n_permutations: int = 0  # optional permutation test of max - min (p_permutation); p-values come from min-P
    eval_attributes: list[str] | None = None  # default: every attribute of the dataset
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        # One spelling of an intersection ("sex&age" and "sex & age" name the same attribute).
        self.attribute = canonical_attribute(self.attribute)
        if self.eval_attributes is not None:
            self.eval_attributes = [canonical_attribute(name) for name in self.eval_attributes]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentSpec:
        valid = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - valid)
        if unknown:
            raise SpecError(f"unknown experiment keys {unknown}; valid keys: {sorted(valid)}")
        return cls(**data)

    @classmethod
    def coerce(cls, spec: ExperimentSpec | dict[str, Any]) -> ExperimentSpec:
        """A spec from a spec or its dict (the form YAML files and the bench store hold)."""
        return spec if isinstance(spec, ExperimentSpec) else cls.from_dict(dict(spec))


@dataclass
class RunResult:
    spec: ExperimentSpec
    predictions: pd.DataFrame  # split, sample_id, label, score, pred, group:<attr> columns
    metrics: pd.DataFrame  # tidy: attribute, group, metric, value, ci_low, ci_high, n, ...
    summaries: pd.DataFrame  # tidy: attribute, metric, summary, value, ci_low, ci_high, p_value
    history: pd.DataFrame
    threshold: dict
    best_epoch: int
    seconds: float
    method_log: dict = field(default_factory=dict)
    model: Any = None  # the trained model (not serialised by the results store)
    method: Any = None
    # What ``metrics``/``summaries`` were made from (not serialised): save_run's audit report reuses
    # them instead of running the bootstrap and permutation tests again.
    group_results: dict[str, GroupMetricResult] = field(default_factory=dict)
    # The splits as the model saw them ({"train", "val", "test"}: SplitData; not serialised):
    # explanations, the FairDi ablation and the bench's split hashes and probes reuse them.
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def test_data(self) -> Any:
        """The test split the model was evaluated on."""
        return self.data.get("test")
