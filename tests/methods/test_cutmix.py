"""CutMix: a pasted box, labels mixed by its area, pixels outside it untouched; images only."""

import numpy as np
import pytest
import scipy.stats
import torch

from medequity.methods import create_method
from medequity.methods.cutmix import cutmix_batch
from medequity.models.classifier import Classifier
from medequity.training.trainer import TrainConfig


def constant_images(batch=8, size=16):
    # image i is filled with the value i + 1, so every pixel tells which image it came from
    return torch.arange(1, batch + 1, dtype=torch.float32).view(batch, 1, 1, 1).expand(batch, 3, size, size).clone()


@pytest.mark.parametrize("seed", range(10))
def test_label_equals_pasted_area_and_outside_unchanged(seed):
    x = constant_images()
    y = torch.tensor([1.0, 0.0] * 4)
    generator = torch.Generator().manual_seed(seed)
    mixed, soft, info = cutmix_batch(x, y, generator)
    assert info.applied
    y0, y1, x0, x1 = info.box
    outside = torch.ones(16, 16, dtype=torch.bool)
    outside[y0:y1, x0:x1] = False
    assert torch.equal(mixed[:, :, outside], x[:, :, outside])  # pixels outside the box: unchanged
    for i in range(8):
        j = int(info.permutation[i])
        pasted = float((mixed[i, 0] == j + 1).float().mean()) if j != i else (y1 - y0) * (x1 - x0) / 256
        assert 1 - info.lam == pytest.approx(pasted)  # λ' = 1 − pasted area fraction
        assert float(soft[i]) == pytest.approx(info.lam * float(y[i]) + pasted * float(y[j]))
    assert torch.equal(x, constant_images())  # the input batch is not modified


def test_reproducible_and_prob():
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0.0, 1.0, 1.0, 0.0])
    a = cutmix_batch(x, y, torch.Generator().manual_seed(5))
    b = cutmix_batch(x, y, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    mixed, soft, info = cutmix_batch(x, y, torch.Generator().manual_seed(5), prob=0.0)
    assert not info.applied and torch.equal(mixed, x) and torch.equal(soft, y)


def test_lambda_follows_beta_alpha():
    x, y = torch.rand(4, 3, 64, 64), torch.zeros(4)
    generator = torch.Generator().manual_seed(0)
    infos = [cutmix_batch(x, y, generator, alpha=1.0)[2] for _ in range(400)]
    drawn = np.array([info.lam_drawn for info in infos])
    assert scipy.stats.kstest(drawn, "uniform").pvalue > 0.01  # Beta(1, 1) = uniform
    assert all(info.lam >= info.lam_drawn - 0.05 for info in infos)  # clipping the box only shrinks it
    concentrated = np.array([cutmix_batch(x, y, generator, alpha=50.0)[2].lam_drawn for _ in range(200)])
    assert abs(concentrated.mean() - 0.5) < 0.02 and concentrated.std() < 0.1


def test_feature_inputs_rejected_with_a_clear_error(make_split, tiny_features):
    with pytest.raises(ValueError, match="ft"):
        cutmix_batch(torch.rand(4, 8), torch.zeros(4))
    x, y, s = tiny_features(n=20)
    method = create_method("cutmix")
    with pytest.raises(ValueError, match="image batches"):
        method.setup(Classifier(None, 8), make_split(x, y, s), TrainConfig())


def test_params():
    assert create_method("cutmix").params == {"alpha": 1.0, "prob": 1.0}
    with pytest.raises(ValueError, match="no parameter"):
        create_method("cutmix", beta=1.0)
    with pytest.raises(ValueError):
        create_method("cutmix", alpha=0)


def test_training_loss_uses_soft_labels_eval_does_not_mix(make_split):
    images = torch.rand(4, 3, 8, 8)
    y = torch.tensor([1.0, 0.0, 1.0, 0.0])
    split = make_split(images.numpy(), y.numpy(), np.array([0, 1, 0, 1]))
    model = Classifier(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 4)), 4)
    method = create_method("cutmix")
    method.setup(model, split, TrainConfig(seed=1))
    batch = {"x": images, "y": y, "group": torch.tensor([0, 1, 0, 1])}
    model.eval()
    plain = create_method("erm").loss(model, batch)
    assert method.loss(model, batch).item() == pytest.approx(plain.item())
    model.train()
    generator = torch.Generator().manual_seed(1 + 7919)  # the method's own stream for seed 1
    mixed, soft, _ = cutmix_batch(images, y, generator)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(model(mixed), soft)
    assert method.loss(model, batch).item() == pytest.approx(expected.item(), rel=1e-6)


def test_end_to_end(run_tiny_experiment, assert_finite_run):
    assert_finite_run(run_tiny_experiment("cutmix", usage="ft", epochs=2))
    with pytest.raises(ValueError, match="image batches"):
        run_tiny_experiment("cutmix", usage="lp", epochs=1)
