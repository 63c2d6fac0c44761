"""``prepare(spec)``: everything a run needs before training, built once.

The dataset with its split (official, saved, or made and saved), intersections the spec names, the
training attribute's group names, the backbone (``checkpoint: synthetic:<modality>`` is resolved
here: our own pre-training, :mod:`medequity.experiment.pretrain`), its transform, and the
training views (:class:`~medequity.training.data.SplitData`) of each split. FairTune's search, the
FairDi ablation, the validations and pre-training all start here instead of rebuilding splits,
views and group codes their own way.

Seeding: ``prepare`` seeds the global RNGs with ``spec.seed`` (after any pre-training) before
loading the data and creating the backbone, and
:meth:`Prepared.take_backbone` gives that backbone to the first run; a later run gets a new one
created after re-seeding, so every run of one prepared experiment starts from the same weights.
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
from medequity.data.transforms import build_transform
from medequity.experiment.spec import SPLITS, ExperimentSpec
from medequity.models import Backbone, create_backbone
from medequity.training.data import SplitData, make_split_data
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


def resolve_checkpoint(spec: ExperimentSpec) -> ExperimentSpec:
    """The spec with ``checkpoint: synthetic:<modality>`` replaced by the path of our pre-trained
    weights (trained on first use, then cached); other specs unchanged."""
    from medequity.experiment.pretrain import PREFIX, synthetic_checkpoint

    checkpoint = spec.model_options.get("checkpoint")
    if not (isinstance(checkpoint, str) and checkpoint.startswith(PREFIX)):
        return spec
    options = {k: v for k, v in spec.model_options.items() if k != "checkpoint"}
    path = synthetic_checkpoint(spec.model, checkpoint, cache_dir=spec.cache_dir, backbone_options=options)
    return replace(spec, model_options={**spec.model_options, "checkpoint": str(path)})


@dataclass
class Prepared:
    """A prepared experiment: data, views and a backbone; :func:`medequity.experiment.run` trains it."""

    spec: ExperimentSpec  # as given (``synthetic:`` checkpoints unresolved: the record names them)
    dataset: MedicalDataset
    group_names: tuple[str, ...]
    backbone: Backbone  # the first backbone (its transform, module groups); see take_backbone
    transform: Any
    data: dict[str, SplitData]
    model_options: dict[str, Any] = field(default_factory=dict)  # with the checkpoint resolved to a path
    _fresh: bool = True

    def build_backbone(self) -> Backbone:
        """A new backbone of the spec (weights loaded), created from the current RNG state."""
        return create_backbone(self.spec.model, **self.model_options)

    def take_backbone(self) -> Backbone:
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
        read = {"dataset", "dataset_options", "root", "attribute", "model", "model_options", "transform", "split_file",
                "split_seed", "cache_dir"}
        if read & set(changes):
            raise ValueError(f"{sorted(read & set(changes))} change the prepared data or backbone: call prepare() again")
        return replace(self, spec=replace(self.spec, **changes), _fresh=False)

    def with_data(self, **splits: SplitData) -> Prepared:
        """The same experiment with some views replaced (e.g. a subsampled training split)."""
        return replace(self, data={**self.data, **splits}, _fresh=self._fresh)


def prepare(spec: ExperimentSpec | dict, *, splits: Sequence[str] | Mapping[str, Sequence[str]] = SPLITS,
            load_weights: bool = True) -> Prepared:
    """Build the dataset, its split views and the (seeded) backbone of ``spec``.

    ``splits``: the views to build, by split name, or a mapping view → split names merged into it
    (pre-training trains on ``{"train": ["train", "test"], "val": ["val"]}``). ``load_weights=False``
    builds the backbone with random weights and skips pre-training (enough for the transform and
    the views: rebuilding a saved run's test split).
    """
    spec = ExperimentSpec.coerce(spec)
    # Pre-training (on a cold cache) runs first and draws random numbers of its own; seeding after
    # it makes a cold-cache run and a warm-cache run start from the same state.
    if load_weights:
        model_options = resolve_checkpoint(spec).model_options
    else:
        model_options = {k: v for k, v in spec.model_options.items() if k != "checkpoint"}
    seed_everything(spec.seed)
    dataset = load_experiment_data(spec)
    names = group_names(dataset, spec.attribute)
    mapping = {name: [name] for name in splits} if not isinstance(splits, Mapping) else {k: list(v) for k, v in splits.items()}
    split_column = dataset.table["split"].astype(str).to_numpy()
    parts = {view: dataset.subset(np.flatnonzero(np.isin(split_column, members))) for view, members in mapping.items()}
    for view, part in parts.items():
        if len(part) == 0:
            raise ValueError(f"split {view!r} of {spec.dataset!r} is empty")
    backbone = create_backbone(spec.model, **model_options)
    transform = build_transform(spec.transform or backbone.transform_config())
    data = {view: make_split_data(part, spec.attribute, transform, names) for view, part in parts.items()}
    return Prepared(spec, dataset, names, backbone, transform, data, dict(model_options))


def rebuild_split_data(spec: ExperimentSpec, split: str = "test") -> SplitData:
    """A split as the run fed it to the model (same dataset, split, groups and transform), rebuilt
    from the spec: for a result that does not carry its data (a run read back from disk)."""
    return prepare(spec, splits=[split], load_weights=False).data[split]
