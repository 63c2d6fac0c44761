"""Adversarial debiasing — Zhang, Lemoine & Mitchell, "Mitigating unwanted biases with adversarial
learning", AIES 2018; LAFTR-style representation adversary (Madras et al., ICML 2018).

An adversary head ``d`` predicts the sensitive group S from the representation ``z = f(x)``
(``model.features(x)``) — or, with ``source="logit"``, from the model's output logit (Zhang et
al.'s "predict Z from Ŷ"). With any number of groups the adversary is a softmax classifier and its
loss is the cross-entropy over groups, on the samples whose group is known (-1 samples are left
out):

    L_adv(θ_f, θ_d) = CE(d(GRL_λ(z)), s)        total = L_task(θ_f, θ_h) + L_adv

where GRL_λ is the gradient-reversal layer (Ganin & Lempitsky 2015): identity forward, gradient
multiplied by −λ backward. One backward pass therefore gives

    adversary:  ∂total/∂θ_d =  ∂L_adv/∂θ_d            (it *minimises* L_adv)
    encoder:    ∂total/∂θ_f =  ∂L_task/∂θ_f − λ·∂L_adv/∂θ_f   (it *maximises* L_adv)

— a real min–max game (MEDFAIR stepped encoder and adversary down the same loss, so the encoder
*helped* the adversary). λ = ``coefficient`` = 0.1 (FairMedFM D.1.3, "Adversarial coefficients:
0.1"). The adversary is an MLP with ``hidden`` units (LAFTR; 0 = linear, Zhang et al.).

``source``: ``"features"``, ``"logit"`` or ``"auto"`` (default) — features when the model's backbone
has trainable parameters (fine-tuning, PEFT), else the logit: under linear probing the features
are a fixed cache, so an adversary on them could change nothing, while an adversary on the logit
still pushes the head to drop S. ``self.log`` records the adversary's mean loss and accuracy per
epoch (``adv_loss``, ``adv_acc``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medequity.methods.base import Method, register_method


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, coefficient: float) -> torch.Tensor:
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.coefficient * grad, None


def grad_reverse(x: torch.Tensor, coefficient: float = 1.0) -> torch.Tensor:
    """Identity forward; multiplies the gradient by ``-coefficient`` backward."""
    return _GradReverse.apply(x, coefficient)


def _has_trainable_backbone(model: nn.Module) -> bool:
    backbone = getattr(model, "backbone", None)
    return backbone is not None and any(p.requires_grad for p in backbone.parameters())


@register_method
class Adversarial(Method):
    """Gradient-reversal adversary predicting S (softmax over groups) from features or logit."""

    name = "adversarial"
    defaults = {"coefficient": 0.1, "source": "auto", "hidden": 64}

    def __init__(self, **params):
        super().__init__(**params)
        if self.params["source"] not in ("auto", "features", "logit"):
            raise ValueError(f"source must be 'auto', 'features' or 'logit'; got {self.params['source']!r}")
        if not float(self.params["coefficient"]) >= 0:
            raise ValueError("coefficient must be >= 0")
        if int(self.params["hidden"]) < 0:
            raise ValueError("hidden must be >= 0")
        self.resolved_source: str | None = None
        self._epoch: list[tuple[float, int, int]] = []

    def setup(self, model, train, config) -> None:
        if train.n_groups < 2:
            raise ValueError(f"adversarial debiasing needs at least 2 groups; the attribute has {train.n_groups}")
        source = self.params["source"]
        if source == "auto":
            source = "features" if _has_trainable_backbone(model) else "logit"
        self.resolved_source = source
        if source == "features":
            in_dim = getattr(model, "feature_dim", None)
            if in_dim is None:
                raise ValueError("source='features' needs a model with features(x) and feature_dim")
        else:
            in_dim = 1
        hidden = int(self.params["hidden"])
        if hidden > 0:
            adversary: nn.Module = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, train.n_groups))
        else:
            adversary = nn.Linear(in_dim, train.n_groups)
        self.extra["adversary"] = adversary
        self.log.update({"source": source, "adv_loss": [], "adv_acc": []})

    def adversary_loss(self, representation: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """(CE of the adversary through gradient reversal, #correct, #known) on known-group samples."""
        known = groups >= 0
        n_known = int(known.sum())
        if n_known == 0:
            return representation.sum() * 0.0, 0, 0
        reversed_rep = grad_reverse(representation[known], float(self.params["coefficient"]))
        out = self.extra["adversary"](reversed_rep)
        target = groups[known].long()
        correct = int((out.argmax(dim=1) == target).sum())
        return F.cross_entropy(out, target), correct, n_known

    def loss(self, model, batch: dict) -> torch.Tensor:
        if self.resolved_source is None:
            raise RuntimeError("Adversarial.setup must run before loss (the trainer calls it)")
        x, groups = batch["x"], batch["group"]
        if self.resolved_source == "features":
            z = model.features(x)
            logits = model.head(z).squeeze(-1)
            representation = z
        else:
            logits = self.logits(model, x, groups)
            representation = logits.unsqueeze(-1)
        task = self.per_sample_loss(logits, batch["y"]).mean()
        adv, correct, n_known = self.adversary_loss(representation, groups)
        if model.training:
            self._epoch.append((float(adv.detach()), correct, n_known))
        return task + adv

    def on_epoch_end(self, model, epoch: int, val_scores, summary) -> None:
        if self._epoch:
            n = sum(k for _, _, k in self._epoch)
            self.log["adv_loss"].append(sum(loss * k for loss, _, k in self._epoch) / max(n, 1))
            self.log["adv_acc"].append(sum(c for _, c, _ in self._epoch) / max(n, 1))
        self._epoch = []
