"""The timm family: ``timm:<model>`` or any bare timm model name (``resnet18``), random init.

timm itself is imported on first use (it is slow to import), so importing :mod:`medequity.models`
stays cheap. Weights come from ``create_backbone(..., checkpoint=<local file>)``; nothing is
downloaded (``pretrained=False``). timm's own ``checkpoint_path`` option would read the file with
timm's loader; here it goes through ours (:func:`medequity.models.checkpoint.load_weights`:
safetensors or ``weights_only`` torch files, never pickled code), and ``pretrained=True`` (a
download) is refused.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from medequity.models.checkpoint import load_weights
from medequity.models.registry import BACKBONES, IMAGENET_MEAN, IMAGENET_STD, Backbone, register_backbone

VIT_LIKE = ("vit", "deit", "swin", "eva", "beit")  # timm models whose image size is a constructor argument


@register_backbone("timm", family=True)
def timm_backbone(*, model_name: str, input_size: int | None = None, **kwargs: Any) -> Backbone:
    """A timm model without its classifier (``num_classes=0``): images -> pooled features."""
    import timm

    if not timm.is_model(model_name):
        close = timm.list_models(f"*{model_name.split('_')[0]}*")[:8]
        raise KeyError(f"unknown backbone {model_name!r}; registered: {BACKBONES.names()}; timm models like it: {close}")
    options = dict(kwargs)
    checkpoint_path = options.pop("checkpoint_path", None)
    if options.pop("pretrained", False):
        raise ValueError(f"timm model {model_name!r}: pretrained weights are never downloaded here; give a local "
                         "file with the model option checkpoint=<file> (safetensors or a weights-only torch file)")
    if input_size is not None and any(k in model_name for k in VIT_LIKE):
        options["img_size"] = input_size
    module = timm.create_model(model_name, pretrained=False, num_classes=0, **options)
    if checkpoint_path:  # timm would torch.load it itself; our loader never runs pickled code
        load_weights(module, checkpoint_path)
        options["checkpoint_path"] = str(checkpoint_path)  # recorded with the backbone's config
    cfg = getattr(module, "pretrained_cfg", {}) or {}
    size = input_size or int(cfg.get("input_size", (3, 224, 224))[-1])
    backbone = Backbone(model_name, module, int(module.num_features), input_size=size,
                        mean=tuple(cfg.get("mean", IMAGENET_MEAN)), std=tuple(cfg.get("std", IMAGENET_STD)),
                        config={"timm": model_name, **options})
    backbone.module_groups = lambda: timm_module_groups(module)
    return backbone


def timm_module_groups(module: nn.Module) -> dict[str, list[str]]:
    """One group per transformer block part (attention, MLP, LayerNorms) — FairTune's 36-bit ViT
    space — or per top-level stage for CNNs: the "one bit per named module group" generalisation."""
    groups: dict[str, list[str]] = {}
    blocks = getattr(module, "blocks", None)
    if blocks is not None:
        for i in range(len(blocks)):
            groups[f"blocks.{i}.attn"] = [f"blocks.{i}.attn."]
            groups[f"blocks.{i}.mlp"] = [f"blocks.{i}.mlp."]
            groups[f"blocks.{i}.norm"] = [f"blocks.{i}.norm1.", f"blocks.{i}.norm2."]
        return groups
    for name, child in module.named_children():
        if any(True for _ in child.parameters()):
            groups[name] = [f"{name}."]
    return groups
