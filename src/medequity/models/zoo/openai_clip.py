"""OpenAI CLIP ViT-B/16 (Radford et al. 2021) and PubMedCLIP ViT-B/32 (Eslami et al. 2023, CLIP fine-tuned on ROCO).

Both are OpenAI's architecture, whose MLPs use **QuickGELU** (``x·σ(1.702x)``): the same weights in
open_clip's default (exact GELU) ViT load without any error and give different features, so these
entries are built from open_clip's ``*-quickgelu`` configs. Key names are OpenAI's own
(``visual.conv1.weight``, ``visual.transformer.resblocks.N.attn.in_proj_weight``, ``visual.proj``,
``token_embedding.weight``, ``text_projection``, ``logit_scale``), which open_clip keeps.

* ``clip-vit-b16``: OpenAI's ``ViT-B-16.pt`` is a TorchScript archive; convert it once with
  ``medequity models convert-openai ViT-B-16.pt clip-vit-b16.safetensors`` (SHA-256 checked
  against OpenAI's URL) and give the ``.safetensors`` file. The loader refuses the archive itself.
* ``pubmedclip``: the authors' ``PubMedCLIP_ViT32.pth`` is a torch checkpoint of the fine-tuned
  OpenAI model (``{"state_dict": ...}`` or plain), read with ``weights_only=True``.

Feature: the projected image embedding (``encode_image``), the one CLIP zero-shot and CLIP-Adapt
compare with text (FairMedFM §3.2). Tokenizer: open_clip's bundled BPE (OpenAI's vocabulary).
"""

from __future__ import annotations

from typing import Any

from medequity.models.registry import Backbone
from medequity.models.zoo.base import OPENAI_CLIP, ZooEntry, merge, register_zoo, zoo_backbone

OPENAI_KEYS = "visual.{conv1,class_embedding,positional_embedding,ln_pre,transformer.resblocks.N,ln_post,proj}, " \
              "token_embedding, positional_embedding, transformer.resblocks.N, ln_final, text_projection, logit_scale"

CLIP_B16 = ZooEntry(
    name="clip-vit-b16", paper="Radford et al. 2021, CLIP (FairMedFM App. A.2.1)",
    architecture="open_clip ViT-B-16-quickgelu (OpenAI CLIP, QuickGELU)",
    expected_file=f"ViT-B-16.pt (TorchScript) -> `medequity models convert-openai` -> .safetensors; keys {OPENAI_KEYS}",
    feature_layer="projected image embedding (encode_image)", feature_dim=512, input_size=224,
    mean=OPENAI_CLIP[0], std=OPENAI_CLIP[1], licence="MIT (code and weights)",
    formats=(".safetensors (converted from OpenAI's TorchScript .pt)", ".pth/.bin (weights_only)"),
    text="open_clip BPE tokenizer (bundled), 77 tokens",
    allow_unexpected=("input_resolution", "context_length", "vocab_size", "attn_mask"),
)
PUBMEDCLIP = ZooEntry(
    name="pubmedclip", paper="Eslami et al. 2023, PubMedCLIP (EACL Findings)",
    architecture="open_clip ViT-B-32-quickgelu (OpenAI CLIP fine-tuned on ROCO)",
    expected_file=f"PubMedCLIP_ViT32.pth: torch checkpoint, plain or under 'state_dict'; keys {OPENAI_KEYS}",
    feature_layer="projected image embedding (encode_image)", feature_dim=512, input_size=224,
    mean=OPENAI_CLIP[0], std=OPENAI_CLIP[1], licence="MIT (code); weights per the authors' repository",
    text="open_clip BPE tokenizer (bundled), 77 tokens",
    allow_unexpected=("input_resolution", "context_length", "vocab_size", "attn_mask"),
)


def _openai_clip(entry: ZooEntry, open_clip_name: str, arch: dict[str, Any] | None) -> Backbone:
    import open_clip

    from medequity.models.clip import open_clip_backbone

    config = merge(open_clip.get_model_config(open_clip_name), arch)
    if not config.get("quick_gelu"):
        raise ValueError(f"{entry.name} needs quick_gelu=True: OpenAI's weights were trained with QuickGELU")
    inner = open_clip_backbone(model_name=open_clip_name, model_cfg=config, mean=entry.mean, std=entry.std)
    backbone = zoo_backbone(entry, inner.module, module_groups=inner.module_groups,
                            config={"open_clip": open_clip_name, "arch": config})
    backbone.feature_dim = int(config["embed_dim"])
    image_size = config["vision_cfg"].get("image_size", 224)
    backbone.input_size = int(image_size if isinstance(image_size, int) else image_size[-1])
    return backbone


@register_zoo(CLIP_B16)
def clip_vit_b16(*, arch: dict[str, Any] | None = None, **_: Any) -> Backbone:
    """OpenAI CLIP ViT-B/16; ``arch`` overrides the open_clip config (tests build a tiny one)."""
    return _openai_clip(CLIP_B16, "ViT-B-16-quickgelu", arch)


@register_zoo(PUBMEDCLIP)
def pubmedclip(*, arch: dict[str, Any] | None = None, **_: Any) -> Backbone:
    """PubMedCLIP ViT-B/32 (OpenAI CLIP architecture)."""
    return _openai_clip(PUBMEDCLIP, "ViT-B-32-quickgelu", arch)
