"""Adversarial debiasing: a real min–max game through gradient reversal."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from torch import nn

from medequity.methods import create_method
from medequity.methods.adversarial import grad_reverse
from medequity.models.classifier import Classifier
from medequity.training.trainer import TrainConfig


def test_defaults_and_validation():
    method = create_method("adversarial")
    assert method.params["coefficient"] == 0.1  # FairMedFM D.1.3
    with pytest.raises(ValueError, match="no parameter"):
        create_method("adversarial", lam=1)
    with pytest.raises(ValueError):
        create_method("adversarial", source="output")


def test_grad_reverse():
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    (grad_reverse(x, 0.3) * torch.tensor([2.0, 5.0])).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [-0.6, -1.5])


def test_encoder_gets_reversed_adversary_gradient_by_hand(make_split):
    """Tiny linear encoder z = Wx + c, linear adversary a = Vz + d, 3 groups, hand-derived gradients."""
    torch.manual_seed(0)
    x = torch.tensor([[1.0, 0.5, -1.0], [0.2, -0.3, 0.8], [-1.0, 1.0, 0.1], [0.4, 0.4, 0.4]])
    y = torch.tensor([1.0, 0.0, 1.0, 0.0])
    s = torch.tensor([0, 1, 2, -1])  # the unknown-group sample is left out of the adversary
    split = make_split(x.numpy(), y.numpy(), s.numpy(), ("a", "b", "c"))
    model = Classifier(nn.Linear(3, 2), 2)
    method = create_method("adversarial", hidden=0, source="features")
    method.setup(model, split, TrainConfig())
    adversary = method.extra["adversary"]
    model.train()
    loss = method.loss(model, {"x": x, "y": y, "group": s})
    loss.backward()

    W, c = model.backbone.weight.detach().numpy(), model.backbone.bias.detach().numpy()
    V, d = adversary.weight.detach().numpy(), adversary.bias.detach().numpy()
    h, b = model.head.weight.detach().numpy()[0], model.head.bias.detach().numpy()[0]
    xn, yn = x.numpy().astype(np.float64), y.numpy()
    z = xn @ W.T + c
    # task: mean BCE over all 4 samples; dL/dz_i = (sigmoid(h.z_i + b) - y_i) h / 4
    p = 1 / (1 + np.exp(-(z @ h + b)))
    dz_task = np.outer(p - yn, h) / 4
    # adversary: mean CE over the 3 known samples; dL/da_i = (softmax(a_i) - onehot(s_i)) / 3
    known = np.array([0, 1, 2])
    a = z[known] @ V.T + d
    prob = np.exp(a - a.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    da = (prob - np.eye(3)[s.numpy()[known]]) / 3
    dV_adv = da.T @ z[known]  # the adversary's own gradient: it descends its loss
    dz_adv = np.zeros_like(z)
    dz_adv[known] = da @ V
    dW_adv = dz_adv.T @ xn  # what minimising the adversary loss would do to the encoder

    np.testing.assert_allclose(adversary.weight.grad.numpy(), dV_adv, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model.backbone.weight.grad.numpy(), dz_task.T @ xn - 0.1 * dW_adv, rtol=1e-4, atol=1e-6)
    # the adversary term alone: encoder gradient = -0.1 × (the adversary loss's own gradient w.r.t. W)
    model.zero_grad()
    adversary.zero_grad()
    adv_only, _, _ = method.adversary_loss(model.features(x), s)
    adv_only.backward()
    encoder_grad = model.backbone.weight.grad.numpy()
    np.testing.assert_allclose(encoder_grad, -0.1 * dW_adv, rtol=1e-4, atol=1e-6)
    assert np.sum(encoder_grad * dW_adv) < 0  # opposite sign: the encoder climbs the adversary's loss
    np.testing.assert_allclose(adversary.weight.grad.numpy(), dV_adv, rtol=1e-4, atol=1e-6)


def _data(seed, n=1000):
    rng = np.random.default_rng(seed)
    s = (rng.random(n) < 0.5).astype(np.int64)
    y = (rng.random(n) < 0.5).astype(np.int64)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    x[:, 0] += 1.5 * (2 * y - 1)
    x[:, 1] += 2.0 * (2 * s - 1)  # the input encodes S strongly
    return x, y, s


def _train(name, params, train_split, x, y, s, steps=500, seed=0, lr=2e-2):
    torch.manual_seed(seed)
    model = Classifier(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8)), 8)
    method = create_method(name, **params)
    config = TrainConfig(lr=lr, weight_decay=0.0, device="cpu")
    method.setup(model, train_split, config)
    optimizers = method.make_optimizers(model, config)
    generator = torch.Generator().manual_seed(seed)
    X, Y, S = torch.tensor(x), torch.tensor(y, dtype=torch.float32), torch.tensor(s)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(X), (128,), generator=generator)
        method.training_step(model, {"x": X[idx], "y": Y[idx], "group": S[idx]}, optimizers)
    model.eval()
    return model


def test_representation_forgets_group_but_keeps_label(make_split):
    x, y, s = _data(0)
    x_test, y_test, s_test = _data(1)
    split = make_split(x, y, s)
    results = {}
    for name, params in [("erm", {}), ("adversarial", {"coefficient": 1.0, "source": "features"})]:
        model = _train(name, params, split, x, y, s)
        with torch.no_grad():
            z, z_test = model.features(torch.tensor(x)).numpy(), model.features(torch.tensor(x_test)).numpy()
            scores = model(torch.tensor(x_test)).numpy()
        probe = LogisticRegression(max_iter=2000).fit(z, s)  # a fresh attacker on the learned representation
        results[name] = (probe.score(z_test, s_test), roc_auc_score(y_test, scores))
    (erm_s, erm_auc), (adv_s, adv_auc) = results["erm"], results["adversarial"]
    assert erm_s > 0.85
    assert adv_s < 0.68 and adv_s < erm_s - 0.2  # toward chance (0.5)
    assert adv_auc > erm_auc - 0.02


def test_auto_source_and_more_than_two_groups(make_split, tiny_features):
    x, y, s = tiny_features(n=60, n_groups=3)
    split = make_split(x, y, s, ("a", "b", "c"))
    frozen = create_method("adversarial")
    frozen.setup(Classifier(None, 8), split, TrainConfig())  # linear probing: identity backbone
    assert frozen.resolved_source == "logit"
    tuned = create_method("adversarial")
    model = Classifier(nn.Linear(8, 4), 4)
    tuned.setup(model, split, TrainConfig())
    assert tuned.resolved_source == "features"
    assert tuned.extra["adversary"][-1].out_features == 3
    batch = {"x": torch.tensor(x), "y": torch.tensor(y, dtype=torch.float32), "group": torch.full((60,), -1)}
    model.train()
    loss = tuned.loss(model, batch)  # all groups unknown: the adversary term is 0, the task loss remains
    expected = F.binary_cross_entropy_with_logits(model(batch["x"]), batch["y"])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_end_to_end(run_tiny_experiment, assert_finite_run):
    result = run_tiny_experiment("adversarial")
    assert_finite_run(result)
    assert result.method_log["source"] == "logit"
    assert len(result.method_log["adv_acc"]) == len(result.history)
    result = run_tiny_experiment("adversarial", usage="ft", epochs=1)
    assert_finite_run(result)
    assert result.method_log["source"] == "features"
