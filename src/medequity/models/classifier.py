"""The trainable model: a backbone (possibly frozen or identity) and a linear head.

Binary tasks use one logit (score = sigmoid). Methods reach the representation through
``features(x)`` and the head through ``head`` (adversarial heads, per-group heads, contrastive
losses); a frozen backbone stays in eval mode during training, so BatchNorm statistics do not
drift (FairMedFM's LP left BatchNorm in train mode).
"""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    def __init__(self, backbone: nn.Module | None, feature_dim: int, n_outputs: int = 1, *, frozen_backbone: bool = False):
        super().__init__()
        self.backbone = backbone if backbone is not None else nn.Identity()
        self.head = nn.Linear(feature_dim, n_outputs)
        self.feature_dim = feature_dim
        self.frozen_backbone = frozen_backbone
        if frozen_backbone:
            for p in self.backbone.parameters():
                p.requires_grad_(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(-1)

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.frozen_backbone:
            self.backbone.eval()
        return self
