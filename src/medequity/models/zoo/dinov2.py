"""DINOv2 ViT-B/14 (Oquab et al. 2023) and RAD-DINO (Pérez-García et al. 2025, a DINOv2 trained on chest X-rays).

* ``dinov2-vitb14``: Meta's ``dinov2_vitb14_pretrain.pth``, a plain state dict in the DINOv2 repo's
  names (``blocks.N.attn.qkv``, ``blocks.N.ls1.gamma``, ``mask_token`` …), which timm's ViT shares
  (``mask_token`` is only used by the iBOT loss: allowed unused). Built at 518 px (the checkpoint's
  37×37 position grid) and resampled to the input size, as DINOv2's hub model does for 224-px input.
  Feature: DINOv2's linear-evaluation input, the final-norm class token concatenated with the mean
  of the patch tokens (paper §7.1, ``dinov2_vitb14_lc``: ``(1 + 1) × 768``).
* ``rad-dino``: Microsoft's Hugging Face folder (``config.json`` + ``model.safetensors``, a
  ``transformers`` ``Dinov2Model``), built from its config with ``local_files_only``. Feature: the
  CLS token after the final layer norm (``pooler_output``), as the model card's examples use.
  Preprocessing: 518 px, mean 0.5307, std 0.2583 (the folder's ``preprocessor_config.json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medequity.models.registry import Backbone
from medequity.models.zoo.base import IMAGENET, ZooEntry, block_groups, merge, register_zoo, zoo_backbone

DINOV2 = ZooEntry(
    name="dinov2-vitb14", paper="Oquab et al. 2023, DINOv2 (FairMedFM App. A.2.1)",
    architecture="timm ViT-B/14, LayerScale, 518-px position grid (resampled)",
    expected_file="dinov2_vitb14_pretrain.pth: plain state dict, keys cls_token, pos_embed, mask_token, "
                  "patch_embed.proj.*, blocks.N.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1,mlp.fc2,ls2.gamma}.*, norm.*",
    feature_layer="[class token, mean patch token] after the final norm (DINOv2 linear eval)",
    feature_dim=1536, input_size=224, mean=IMAGENET[0], std=IMAGENET[1],
    licence="Apache-2.0 (code and weights)", allow_unexpected=("mask_token",),
)
DINOV2_ARCH: dict[str, Any] = {"img_size": 518, "patch_size": 14, "embed_dim": 768, "depth": 12, "num_heads": 12,
                               "mlp_ratio": 4.0, "init_values": 1e-5}


def dinov2_module(arch: dict[str, Any]) -> torch.nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    class DINOv2Features(VisionTransformer):
        """timm's ViT whose head is DINOv2's linear-evaluation feature: [CLS, mean(patches)]."""

        def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
            return torch.cat([x[:, 0], x[:, self.num_prefix_tokens:].mean(dim=1)], dim=-1)

    return DINOv2Features(num_classes=0, dynamic_img_size=True, **arch)


@register_zoo(DINOV2)
def dinov2_vitb14(*, arch: dict[str, Any] | None = None, **_: Any) -> Backbone:
    """DINOv2 ViT-B/14; ``arch`` overrides timm ViT arguments (tests build a tiny one)."""
    from medequity.models.timm_backbones import timm_module_groups

    config = merge(DINOV2_ARCH, arch)
    module = dinov2_module(config)
    backbone = zoo_backbone(DINOV2, module, module_groups=lambda: timm_module_groups(module), config={"arch": config})
    backbone.feature_dim = 2 * int(config["embed_dim"])
    return backbone


RAD_DINO = ZooEntry(
    name="rad-dino", paper="Pérez-García et al. 2025, RAD-DINO (Nature Machine Intelligence)",
    architecture="transformers Dinov2Model ViT-B/14 (built from config.json, local_files_only)",
    expected_file="Hugging Face folder microsoft/rad-dino: config.json + model.safetensors, keys embeddings.*, "
                  "encoder.layer.N.{norm1,attention.attention.{query,key,value},"
                  "attention.output.dense,layer_scale1.lambda1,...}, layernorm.*",
    feature_layer="CLS token after the final layer norm (pooler_output)",
    feature_dim=768, input_size=518, resize=518, mean=(0.5307,) * 3, std=(0.2583,) * 3,
    licence="MSRLA (Microsoft Research Licence Agreement: research use only)",
    allow_unexpected=("embeddings.mask_token",),
    # The published file uses transformers 4's names; transformers 5's Dinov2 calls them q/k/v/o_proj.
    key_map=((r"re:\.attention\.attention\.query\.", ".attention.q_proj."),
             (r"re:\.attention\.attention\.key\.", ".attention.k_proj."),
             (r"re:\.attention\.attention\.value\.", ".attention.v_proj."),
             (r"re:\.attention\.output\.dense\.", ".attention.o_proj.")),
    formats=("Hugging Face folder (config.json + model.safetensors)", ".safetensors", ".pth/.bin (weights_only)"),
)
RAD_DINO_CONFIG: dict[str, Any] = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                                   "mlp_ratio": 4, "patch_size": 14, "image_size": 518,
                                   "layerscale_value": 1.0, "layer_norm_eps": 1e-6}


#: Entries of a Hugging Face Dinov2 config.json that define the architecture (others are metadata).
Dinov2ConfigKeys = frozenset({"hidden_size", "num_hidden_layers", "num_attention_heads", "mlp_ratio",
                              "patch_size", "image_size", "layerscale_value", "layer_norm_eps", "qkv_bias",
                              "use_swiglu_ffn", "num_channels", "hidden_act"})


def rad_dino_module(config: dict[str, Any]) -> torch.nn.Module:
    from transformers import Dinov2Config, Dinov2Model

    class RadDinoFeatures(Dinov2Model):
        """``forward(images)`` is the CLS token after the final layer norm (``pooler_output``)."""

        def forward(self, pixel_values: torch.Tensor, **_: Any) -> torch.Tensor:  # type: ignore[override]
            return super().forward(pixel_values=pixel_values).pooler_output

    return RadDinoFeatures(Dinov2Config(**config))


@register_zoo(RAD_DINO)
def rad_dino(*, arch: dict[str, Any] | None = None, config_file: str | Path | None = None, **_: Any) -> Backbone:
    """RAD-DINO; ``config_file`` (the folder's ``config.json``) replaces the built-in ViT-B/14 config."""
    config = dict(RAD_DINO_CONFIG)
    if config_file is not None:
        import json

        folder_config = json.loads(Path(config_file).read_text(encoding="utf-8"))
        config.update({k: v for k, v in folder_config.items() if k in Dinov2ConfigKeys})
    config = merge(config, arch)
    module = rad_dino_module(config)

    def groups() -> dict[str, list[str]]:
        return block_groups(module, "encoder.layer", attn=["attention"], mlp=["mlp"], norms=["norm1", "norm2"])

    backbone = zoo_backbone(RAD_DINO, module, module_groups=groups, config={"arch": config})
    backbone.feature_dim = int(config["hidden_size"])
    return backbone

