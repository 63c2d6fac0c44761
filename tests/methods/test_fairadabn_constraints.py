"""FairAdaBN, the soft fairness constraint and bias-balanced softmax: each term by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medequity.methods import create_method
from medequity.methods.bias_balanced_softmax import group_log_odds
from medequity.methods.fairadabn import GroupBatchNorm, statistical_parity_loss
from medequity.methods.fairness_constraint import soft_fairness_gap
from medequity.models.classifier import Classifier
from medequity.training.trainer import TrainConfig


def test_statistical_parity_loss_by_hand():
    p = torch.tensor([0.2, 0.4, 0.9, 0.5, 0.7, 0.1], dtype=torch.float64)
    g = torch.tensor([0, 0, 1, 1, 2, -1])
    means = [0.3, 0.7, 0.7]
    expected = 2 * ((0.3 - 0.7) ** 2 + (0.3 - 0.7) ** 2 + 0.0)
    assert float(statistical_parity_loss(p, g)) == pytest.approx(expected, rel=1e-12)
    # two groups: the authors' sum over classes c of (P(c|0) - P(c|1))^2
    two = statistical_parity_loss(p[:4], g[:4])
    assert float(two) == pytest.approx((means[0] - means[1]) ** 2 + ((1 - means[0]) - (1 - means[1])) ** 2, rel=1e-12)


def test_group_batchnorm_normalises_each_group_with_its_own_statistics():
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(2)
    layer = GroupBatchNorm(bn, 2)
    with torch.no_grad():
        layer.per_group[1].weight.fill_(2.0)
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0], [10.0, -1.0], [14.0, -5.0], [1.0, 1.0], [3.0, 2.0]])
    layer.groups = torch.tensor([0, 0, 1, 1, -1, -1])
    layer.train()
    out = layer(x)

    def standardise(rows):
        mu, var = rows.mean(0), rows.var(0, unbiased=False)
        return (rows - mu) / torch.sqrt(var + bn.eps)

    torch.testing.assert_close(out[:2], standardise(x[:2]))
    torch.testing.assert_close(out[2:4], 2.0 * standardise(x[2:4]))
    torch.testing.assert_close(out[4:], standardise(x[4:]))  # unknown group: the shared BN
    # running statistics: each group's own (momentum 0.1 from mean 0)
    torch.testing.assert_close(layer.per_group[1].running_mean, 0.1 * x[2:4].mean(0))
    torch.testing.assert_close(layer.shared.running_mean, 0.1 * x[4:].mean(0))


def test_fairadabn_swaps_every_batchnorm_and_needs_groups(make_split, tiny_features):
    x, y, s = tiny_features(n=32, dim=4, n_groups=3)
    split = make_split(x, y, s, ("a", "b", "c"))
    model = Classifier(nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 5), nn.BatchNorm1d(5)), 5)
    method = create_method("fairadabn", alpha=0.5)
    method.setup(model, split, TrainConfig())
    method.setup(model, split, TrainConfig())  # a second stage does not wrap twice
    assert method.log["adapted_batchnorms"] == 2
    assert sum(isinstance(m, GroupBatchNorm) for m in model.modules()) == 2
    batch = {"x": torch.tensor(x), "y": torch.tensor(y, dtype=torch.float32), "group": torch.tensor(s)}
    model.train()
    logits = method.logits(model, batch["x"], batch["group"])
    with torch.no_grad():
        bce = nn.functional.binary_cross_entropy_with_logits(logits, batch["y"], reduction="none")
        task = np.mean([float(bce[batch["group"] == g].mean()) for g in range(3)])
        spd = float(statistical_parity_loss(torch.sigmoid(logits), batch["group"]))
    torch.manual_seed(0)
    assert float(method.loss(model, batch).detach()) == pytest.approx(task + 0.5 * spd, rel=1e-4)
    model.eval()
    with pytest.raises(ValueError, match="group at inference"):
        method.logits(model, batch["x"], None)
    with pytest.raises(ValueError, match="BatchNorm"):
        create_method("fairadabn").setup(Classifier(nn.Linear(4, 3), 3), split, TrainConfig())


def test_soft_fairness_gaps_by_hand():
    logits = torch.tensor([0.0, 1.0, -1.0, 2.0, 0.5, -0.5, 3.0], dtype=torch.float64)
    y = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    g = torch.tensor([0, 0, 0, 1, 1, 2, -1])
    p = torch.sigmoid(logits).numpy()
    tpr = [np.mean(p[[0, 1]]), p[3]]  # group 2 has no positive
    fpr = [p[2], p[4], p[5]]
    sr = [np.mean(p[[0, 1, 2]]), np.mean(p[[3, 4]]), p[5]]
    assert float(soft_fairness_gap(logits, y, g, "eqopp")) == pytest.approx(max(tpr) - min(tpr), rel=1e-12)
    assert float(soft_fairness_gap(logits, y, g, "eqodds")) == pytest.approx(
        0.5 * ((max(tpr) - min(tpr)) + (max(fpr) - min(fpr))), rel=1e-12)
    assert float(soft_fairness_gap(logits, y, g, "dp")) == pytest.approx(max(sr) - min(sr), rel=1e-12)
    with pytest.raises(ValueError, match="constraint"):
        create_method("fairness_constraint", constraint="eo")


def test_bias_balanced_shift_by_hand(make_split):
    labels = np.array([1, 1, 1, 0, 0, 1, 0, 0])
    groups = np.array([0, 0, 0, 0, 1, 1, 1, -1])
    odds = group_log_odds(labels, groups, 2, smoothing=1.0)
    # group 0: 3 pos / 1 neg -> log(4/2); group 1: 1 / 2 -> log(2/3); overall 4 / 4 -> 0
    np.testing.assert_allclose(odds, [np.log(2.0), np.log(2 / 3), 0.0])
    split = make_split(np.eye(8, 2, dtype=np.float32), labels, groups)
    model = Classifier(None, 2)
    method = create_method("bias_balanced_softmax")
    method.setup(model, split, TrainConfig())
    x = torch.tensor(np.eye(8, 2, dtype=np.float32))
    batch = {"x": x, "y": torch.tensor(labels, dtype=torch.float32), "group": torch.tensor(groups)}
    with torch.no_grad():
        shifted = model(x) + torch.tensor(odds, dtype=torch.float32)[[0, 0, 0, 0, 1, 1, 1, 2]]
        expected = nn.functional.binary_cross_entropy_with_logits(shifted, batch["y"])
        assert float(method.loss(model, batch)) == pytest.approx(float(expected), rel=1e-6)
        # inference uses the plain logits (no group)
        torch.testing.assert_close(method.logits(model, x, None), model(x))
