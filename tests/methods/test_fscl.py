"""FSCL (Park et al. 2022): the loss against a direct computation, and what it does to S in the representation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from torch import nn

from medequity.methods import create_method
from medequity.methods.fscl import fair_supervised_contrastive_loss
from medequity.models.classifier import Classifier
from medequity.training.trainer import TrainConfig, Trainer


def direct_fscl(z, labels, groups, tau):
    """Park et al. eq. 5, one anchor at a time, in float64 NumPy."""
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    terms = []
    for i in range(len(z)):
        positives = [p for p in range(len(z)) if p != i and labels[p] == labels[i]]
        negatives = [n for n in range(len(z)) if labels[n] != labels[i] and groups[n] == groups[i] and groups[i] >= 0]
        if not positives:
            continue
        denominator = sum(np.exp(z[i] @ z[n] / tau) for n in negatives) if negatives else 1.0
        terms.append(-np.mean([np.log(np.exp(z[i] @ z[p] / tau) / denominator) for p in positives]))
    return float(np.mean(terms))


def test_loss_matches_a_direct_computation_on_a_hand_made_batch():
    z = np.array([[1.0, 0.2, 0.0], [0.9, -0.1, 0.3], [0.1, 1.0, 0.2], [-0.5, 0.4, 1.0],
                  [0.3, 0.3, -0.8], [0.0, -1.0, 0.5], [0.7, 0.7, 0.7]])
    labels = np.array([1, 1, 0, 0, 1, 0, 2])  # label 2: an anchor with no positive (skipped)
    groups = np.array([0, 1, 0, 1, 1, -1, 0])  # sample 5 has unknown group: no negatives, nobody's negative
    expected = direct_fscl(z, labels, groups, 0.1)
    got = fair_supervised_contrastive_loss(torch.tensor(z), torch.tensor(labels), torch.tensor(groups), 0.1)
    assert float(got) == pytest.approx(expected, rel=1e-10)
    # SupCon (every other-label sample a negative) gives a different value on this batch
    supcon_like = direct_fscl(z, labels, np.zeros_like(groups), 0.1)
    assert abs(supcon_like - expected) > 1e-3


def group_probe_accuracy(representation: np.ndarray, groups) -> float:
    return float(cross_val_score(LogisticRegression(max_iter=2000), representation, groups, cv=5).mean())


def test_fscl_representation_carries_less_group_information_than_erm(make_split, tiny_features):
    # S is visible (dimension 1 carries the group), Y is in dimension 0
    train = make_split(*tiny_features(n=512, dim=6, seed=0, s_strength=1.0))
    val = make_split(*tiny_features(n=200, dim=6, seed=1, s_strength=1.0))
    x_test, _, s_test = tiny_features(n=400, dim=6, seed=2, s_strength=1.0)
    x_test = torch.as_tensor(x_test)
    config = TrainConfig(epochs=10, batch_size=128, lr=1e-2, patience=None, device="cpu", seed=0)
    models, methods = {}, {}
    for name, params in (("erm", {}), ("fscl", {"classifier_epochs": 1})):
        torch.manual_seed(0)
        models[name] = Classifier(nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 32)), 32)
        methods[name] = create_method(name, **params)
        result = methods[name].fit(models[name], train, val, config, Trainer())
    assert set(result.stages) == {"contrastive", "classifier"}
    with torch.no_grad():
        erm_features = models["erm"].features(x_test).numpy()
        fscl_features = models["fscl"].features(x_test)
        fscl_projection = torch.nn.functional.normalize(methods["fscl"].extra["projection"](fscl_features), dim=1).numpy()
    erm_probe, fscl_probe = group_probe_accuracy(erm_features, s_test), group_probe_accuracy(fscl_projection, s_test)
    # measured: ERM's representation 0.81, FSCL's normalised representation z (where the loss acts) 0.61
    assert erm_probe > 0.75
    assert fscl_probe < erm_probe - 0.1, (erm_probe, fscl_probe)


def test_fscl_needs_a_trainable_encoder(make_split, tiny_features):
    data = make_split(*tiny_features(n=64, dim=4))
    with pytest.raises(ValueError, match="trainable backbone"):
        create_method("fscl").fit(Classifier(None, 4), data, data, TrainConfig(epochs=1, device="cpu"), Trainer())


def test_fscl_end_to_end_fine_tuning(run_tiny_experiment, assert_finite_run):
    result = run_tiny_experiment("fscl", usage="ft", epochs=1, model_options={"input_size": 32, "width": 4, "feature_dim": 16})
    assert_finite_run(result)
    assert list(result.history["stage"]) == ["contrastive", "classifier"]
    # the encoder trainable again after the frozen classifier stage
    assert all(p.requires_grad for p in result.model.backbone.parameters())
