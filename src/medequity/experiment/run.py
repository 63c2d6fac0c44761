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

from medequity.experiment.prepare import prepare
from medequity.experiment.spec import ExperimentSpec, RunResult
from medequity.experiment.tasks import create_task
from medequity.experiment.train import TrainedModel, train_model
from medequity.experiment.views import Prepared
from medequity.training.trainer import Trainer


def evaluate_model(trained: TrainedModel) -> RunResult:
    """The task's predictions on val and test and its metrics on the test split."""
    spec, data, method = trained.prepared.spec, trained.data, trained.method
    start = time.perf_counter()
    task = create_task(spec.task)
    predictions, decision = task.predict(trained)
    test = predictions[predictions.split == "test"]
    metrics, summaries, results = task.evaluate(test, spec.eval_attributes or trained.prepared.dataset.attributes,
                                                n_boot=spec.n_boot, n_permutations=spec.n_permutations, seed=spec.seed)
    seconds = trained.seconds + time.perf_counter() - start
    return RunResult(spec, predictions, metrics, summaries, trained.fit.history, decision, trained.fit.best_epoch,
                     seconds, dict(method.log), trained.model, method, results, data)


def run_experiment(spec: ExperimentSpec | Prepared | dict, *, progress: Callable | None = None,
                   trainer: Trainer | None = None) -> RunResult:
    """Train and evaluate one (dataset, model, usage, method, attribute, seed) cell."""
    start = time.perf_counter()
    prepared = spec if isinstance(spec, Prepared) else prepare(spec)
    result = evaluate_model(train_model(prepared, trainer=trainer, progress=progress))
    result.seconds = time.perf_counter() - start
    return result
