"""The open_clip family: ``create_backbone("open_clip:ViT-B-32")`` and the text side for zero-shot.

:mod:`medequity.models` registers this module lazily (importing open_clip is slow): it is imported
the first time an ``open_clip:`` name is created, or when imported directly.

FairMedFM (§3.2, App. A.2) uses vision-language models three ways: the image embedding for LP and
PEFT, and image–text similarity for CLIP zero-shot (CLIP-ZS) and CLIP-Adapt. So the backbone module
is the whole open_clip model whose ``forward(images)`` returns the image embedding; its state dict
has open_clip's own key names, so a local open_clip checkpoint (``.pt``/``.bin``/``.safetensors``
file, or a Hugging Face-style folder with ``open_clip_config.json``) loads through the ordinary
:func:`~medequity.models.checkpoint.load_weights` without code execution. The text tower is frozen
at creation (nothing in FairMedFM trains it; this keeps it out of FT/PEFT parameter counts) and is
reached through :func:`clip_bundle` together with the tokenizer.

Model names: any open_clip built-in config (``ViT-B-32``, ``ViT-B-16`` …, built with random
weights: ``pretrained=None``), ``medequity-tiny`` (a 32-pixel CLIP of ~2M parameters for tests and
CPU demos), ``local-dir:<folder>`` (config and weights from a folder), or any name with
``model_cfg={...}`` (an open_clip model config as a dict). Nothing is downloaded: configs that need
a Hugging Face text model or tokenizer from the hub are refused.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from medequity.models.checkpoint import load_weights
from medequity.models.registry import Backbone, register_backbone

OPENAI_MEAN = tuple(open_clip.OPENAI_DATASET_MEAN)
OPENAI_STD = tuple(open_clip.OPENAI_DATASET_STD)

#: A tiny CLIP (2 vision and 2 text layers, width 32, 32-pixel images) built without any download.
#: The vocabulary size must be that of open_clip's bundled BPE tokenizer.
TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
LOCAL_CONFIGS = {"medequity-tiny": TINY_CLIP_CONFIG}
CONFIG_FILE = "open_clip_config.json"
TEXT_PREFIXES = ("transformer.", "token_embedding.", "positional_embedding", "ln_final.", "text_projection",
                 "text.")  # CustomTextCLIP keeps its text tower under ``text.``


class _ImageEmbedding:
    """Mixin: ``forward(images)`` is the image embedding (unnormalised), as every usage expects."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.encode_image(images)

    def is_image_parameter(self, name: str) -> bool:
        """True for image-tower parameters (the ones FT/PEFT may train)."""
        return name.startswith("visual.")


class OpenCLIPImageEncoder(_ImageEmbedding, open_clip.CLIP):
    """open_clip's CLIP with the image embedding as forward; text tower reached by encode_text."""


class OpenCLIPCustomTextImageEncoder(_ImageEmbedding, open_clip.CustomTextCLIP):
    """The same for open_clip configs with ``custom_text`` (e.g. SigLIP-style towers)."""


@dataclass
class CLIPModelBundle:
    """What zero-shot needs: image and text encoders, tokenizer, the model's logit scale."""

    model: nn.Module
    tokenizer: Any

    @torch.no_grad()
    def encode_text(self, prompts: list[str], *, device: str | torch.device = "cpu") -> torch.Tensor:
        """Unit-norm text embeddings (len(prompts), D), text tower in eval mode."""
        was_training = self.model.training
        self.model.eval()
        tokens = self.tokenizer(list(prompts)).to(device)
        self.model.to(device)
        embeddings = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
        self.model.train(was_training)
        return embeddings.cpu()

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_image(images).float(), dim=-1)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp())


def clip_bundle(backbone: Backbone) -> CLIPModelBundle:
    """The text side of an open_clip backbone; a clear error for backbones without one."""
    tokenizer = getattr(backbone.module, "tokenizer", None)
    if hasattr(backbone.module, "encode_text") and tokenizer is None:
        raise ValueError(f"backbone {backbone.name!r} has a text tower but no tokenizer: give its local tokenizer "
                         "folder (the files beside the model: vocab.txt / tokenizer.json) as model option "
                         "tokenizer=<folder>; nothing is downloaded")
    if not hasattr(backbone.module, "encode_text"):
        raise ValueError(f"backbone {backbone.name!r} has no text tower: CLIP zero-shot/CLIP-Adapt need an "
                         "open_clip backbone (e.g. 'open_clip:ViT-B-32'); FairMedFM marks these usages "
                         "not applicable to vision-only models")
    return CLIPModelBundle(backbone.module, tokenizer)


def clip_module_groups(module: nn.Module) -> dict[str, list[str]]:
    """FairTune groups for open_clip ViT image towers: per residual block attention, MLP, LayerNorms."""
    groups: dict[str, list[str]] = {}
    blocks = getattr(getattr(getattr(module, "visual", None), "transformer", None), "resblocks", None)
    if blocks is None:  # timm-based image tower (custom_text configs): one group per child of the trunk
        trunk = getattr(module.visual, "trunk", module.visual)
        prefix = "visual.trunk." if trunk is not module.visual else "visual."
        for i, _ in enumerate(getattr(trunk, "blocks", [])):
            groups[f"blocks.{i}.attn"] = [f"{prefix}blocks.{i}.attn."]
            groups[f"blocks.{i}.mlp"] = [f"{prefix}blocks.{i}.mlp."]
            groups[f"blocks.{i}.norm"] = [f"{prefix}blocks.{i}.norm1.", f"{prefix}blocks.{i}.norm2."]
        return groups
    for i, _ in enumerate(blocks):
        base = f"visual.transformer.resblocks.{i}"
        groups[f"blocks.{i}.attn"] = [f"{base}.attn."]
        groups[f"blocks.{i}.mlp"] = [f"{base}.mlp."]
        groups[f"blocks.{i}.norm"] = [f"{base}.ln_1.", f"{base}.ln_2."]
    return groups


def _model_config(model_name: str, model_cfg: dict | None) -> tuple[dict, dict, Path | None]:
    """(model config, preprocess config, folder with weights or None) for a model name."""
    if model_cfg is not None:
        return copy.deepcopy(model_cfg), {}, None
    if model_name.startswith("local-dir:") or Path(model_name).is_dir():
        folder = Path(model_name.removeprefix("local-dir:"))
        config_file = folder / CONFIG_FILE
        if not config_file.is_file():
            raise FileNotFoundError(f"open_clip folder {folder} has no {CONFIG_FILE}")
        data = json.loads(config_file.read_text(encoding="utf-8"))
        if "model_cfg" not in data:
            raise ValueError(f"{config_file} has no 'model_cfg' entry")
        return data["model_cfg"], data.get("preprocess_cfg", {}), folder
    if model_name in LOCAL_CONFIGS:
        return copy.deepcopy(LOCAL_CONFIGS[model_name]), {}, None
    config = open_clip.get_model_config(model_name)
    if config is None:
        close = [n for n in open_clip.list_models() if model_name.split("-")[0].lower() in n.lower()][:10]
        raise KeyError(f"unknown open_clip model {model_name!r}; local: {sorted(LOCAL_CONFIGS)}; open_clip models like it: {close}")
    return copy.deepcopy(config), {}, None


def _tokenizer(config: dict):
    text_cfg = config.get("text_cfg", {})
    return _cached_tokenizer(text_cfg.get("context_length", 77), text_cfg.get("hf_tokenizer_name"),
                             json.dumps(text_cfg.get("tokenizer_kwargs", {}), sort_keys=True))


@functools.lru_cache(maxsize=8)
def _cached_tokenizer(context_length: int, hf_tokenizer_name: str | None, kwargs_json: str):
    """Tokenizers are stateless for our use and slow to build (the BPE vocabulary): shared."""
    kwargs = json.loads(kwargs_json)
    if hf_tokenizer_name is None:
        return open_clip.SimpleTokenizer(context_length=context_length, **kwargs)
    if not Path(hf_tokenizer_name).is_dir():
        return None  # would need a download; zero-shot then says there is no usable text side
    return open_clip.HFTokenizer(hf_tokenizer_name, context_length=context_length, **kwargs)


@register_backbone("open_clip", family=True)
def open_clip_backbone(*, model_name: str, model_cfg: dict | None = None, input_size: int | None = None,
                       mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                       pretrained_tag: str | None = None, **_: Any) -> Backbone:
    """An open_clip model (random weights, or a local folder's) as a backbone of image embeddings.

    ``mean``/``std`` override the normalisation; otherwise they come from the folder's or config's
    ``preprocess_cfg``, or from open_clip's record of ``pretrained_tag`` (the tag whose weights you
    will load, e.g. ``"openai"``; nothing is downloaded), or open_clip's default (OpenAI's constants).
    """
    config, preprocess, folder = _model_config(model_name, model_cfg)
    preprocess = {**config.pop("preprocess_cfg", {}), **preprocess}
    if pretrained_tag is not None:
        tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained_tag)
        if not tag_cfg:
            raise KeyError(f"open_clip has no pretrained tag {pretrained_tag!r} for {model_name!r}; "
                           f"tags: {open_clip.list_pretrained_tags_by_model(model_name)}")
        preprocess = {**{k: v for k, v in tag_cfg.items() if k in ("mean", "std")}, **preprocess}
    if "multimodal_cfg" in config:
        raise ValueError(f"open_clip model {model_name!r} is a captioning model (CoCa); only contrastive CLIP models are supported")
    if "hf_model_name" in config.get("text_cfg", {}):
        raise ValueError(f"open_clip model {model_name!r} needs a Hugging Face text model from the hub; nothing is "
                         "downloaded here. BiomedCLIP is the zoo model 'biomedclip' (its BERT built offline); "
                         "`medequity models list` shows the zoo")
    vision_cfg = config.setdefault("vision_cfg", {})
    if vision_cfg.get("timm_model_pretrained"):
        vision_cfg["timm_model_pretrained"] = False  # would download ImageNet weights
    if input_size is not None:
        vision_cfg["image_size"] = input_size
    custom_text = bool(config.pop("custom_text", False))
    record = copy.deepcopy(config)
    cls = OpenCLIPCustomTextImageEncoder if custom_text else OpenCLIPImageEncoder
    module = cls(**config)
    module.requires_grad_(False)
    for name, param in module.named_parameters():
        param.requires_grad_(module.is_image_parameter(name))
    module.tokenizer = _tokenizer(config)
    if folder is not None:
        load_weights(module, folder)
    image_size = vision_cfg.get("image_size", 224)
    size = int(image_size if isinstance(image_size, int) else image_size[-1])
    backbone = Backbone(
        f"open_clip:{model_name}", module, int(config["embed_dim"]), input_size=size,
        mean=tuple(mean or preprocess.get("mean", OPENAI_MEAN)), std=tuple(std or preprocess.get("std", OPENAI_STD)),
        config={"open_clip": model_name, "model_cfg": record, "custom_text": custom_text,
                **({"weights": str(folder)} if folder is not None else {})},
    )
    backbone.module_groups = lambda: clip_module_groups(module)
    return backbone
