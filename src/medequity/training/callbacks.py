"""Observers of :meth:`Trainer.fit <medequity.training.trainer.Trainer.fit>`: progress display,
recording, Optuna pruning — without subclassing the trainer.

A :class:`Callback` overrides any of four typed hooks; the trainer calls them in the order the
callbacks were given (``Trainer(callbacks=[...])``; ``Trainer(progress=fn)`` appends a
:class:`ProgressCallback` after them):

* :meth:`Callback.on_fit_start` — once per ``trainer.fit`` (one *stage* of a multi-stage method),
  after the method's ``setup``, before the first epoch;
* :meth:`Callback.on_epoch_end` — after every epoch's validation and checkpoint bookkeeping,
  before the early-stopping decision, with an :class:`EpochInfo`;
* :meth:`Callback.on_fit_end` — with the stage's :class:`~medequity.training.trainer.FitResult`,
  after the selected checkpoint is restored and the method's ``finalize`` ran;
* :meth:`Callback.on_predict` — after every ``trainer.predict`` (validation passes, finalize's and
  the experiment's predictions), with the split and its scores.

An exception raised by a hook (e.g. ``optuna.TrialPruned``) leaves ``Trainer.fit`` at once.
Callbacks only observe: they must not change the model, the method or the random state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import optuna
    from torch import nn

    from medequity.training.data import SplitData
    from medequity.training.trainer import FitResult, TrainableMethod, TrainConfig, Trainer


@dataclass
class EpochInfo:
    """What the trainer knows after one epoch."""

    row: dict[str, Any]  # the history row: stage, epoch, train_loss, lr, seconds, method columns, val_*
    epoch: int  # 0-based
    epochs: int  # the stage's configured number of epochs
    stage: str
    val_scores: np.ndarray  # P(y=1) on the whole validation split, this epoch's weights
    best_epoch: int  # the epoch kept so far by the selection rule (this one or an earlier one)
    selection: str  # the selection criterion (TrainConfig.selection)


class Callback:
    """Base class: every hook does nothing."""

    def on_fit_start(self, trainer: Trainer, model: nn.Module, method: TrainableMethod, train: SplitData,
                     val: SplitData, config: TrainConfig, stage: str) -> None:
        """Before the first epoch of one ``trainer.fit`` (after the method's ``setup``)."""

    def on_epoch_end(self, info: EpochInfo) -> None:
        """After each epoch (validation done, checkpoint bookkeeping done, before early stopping)."""

    def on_fit_end(self, result: FitResult) -> None:
        """After the stage: best checkpoint restored, method finalised."""

    def on_predict(self, data: SplitData, scores: np.ndarray) -> None:
        """After ``trainer.predict`` scored ``data``."""


class ProgressCallback(Callback):
    """``fn(row)`` after every epoch, the row extended with ``epochs``, ``selection`` and
    ``best_epoch`` — what ``Trainer(progress=fn)`` has always passed."""

    def __init__(self, fn: Callable[[dict[str, Any]], None]):
        self.fn = fn

    def on_epoch_end(self, info: EpochInfo) -> None:
        self.fn({**info.row, "epochs": info.epochs, "selection": info.selection, "best_epoch": info.best_epoch})


class RecordScores(Callback):
    """Keeps the latest epoch's validation scores (``last_scores``), so any whole-set objective
    can be computed from them (FairTune's inner loop)."""

    def __init__(self) -> None:
        self.last_scores: np.ndarray | None = None

    def on_epoch_end(self, info: EpochInfo) -> None:
        self.last_scores = info.val_scores


@dataclass
class RecordedFit:
    """One ``trainer.fit`` call: what it was given and what it returned (None while running)."""

    stage: str
    model: Any
    method: Any
    train: Any
    val: Any
    config: Any
    result: FitResult | None = None


class RecordFits(Callback):
    """Remembers every stage a trainer ran (``fits``, in order) and every split it scored
    (``predicted``, each split object once, in first-seen order)."""

    def __init__(self) -> None:
        self.fits: list[RecordedFit] = []
        self.predicted: list[Any] = []
        self._open: list[RecordedFit] = []

    def on_fit_start(self, trainer, model, method, train, val, config, stage) -> None:
        record = RecordedFit(stage, model, method, train, val, config)
        self.fits.append(record)
        self._open.append(record)

    def on_fit_end(self, result) -> None:
        if self._open:
            self._open.pop().result = result

    def on_predict(self, data, scores) -> None:
        if not any(seen is data for seen in self.predicted):
            self.predicted.append(data)

    @property
    def results(self) -> dict[str, FitResult]:
        """Finished stages by name (a repeated stage name keeps its last result)."""
        return {fit.stage: fit.result for fit in self.fits if fit.result is not None}

    @property
    def train_data(self) -> Any:
        """The training split of the last stage started (None before any)."""
        return self.fits[-1].train if self.fits else None


class OptunaPruning(Callback):
    """Reports ``objective_fn(info)`` to an Optuna trial after every epoch (step = epochs done) and
    raises ``optuna.TrialPruned`` when the trial's pruner says so. ``values`` keeps every reported
    value; the trial's user attribute ``epochs_run`` counts them."""

    def __init__(self, trial: optuna.Trial, objective_fn: Callable[[EpochInfo], float]):
        self.trial = trial
        self.objective_fn = objective_fn
        self.values: list[float] = []

    def on_epoch_end(self, info: EpochInfo) -> None:
        value = float(self.objective_fn(info))
        self.values.append(value)
        self.trial.set_user_attr("epochs_run", len(self.values))
        self.trial.report(value, step=info.epoch + 1)  # step = epochs done (the pruner's resource)
        if self.trial.should_prune():
            import optuna

            raise optuna.TrialPruned(f"pruned after epoch {len(self.values)} of {info.epochs}")


__all__ = ["Callback", "EpochInfo", "OptunaPruning", "ProgressCallback", "RecordFits", "RecordScores", "RecordedFit"]
