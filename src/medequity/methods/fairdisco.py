"""FairDisCo — Du, Hers, Bayasi, Hamarneh & Garbi, "FairDisCo: fairer AI in dermatology via
disentanglement contrastive learning", ECCV Workshops 2022 (§3).

Three branches on the representation z = f(x) (the model's features): the classifier (the model's
head), a sensitive-attribute branch d (a linear softmax over the K groups) and a projection head p
for contrastive learning. The loss (the paper's total loss; its four terms as in the authors' code):

    L = CE(g(z), y) + α·L_conf(d(z)) + CE(d(z̄), s) + β·L_SupCon(p(z), y)

* L_conf(d(z)) = −mean_i (1/K) Σ_k log softmax(d(z_i))_k — the confusion loss of Alvi et al.
  (2018): the cross-entropy to the uniform distribution, minimal when d cannot tell the groups
  apart from z. As in the authors' code it reaches both the encoder and d.
* CE(d(z̄), s): d learns S on the *detached* representation z̄ (it must not shape f).
* L_SupCon: the supervised contrastive loss on the L2-normalised projections p(z) with the label
  as class, temperature τ; as in the authors' implementation, for an anchor i and a positive j
  (same label, j ≠ i): ℓ_ij = −log[ exp(s_ij) / (exp(s_ij) + Σ_{n: y_n≠y_i} exp(s_in)) ],
  s = cosine similarity / τ, averaged over all (anchor, positive) pairs of the batch.

Defaults are the authors' (α = 1.0, β = 0.8, τ = 0.1, projection 512 → 128 with BatchNorm). Any
number of groups; samples of unknown group (−1) are left out of CE(d(z̄), s) only. The backbone
must be trainable. MEDFAIR did not benchmark FairDisCo; our search grid follows MEDFAIR's practice
for the other regularised methods: α, β ~ U(0.01, 5), lr ~ U(1e-5, 1e-3).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from medequity.methods.adversarial import require_trainable_backbone
from medequity.methods.base import Method, register_method


def confusion_loss(group_logits: torch.Tensor) -> torch.Tensor:
    """−mean_i (1/K) Σ_k log softmax(group_logits_i)_k: CE to the uniform distribution (minimum log K)."""
    return -torch.log_softmax(group_logits, dim=1).mean(dim=1).mean()


def supervised_contrastive_loss(projections: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """FairDisCo's SupCon (module docstring): mean over (anchor, positive) pairs; 0 without pairs."""
    z = F.normalize(projections, dim=1)
    similarity = z @ z.T / temperature
    labels = labels.reshape(-1, 1)
    same = labels == labels.T
    positives = same & ~torch.eye(len(z), dtype=torch.bool, device=z.device)
    if not bool(positives.any()):
        return similarity.sum() * 0.0
    # log Σ_{n: other label} exp(s_in), −inf when there is no negative
    log_negatives = torch.logsumexp(similarity.masked_fill(same, float("-inf")), dim=1, keepdim=True)
    # −log(e^{s_ij} / (e^{s_ij} + Σ_n e^{s_in})) = log(1 + e^{log_neg − s_ij}) = softplus(log_neg − s_ij)
    per_pair = F.softplus(log_negatives - similarity)
    return per_pair[positives].mean()


@register_method
class FairDisCo(Method):
    """Confusion-loss disentanglement of S + supervised contrastive learning of Y (Du et al. 2022)."""

    name = "fairdisco"
    defaults = {"alpha": 1.0, "beta": 0.8, "temperature": 0.1, "projection_dim": 128, "projection_hidden": 512}
    search_space: ClassVar[dict[str, Any]] = {"alpha": ("uniform", 0.01, 5.0), "beta": ("uniform", 0.01, 5.0),
                                              "lr": ("uniform", 1e-5, 1e-3)}

    def __init__(self, **params):
        super().__init__(**params)
        self.require_non_negative("alpha", "beta")
        if not float(self.params["temperature"]) > 0:
            raise ValueError(f"fairdisco's temperature must be > 0; got {self.params['temperature']!r}")

    def setup(self, model, train, config) -> None:
        require_trainable_backbone(model, "FairDisCo")
        if train.n_groups < 2:
            raise ValueError(f"FairDisCo needs at least 2 groups; the attribute has {train.n_groups}")
        d, hidden = int(model.feature_dim), int(self.params["projection_hidden"])
        self.extra["sensitive"] = nn.Linear(d, train.n_groups)
        self.extra["projection"] = nn.Sequential(nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                                 nn.Linear(hidden, int(self.params["projection_dim"])))

    def terms(self, model, batch: dict) -> dict[str, torch.Tensor]:
        z = model.features(batch["x"])
        groups = batch["group"]
        known = groups >= 0
        sensitive = self.extra["sensitive"]
        sensitive_ce = (F.cross_entropy(sensitive(z.detach()[known]), groups[known].long()) if bool(known.any())
                        else z.sum() * 0.0)
        projection = self.extra["projection"]
        projected = projection(z) if len(z) > 1 or not projection.training else None  # BatchNorm1d needs 2 samples
        return {"task": self.per_sample_loss(model.head(z).squeeze(-1), batch["y"]).mean(),
                "confusion": confusion_loss(sensitive(z)),
                "sensitive": sensitive_ce,
                "contrastive": (supervised_contrastive_loss(projected, batch["y"], float(self.params["temperature"]))
                                if projected is not None else z.sum() * 0.0)}

    def loss(self, model, batch: dict) -> torch.Tensor:
        t = self.terms(model, batch)
        return (t["task"] + float(self.params["alpha"]) * t["confusion"] + t["sensitive"]
                + float(self.params["beta"]) * t["contrastive"])
