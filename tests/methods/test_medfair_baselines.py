"""The MEDFAIR/review baselines end to end: where the mechanism should help (a training-only
shortcut), and every method through run_experiment on a synthetic preset.

Shortcut data (the mechanism of the ``*-shortcut`` presets, as 8 features): dimension 0 carries
the label weakly, dimension 1 carries the group strongly, and in training the group agrees with
the label 90% of the time; at test it is independent of the label. ERM leans on the group; a
method that removes the group's label-predictive part scores higher on test.

Measured (300 steps, this data; the test trains 200): test AUC ERM 0.686; CFair (μ=1) 0.800, FairAdaBN 0.798, soft
equalized-odds constraint 0.797, bias-balanced softmax 0.796, EnD (α=β=5) 0.763, gradient-reversal
adversary 0.797. Recorded findings where the mechanism did not help here: LAFTR 0.685 (eqodds),
0.673 (dp), 0.672 (γ=5), 0.639 (α=0.2, 3 adversary steps) — its L1 objective's gradient vanishes
once the adversary is confident; LNL (λ=1) 0.706; EnD at MEDFAIR's α=β=0.1 0.688; ODR 0.657;
FairDisCo 0.661 (its confusion loss also trains the discriminator towards uniform, a weak
adversary). MEDFAIR, too, found most methods no better than well-tuned ERM.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from medequity.methods import create_method
from medequity.models.classifier import Classifier
from medequity.training.trainer import TrainConfig


def shortcut(seed: int, n: int, agreement: float):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(np.int64)
    s = np.where(rng.random(n) < agreement, y, 1 - y)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    x[:, 0] += 0.7 * (2 * y - 1)
    x[:, 1] += 2.0 * (2 * s - 1)
    return x, y, s


def test_auc(make_split, name: str, params: dict, batchnorm: bool = False, steps: int = 200) -> float:
    x, y, s = shortcut(0, 1000, 0.9)
    split = make_split(x, y, s)
    torch.manual_seed(0)
    layers = [nn.Linear(8, 16), *([nn.BatchNorm1d(16)] if batchnorm else []), nn.ReLU(), nn.Linear(16, 8)]
    model = Classifier(nn.Sequential(*layers), 8)
    method = create_method(name, **params)
    config = TrainConfig(lr=1e-2, weight_decay=0.0, device="cpu")
    method.setup(model, split, config)
    optimizers = method.make_optimizers(model, config)
    generator = torch.Generator().manual_seed(0)
    X, Y, S = torch.tensor(x), torch.tensor(y, dtype=torch.float32), torch.tensor(s)
    method.train_mode(model)
    for _ in range(steps):
        idx = torch.randint(0, len(X), (128,), generator=generator)
        method.training_step(model, {"x": X[idx], "y": Y[idx], "group": S[idx]}, optimizers)
    model.eval()
    method.extra.eval()
    x_test, y_test, s_test = shortcut(1, 2000, 0.5)
    with torch.no_grad():
        scores = method.logits(model, torch.tensor(x_test), torch.tensor(s_test)).numpy()
    return float(roc_auc_score(y_test, scores))


test_auc.__test__ = False  # a helper, not a test


_ERM: dict[str, float] = {}


def erm_auc(make_split) -> float:
    """ERM's test AUC on the shortcut data, trained once per session."""
    if "auc" not in _ERM:
        _ERM["auc"] = test_auc(make_split, "erm", {})
    return _ERM["auc"]


@pytest.mark.parametrize("name, params, batchnorm", [
    ("cfair", {"coefficient": 1.0}, False),
    ("fairadabn", {}, True),
    ("fairness_constraint", {}, False),
    ("bias_balanced_softmax", {}, False),
    ("end", {"alpha": 5.0, "beta": 5.0}, False),
])
def test_mechanism_beats_erm_on_a_training_only_shortcut(make_split, name, params, batchnorm):
    baseline = erm_auc(make_split)
    assert baseline < 0.72  # ERM leans on the shortcut
    assert test_auc(make_split, name, params, batchnorm) > baseline + 0.04


@pytest.mark.parametrize("name", ["laftr", "cfair", "lnl", "end", "odr", "fairadabn", "fairdisco",
                                  "fairness_constraint", "bias_balanced_softmax"])
def test_end_to_end_on_a_shortcut_preset(run_tiny_experiment, assert_finite_run, name):
    result = run_tiny_experiment(name, usage="ft", epochs=1,
                                 dataset_options={"preset": "derm-skin-tone-shortcut", "n": 160, "image_size": 32},
                                 attribute="skin_tone", model_options={"input_size": 32, "width": 4, "feature_dim": 16})
    assert_finite_run(result)


@pytest.mark.parametrize("name", ["laftr", "cfair", "lnl"])
def test_adversaries_act_on_the_logit_under_linear_probing(run_tiny_experiment, assert_finite_run, name):
    result = run_tiny_experiment(name, usage="lp", epochs=1,
                                 dataset_options={"preset": "derm-unbiased", "n": 160, "image_size": 32},
                                 model_options={"input_size": 32, "width": 4, "feature_dim": 16})
    assert_finite_run(result)
    assert result.method_log["source"] == "logit"


@pytest.mark.parametrize("name", ["end", "odr", "fairdisco", "fairadabn"])
def test_representation_methods_refuse_linear_probing(run_tiny_experiment, name):
    with pytest.raises(ValueError, match="trainable backbone"):
        run_tiny_experiment(name, usage="lp", epochs=1,
                            dataset_options={"preset": "derm-unbiased", "n": 160, "image_size": 32},
                            model_options={"input_size": 32, "width": 4, "feature_dim": 16})
