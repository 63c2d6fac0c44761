"""FIS: w = (1−c)·softmax_batch(ℓ) + c·softmax_groups(W1(L, L_g)), computed without gradient."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F

from medequity.methods import create_method
from medequity.methods.fis import fis_loss, fis_weights, group_scaling, wasserstein_1d
from medequity.models.classifier import Classifier
from medequity.training.trainer import TrainConfig


def test_hand_computed_weights():
    losses = torch.tensor([0.0, 1.0, 1.0, 1.0])
    groups = torch.tensor([0, 1, 1, 1])
    # L = {0,1,1,1}. W1(L, {0}): |F_L − F_0| = |0.25 − 1| on [0, 1) → 0.75; W1(L, {1,1,1}): |0.25 − 0| → 0.25
    g0, g1 = math.exp(0.75), math.exp(0.25)
    s_group = np.array([g0, g1, g1, g1]) / (g0 + g1)
    e = math.e
    s_ind = np.array([1, e, e, e]) / (1 + 3 * e)
    w = fis_weights(losses, groups, c=0.5)
    np.testing.assert_allclose(w.numpy(), 0.5 * s_ind + 0.5 * s_group, rtol=1e-12)
    assert float(wasserstein_1d(losses, losses[:1])) == pytest.approx(0.75)
    assert float(wasserstein_1d(losses, losses[1:])) == pytest.approx(0.25)


def test_wasserstein_matches_scipy():
    rng = np.random.default_rng(0)
    for _ in range(20):
        u, v = rng.exponential(size=rng.integers(1, 30)), rng.exponential(size=rng.integers(1, 30))
        expected = scipy.stats.wasserstein_distance(u, v)
        assert float(wasserstein_1d(torch.tensor(u), torch.tensor(v))) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_c0_is_individual_scaling():
    rng = np.random.default_rng(1)
    losses = torch.tensor(rng.exponential(size=16))
    groups = torch.tensor(rng.integers(0, 3, 16))
    torch.testing.assert_close(fis_weights(losses, groups, c=0.0), torch.softmax(losses.double(), 0))
    assert float(fis_weights(losses, groups, c=0.0).sum()) == pytest.approx(1.0)


def test_c1_equal_within_group_more_to_farther_group():
    losses = torch.tensor([0.1, 0.2, 0.15, 0.12, 2.0, 0.3, 1.5])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    w = fis_weights(losses, groups, c=1.0).numpy()
    assert np.allclose(w[:4], w[0]) and np.allclose(w[4:], w[4])  # equal within a group
    d0 = scipy.stats.wasserstein_distance(losses.numpy(), losses[:4].numpy())
    d1 = scipy.stats.wasserstein_distance(losses.numpy(), losses[4:].numpy())
    assert d1 > d0 and w[4] > w[0]
    assert w[4] / w[0] == pytest.approx(math.exp(d1 - d0))
    assert w[0] + w[4] == pytest.approx(1.0)  # s^G is a softmax over the groups


def test_unknown_and_absent_groups():
    losses = torch.tensor([0.1, 0.9, 0.5, 0.4])
    groups = torch.tensor([0, 2, -1, 0])  # group 1 absent from the batch, one unknown sample
    s_group = group_scaling(losses, groups).numpy()
    assert s_group[2] == pytest.approx(0.5)  # 1 / (number of present groups)
    assert s_group[0] + s_group[1] == pytest.approx(1.0)
    all_unknown = fis_weights(losses, torch.full((4,), -1), c=1.0)
    np.testing.assert_allclose(all_unknown.numpy(), 0.25)


def test_weights_carry_no_gradient_and_loss_is_weighted_mean():
    logits = torch.tensor([0.3, -1.0, 2.0, 0.5], requires_grad=True)
    y = torch.tensor([1.0, 1.0, 0.0, 0.0])
    groups = torch.tensor([0, 0, 1, 1])
    per_sample = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    w = fis_weights(per_sample, groups, 0.5)
    assert not w.requires_grad
    loss = fis_loss(per_sample, groups, 0.5)
    (grad,) = torch.autograd.grad(loss, logits, retain_graph=True)
    w32 = w.float()
    (expected,) = torch.autograd.grad((w32 * per_sample).sum() / w32.sum(), logits, retain_graph=True)
    torch.testing.assert_close(grad, expected)
    literal = fis_loss(per_sample, groups, 0.5, normalize=False)  # eq. (1): (1/N) Σ w ℓ
    assert literal.item() == pytest.approx((w32 * per_sample).mean().item(), rel=1e-6)


def test_method_params(make_split, tiny_features):
    method = create_method("fis")
    assert method.params["c"] == 0.5 and method.params["cutmix"] is False
    with pytest.raises(ValueError, match="no parameter"):
        create_method("fis", beta=1)
    with pytest.raises(ValueError):
        create_method("fis", c=1.5)
    with pytest.raises(ValueError):
        fis_weights(torch.ones(3), torch.zeros(3), c=-0.1)
    x, y, s = tiny_features(n=20)
    with pytest.raises(ValueError, match="image"):  # FIS + CutMix needs image inputs
        create_method("fis", cutmix=True).setup(Classifier(None, 8), make_split(x, y, s), TrainConfig())


def test_fis_with_cutmix_mixes_then_weights(make_split):
    images = torch.rand(6, 3, 8, 8)
    y = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    split = make_split(images.numpy(), y.numpy(), groups.numpy())
    model = Classifier(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 4)), 4)
    method = create_method("fis", cutmix=True)
    method.setup(model, split, TrainConfig(seed=0))
    model.train()
    loss = method.loss(model, {"x": images, "y": y, "group": groups})
    loss.backward()
    assert torch.isfinite(loss) and model.head.weight.grad is not None
    plain = create_method("fis")
    assert loss.item() != pytest.approx(plain.loss(model, {"x": images, "y": y, "group": groups}).item())


def test_end_to_end(run_tiny_experiment, assert_finite_run):
    assert_finite_run(run_tiny_experiment("fis"))
    assert_finite_run(run_tiny_experiment("fis", usage="ft", method_params={"cutmix": True}, epochs=1))
