"""``run_experiment``: train a prepared experiment and evaluate it on its test split.

Data flows one way: prepared data and backbone → usage (the model to train) → method (through the
shared trainer) → scores → the method's post-processing → decisions at a threshold fitted on
validation → the task's predictions table → the task's metrics. ``medequity train`` runs this once,
``medequity bench`` once per cell of its grid; FairTune's trials, the FairDi ablation and the
validations call :func:`train_model` / :func:`run_experiment` on a :class:`Prepared` experiment.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medequity.experiment.prepare import Prepared, prepare
from medequity.experiment.spec import ExperimentSpec, RunResult
from medequity.experiment.tasks import create_task
from medequity.methods import Method, create_method
from medequity.metrics.thresholds import resolve_threshold
from medequity.training.trainer import FitResult, TrainConfig, Trainer
from medequity.usages import UsageContext, create_usage


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
    """The spec's training settings (FairMedFM defaults for what it does not say); 0 epochs for
    evaluation-only usages."""
    return TrainConfig(**{"seed": spec.seed, **spec.train, **changes, **({} if trains else {"epochs": 0})})


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
                           progress=progress)
    model, data = usage.build(backbone, dict(prepared.data), context)
    method = create_method(spec.method, **spec.method_params)
    trainer = trainer or Trainer()
    fit = method.fit(model, data["train"], data["val"], config, trainer)
    return TrainedModel(prepared, model, method, fit, data, config, trainer, time.perf_counter() - start)


def evaluate_model(trained: TrainedModel) -> RunResult:
    """Score val and test, fit the threshold on val, table the predictions and measure the test split."""
    spec, data, method, trainer = trained.prepared.spec, trained.data, trained.method, trained.trainer
    start = time.perf_counter()
    task = create_task(spec.task)
    scores = {name: trainer.predict(trained.model, method, data[name], trained.config) for name in ("val", "test")}
    post = {name: method.postprocess(scores[name], data[name].groups) for name in ("val", "test")}
    threshold = resolve_threshold(spec.threshold) if isinstance(spec.threshold, (int, float)) else \
        resolve_threshold(spec.threshold, y_val=data["val"].labels, score_val=post["val"][0])
    frames = []
    for name in ("val", "test"):
        score, pred = post[name]
        frames.append(task.predictions_table(name, data[name], score, threshold.predict(score) if pred is None else pred))
    predictions = pd.concat(frames, ignore_index=True)
    test = predictions[predictions.split == "test"]
    metrics, summaries, results = task.evaluate(test, spec.eval_attributes or trained.prepared.dataset.attributes,
                                                n_boot=spec.n_boot, n_permutations=spec.n_permutations, seed=spec.seed)
    seconds = trained.seconds + time.perf_counter() - start
    return RunResult(spec, predictions, metrics, summaries, trained.fit.history, threshold.to_dict(), trained.fit.best_epoch,
                     seconds, dict(method.log), trained.model, method, results, data)


def run_experiment(spec: ExperimentSpec | Prepared | dict, *, progress: Callable | None = None,
                   trainer: Trainer | None = None) -> RunResult:
    """Train and evaluate one (dataset, model, usage, method, attribute, seed) cell."""
    start = time.perf_counter()
    prepared = spec if isinstance(spec, Prepared) else prepare(spec)
    result = evaluate_model(train_model(prepared, trainer=trainer, progress=progress))
    result.seconds = time.perf_counter() - start
    return result
