"""InD: one head per group, trained only by its group; inference by the sample's group head or sum."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medequity.methods import create_method
from medequity.models.classifier import Classifier
from medequity.training.trainer import TrainConfig, Trainer


def _setup(make_split, tiny_features, backbone=None, feature_dim=8, **params):
    x, y, s = tiny_features(n=200)
    split = make_split(x, y, s)
    torch.manual_seed(0)
    model = Classifier(backbone, feature_dim)
    method = create_method("ind", **params)
    method.setup(model, split, TrainConfig())
    return method, model, split, (torch.tensor(x), torch.tensor(y, dtype=torch.float32), torch.tensor(s))


def test_interface():
    method = create_method("ind")
    assert method.needs_groups_at_inference and method.params["inference"] == "group"
    with pytest.raises(ValueError, match="no parameter"):
        create_method("ind", heads=2)
    with pytest.raises(ValueError):
        create_method("ind", inference="max")


def test_each_head_trained_only_by_its_group(make_split, tiny_features):
    method, model, _, (x, y, s) = _setup(make_split, tiny_features, backbone=nn.Linear(8, 4), feature_dim=4)
    heads = method.extra["heads"]
    model.train()
    only0 = s == 0
    method.loss(model, {"x": x[only0], "y": y[only0], "group": s[only0]}).backward()
    assert heads.weight.grad[1].abs().sum() == 0 and heads.bias.grad[1] == 0  # group 1's head: untouched
    assert heads.weight.grad[0].abs().sum() > 0
    assert model.backbone.weight.grad.abs().sum() > 0  # the shared encoder learns from everyone
    # on a mixed batch, head g's gradient equals the gradient from group g's samples alone
    heads.zero_grad()
    method.loss(model, {"x": x, "y": y, "group": s}).backward()
    full = heads.weight.grad.clone()
    heads.zero_grad()
    z = model.features(x[s == 1])
    own = heads(z)[:, 1]
    (F.binary_cross_entropy_with_logits(own, y[s == 1], reduction="sum") / len(s)).backward()
    torch.testing.assert_close(full[1], heads.weight.grad[1])
    # the model's own head is not trained
    assert not any(p is model.head.weight for p in method.parameters(model))


def test_heads_differ_after_training(make_split):
    rng = np.random.default_rng(0)
    n = 400
    s = (rng.random(n) < 0.5).astype(np.int64)
    y = (rng.random(n) < 0.5).astype(np.int64)
    x = rng.normal(size=(n, 2)).astype(np.float32) * 0.5
    # the label is read from feature 0 in group 0 and from feature 1 in group 1
    x[np.arange(n), s] += 2 * y - 1
    split = make_split(x, y, s)
    method = create_method("ind")
    Trainer().fit(Classifier(None, 2), method, split, split,
                  TrainConfig(epochs=15, batch_size=100, lr=5e-2, device="cpu", patience=None))
    w = method.extra["heads"].weight.detach().numpy()
    assert w[0, 0] > 2 * abs(w[0, 1]) and w[1, 1] > 2 * abs(w[1, 0])


def test_the_trainers_predict_scores_each_sample_by_its_own_group_head(make_split, tiny_features):
    """needs_groups_at_inference: the trainer passes each sample's group to InD's logits (a method
    without the flag gets None)."""
    method, model, split, (x, _, s) = _setup(make_split, tiny_features)
    s[:5] = -1
    split = make_split(x.numpy(), split.labels, s.numpy())
    scores = Trainer().predict(model, method, split, TrainConfig(device="cpu"))
    with torch.no_grad():
        heads = method.extra["heads"](model.features(x))
    own = torch.where(s >= 0, heads.gather(1, s.clamp(min=0).unsqueeze(1)).squeeze(1), heads.mean(1))
    np.testing.assert_allclose(scores, torch.sigmoid(own).numpy(), rtol=1e-6)
    assert not np.allclose(scores, torch.sigmoid(heads[:, 0]).numpy())  # not one head for everyone


def test_inference_group_sum_and_unknown_fallback(make_split, tiny_features):
    method, model, _, (x, _, _) = _setup(make_split, tiny_features)
    model.eval()
    groups = torch.tensor([0, 1, -1, 0])
    all_heads = method.head_logits(model, x[:4])
    out = method.logits(model, x[:4], groups)
    torch.testing.assert_close(out[[0, 3]], all_heads[[0, 3], 0])
    torch.testing.assert_close(out[1], all_heads[1, 1])
    torch.testing.assert_close(out[2], all_heads[2].mean())  # unknown group: mean of the heads
    with pytest.raises(ValueError):
        method.logits(model, x[:4], None)
    summed = create_method("ind", inference="sum")
    summed.extra = method.extra
    torch.testing.assert_close(summed.logits(model, x[:4], None), all_heads.sum(dim=1))


def test_unknown_group_samples_leave_the_loss(make_split, tiny_features):
    method, model, _, (x, y, _) = _setup(make_split, tiny_features)
    model.train()
    loss = method.loss(model, {"x": x[:3], "y": y[:3], "group": torch.tensor([0, -1, -1])})
    expected = F.binary_cross_entropy_with_logits(method.head_logits(model, x[:1])[:, 0], y[:1])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_end_to_end(run_tiny_experiment, assert_finite_run):
    assert_finite_run(run_tiny_experiment("ind"))
    assert_finite_run(run_tiny_experiment("ind", method_params={"inference": "sum"}, epochs=1))
