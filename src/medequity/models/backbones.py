"""Vision backbones created by name, in the style of ``timm.create_model``.

``create_backbone("resnet18")`` (any timm model), ``create_backbone("small_cnn")`` (a tiny CNN of
ours for CPU demos and tests), ``create_backbone("open_clip:ViT-B-32")`` (the image tower of an
open_clip model). Weights come from ``checkpoint=`` (a local file or folder, loaded without
executing code) or stay randomly initialised; nothing is downloaded. A backbone maps images
(B, C, H, W) to features (B, D) and says which input it expects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medequity.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from medequity.models.checkpoint import load_weights
from medequity.registry import Registry


@dataclass
class Backbone:
    """A feature extractor and what it needs: input size, normalisation, feature size."""

    name: str
    module: nn.Module
    feature_dim: int
    input_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    config: dict[str, Any] = field(default_factory=dict)  # how it was created (for cache keys and records)
    # Module-name groups for PEFT masks (FairTune): name -> list of parameter-name prefixes.
    module_groups: Callable[[], dict[str, list[str]]] | None = None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images)

    def transform_config(self) -> dict[str, Any]:
        """The 2D preprocessing this backbone expects (FairMedFM D.1.1 for 224-pixel models)."""
        if self.input_size >= 224:
            return {"name": "2d", "resize": 256, "crop": 224, "mean": list(self.mean), "std": list(self.std)}
        return {"name": "2d", "resize": self.input_size, "crop": None, "mean": list(self.mean), "std": list(self.std)}


BACKBONES: Registry[Backbone] = Registry("backbone")


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


@BACKBONES.register("small_cnn")
def _small_cnn(*, input_size: int = 64, width: int = 16, feature_dim: int = 64, in_channels: int = 3, **_: Any) -> Backbone:
    module = SmallCNN(in_channels, width, feature_dim)
    backbone = Backbone("small_cnn", module, feature_dim, input_size=input_size,
                        config={"width": width, "feature_dim": feature_dim, "in_channels": in_channels})
    # One group per conv block (conv + BatchNorm; features.4i and .4i+1), so the ``mask`` usage and
    # FairTune's "groups" space work on this CNN, which overfits small data (FairTune Fig. 1).
    blocks = [(4 * i, min(4 * i + 3, len(module.features) - 1)) for i in range(4)]
    backbone.module_groups = lambda: {f"features.{a}-{b}": [f"features.{a}.", f"features.{a + 1}."] for a, b in blocks}
    return backbone


def _timm_backbone(name: str, *, input_size: int | None = None, **kwargs: Any) -> Backbone:
    import timm

    options = dict(kwargs)
    if input_size is not None and any(k in name for k in ("vit", "deit", "swin", "eva", "beit")):
        options["img_size"] = input_size
    module = timm.create_model(name, pretrained=False, num_classes=0, **options)
    cfg = getattr(module, "pretrained_cfg", {}) or {}
    size = input_size or int(cfg.get("input_size", (3, 224, 224))[-1])
    mean = tuple(cfg.get("mean", IMAGENET_MEAN))
    std = tuple(cfg.get("std", IMAGENET_STD))
    backbone = Backbone(name, module, int(module.num_features), input_size=size, mean=mean, std=std,
                        config={"timm": name, **options})
    backbone.module_groups = lambda: timm_module_groups(module)
    return backbone


def timm_module_groups(module: nn.Module) -> dict[str, list[str]]:
    """One group per transformer block part (attention, MLP, LayerNorms) — FairTune's 36-bit ViT
    space — or per top-level stage for CNNs: the "one bit per named module group" generalisation."""
    groups: dict[str, list[str]] = {}
    blocks = getattr(module, "blocks", None)
    if blocks is not None:
        for i, block in enumerate(blocks):
            groups[f"blocks.{i}.attn"] = [f"blocks.{i}.attn."]
            groups[f"blocks.{i}.mlp"] = [f"blocks.{i}.mlp."]
            groups[f"blocks.{i}.norm"] = [f"blocks.{i}.norm1.", f"blocks.{i}.norm2."]
        return groups
    for name, child in module.named_children():
        if any(True for _ in child.parameters()):
            groups[name] = [f"{name}."]
    return groups


def create_backbone(name: str, *, checkpoint: str | Path | None = None, cache_dir: str | Path | None = None, **kwargs: Any) -> Backbone:
    """Create a backbone by name; ``checkpoint`` loads local weights (safely), else random init.

    Names: a registered name (``small_cnn``), ``timm:<model>`` or any timm model name, or
    ``open_clip:<model>`` (registered by :mod:`medequity.models.clip` when open_clip is present).
    ``checkpoint="synthetic:<modality>"`` uses our own weights pre-trained on unbiased synthetic
    data of that modality (:mod:`medequity.experiment.pretrain`), trained on first use and cached.
    """
    if name in BACKBONES:
        backbone = BACKBONES.create(name, **kwargs)
    elif name.startswith("open_clip:"):
        from medequity.models import clip  # noqa: F401 - registers the open_clip factory

        backbone = BACKBONES.create("open_clip", model_name=name.split(":", 1)[1], **kwargs)
    else:
        import timm

        timm_name = name.split(":", 1)[1] if name.startswith("timm:") else name
        if not timm.is_model(timm_name):
            close = timm.list_models(f"*{timm_name.split('_')[0]}*")[:8]
            raise KeyError(f"unknown backbone {name!r}; registered: {BACKBONES.names()}; timm models like it: {close}")
        backbone = _timm_backbone(timm_name, **kwargs)
    if isinstance(checkpoint, str) and checkpoint.startswith("synthetic:"):
        from medequity.experiment.pretrain import synthetic_checkpoint

        checkpoint = synthetic_checkpoint(name, checkpoint, cache_dir=cache_dir, backbone_options=kwargs)
    if checkpoint is not None:
        report = load_weights(backbone.module, checkpoint)
        backbone.config["checkpoint"] = str(checkpoint)
        backbone.config["unexpected_keys"] = list(report.unexpected)[:20]
    return backbone
