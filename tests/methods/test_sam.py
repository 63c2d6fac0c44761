"""SAM (Foret et al. 2021): the two-step update, checked by hand on a quadratic."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medequity.methods.sam import SAM


class Point(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float64))


A = np.array([1.0, 3.0])
C = np.array([0.5, 0.0])


class QuadraticSAM(SAM):
    """L(w) = ½ Σ a_j (w_j − c_j)²."""

    def loss(self, model, batch):
        return 0.5 * (torch.as_tensor(A) * (model.w - torch.as_tensor(C)) ** 2).sum()


def test_sam_step_equals_the_hand_computed_two_step_update():
    w = np.array([1.0, -2.0])
    model = Point(w.tolist())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    stats = QuadraticSAM(rho=0.05).training_step(model, {}, {"model": optimizer})

    g = A * (w - C)  # (0.5, -6)
    w_adv = w + 0.05 * g / np.linalg.norm(g)
    expected = w - 0.1 * A * (w_adv - C)
    np.testing.assert_allclose(model.w.detach().numpy(), expected, atol=1e-12)
    assert stats["loss"] == np.float64(0.5 * np.sum(A * (w - C) ** 2))  # the loss at w, not at w + ε
    # SAM differs from a plain gradient step by the gradient taken at the perturbed point
    assert not np.allclose(expected, w - 0.1 * g)


def test_batchnorm_statistics_count_each_batch_once():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2), nn.Flatten(0))
    x = torch.randn(8, 3)
    with torch.no_grad():
        batch_mean = model[0](x).mean(0)
    method = SAM()
    method.loss = lambda m, batch: (m(batch["x"]) ** 2).mean()
    model.train()
    method.training_step(model, {"x": x}, {"model": torch.optim.SGD(model.parameters(), lr=0.0)})
    # one update from running_mean = 0 with momentum 0.1; a second (perturbed) pass would double it
    torch.testing.assert_close(model[1].running_mean, 0.1 * batch_mean)
    assert int(model[1].num_batches_tracked) == 2  # counted, but with momentum 0 it changes nothing


def test_sam_end_to_end(run_tiny_experiment, assert_finite_run):
    result = run_tiny_experiment("sam", epochs=2)
    assert_finite_run(result)
