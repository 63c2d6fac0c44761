"""EnD, ODR and FairDisCo: each loss term on a hand-computed batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medequity.methods import create_method
from medequity.methods.end import end_regularizers
from medequity.methods.fairdisco import confusion_loss, supervised_contrastive_loss
from medequity.methods.odr import gaussian_kl_to_unit, orthogonal_prior_means
from medequity.models.classifier import Classifier
from medequity.training.trainer import TrainConfig


def cosine(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_end_regularizers_by_hand():
    z = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 0.5], [2.0, 0.1]])
    y = np.array([1, 1, 0, 1, 0])
    b = np.array([0, 0, 1, 1, -1])  # sample 4's group is unknown: in no pair
    # R_perp: same-group pairs (0,1) in group 0 and (2,3) in group 1
    r_perp = (abs(cosine(z[0], z[1])) + abs(cosine(z[2], z[3]))) / 2
    # R_par: same label, different group: (0,3), (1,3) (y=1); no y=0 pair with two known groups
    pairs = [(0, 3), (1, 3)]
    r_par = 1 - sum((1 + cosine(z[i], z[j])) / 2 for i, j in pairs) / len(pairs)
    got_perp, got_par = end_regularizers(torch.tensor(z), torch.tensor(y, dtype=torch.float64), torch.tensor(b))
    assert float(got_perp) == pytest.approx(r_perp, rel=1e-12)
    assert float(got_par) == pytest.approx(r_par, rel=1e-12)
    # R_perp takes |sum| per group: opposite similarities inside one group cancel
    z2 = torch.tensor([[1.0, 0.0], [0.6, 0.8], [-0.6, 0.8]], dtype=torch.float64)
    perp, par = end_regularizers(z2, torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0, 0, 0]))
    assert float(perp) == pytest.approx(abs(0.6 - 0.6 + 0.28) / 3, rel=1e-12)
    assert float(par) == 0.0  # no pair with two groups


def test_end_loss_and_frozen_backbone_error(make_split, tiny_features):
    x, y, s = tiny_features(n=16, dim=4)
    split = make_split(x, y, s)
    torch.manual_seed(0)
    model = Classifier(nn.Linear(4, 3), 3)
    method = create_method("end", alpha=2.0, beta=3.0)
    method.setup(model, split, TrainConfig())
    batch = {"x": torch.tensor(x), "y": torch.tensor(y, dtype=torch.float32), "group": torch.tensor(s)}
    with torch.no_grad():
        perp, par = end_regularizers(model.features(batch["x"]), batch["y"], batch["group"])
        bce = nn.functional.binary_cross_entropy_with_logits(model(batch["x"]), batch["y"])
        assert float(method.loss(model, batch).detach()) == pytest.approx(float(bce + 2 * perp + 3 * par), rel=1e-6)
    with pytest.raises(ValueError, match="trainable backbone"):
        create_method("end").setup(Classifier(None, 4), split, TrainConfig())


def test_gaussian_kl_by_hand_and_orthogonal_priors():
    mean = torch.tensor([[0.5, -1.0], [0.0, 2.0]], dtype=torch.float64)
    log_var = torch.tensor([[0.0, np.log(2.0)], [np.log(0.5), 0.0]], dtype=torch.float64)
    m = torch.tensor([1.0, 0.0], dtype=torch.float64)
    # KL(N(mu, s2) || N(m, 1)) per dimension = 0.5 (s2 + (mu - m)^2 - 1 - log s2)
    kl0 = 0.5 * ((1 + 0.25 - 1 - 0) + (2 + 1 - 1 - np.log(2)))
    kl1 = 0.5 * ((0.5 + 1 - 1 - np.log(0.5)) + (1 + 4 - 1 - 0))
    assert float(gaussian_kl_to_unit(mean, log_var, m)) == pytest.approx((kl0 + kl1) / 2, rel=1e-12)
    m_t, m_s = orthogonal_prior_means(5)
    assert float(m_t @ m_s) == 0.0 and float(m_t.norm()) > 0 and float(m_s.norm()) > 0


def test_odr_terms_and_gradients(make_split, tiny_features):
    x, y, s = tiny_features(n=32, dim=4, n_groups=3)
    split = make_split(x, y, s, ("a", "b", "c"))
    torch.manual_seed(0)
    model = Classifier(nn.Linear(4, 6), 6)
    method = create_method("odr", z_dim=3, hidden=0, lambda_e=0.5, gamma_e=0.5, step_size=2)
    method.setup(model, split, TrainConfig())
    batch = {"x": torch.tensor(x), "y": torch.tensor(y, dtype=torch.float32), "group": torch.tensor(s)}
    model.eval()  # means, no sampling: terms by hand
    terms = method.terms(model, batch)
    h = model.features(batch["x"])
    mean_s, _ = method.extra["encoder_s"](h)
    mean_t, _ = method.extra["encoder_t"](h)
    expected_ce = nn.functional.cross_entropy(method.extra["sensitive"](mean_s), batch["group"])
    assert float(terms["sensitive"].detach()) == pytest.approx(float(expected_ce.detach()), rel=1e-6)
    q = torch.softmax(method.extra["sensitive"](mean_t), dim=1)
    assert float(terms["entropy"].detach()) == pytest.approx(float((q * q.log()).sum(1).mean()), rel=1e-6)
    # the entropy term moves the target branch, never the sensitive classifier
    model.zero_grad()
    method.extra.zero_grad()
    terms["entropy"].backward(retain_graph=True)
    assert method.extra["sensitive"].weight.grad is None
    assert method.extra["encoder_t"].mean.weight.grad.abs().sum() > 0
    # the sensitive loss does not reach the backbone
    model.zero_grad()
    terms["sensitive"].backward()
    assert model.backbone.weight.grad is None
    # lambda schedule: lambda * gamma ** (epoch / step_size)
    method.on_epoch_end(model, 3, None, {})
    assert method.weights()[0] == pytest.approx(0.5 * 0.5 ** 2)


def test_confusion_loss_by_hand():
    logits = torch.tensor([[0.0, 0.0], [np.log(3.0), 0.0]], dtype=torch.float64)
    # row 1: softmax (0.75, 0.25): -(log .75 + log .25)/2; row 0: log 2
    expected = (np.log(2) - (np.log(0.75) + np.log(0.25)) / 2) / 2
    assert float(confusion_loss(logits)) == pytest.approx(expected, rel=1e-12)


def test_supervised_contrastive_loss_by_hand():
    p = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.2]])
    y = np.array([1, 1, 0, 1])
    tau = 0.5
    z = p / np.linalg.norm(p, axis=1, keepdims=True)
    s = z @ z.T / tau
    terms = []
    for i in range(4):
        negatives = [n for n in range(4) if y[n] != y[i]]
        for j in range(4):
            if j != i and y[j] == y[i]:
                terms.append(-np.log(np.exp(s[i, j]) / (np.exp(s[i, j]) + sum(np.exp(s[i, n]) for n in negatives))))
    got = supervised_contrastive_loss(torch.tensor(p), torch.tensor(y), tau)
    assert float(got) == pytest.approx(float(np.mean(terms)), rel=1e-10)


def test_fairdisco_loss_terms(make_split, tiny_features):
    x, y, s = tiny_features(n=24, dim=4)
    s[0] = -1
    split = make_split(x, y, s)
    torch.manual_seed(0)
    model = Classifier(nn.Linear(4, 5), 5)
    method = create_method("fairdisco", alpha=0.7, beta=0.3, projection_hidden=8, projection_dim=4)
    assert create_method("fairdisco").params["alpha"] == 1.0 and create_method("fairdisco").params["beta"] == 0.8
    method.setup(model, split, TrainConfig())
    batch = {"x": torch.tensor(x), "y": torch.tensor(y, dtype=torch.float32), "group": torch.tensor(s)}
    model.train()
    method.extra.train()
    t = method.terms(model, batch)
    z = model.features(batch["x"])
    d = method.extra["sensitive"]
    assert float(t["sensitive"].detach()) == pytest.approx(float(nn.functional.cross_entropy(d(z[1:]), batch["group"][1:])), rel=1e-6)
    assert float(t["confusion"].detach()) == pytest.approx(float(confusion_loss(d(z))), rel=1e-6)
    total = t["task"] + 0.7 * t["confusion"] + t["sensitive"] + 0.3 * t["contrastive"]
    assert float(method.loss(model, batch).detach()) == pytest.approx(float(total.detach()), rel=1e-5)
    # the sensitive CE trains d on detached features: no gradient to the encoder
    model.zero_grad()
    t["sensitive"].backward()
    assert model.backbone.weight.grad is None
