"""SWAD: stochastic weight averaging, densely, over the validation-loss plateau (Cha et al. 2021).

Cha et al., "SWAD: Domain generalization by seeking flat minima", NeurIPS 2021, Algorithm 1:
weights are collected at *every* iteration between the start ``t_s`` and the end ``t_e`` of the
plateau ("loss valley") detected from the validation loss ℓ_i, and the model becomes their mean

    θ_SWAD = 1/(t_e − t_s + 1) · Σ_{i = t_s}^{t_e} θ_i.

Plateau rule (Algorithm 1, evaluated after each validation):

* start: the first time the oldest of the last ``N_s`` validation losses is the smallest of them
  (the loss stopped improving for ``N_s − 1`` evaluations), ``t_s`` = that oldest evaluation, and
  the tolerance is fixed at ``ℓ̄ = r · mean(last N_s losses)``;
* end: the first later time all of the last ``N_e`` losses exceed ``ℓ̄`` (overfitting), ``t_e`` =
  the evaluation just before that window;
* if training stops first, the remaining evaluations are added while the smallest loss from there
  to the end is still within ``ℓ̄`` (as the authors' ``LossValley.get_final_model`` does).

Defaults are the paper's: ``N_s = 3`` (optimum patience), ``N_e = 6`` (overfit patience), and the
tolerance rate ``r = 1.3`` of the authors' released configuration (``tolerance_ratio = 0.3``).

Adaptation to this trainer: validation runs once per epoch (``on_epoch_end``), so an "evaluation"
is an epoch and "dense" averaging collects the weights after *every training step inside the
epochs whose validation loss is on the plateau* (the segment of steps that ends at each plateau
evaluation, as in the authors' segment SWA). Validation loss is the BCE of the validation scores
the trainer passes; the labels are taken in :meth:`SWAD.fit`. Only trainable parameters are
averaged (frozen ones never change). BatchNorm statistics of the averaged model are recomputed
on the training data (SWA's ``update_bn``), since the averaged weights never produced the stored
running statistics. If no plateau started (too few epochs), the trainer's selected checkpoint
is kept and ``log["swad_averaged_steps"]`` is 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from medequity.methods.base import Method, register_method

if TYPE_CHECKING:
    from medequity.training.data import SplitData
    from medequity.training.trainer import FitResult, TrainConfig, Trainer


def binary_cross_entropy(labels: np.ndarray, scores: np.ndarray) -> float:
    clipped = np.clip(np.asarray(scores, dtype=np.float64), 1e-7, 1 - 1e-7)
    labels = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)))


class LossValley:
    """The plateau detector of SWAD Algorithm 1, on a sequence of validation losses (one per evaluation)."""

    def __init__(self, optimum_patience: int = 3, overfit_patience: int = 6, tolerance_rate: float = 1.3):
        if optimum_patience < 1 or overfit_patience < 1:
            raise ValueError("patiences must be >= 1")
        self.optimum_patience = optimum_patience
        self.overfit_patience = overfit_patience
        self.tolerance_rate = tolerance_rate
        self.losses: list[float] = []
        self.start: int | None = None
        self.end: int | None = None
        self.tolerance: float | None = None

    def update(self, loss: float) -> None:
        """Record the loss of the next evaluation and update the start/end decision."""
        self.losses.append(float(loss))
        if self.end is not None:
            return
        i = len(self.losses) - 1
        if self.start is None:
            window = self.losses[-self.optimum_patience:]
            if len(window) == self.optimum_patience and window[0] == min(window):
                self.start = i - self.optimum_patience + 1
                self.tolerance = self.tolerance_rate * float(np.mean(window))
        else:
            recent = self.losses[-self.overfit_patience:]
            if len(recent) == self.overfit_patience and min(recent) > self.tolerance:
                self.end = i - self.overfit_patience

    def settled(self) -> int | None:
        """The last evaluation surely inside the averaging range, given what has been seen so far."""
        if self.start is None:
            return None
        if self.end is not None:
            return self.end
        # Any later end j gives t_e = j − N_e ≥ (now + 1) − N_e.
        return len(self.losses) - self.overfit_patience

    def final_end(self) -> int | None:
        """``t_e`` once training is over: the detected end, or the last evaluation i such that the
        smallest loss from i to the end of training is still within tolerance."""
        if self.start is None:
            return None
        if self.end is not None:
            return self.end
        end = self.start - 1
        for i in range(self.start, len(self.losses)):
            if min(self.losses[i:]) > self.tolerance:
                break
            end = i
        return end


def recompute_batchnorm(model: nn.Module, data, batch_size: int) -> int:
    """Re-estimate the running statistics of BatchNorm layers that train (SWA's ``update_bn``).

    Layers of a frozen backbone stay in eval mode (``Classifier.train``) and are left alone.
    Returns the number of layers re-estimated."""
    model.train()
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    if layers:
        device = next(model.parameters()).device
        momenta = {layer: layer.momentum for layer in layers}
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None  # cumulative average over the whole pass
        loader = torch.utils.data.DataLoader(data.items, batch_size=batch_size, shuffle=False)
        with torch.no_grad():
            for batch in loader:
                model(batch["x"].to(device))
        for layer, momentum in momenta.items():
            layer.momentum = momentum
    model.eval()
    return len(layers)


@register_method
class SWAD(Method):
    """Dense weight averaging over the validation-loss plateau (Cha et al. 2021, Algorithm 1)."""

    name = "swad"
    defaults = {"optimum_patience": 3, "overfit_patience": 6, "tolerance_rate": 1.3}

    def __init__(self, **params):
        super().__init__(**params)
        self._val_labels: np.ndarray | None = None
        self._reset()

    def _reset(self) -> None:
        self.valley = LossValley(self.params["optimum_patience"], self.params["overfit_patience"],
                                 self.params["tolerance_rate"])
        self._segment: dict[str, torch.Tensor] | None = None  # sum of this epoch's step weights
        self._segment_steps = 0
        self._pending: dict[int, tuple[dict[str, torch.Tensor], int]] = {}  # epoch -> (sum, steps)
        self._sum: dict[str, torch.Tensor] | None = None  # committed sum over the plateau
        self._steps = 0
        self._next_epoch = 0

    def fit(self, model: nn.Module, train: SplitData, val: SplitData, config: TrainConfig, trainer: Trainer) -> FitResult:
        self._val_labels = np.asarray(val.labels, dtype=np.float64)
        return trainer.fit(model, self, train, val, config)

    def setup(self, model, train, config) -> None:
        self._reset()
        self._batch_size = config.batch_size

    def training_step(self, model, batch, optimizers):
        stats = super().training_step(model, batch, optimizers)
        if self.valley.end is None:  # once the valley has ended nothing more is averaged
            with torch.no_grad():
                weights = {name: p.detach().float() for name, p in model.named_parameters() if p.requires_grad}
                if self._segment is None:
                    self._segment = {name: w.clone() for name, w in weights.items()}
                else:
                    for name, w in weights.items():
                        self._segment[name].add_(w)
            self._segment_steps += 1
        return stats

    def on_epoch_end(self, model, epoch, val_scores, summary) -> None:
        if self._val_labels is None:
            raise RuntimeError("SWAD needs the validation labels: train it with method.fit(...), not trainer.fit")
        if self.valley.end is not None:
            return
        if self._segment is not None:
            self._pending[self._next_epoch] = (self._segment, self._segment_steps)
        self._segment, self._segment_steps = None, 0
        self._next_epoch += 1
        self.valley.update(binary_cross_entropy(self._val_labels, val_scores))
        self._settle(self.valley.settled())

    def _settle(self, last_included: int | None) -> None:
        """Add the decided plateau epochs to the average; drop epochs that can no longer be in it."""
        if last_included is None:  # no start yet: only the last N_s epochs may become the start
            keep_from = self._next_epoch - self.params["optimum_patience"]
            self._pending = {e: s for e, s in self._pending.items() if e >= keep_from}
            return
        for epoch in sorted(self._pending):
            if epoch < self.valley.start:
                del self._pending[epoch]
            elif epoch <= last_included:
                segment, steps = self._pending.pop(epoch)
                if self._sum is None:
                    self._sum = segment
                else:
                    for name, value in segment.items():
                        self._sum[name].add_(value)
                self._steps += steps
        if self.valley.end is not None:
            self._pending.clear()

    def finalize(self, model, train, val, predict) -> None:
        self._settle(self.valley.final_end())
        self._pending.clear()
        self.log["swad_val_loss"] = list(self.valley.losses)
        self.log["swad_start_epoch"] = [self.valley.start]
        self.log["swad_end_epoch"] = [self.valley.final_end()]
        self.log["swad_averaged_steps"] = [self._steps]
        if self._steps == 0:
            return  # no plateau: keep the trainer's selected checkpoint
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in self._sum:
                    p.copy_((self._sum[name] / self._steps).to(p.dtype))
        self.log["swad_batchnorm_layers_updated"] = [recompute_batchnorm(model, train, self._batch_size)]
        self._sum = None
