"""CFair (Zhao et al. 2020) and LNL (Kim et al. 2019): each loss term on a hand-computed batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medequity.methods import create_method
from medequity.methods.cfair import class_balanced_weights, conditional_adversary_loss
from medequity.methods.lnl import negative_entropy
from medequity.models.classifier import Classifier
from medequity.training.trainer import TrainConfig


def test_class_balanced_weights_by_hand():
    np.testing.assert_allclose(class_balanced_weights(np.array([0, 0, 0, 1]), 2), [4 / 3, 4.0])
    np.testing.assert_allclose(class_balanced_weights(np.array([2, 2, 0]), 3), [3.0, 0.0, 1.5])


def test_conditional_adversary_loss_by_hand():
    # h_0 sees the y=0 samples, h_1 the y=1 samples; weights[y, a] = 1 / P(a | y)
    logits = [torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 0.0]], dtype=torch.float64),
              torch.tensor([[0.5, 0.0], [0.0, 0.0], [1.0, 3.0], [0.0, 2.0]], dtype=torch.float64)]
    groups = torch.tensor([0, 1, 1, -1])
    labels = torch.tensor([0.0, 0.0, 1.0, 1.0])
    weights = torch.tensor([[2.0, 2.0], [4.0, 1.0]])

    def ce(row, target):
        return float(np.log(np.exp(row).sum()) - row[target])

    l0 = logits[0].numpy()
    y0 = (2 * ce(l0[0], 0) + 2 * ce(l0[1], 1)) / 4  # weighted mean over the two y=0 samples
    l1 = logits[1].numpy()
    y1 = ce(l1[2], 1)  # the only y=1 sample with a known group (sample 3 is unknown)
    got = conditional_adversary_loss(logits, groups, labels, weights)
    assert float(got) == pytest.approx((y0 + y1) / 2, rel=1e-12)


def test_cfair_loss_is_balanced_task_plus_mu_adversaries(make_split):
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, -1.0]], dtype=np.float32)
    y, s = np.array([1, 0, 0, 0]), np.array([0, 1, 0, 1])
    split = make_split(x, y, s)
    torch.manual_seed(0)
    model = Classifier(nn.Linear(2, 3), 3)
    method = create_method("cfair", coefficient=0.5, hidden=0, source="features")
    method.setup(model, split, TrainConfig())
    np.testing.assert_allclose(method.label_weights.numpy(), [4 / 3, 4.0])
    np.testing.assert_allclose(method.group_weights.numpy(), [[3.0, 1.5], [1.0, 0.0]])
    batch = {"x": torch.tensor(x), "y": torch.tensor(y, dtype=torch.float32), "group": torch.tensor(s)}
    with torch.no_grad():
        z = model.features(batch["x"])
        logits = model.head(z).squeeze(-1)
        bce = nn.functional.binary_cross_entropy_with_logits(logits, batch["y"], reduction="none").numpy()
        w = np.array([4.0, 4 / 3, 4 / 3, 4 / 3])
        task = float((w * bce).sum() / w.sum())
        adv = float(conditional_adversary_loss([h(z) for h in method.extra["adversaries"]], batch["group"], batch["y"],
                                               method.group_weights))
    assert float(method.loss(model, batch).detach()) == pytest.approx(task + 0.5 * adv, rel=1e-5)
    # the encoder gets the reversed adversary gradient: -mu x the adversary term's own gradient
    model.zero_grad()
    z = model.features(batch["x"])
    adv_term = conditional_adversary_loss([h(z) for h in method.extra["adversaries"]], batch["group"], batch["y"],
                                          method.group_weights)
    own = torch.autograd.grad(adv_term, model.backbone.weight)[0]
    method.loss(model, batch).backward()
    z = model.features(batch["x"])
    task_term = (torch.tensor(w, dtype=torch.float32) * nn.functional.binary_cross_entropy_with_logits(
        model.head(z).squeeze(-1), batch["y"], reduction="none")).sum() / float(w.sum())
    task_grad = torch.autograd.grad(task_term, model.backbone.weight)[0]
    torch.testing.assert_close(model.backbone.weight.grad, task_grad - 0.5 * own, rtol=1e-4, atol=1e-6)


def test_negative_entropy_by_hand():
    logits = torch.tensor([[0.0, 0.0, 0.0], [np.log(2.0), 0.0, 0.0]], dtype=torch.float64)
    q2 = np.array([0.5, 0.25, 0.25])
    expected = (-np.log(3) + float((q2 * np.log(q2)).sum())) / 2
    assert float(negative_entropy(logits)) == pytest.approx(expected, rel=1e-12)


def test_lnl_two_steps_train_predictor_and_reverse_encoder(make_split, tiny_features):
    x, y, s = tiny_features(n=48, dim=4, n_groups=3)
    split = make_split(x, y, s, ("a", "b", "c"))
    torch.manual_seed(0)
    model = Classifier(nn.Linear(4, 3), 3)
    method = create_method("lnl", coefficient=0.3, reversal=0.5, hidden=0, source="features")
    config = TrainConfig(lr=0.1, weight_decay=0.0, device="cpu", optimizer="sgd", momentum=0.0)
    method.setup(model, split, config)
    optimizers = method.make_optimizers(model, config)
    batch = {"x": torch.tensor(x), "y": torch.tensor(y, dtype=torch.float32), "group": torch.tensor(s)}
    model.train()
    predictor = method.extra["predictor"]
    W0, V0, c0 = model.backbone.weight.detach().clone(), predictor.weight.detach().clone(), predictor.bias.detach().clone()
    b0 = model.backbone.bias.detach().clone()
    # (1) by hand: encoder descends L_c + 0.3 * (-H); predictor untouched
    loss1, _, _ = method.classifier_loss(model, batch)
    g1, gb1 = torch.autograd.grad(loss1, (model.backbone.weight, model.backbone.bias))
    stats = method.training_step(model, batch, optimizers)
    assert stats["neg_entropy"] >= -np.log(3) - 1e-6
    W1, b1 = W0 - 0.1 * g1, b0 - 0.1 * gb1
    # (2) by hand on W1: predictor descends CE, encoder ascends 0.5 * CE
    W = W1.clone().requires_grad_(True)
    V = V0.clone().requires_grad_(True)
    z = batch["x"] @ W.T + b1
    ce = nn.functional.cross_entropy(z @ V.T + c0, batch["group"])
    gW, gV = torch.autograd.grad(ce, (W, V))
    torch.testing.assert_close(predictor.weight.detach(), V0 - 0.1 * gV, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(model.backbone.weight.detach(), W1 + 0.1 * 0.5 * gW, rtol=1e-4, atol=1e-6)
