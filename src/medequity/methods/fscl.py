"""FSCL: fair supervised contrastive loss (Park, Lee, Lee, Hwang, Kim, Byun, CVPR 2022).

Park et al., "Fair contrastive learning for facial attribute classification" (a FairTune
baseline), eq. 3–5. On the L2-normalised projection z of the representation, for each anchor i

    ℓ_i = −1/|P(i)| Σ_{p ∈ P(i)} log [ exp(z_i·z_p/τ) / Σ_{n ∈ N(i)} exp(z_i·z_n/τ) ]
    P(i) = {p ≠ i : y_p = y_i}                    (positives: same label, any group)
    N(i) = {n : y_n ≠ y_i, s_n = s_i}             (negatives: other label, *same* group only)

Positives of the other group are pulled in, while negatives of the other group are left out of
the denominator, so the anchor is never pushed away from the other group for its group alone:
the group-driven part of SupCon's pull/push is removed and the representation stops encoding S
beyond what the label explains. τ = 0.1 (the paper). As in the authors' code, an anchor whose
negative set is empty uses denominator 1, and anchors without positives are skipped; samples of
unknown group (−1) are nobody's negatives. We use one view per sample (no two-crop
augmentation pipeline here), the loss is the mean over anchors, and the authors' constant factor
τ/τ_base and the optional group-wise normalisation (FSCL+) are left out.

Two stages (as in the paper: contrastive pre-training, then a linear classifier), both run by the
trainer:

1. ``contrastive``: backbone + projection head (``extra["projection"]``, SupCon's MLP
   d → d → ``projection_dim``) trained with the FSCL loss; the model's head is trained alongside on
   *detached* features (it does not shape the representation) so the trainer's validation
   criterion — and checkpoint selection — measures the representation being learnt.
2. ``classifier``: backbone and projection frozen, the head re-initialised and trained with BCE
   for ``classifier_epochs`` (default: the configured epochs).

FSCL shapes the encoder, so the backbone must be trainable (fine-tuning or PEFT usages, not
linear probing on cached features).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from medequity.methods.base import Method, register_method

if TYPE_CHECKING:
    from medequity.training.data import SplitData
    from medequity.training.trainer import FitResult, TrainConfig, Trainer


def fair_supervised_contrastive_loss(z: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor,
                                     temperature: float = 0.1) -> torch.Tensor:
    """Park et al. 2022 eq. 5 on one batch of projections ``z`` (normalised here)."""
    z = F.normalize(z, dim=1)
    similarity = z @ z.T / temperature
    n = len(z)
    labels, groups = labels.reshape(-1, 1), groups.reshape(-1, 1)
    same_label = labels == labels.T
    same_group = (groups == groups.T) & (groups >= 0)
    positives = same_label & ~torch.eye(n, dtype=torch.bool, device=z.device)
    negatives = ~same_label & same_group
    has_negatives = negatives.any(dim=1)
    # Masked entries get a large negative value (not −inf) so rows without negatives stay finite.
    log_denominator = torch.logsumexp(similarity.masked_fill(~negatives, -1e9), dim=1)
    log_denominator = torch.where(has_negatives, log_denominator, torch.zeros_like(log_denominator))
    log_probability = similarity - log_denominator[:, None]
    n_positives = positives.sum(dim=1)
    anchors = n_positives > 0
    if not anchors.any():
        return similarity.sum() * 0.0
    mean_log_probability = (log_probability * positives).sum(dim=1)[anchors] / n_positives[anchors]
    return -mean_log_probability.mean()


@register_method
class FSCL(Method):
    """Fair supervised contrastive pre-training, then a linear classifier (Park et al. 2022)."""

    name = "fscl"
    defaults = {"temperature": 0.1, "projection_dim": 128, "classifier_epochs": None}

    def __init__(self, **params):
        super().__init__(**params)
        self.stage = "contrastive"

    def setup(self, model, train, config) -> None:
        if "projection" not in self.extra:
            d = model.feature_dim
            self.extra["projection"] = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True),
                                                     nn.Linear(d, self.params["projection_dim"]))

    def loss(self, model, batch):
        if self.stage != "contrastive":
            return super().loss(model, batch)
        features = model.features(batch["x"])
        contrastive = fair_supervised_contrastive_loss(self.extra["projection"](features), batch["y"], batch["group"],
                                                       self.params["temperature"])
        probe_logits = model.head(features.detach()).squeeze(-1)
        return contrastive + F.binary_cross_entropy_with_logits(probe_logits, batch["y"])

    def fit(self, model: nn.Module, train: SplitData, val: SplitData, config: TrainConfig, trainer: Trainer) -> FitResult:
        from medequity.training.trainer import FitResult

        backbone = [p for p in model.backbone.parameters() if p.requires_grad]
        if not backbone:
            raise ValueError("FSCL trains the encoder's representation; use a usage with a trainable backbone "
                             "(e.g. 'ft'), not linear probing on frozen features")
        self.stage = "contrastive"
        contrastive = trainer.fit(model, self, train, val, config, stage="contrastive")

        was_frozen = model.frozen_backbone
        for p in backbone + list(self.extra.parameters()):
            p.requires_grad_(False)
        model.frozen_backbone = True  # keeps BatchNorm statistics of the learnt encoder fixed
        model.head.reset_parameters()
        self.stage = "classifier"
        epochs = self.params["classifier_epochs"] or config.epochs
        try:
            classifier = trainer.fit(model, self, train, val, config.replace(epochs=epochs), stage="classifier")
        finally:
            for p in backbone + list(self.extra.parameters()):
                p.requires_grad_(True)
            model.frozen_backbone = was_frozen
        return FitResult(pd.concat([contrastive.history, classifier.history], ignore_index=True), classifier.best_epoch,
                         classifier.best_value, classifier.selection, contrastive.seconds + classifier.seconds,
                         stages={"contrastive": contrastive, "classifier": classifier})
