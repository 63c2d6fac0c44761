"""MedCLIP (Wang et al. 2022, EMNLP): Swin-T image tower + Bio_ClinicalBERT text tower, decoupled CXR image/report pairs.

Published as ``medclip-vit-pretrained/pytorch_model.bin``, the state dict of MedCLIP's
``MedCLIPModel(vision_cls=MedCLIPVisionModelViT)``: ``vision_model.model.*`` (a ``transformers``
SwinModel, swin-tiny-patch4-window7-224), ``vision_model.projection_head.weight`` (768→512, no bias),
``text_model.model.*`` (a BertModel), ``text_model.projection_head.weight``, ``logit_scale``. Both
towers are built here from local config objects (no hub). Old files carry buffers newer
``transformers`` recomputes (``position_ids``, ``relative_position_index``): allowed unused.

Image embedding (= feature, as in MedCLIP's ``encode_image`` before normalisation): the Swin
``pooler_output`` projected to 512. Text embedding, as MedCLIP's ``MedCLIPTextModel``: the mean over
tokens of the hidden states of layers 1, 2 and the last, averaged, projected to 512. Tokenizer:
Bio_ClinicalBERT's WordPiece from a local folder, 77 tokens. Preprocessing: MedCLIP's grayscale
statistics (mean 0.5862785803043838, std 0.27950088968644304), 224 px.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from medequity.models.registry import Backbone
from medequity.models.zoo.base import (
    ZooEntry,
    attach_tokenizer,
    block_groups,
    freeze_text_tower,
    merge,
    register_zoo,
    zoo_backbone,
)

SWIN_BLOCK = r"^(vision_model\.model\.encoder\.layers\.\d+\.blocks\.\d+\.)"
MEDCLIP = ZooEntry(
    name="medclip", paper="Wang et al. 2022, MedCLIP (FairMedFM App. A.2.1)",
    architecture="transformers SwinModel (Swin-T) + BertModel (Bio_ClinicalBERT), linear projections to 512",
    expected_file="medclip-vit-pretrained/pytorch_model.bin: keys vision_model.model.*, vision_model.projection_head.weight, "
                  "text_model.model.*, text_model.projection_head.weight, logit_scale",
    feature_layer="projected Swin pooler output (encode_image)", feature_dim=512, input_size=224,
    mean=(0.5862785803043838,) * 3, std=(0.27950088968644304,) * 3, licence="MIT (code); weights per the authors' release",
    formats=("folder with pytorch_model.bin", ".pth/.bin (weights_only)", ".safetensors"),
    text="Bio_ClinicalBERT WordPiece (tokenizer=<folder> with vocab.txt), 77 tokens",
    allow_unexpected=("*.position_ids", "*.relative_position_index", "*.token_type_ids", "text_model.model.pooler.*"),
    # The file was saved with transformers 4, whose Swin names transformers 5 changed (its own
    # conversion_mapping "swin" renames, here for the image tower only: the BERT kept its names).
    key_map=tuple((rf"re:{SWIN_BLOCK}{old}", rf"\1{new}") for old, new in (
        (r"attention\.self\.query\.", "attention.q_proj."), (r"attention\.self\.key\.", "attention.k_proj."),
        (r"attention\.self\.value\.", "attention.v_proj."),
        (r"attention\.self\.relative_position_bias_table$", "attention.relative_position_bias.relative_position_bias_table"),
        (r"attention\.output\.dense\.", "attention.o_proj."), (r"intermediate\.dense\.", "mlp.fc1."),
        (r"output\.dense\.", "mlp.fc2."))),
)
MEDCLIP_ARCH: dict[str, Any] = {
    "embed_dim": 512, "context_length": 77,
    "swin": {"image_size": 224, "patch_size": 4, "embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24],
             "window_size": 7},
    "bert": {"vocab_size": 28996, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
             "intermediate_size": 3072, "max_position_embeddings": 512, "type_vocab_size": 2},
}


class MedCLIPVision(nn.Module):
    def __init__(self, swin: dict[str, Any], embed_dim: int):
        super().__init__()
        from transformers import SwinConfig, SwinModel

        self.model = SwinModel(SwinConfig(**swin))
        self.projection_head = nn.Linear(self.model.num_features, embed_dim, bias=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.model(pixel_values=images).pooler_output)


class MedCLIPText(nn.Module):
    def __init__(self, bert: dict[str, Any], embed_dim: int):
        super().__init__()
        from transformers import BertConfig, BertModel

        self.model = BertModel(BertConfig(**bert), add_pooling_layer=False)
        self.projection_head = nn.Linear(int(bert["hidden_size"]), embed_dim, bias=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states
        # MedCLIPTextModel: stack layers 1, 2 and last -> mean over tokens -> mean over the three.
        pooled = torch.stack([hidden[1], hidden[2], hidden[-1]]).permute(1, 0, 2, 3).mean(2).mean(1)
        return self.projection_head(pooled)


class MedCLIPModule(nn.Module):
    def __init__(self, config: dict[str, Any]):
        super().__init__()
        embed_dim = int(config["embed_dim"])
        self.vision_model = MedCLIPVision(config["swin"], embed_dim)
        self.text_model = MedCLIPText(config["bert"], embed_dim)
        self.logit_scale = nn.Parameter(torch.log(torch.tensor(1 / 0.07)))
        self.tokenizer: Any = None
        self.pad_token_id = 0

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.vision_model(images)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        pad = getattr(self.tokenizer, "pad_token_id", self.pad_token_id)
        return self.text_model(tokens, (tokens != pad).long())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_image(images)

    @staticmethod
    def is_image_parameter(name: str) -> bool:
        return name.startswith("vision_model.")


@register_zoo(MEDCLIP)
def medclip(*, arch: dict[str, Any] | None = None, tokenizer: str | Path | None = None, **_: Any) -> Backbone:
    """MedCLIP (ViT variant = Swin-T); ``arch`` overrides ``swin``/``bert``/``embed_dim`` (tests: tiny)."""
    config = merge(MEDCLIP_ARCH, arch)
    module = MedCLIPModule(config)
    freeze_text_tower(module, module.is_image_parameter)
    context = int(config["context_length"])
    find_tokenizer = attach_tokenizer(module, tokenizer, context)

    def groups() -> dict[str, list[str]]:  # Swin blocks, numbered on across the stages
        return block_groups(module, "vision_model.model.encoder.layers.*.blocks", attn=["attention"],
                            mlp=["intermediate", "output"], norms=["layernorm_before", "layernorm_after"])

    backbone = zoo_backbone(MEDCLIP, module, module_groups=groups, on_load=find_tokenizer, config={"arch": config})
    backbone.feature_dim = int(config["embed_dim"])
    backbone.input_size = int(config["swin"]["image_size"])
    return backbone
