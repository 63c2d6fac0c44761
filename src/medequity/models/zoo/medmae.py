"""MedMAE (Xiao et al. 2023, WACV "Delving into masked autoencoders for multi-label thorax disease classification").

The authors' ``vit-b_CXR_0.5M_mae.pth`` (``lambert-x/medical_mae``) is MAE's training checkpoint:
``{"model": ...}`` with the ViT-B/16 encoder in timm's names (``cls_token``, ``pos_embed``,
``patch_embed.proj``, ``blocks.N.*``, ``norm``) and MAE's decoder (``mask_token``, ``decoder_*``),
which is unused.

Feature: the class token after the final norm (MAE's linear probing, ``--cls_token``; FairMedFM
likewise). Preprocessing: the authors' chest X-ray statistics (mean 0.5056, std 0.252), 224 px.
"""

from __future__ import annotations

from typing import Any

from medequity.models.registry import Backbone
from medequity.models.zoo.base import ZooEntry, merge, register_zoo, zoo_backbone

MEDMAE = ZooEntry(
    name="medmae", paper="Xiao et al. 2023, MedMAE (FairMedFM App. A.2.1)",
    architecture="timm ViT-B/16 (class-token pooling)",
    expected_file="vit-b_CXR_0.5M_mae.pth: {'model': ...}, keys cls_token, pos_embed, patch_embed.proj.*, blocks.N.*, "
                  "norm.*, mask_token, decoder_*",
    feature_layer="class token after the final norm", feature_dim=768, input_size=224,
    mean=(0.5056,) * 3, std=(0.252,) * 3, licence="Apache-2.0 (repository)",
    allow_unexpected=("mask_token", "decoder_*", "head.*"),
)
MEDMAE_ARCH: dict[str, Any] = {"img_size": 224, "patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12,
                               "mlp_ratio": 4.0, "qkv_bias": True}


@register_zoo(MEDMAE)
def medmae(*, arch: dict[str, Any] | None = None, **_: Any) -> Backbone:
    """MedMAE's ViT-B/16 encoder; ``arch`` overrides timm ViT arguments (tests: tiny)."""
    from timm.models.vision_transformer import VisionTransformer

    from medequity.models.timm_backbones import timm_module_groups

    config = merge(MEDMAE_ARCH, arch)
    module = VisionTransformer(num_classes=0, global_pool="token", **config)
    backbone = zoo_backbone(MEDMAE, module, module_groups=lambda: timm_module_groups(module), config={"arch": config})
    backbone.feature_dim = int(config["embed_dim"])
    backbone.input_size = int(config["img_size"])
    return backbone
