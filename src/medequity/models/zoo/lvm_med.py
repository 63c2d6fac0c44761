"""LVM-Med (Nguyen et al. 2023, NeurIPS): second-order graph-matching pre-training on 1.3M medical images.

FairMedFM's LVM-Med is the ViT-B released as ``lvmmed_vit.pth``: a plain state dict of SAM's ViT-B
image encoder (``patch_embed.proj``, ``blocks.N.{norm1,attn.qkv,attn.proj,attn.rel_pos_h,
attn.rel_pos_w,norm2,mlp.lin1,mlp.lin2}``, ``neck.*``) without absolute position embeddings (relative
ones only), 14-token windows with global attention in blocks 2, 5, 8, 11. Built from
``segment_anything``'s ``ImageEncoderViT``; relative-position tables are resampled to the input size.

Feature: the 768-d average over tokens of the last block's output (LVM-Med's ViT classification
wrapper; the SAM neck is loaded but unused). Preprocessing: ImageNet statistics, 224 px (FairMedFM).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from medequity.models.registry import Backbone
from medequity.models.zoo.base import IMAGENET, ZooEntry, merge, register_zoo, zoo_backbone

LVM_MED = ZooEntry(
    name="lvm-med", paper="Nguyen et al. 2023, LVM-Med (FairMedFM App. A.2.1)",
    architecture="segment_anything ImageEncoderViT ViT-B/16 (relative positions, windowed attention)",
    expected_file="lvmmed_vit.pth: plain state dict, keys patch_embed.proj.*, blocks.N.{norm1,attn.qkv,attn.proj,"
                  "attn.rel_pos_h,attn.rel_pos_w,norm2,mlp.lin1,mlp.lin2}.*, neck.*",
    feature_layer="mean over tokens of the last block (before SAM's neck)", feature_dim=768, input_size=224,
    mean=IMAGENET[0], std=IMAGENET[1], licence="CC BY-NC-ND 4.0 (weights; research use)",
)
LVM_MED_ARCH: dict[str, Any] = {"img_size": 1024, "patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12,
                                "window_size": 14, "global_attn_indexes": (2, 5, 8, 11), "out_chans": 256}


def lvm_med_module(arch: dict[str, Any]) -> torch.nn.Module:
    from segment_anything.modeling.image_encoder import ImageEncoderViT

    class LVMMedFeatures(ImageEncoderViT):
        """SAM's ViT-B encoder read before the neck, averaged over tokens."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.patch_embed(x)
            for block in self.blocks:
                x = block(x)
            return x.mean(dim=(1, 2))  # (B, H, W, C) -> (B, C)

    return LVMMedFeatures(mlp_ratio=4, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), qkv_bias=True,
                          use_abs_pos=False, use_rel_pos=True, **{**arch, "global_attn_indexes": tuple(arch["global_attn_indexes"])})


@register_zoo(LVM_MED)
def lvm_med(*, arch: dict[str, Any] | None = None, **_: Any) -> Backbone:
    """LVM-Med ViT-B; ``arch`` overrides the encoder's arguments (tests: tiny)."""
    from medequity.models.timm_backbones import timm_module_groups

    config = merge(LVM_MED_ARCH, arch)
    module = lvm_med_module(config)
    backbone = zoo_backbone(LVM_MED, module, module_groups=lambda: timm_module_groups(module), config={"arch": config})
    backbone.feature_dim = int(config["embed_dim"])
    return backbone
