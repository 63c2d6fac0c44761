"""SWAD (Cha et al. 2021): plateau rule of Algorithm 1, dense averaging, BatchNorm re-estimation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import medequity.methods.swad as swad_module
from medequity.methods import create_method
from medequity.methods.swad import LossValley
from medequity.models.classifier import Classifier
from medequity.training.trainer import TrainConfig, Trainer

# Start: at i=5 the window [0.50, 0.52, 0.55] begins with its minimum -> t_s = 3,
# tolerance 1.3 * mean = 0.680333. End: at i=12 all of losses[7:13] exceed it -> t_e = 12 - 6 = 6.
SCRIPTED = [1.0, 0.8, 0.6, 0.5, 0.52, 0.55, 0.58, 0.9, 0.95, 1.0, 1.1, 1.2, 1.3, 1.4]


def test_plateau_on_a_scripted_loss_sequence():
    valley = LossValley(optimum_patience=3, overfit_patience=6, tolerance_rate=1.3)
    for i, loss in enumerate(SCRIPTED[:12]):
        valley.update(loss)
        assert valley.start == (None if i < 5 else 3)
        assert valley.end is None
    assert valley.tolerance == pytest.approx(1.3 * (0.50 + 0.52 + 0.55) / 3)
    valley.update(SCRIPTED[12])
    assert (valley.start, valley.end) == (3, 6)


def test_plateau_when_training_stops_before_the_valley_ends():
    valley = LossValley()
    for loss in SCRIPTED[:10]:  # stops at i=9: min(losses[7:]) = 0.9 > 0.68, min(losses[6:]) = 0.58
        valley.update(loss)
    assert valley.end is None and valley.final_end() == 6
    never = LossValley()
    for loss in [1.0, 0.9, 0.8, 0.7]:  # still improving: no start, nothing to average
        never.update(loss)
    assert never.start is None and never.final_end() is None


class RecordingSWAD(swad_module.SWAD):
    """Keeps a copy of the weights after every step, tagged with its epoch."""

    def setup(self, model, train, config):
        super().setup(model, train, config)
        self.snapshots, self.epoch = [], 0

    def training_step(self, model, batch, optimizers):
        stats = super().training_step(model, batch, optimizers)
        self.snapshots.append((self.epoch, [p.detach().clone() for p in model.parameters()]))
        return stats

    def on_epoch_end(self, model, epoch, val_scores, summary):
        super().on_epoch_end(model, epoch, val_scores, summary)
        self.epoch += 1


def test_averaged_weights_are_the_mean_of_the_plateau_snapshots(make_split, tiny_features, monkeypatch):
    x, y, s = tiny_features(n=64, dim=3, seed=1)
    train, val = make_split(x, y, s), make_split(*tiny_features(n=40, dim=3, seed=2))
    scripted = iter(SCRIPTED[:13])
    monkeypatch.setattr(swad_module, "binary_cross_entropy", lambda labels, scores: next(scripted))
    torch.manual_seed(0)
    model = Classifier(None, 3)
    method = RecordingSWAD()
    method.fit(model, train, val, TrainConfig(epochs=13, batch_size=16, lr=0.05, patience=None, device="cpu"), Trainer())

    assert method.log["swad_start_epoch"] == [3] and method.log["swad_end_epoch"] == [6]
    plateau = [weights for epoch, weights in method.snapshots if 3 <= epoch <= 6]
    assert len(plateau) == 4 * 4 == method.log["swad_averaged_steps"][0]  # 64/16 steps in each of epochs 3..6
    for i, p in enumerate(model.parameters()):
        expected = torch.stack([w[i] for w in plateau]).mean(0)
        torch.testing.assert_close(p.detach(), expected, atol=1e-6, rtol=1e-6)
    # the averaged model is not simply one of the snapshots (weights moved during the plateau)
    assert not torch.allclose(model.head.weight, plateau[-1][0])


def test_batchnorm_statistics_are_recomputed_for_the_averaged_weights(make_split, tiny_features):
    x, y, s = tiny_features(n=64, dim=2, seed=3)
    train, val = make_split(x, y, s), make_split(*tiny_features(n=40, dim=2, seed=4))
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4))
    model = Classifier(encoder, 4)
    method = create_method("swad", optimum_patience=1, overfit_patience=1, tolerance_rate=100.0)
    method.fit(model, train, val, TrainConfig(epochs=3, batch_size=16, lr=0.05, patience=None, device="cpu"), Trainer())
    assert method.log["swad_averaged_steps"] == [12] and method.log["swad_batchnorm_layers_updated"] == [1]
    with torch.no_grad():
        pre_bn = encoder[0](torch.as_tensor(x))
    # four equal batches: the cumulative average of batch means is the mean over the training set
    torch.testing.assert_close(encoder[1].running_mean, pre_bn.mean(0), atol=1e-5, rtol=1e-5)
    assert not model.training


def test_swad_end_to_end(run_tiny_experiment, assert_finite_run):
    result = run_tiny_experiment("swad", epochs=2, method_params={"optimum_patience": 1})
    assert_finite_run(result)
    assert len(result.method_log["swad_val_loss"]) == 2
    assert np.isfinite(result.method_log["swad_val_loss"]).all()
