"""BLIP ViT-B (Li et al. 2022): image–text contrastive (ITC) embeddings from the retrieval model.

Published for ``transformers`` as the folder ``Salesforce/blip-itm-base-coco`` (``config.json`` +
``model.safetensors``/``pytorch_model.bin``), a ``BlipForImageTextRetrieval``: keys
``vision_model.*``, ``text_encoder.*`` (BERT with cross-attention), ``vision_proj``, ``text_proj``,
``itm_head``. Built from its config with ``local_files_only`` (``config_file=`` the folder's
``config.json``; otherwise BLIP ViT-B's defaults). The Salesforce repository's own
``model_base.pth`` uses other names; convert it to the Hugging Face layout first (``transformers``
ships ``convert_blip_original_pytorch_to_hf.py``).

Feature: BLIP's ITC image embedding, ``vision_proj`` of the ViT's [CLS] token (256-d), the one its
zero-shot retrieval compares with ``text_proj`` of the text [CLS]. The text tower is unimodal (no
cross-attention inputs). BLIP's ITC temperature is not stored in this file; zero-shot uses
CLIP's 100 (FairMedFM's scale; the AUC of a two-class prompt score does not depend on it).
Tokenizer: BERT-base-uncased WordPiece from a local folder, 35 tokens. Preprocessing: 384 px, CLIP's mean/std.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medequity.models.registry import Backbone
from medequity.models.zoo.base import (
    OPENAI_CLIP,
    ZooEntry,
    attach_tokenizer,
    block_groups,
    freeze_text_tower,
    merge,
    register_zoo,
    zoo_backbone,
)

BLIP = ZooEntry(
    name="blip", paper="Li et al. 2022, BLIP (FairMedFM App. A.2.1)",
    architecture="transformers BlipForImageTextRetrieval ViT-B/16 + BERT (ITC heads)",
    expected_file="HF folder Salesforce/blip-itm-base-coco: config.json + model.safetensors, keys vision_model.*, "
                  "text_encoder.*, vision_proj.*, text_proj.*, itm_head.*",
    feature_layer="ITC image embedding: vision_proj of the ViT [CLS] token", feature_dim=256, input_size=384, resize=384,
    mean=OPENAI_CLIP[0], std=OPENAI_CLIP[1], licence="BSD-3-Clause",
    formats=("Hugging Face folder (config.json + model.safetensors / pytorch_model.bin)", ".safetensors"),
    text="BERT-base-uncased WordPiece (tokenizer=<folder>), 35 tokens",
    allow_unexpected=("*.position_ids",),
)
BLIP_ARCH: dict[str, Any] = {"vision_config": {"image_size": 384}, "text_config": {}, "image_text_hidden_size": 256}
LOGIT_SCALE = 100.0


def blip_module(config: dict[str, Any]) -> nn.Module:
    from transformers import BlipConfig, BlipForImageTextRetrieval

    class BLIPITC(BlipForImageTextRetrieval):
        """``forward(images)`` = ITC image embedding; ``encode_text`` = ITC text embedding."""

        def encode_image(self, images: torch.Tensor) -> torch.Tensor:
            return self.vision_proj(self.vision_model(pixel_values=images)[0][:, 0])

        def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
            pad = getattr(self.tokenizer, "pad_token_id", 0)
            hidden = self.text_encoder(input_ids=tokens, attention_mask=(tokens != pad).long())[0]
            return self.text_proj(hidden[:, 0])

        def forward(self, images: torch.Tensor, *_: Any, **__: Any) -> torch.Tensor:  # type: ignore[override]
            return self.encode_image(images)

        @staticmethod
        def is_image_parameter(name: str) -> bool:
            return name.startswith(("vision_model.", "vision_proj."))

    module = BLIPITC(BlipConfig(**config))
    module.tokenizer = None
    # Not a weight of the file: CLIP's fixed scale (a buffer, so the bundle reads it like open_clip's).
    module.register_buffer("logit_scale", torch.tensor(math.log(LOGIT_SCALE)), persistent=False)
    return module


@register_zoo(BLIP)
def blip(*, arch: dict[str, Any] | None = None, config_file: str | Path | None = None,
         tokenizer: str | Path | None = None, **_: Any) -> Backbone:
    """BLIP ITC; ``config_file`` = the folder's ``config.json``; ``arch`` overrides (tests: tiny)."""
    config = dict(BLIP_ARCH)
    if config_file is not None:
        data = json.loads(Path(config_file).read_text(encoding="utf-8"))
        config = merge(config, {k: data[k] for k in ("vision_config", "text_config", "image_text_hidden_size") if k in data})
    config = merge(config, arch)
    module = blip_module(config)
    freeze_text_tower(module, module.is_image_parameter)
    context = min(35, int(config["text_config"].get("max_position_embeddings", 512)))  # BLIP: 35 tokens
    find_tokenizer = attach_tokenizer(module, tokenizer, context)

    def groups() -> dict[str, list[str]]:
        return block_groups(module, "vision_model.encoder.layers", attn=["self_attn"], mlp=["mlp"],
                            norms=["layer_norm1", "layer_norm2"])

    backbone = zoo_backbone(BLIP, module, module_groups=groups, on_load=find_tokenizer, config={"arch": config})
    backbone.feature_dim = int(config["image_text_hidden_size"])
    size = int(config["vision_config"].get("image_size", 384))
    backbone.input_size = size
    backbone.preprocess = {"resize": size, "crop": size}
    return backbone
