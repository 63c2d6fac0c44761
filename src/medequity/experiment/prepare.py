"""``prepare(spec)``: everything a run needs before training, built once.

The dataset with its split (official, saved, or made and saved), intersections the spec names, the
training attribute's group names, the backbone (``checkpoint: synthetic:<modality>`` is resolved
here: our own pre-training, :mod:`medequity.experiment.pretrain`), its transform, and the
training views of each split (:class:`~medequity.experiment.views.Prepared`). FairTune's search,
the FairDi ablation, the validations and ``medequity train``/``bench`` all start here instead of
rebuilding splits, views and group codes their own way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from medequity.experiment.pretrain import PREFIX, synthetic_checkpoint
from medequity.experiment.spec import SPLITS, ExperimentSpec
from medequity.experiment.validation import validate_spec
from medequity.experiment.views import Prepared, build_prepared
from medequity.training.data import SplitData


def resolve_checkpoint(spec: ExperimentSpec, progress: Callable[[str], None] | None = None) -> ExperimentSpec:
    """The spec with ``checkpoint: synthetic:<modality>`` replaced by the path of our pre-trained
    weights (trained on first use, then cached, ``progress`` told each epoch); other specs unchanged."""
    checkpoint = spec.model_options.get("checkpoint")
    if not (isinstance(checkpoint, str) and checkpoint.startswith(PREFIX)):
        return spec
    options = {k: v for k, v in spec.model_options.items() if k != "checkpoint"}
    if spec.task == "segmentation":  # a promptable segmenter pre-trained on an unbiased segmentation preset
        from medequity.experiment.seg_pretrain import synthetic_segmenter_checkpoint

        path = synthetic_segmenter_checkpoint(spec.model, checkpoint, cache_dir=spec.cache_dir, options=options,
                                              progress=progress)
        return replace(spec, model_options={**spec.model_options, "checkpoint": str(path)})
    path = synthetic_checkpoint(spec.model, checkpoint, cache_dir=spec.cache_dir, backbone_options=options,
                                progress=progress)
    return replace(spec, model_options={**spec.model_options, "checkpoint": str(path)})


def prepare(spec: ExperimentSpec | dict, *, splits: Sequence[str] | Mapping[str, Sequence[str]] = SPLITS,
            load_weights: bool = True) -> Prepared:
    """Build the dataset, its split views and the (seeded) backbone of ``spec``.

    ``splits``: the views to build, by split name, or a mapping view → split names merged into it
    (pre-training trains on ``{"train": ["train", "test"], "val": ["val"]}``). ``load_weights=False``
    builds the backbone with random weights and skips pre-training (enough for the transform and
    the views: rebuilding a saved run's test split).
    """
    spec = validate_spec(ExperimentSpec.coerce(spec))  # a bad setting fails now, not after pre-training
    # Pre-training (on a cold cache) runs first and draws random numbers of its own;
    # build_prepared seeds after it, so a cold-cache run and a warm-cache run start from the same state.
    if load_weights:
        model_options = resolve_checkpoint(spec).model_options
    else:
        model_options = {k: v for k, v in spec.model_options.items() if k != "checkpoint"}
    return build_prepared(spec, model_options, splits)


def rebuild_split_data(spec: ExperimentSpec, split: str = "test") -> SplitData:
    """A split as the run fed it to the model (same dataset, split, groups and transform), rebuilt
    from the spec: for a result that does not carry its data (a run read back from disk)."""
    return prepare(spec, splits=[split], load_weights=False).data[split]
