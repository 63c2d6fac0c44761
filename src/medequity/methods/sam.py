"""SAM: sharpness-aware minimisation (Foret et al. 2021).

Foret, Kleiner, Mobahi, Neyshabur, "Sharpness-aware minimization for efficiently improving
generalization", ICLR 2021, eq. 2 and Algorithm 1. Each step minimises the loss at the worst point
of a ρ-ball around the weights, to first order:

    ε̂(w) = ρ · g / ‖g‖₂,   g = ∇L(w)                  (ascent to the sharpest nearby point)
    w ← base_optimizer_step(w, ∇L(w + ε̂(w)))          (descent with the gradient taken there)

ρ = 0.05 (the paper's default). The base optimiser is the trainer's (AdamW by default), so
weight decay, momentum and the schedule apply as for ERM. Any method's loss can be made
sharpness-aware by subclassing and overriding ``loss``. BatchNorm running statistics are updated
by the first forward pass only: the perturbed pass would otherwise count every batch twice.
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from medequity.methods.base import Method, register_method


@contextlib.contextmanager
def frozen_batchnorm_statistics(model: torch.nn.Module):
    """Momentum 0 makes ``running = (1 − 0)·running + 0·batch``: the statistics stay as they are."""
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.training]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        yield
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum


@register_method
class SAM(Method):
    """Two forward/backward passes per step (Foret et al. 2021, Algorithm 1), ρ = 0.05."""

    name = "sam"
    defaults = {"rho": 0.05}

    def training_step(self, model, batch, optimizers):
        optimizer = optimizers["model"]
        rho = float(self.params["rho"])
        optimizer.zero_grad(set_to_none=True)
        loss = self.loss(model, batch)
        loss.backward()
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.detach()) for p in params]))
        scale = rho / (grad_norm + 1e-12)
        perturbations = []
        with torch.no_grad():
            for p in params:
                e = p.grad * scale
                p.add_(e)
                perturbations.append(e)
        optimizer.zero_grad(set_to_none=True)
        with frozen_batchnorm_statistics(model):
            self.loss(model, batch).backward()
        with torch.no_grad():  # back to w: the base optimiser steps from w with the gradient at w + ε̂
            for p, e in zip(params, perturbations):
                p.sub_(e)
        optimizer.step()
        return {"loss": float(loss.detach())}
