"""LAFTR (Madras et al. 2018): the adversary objectives against the paper's two-group L1 forms, and the alternating game."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medequity.methods import create_method
from medequity.methods.laftr import laftr_adversary_objective
from medequity.models.classifier import Classifier
from medequity.training.trainer import TrainConfig

# Two groups: the adversary's logits (l0, l1) give h = P(a=1) = sigmoid(l1 - l0), as LAFTR's sigmoid adversary.
LOGITS = np.array([[0.0, 1.0], [0.5, -0.5], [2.0, 0.0], [-1.0, 1.0], [0.3, 0.3], [1.0, 2.0], [0.0, 0.0]])
GROUPS = np.array([0, 0, 1, 1, 0, 1, -1])
LABELS = np.array([1, 0, 1, 0, 1, 1, 1])


def paper_l1(h, a, rows):
    """mean_{i in rows} |h_i - a_i|"""
    return float(np.mean(np.abs(h[rows] - a[rows])))


def test_objectives_equal_the_papers_two_group_forms():
    h = 1 / (1 + np.exp(-(LOGITS[:, 1] - LOGITS[:, 0])))
    a, y, known = GROUPS, LABELS, GROUPS >= 0
    dp = 1 - sum(paper_l1(h, a, known & (a == g)) for g in (0, 1))
    eqodds = 2 - sum(paper_l1(h, a, known & (a == g) & (y == v)) for g in (0, 1) for v in (0, 1))
    eqopp = 1 - sum(paper_l1(h, a, known & (a == g) & (y == 1)) for g in (0, 1))
    args = (torch.tensor(LOGITS), torch.tensor(GROUPS), torch.tensor(LABELS, dtype=torch.float64))
    assert float(laftr_adversary_objective(*args, "dp")) == pytest.approx(dp, abs=1e-12)
    assert float(laftr_adversary_objective(*args, "eqodds")) == pytest.approx(eqodds, abs=1e-12)
    assert float(laftr_adversary_objective(*args, "eqopp")) == pytest.approx(eqopp, abs=1e-12)


def test_three_groups_chance_is_zero_and_perfect_is_one():
    groups = torch.tensor([0, 1, 2, 0, 1, 2])
    labels = torch.tensor([0.0, 0, 0, 1, 1, 1])
    chance = torch.zeros(6, 3)
    perfect = 50.0 * torch.eye(3)[groups]
    for objective, cells in (("dp", 1), ("eqodds", 2), ("eqopp", 1)):
        assert float(laftr_adversary_objective(chance, groups, labels, objective)) == pytest.approx(0.0, abs=1e-12)
        assert float(laftr_adversary_objective(perfect, groups, labels, objective)) == pytest.approx(cells, abs=1e-6)
    # hand case, dp: p(true group) = softmax row entries; K/(K-1) * (mean_g mean p - 1/K)
    logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 2.0, 0.0]], dtype=torch.float64)
    p = [np.e / (np.e + 2), 1 / 3, 1 / (2 + np.exp(2))]  # sample 2 is in group 2 with logit 0
    expected = 1.5 * (np.mean(p) - 1 / 3)
    got = laftr_adversary_objective(logits, torch.tensor([0, 1, 2]), torch.tensor([1.0, 1.0, 1.0]), "dp")
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_alternating_steps_encoder_descends_adversary_ascends(make_split, tiny_features):
    x, y, s = tiny_features(n=64, dim=4, seed=0)
    split = make_split(x, y, s)
    torch.manual_seed(0)
    model = Classifier(nn.Linear(4, 3), 3)
    method = create_method("laftr", objective="dp", hidden=0, source="features")
    config = TrainConfig(lr=0.05, weight_decay=0.0, device="cpu", optimizer="sgd", momentum=0.0)
    method.setup(model, split, config)
    optimizers = method.make_optimizers(model, config)
    assert set(optimizers) == {"model", "adversary"}
    batch = {"x": torch.tensor(x), "y": torch.tensor(y, dtype=torch.float32), "group": torch.tensor(s)}
    model.train()
    adversary = method.extra["adversary"]
    w_enc, w_adv, b_adv = (model.backbone.weight.detach().clone(), adversary.weight.detach().clone(),
                           adversary.bias.detach().clone())
    # expected updates computed by hand from the gradients of the two sides
    z = model.features(batch["x"])
    task = nn.functional.binary_cross_entropy_with_logits(model.head(z).squeeze(-1), batch["y"])
    enc_obj = task + laftr_adversary_objective(adversary(z), batch["group"], batch["y"], "dp")
    grad_enc = torch.autograd.grad(enc_obj, model.backbone.weight)[0]
    method.training_step(model, batch, optimizers)
    torch.testing.assert_close(model.backbone.weight.detach(), w_enc - 0.05 * grad_enc)
    # the adversary steps on the representation of this batch's encoder pass (before the encoder's update)
    adv_param = w_adv.clone().requires_grad_(True)
    logits = z.detach() @ adv_param.T + b_adv
    grad_adv = torch.autograd.grad(laftr_adversary_objective(logits, batch["group"], batch["y"], "dp"), adv_param)[0]
    torch.testing.assert_close(adversary.weight.detach(), w_adv + 0.05 * grad_adv)  # gradient *ascent*
    assert method._epoch and np.isfinite(method._epoch[0][0])


def test_eqodds_adversary_sees_the_label_and_validation(make_split, tiny_features):
    split = make_split(*tiny_features(n=40, dim=4))
    method = create_method("laftr")
    assert method.params == {"objective": "eqodds", "class_coefficient": 1.0, "fair_coefficient": 1.0,
                             "adversary_steps": 1, "hidden": 128, "source": "auto"}  # MEDFAIR's defaults
    method.setup(Classifier(nn.Linear(4, 3), 3), split, TrainConfig())
    assert method.extra["adversary"][0].in_features == 4  # z (3) + y
    with pytest.raises(ValueError, match="objective"):
        create_method("laftr", objective="eo")
    with pytest.raises(ValueError, match="adversary_steps"):
        create_method("laftr", adversary_steps=0)
