"""The prepared form of an experiment (:class:`Prepared`): the dataset with its split, the
training attribute's group names, a seeded backbone, its transform and the training views
(:class:`~medequity.training.data.SplitData`) of each split; :func:`build_prepared` makes it from
a spec whose checkpoint is already a path (:func:`medequity.experiment.prepare.prepare` resolves
``synthetic:`` pre-training first).

Seeding: the global RNGs are seeded with ``spec.seed`` before loading the data and creating the
backbone, and :meth:`Prepared.take_backbone` gives that backbone to the first run; a later run
gets a new one created after re-seeding, so every run of one prepared experiment starts from the
same weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from medequity.data import create_dataset
from medequity.data.attributes import with_intersections
from medequity.data.base import MedicalDataset
from medequity.data.splits import get_splits
from medequity.experiment.spec import SPLITS, ExperimentSpec
from medequity.experiment.tasks import create_task
from medequity.training.data import SplitData
from medequity.training.trainer import seed_everything


def load_experiment_data(spec: ExperimentSpec) -> MedicalDataset:
    """The dataset with its split column (official, saved, or made and saved) and the intersection
    attributes the spec names (``attribute: "sex&age"``)."""
    options = dict(spec.dataset_options)
    dataset = create_dataset(spec.dataset, spec.root, **options) if spec.root else create_dataset(spec.dataset, **options)
    if "split" not in dataset.table.columns or dataset.table["split"].isna().any():
        dataset = get_splits(dataset, spec.split_file, seed=spec.split_seed)
    dataset = with_intersections(dataset, [spec.attribute, *(spec.eval_attributes or [])])
    if spec.attribute not in dataset.attributes:
        raise ValueError(f"dataset {spec.dataset!r} has no attribute {spec.attribute!r}; has {dataset.attributes}")
    return dataset


def group_names(dataset: MedicalDataset, attribute: str) -> tuple[str, ...]:
    """The training attribute's groups, sorted: code g of a sample is the index of its group here."""
    return tuple(sorted(dataset.groups(attribute).dropna().astype(str).unique()))


@dataclass
class Prepared:
    """A prepared experiment: data, views and a backbone; :func:`medequity.experiment.run` trains it."""

    spec: ExperimentSpec  # as given (``synthetic:`` checkpoints unresolved: the record names them)
    dataset: MedicalDataset
    group_names: tuple[str, ...]
    backbone: Any  # the first backbone (a Backbone, or a Segmenter for segmentation) (its transform, module groups); see take_backbone
    transform: Any
    data: dict[str, SplitData]
    model_options: dict[str, Any] = field(default_factory=dict)  # with the checkpoint resolved to a path
    _fresh: bool = True

    def build_backbone(self) -> Any:
        """A new backbone of the spec (weights loaded), created from the current RNG state."""
        return create_task(self.spec.task).build_backbone(self.spec, self.model_options)

    def take_backbone(self) -> Any:
        """The backbone for the next run: the prepared one the first time; then a new one after
        re-seeding with ``spec.seed`` (the same initial weights every time)."""
        if self._fresh:
            self._fresh = False
            return self.backbone
        seed_everything(self.spec.seed)
        return self.build_backbone()

    def with_spec(self, **changes: Any) -> Prepared:
        """The same data and views for a spec that differs in what ``prepare`` does not read
        (method, usage, training settings, evaluation)."""
        read = {"dataset", "dataset_options", "root", "attribute", "task", "model", "model_options", "transform", "split_file",
                "split_seed", "cache_dir"}
        if read & set(changes):
            raise ValueError(f"{sorted(read & set(changes))} change the prepared data or backbone: call prepare() again")
        return replace(self, spec=replace(self.spec, **changes), _fresh=False)

    def with_data(self, **splits: SplitData) -> Prepared:
        """The same experiment with some views replaced (e.g. a subsampled training split)."""
        return replace(self, data={**self.data, **splits}, _fresh=self._fresh)


def build_prepared(spec: ExperimentSpec, model_options: dict[str, Any],
                   splits: Sequence[str] | Mapping[str, Sequence[str]] = SPLITS) -> Prepared:
    """Seed, load the dataset, build the views of ``splits`` and the backbone from ``model_options``
    (its checkpoint, if any, a local path). ``splits``: view names, or a mapping view → split names
    merged into it."""
    seed_everything(spec.seed)
    dataset = load_experiment_data(spec)
    names = group_names(dataset, spec.attribute)
    mapping = {name: [name] for name in splits} if not isinstance(splits, Mapping) else {k: list(v) for k, v in splits.items()}
    split_column = dataset.table["split"].astype(str).to_numpy()
    parts = {view: dataset.subset(np.flatnonzero(np.isin(split_column, members))) for view, members in mapping.items()}
    for view, part in parts.items():
        if len(part) == 0:
            raise ValueError(f"split {view!r} of {spec.dataset!r} is empty")
    task = create_task(spec.task)
    backbone = task.build_backbone(spec, model_options)
    transform, data = task.make_views(spec, parts, backbone, names)
    return Prepared(spec, dataset, names, backbone, transform, data, dict(model_options))
