"""``small_cnn``: a tiny CNN of ours that trains in seconds on a CPU, for demos and tests."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medequity.models.registry import Backbone, register_backbone


class SmallCNN(nn.Module):
    """Four conv blocks and global average pooling: a backbone that trains in seconds on a CPU."""

    def __init__(self, in_channels: int = 3, width: int = 16, feature_dim: int = 64):
        super().__init__()
        layers, channels = [], in_channels
        for out in (width, width * 2, width * 4, feature_dim):
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels = out
        self.features = nn.Sequential(*layers[:-1])  # no pooling after the last block
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)


@register_backbone("small_cnn")
def small_cnn_backbone(*, input_size: int = 64, width: int = 16, feature_dim: int = 64, in_channels: int = 3,
                       **_: Any) -> Backbone:
    module = SmallCNN(in_channels, width, feature_dim)
    backbone = Backbone("small_cnn", module, feature_dim, input_size=input_size,
                        config={"width": width, "feature_dim": feature_dim, "in_channels": in_channels})
    # One group per conv block (conv + BatchNorm; features.4i and .4i+1), so the ``mask`` usage and
    # FairTune's "groups" space work on this CNN, which overfits small data (FairTune Fig. 1).
    blocks = [(4 * i, min(4 * i + 3, len(module.features) - 1)) for i in range(4)]
    backbone.module_groups = lambda: {f"features.{a}-{b}": [f"features.{a}.", f"features.{a + 1}."] for a, b in blocks}
    return backbone
