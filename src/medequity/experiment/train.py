"""``train_model``: build the spec's usage on a prepared backbone and fit its method through the
shared trainer (:class:`~medequity.training.trainer.Trainer`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medequity.experiment.spec import ExperimentSpec
from medequity.experiment.tasks import create_task
from medequity.experiment.views import Prepared
from medequity.methods import Method, create_method
from medequity.training.trainer import FitResult, TrainConfig, Trainer
from medequity.usages import USAGES, UsageContext, create_usage


@dataclass
class TrainedModel:
    """A model trained on a prepared experiment, before evaluation."""

    prepared: Prepared
    model: Any
    method: Method
    fit: FitResult
    data: dict[str, Any]  # the views the model eats (cached features for feature usages)
    config: TrainConfig
    trainer: Trainer
    seconds: float


def train_config(spec: ExperimentSpec, *, trains: bool = True, **changes: Any) -> TrainConfig:
    """The spec's training settings over the task's and the usage's defaults (e.g. segmentation
    selects by worst-group Dice; ``seg_lora`` uses SAMed's schedule), FairMedFM defaults for what
    none says; 0 epochs for evaluation-only usages."""
    defaults = {**create_task(spec.task).train_defaults, **getattr(USAGES.get(spec.usage), "train_defaults", {})}
    return TrainConfig(**{"seed": spec.seed, **defaults, **spec.train, **changes, **({} if trains else {"epochs": 0})})


def train_model(prepared: Prepared, *, trainer: Trainer | None = None, progress: Callable | None = None,
                config: TrainConfig | None = None) -> TrainedModel:
    """Build the spec's usage on the prepared backbone and fit its method through ``trainer``.

    ``progress`` is the usages' progress callback for slow steps (feature extraction);
    ``config`` overrides the spec's training settings (FairTune trials set their LR).
    """
    start = time.perf_counter()
    spec = prepared.spec
    usage = create_usage(spec.usage, **spec.usage_params)
    config = config if config is not None else train_config(spec)
    if not usage.trains:
        config = config.replace(epochs=0)
    backbone = prepared.take_backbone()
    context = UsageContext(cache_dir=Path(spec.cache_dir) if spec.cache_dir else None, device=str(config.resolved_device()),
                           progress=progress, zero_shot=prepared.dataset.info.get("zero_shot"), dataset=prepared.dataset.name)
    model, data = usage.build(backbone, dict(prepared.data), context)
    method = create_method(spec.method, **spec.method_params)
    trainer = trainer or Trainer()
    fit = method.fit(model, data["train"], data["val"], config, trainer)
    return TrainedModel(prepared, model, method, fit, data, config, trainer, time.perf_counter() - start)
