"""BiomedCLIP (Zhang et al. 2023): open_clip ViT-B/16 image tower + PubMedBERT text tower, 15M PMC pairs.

Published as the Hugging Face folder ``microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``:
``open_clip_config.json`` + ``open_clip_pytorch_model.bin`` whose keys are open_clip's
CustomTextCLIP names: ``visual.trunk.*`` (timm ``vit_base_patch16_224``), ``visual.head.proj.weight``,
``text.transformer.*`` (a BERT without pooler), ``text.proj.{0,2}.weight`` (MLP projection),
``logit_scale``. open_clip itself would fetch the BERT config from the hub; here the text tower is
open_clip's ``HFTextEncoder`` built from a local ``BertConfig`` (PubMedBERT-base-uncased's shape,
vocabulary 30522) with no download. Tokenizer: PubMedBERT's WordPiece from a local folder
(``tokenizer=<folder>``, or the checkpoint folder when it holds ``vocab.txt``/``tokenizer.json``),
256 tokens.

Feature: the projected image embedding (``encode_image``), shared with CLIP zero-shot/CLIP-Adapt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from medequity.models.registry import Backbone
from medequity.models.zoo.base import (
    OPENAI_CLIP,
    ZooEntry,
    attach_tokenizer,
    freeze_text_tower,
    merge,
    register_zoo,
    zoo_backbone,
)

BIOMEDCLIP = ZooEntry(
    name="biomedclip", paper="Zhang et al. 2023, BiomedCLIP (FairMedFM App. A.2.1)",
    architecture="open_clip timm ViT-B/16 image tower + HF BERT (PubMedBERT) text tower, MLP text projection",
    expected_file="HF folder microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224: open_clip_pytorch_model.bin, "
                  "keys visual.trunk.*, visual.head.proj.weight, text.transformer.*, text.proj.{0,2}.weight, logit_scale",
    feature_layer="projected image embedding (encode_image)", feature_dim=512, input_size=224,
    mean=OPENAI_CLIP[0], std=OPENAI_CLIP[1], licence="MIT",
    formats=("Hugging Face/open_clip folder (open_clip_pytorch_model.bin)", ".safetensors", ".pth/.bin (weights_only)"),
    text="PubMedBERT WordPiece (tokenizer=<folder> with vocab.txt), 256 tokens",
    allow_unexpected=("text.transformer.embeddings.position_ids", "text.transformer.pooler.*"),
)
BIOMEDCLIP_ARCH: dict[str, Any] = {
    "embed_dim": 512,
    "vision_cfg": {"timm_model_name": "vit_base_patch16_224", "timm_model_pretrained": False, "timm_pool": "",
                   "timm_proj": "linear", "image_size": 224},
    "text_cfg": {"hf_proj_type": "mlp", "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 256},
    # PubMedBERT-base-uncased-abstract's BertConfig (the architecture; no weights from it).
    "bert": {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
             "intermediate_size": 3072, "max_position_embeddings": 512, "type_vocab_size": 2},
}


class BiomedCLIPModule(nn.Module):
    """open_clip's CustomTextCLIP layout (``visual``, ``text``, ``logit_scale``), built offline."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        from open_clip.hf_model import HFTextEncoder
        from open_clip.model import _build_vision_tower
        from transformers import BertConfig

        embed_dim = int(config["embed_dim"])
        self.visual = _build_vision_tower(embed_dim, config["vision_cfg"])
        text_cfg = config["text_cfg"]
        self.text = HFTextEncoder("bert", output_dim=embed_dim, config=BertConfig(**config["bert"]),
                                  pooler_type=text_cfg["hf_pooler_type"], proj_type=text_cfg["hf_proj_type"])
        self.text.transformer.pooler = None  # BiomedCLIP's BERT has no pooler (CLS of the last hidden state)
        self.logit_scale = nn.Parameter(torch.ones([]) * torch.log(torch.tensor(1 / 0.07)))
        self.tokenizer: Any = None

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text(tokens)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_image(images)

    @staticmethod
    def is_image_parameter(name: str) -> bool:
        return name.startswith("visual.")


@register_zoo(BIOMEDCLIP)
def biomedclip(*, arch: dict[str, Any] | None = None, tokenizer: str | Path | None = None, **_: Any) -> Backbone:
    """BiomedCLIP; ``arch`` overrides ``embed_dim``/``vision_cfg``/``text_cfg``/``bert`` (tests: tiny)."""
    from medequity.models.clip import clip_module_groups

    config = merge(BIOMEDCLIP_ARCH, arch)
    module = BiomedCLIPModule(config)
    freeze_text_tower(module, module.is_image_parameter)
    context = int(config["text_cfg"]["context_length"])
    find_tokenizer = attach_tokenizer(module, tokenizer, context)

    backbone = zoo_backbone(BIOMEDCLIP, module, module_groups=lambda: clip_module_groups(module), on_load=find_tokenizer,
                            config={"arch": config})
    backbone.feature_dim = int(config["embed_dim"])
    return backbone
