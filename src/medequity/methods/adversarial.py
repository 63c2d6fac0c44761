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


def has_trainable_backbone(model: nn.Module) -> bool:
    """True when the model's backbone has parameters the optimiser updates (not linear probing)."""
    backbone = getattr(model, "backbone", None)
    return backbone is not None and any(p.requires_grad for p in backbone.parameters())


def require_trainable_backbone(model: nn.Module, method: str) -> None:
    """An error naming the fix when ``method`` shapes a representation that cannot change."""
    if not hasattr(model, "features") or getattr(model, "feature_dim", None) is None or not has_trainable_backbone(model):
        raise ValueError(f"{method} trains the encoder's representation; use a usage with a trainable backbone "
                         "(e.g. 'ft'), not linear probing on frozen features")


# --- shared by the representation adversaries (adversarial, LAFTR, CFair, LNL) ------------------


def resolve_source(model: nn.Module, source: str) -> tuple[str, int]:
    """(``"features"`` or ``"logit"``, input width of an adversary on it) for ``source``
    ``"auto" | "features" | "logit"``: ``auto`` = features when the backbone has trainable
    parameters, else the logit (under linear probing the cached features cannot change)."""
    if source not in ("auto", "features", "logit"):
        raise ValueError(f"source must be 'auto', 'features' or 'logit'; got {source!r}")
    if source == "auto":
        source = "features" if has_trainable_backbone(model) else "logit"
    if source == "logit":
        return source, 1
    in_dim = getattr(model, "feature_dim", None)
    if in_dim is None or not hasattr(model, "features"):
        raise ValueError("source='features' needs a model with features(x) and feature_dim")
    return source, int(in_dim)


def make_adversary(in_dim: int, n_out: int, hidden: int) -> nn.Module:
    """An MLP ``in_dim → hidden → n_out`` (ReLU), or a linear map when ``hidden`` is 0."""
    if hidden > 0:
        return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, n_out))
    return nn.Linear(in_dim, n_out)


def representation_and_logits(model: nn.Module, x: torch.Tensor, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(what the adversary sees, the task logit) in one forward pass: ``(z, head(z))`` for
    ``source="features"``, ``(logit[:, None], logit)`` for ``"logit"``."""
    if source == "features":
        z = model.features(x)
        return z, model.head(z).squeeze(-1)
    logits = model(x)
    return logits.unsqueeze(-1), logits


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
        source, in_dim = resolve_source(model, self.params["source"])
        self.resolved_source = source
        self.extra["adversary"] = make_adversary(in_dim, train.n_groups, int(self.params["hidden"]))
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
        groups = batch["group"]
        representation, logits = representation_and_logits(model, batch["x"], self.resolved_source)
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
