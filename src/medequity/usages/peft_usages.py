"""Parameter-efficient fine-tuning usages (FairMedFM §3.2 "PEFT"; FairTune §3.2 and App. A.5).

FairTune reads every PEFT strategy as a binary mask ω over the backbone's parameters: only the
masked part changes (θ₀ + ω ⊙ Δφ). Here:

- ``bitfit``: bias terms only (BitFit, Ben Zaken et al. 2022);
- ``ln``: LayerNorm weights and biases only (LayerNorm tuning, Basu et al. 2023);
- ``attn``: the attention sub-blocks only (Attention tuning, Touvron et al. 2022);
- ``mask``: any per-group mask over ``backbone.module_groups()`` — FairTune's search space (for a
  ViT: per block attention / MLP / LayerNorms, 36 bits for 12 blocks);
- ``lora``: low-rank adapters through the ``peft`` library (Hu et al. 2022), the PEFT strategy
  of FairMedFM's mitigation table (Tab. 2). FairMedFM's wrapper called ``LoraConfig(lora_targets)``
  (the targets land in the wrong field) and built its head from an attribute that does not exist;
  it thus used peft's defaults r=8, alpha=8, dropout=0 — which we keep as our defaults — on
  targets that were never what it meant. Here the targets are explicit.

In every case the linear head trains; the backbone is adapted in place (as ``ft`` does) and the
model carries ``trainable_summary`` (parameter counts), also kept on the usage object.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from medequity.models.classifier import Classifier
from medequity.usages.base import Usage, UsageContext, register_usage


def trainable_summary(model: nn.Module) -> dict[str, Any]:
    """Parameter counts: trainable and total, for the whole model and for its backbone and head."""
    def count(params, only_trainable: bool) -> int:
        return int(sum(p.numel() for p in params if p.requires_grad or not only_trainable))

    summary = {"trainable": count(model.parameters(), True), "total": count(model.parameters(), False)}
    summary["fraction"] = summary["trainable"] / max(1, summary["total"])
    for part in ("backbone", "head"):
        module = getattr(model, part, None)
        if module is not None:
            summary[f"{part}_trainable"] = count(module.parameters(), True)
    return summary


def _is_adaptable(module: nn.Module, name: str) -> bool:
    """Whether a backbone parameter may be trained at all (open_clip: image tower only)."""
    check = getattr(module, "is_image_parameter", None)
    return check(name) if check is not None else True


class _SelectedParameters(Usage):
    """Freeze the backbone, unfreeze the parameters :meth:`select` names, add a trainable head."""

    def prepare(self, backbone) -> nn.Module:
        """The backbone module to adapt (LoRA inserts its adapters here)."""
        return backbone.module

    def select(self, backbone, module: nn.Module) -> set[str]:
        raise NotImplementedError

    def build(self, backbone, data: dict, context: UsageContext):
        module = self.prepare(backbone)
        chosen = self.select(backbone, module)
        for name, param in module.named_parameters():
            param.requires_grad_(name in chosen and _is_adaptable(module, name))
        model = Classifier(module, backbone.feature_dim)
        model.trainable_summary = trainable_summary(model)
        self.trainable_summary = model.trainable_summary
        return model, data


def _names_with_prefixes(module: nn.Module, prefixes: Sequence[str]) -> set[str]:
    return {name for name, _ in module.named_parameters() if name.startswith(tuple(prefixes))}


@register_usage
class BitFit(_SelectedParameters):
    """Only bias terms train (BitFit; a FairTune special case)."""

    name = "bitfit"

    def select(self, backbone, module):
        chosen = {name for name, _ in module.named_parameters() if name.rsplit(".", 1)[-1] == "bias"}
        if not chosen:
            raise ValueError(f"backbone {backbone.name!r} has no bias parameters to tune; try 'ln', 'mask' or 'lora'")
        return chosen


@register_usage
class LayerNormTune(_SelectedParameters):
    """Only LayerNorm weights and biases train (LayerNorm tuning, FairTune's 12-bit LN space)."""

    name = "ln"

    def select(self, backbone, module):
        chosen = set()
        for module_name, child in module.named_modules():
            if isinstance(child, nn.LayerNorm):
                chosen |= {f"{module_name}.{p}" if module_name else p for p, _ in child.named_parameters(recurse=False)}
        if not chosen:
            raise ValueError(f"backbone {backbone.name!r} has no LayerNorm layers; 'ln' suits transformers, "
                             "try 'bitfit' or 'mask' for CNNs")
        return chosen


@register_usage
class AttentionTune(_SelectedParameters):
    """Only the attention sub-blocks train (Attention tuning, FairTune's 12-bit attention space)."""

    name = "attn"

    def select(self, backbone, module):
        groups = _module_groups(backbone)
        attention = [prefix for group, prefixes in groups.items() if group.endswith(".attn") for prefix in prefixes]
        if not attention:
            raise ValueError(f"backbone {backbone.name!r} has no attention groups (groups: {list(groups)[:8]}…); "
                             "'attn' suits vision transformers")
        return _names_with_prefixes(module, attention)


def _module_groups(backbone) -> dict[str, list[str]]:
    if backbone.module_groups is None:
        raise ValueError(f"backbone {backbone.name!r} defines no module groups")
    return backbone.module_groups()


def parse_mask(mask: Any, group_names: Sequence[str]) -> dict[str, bool]:
    """A FairTune mask ω as {group: train?}: from a dict (missing groups frozen), a bit string or a
    0/1 sequence in ``group_names`` order. Unknown group names are an error listing the valid ones."""
    names = list(group_names)
    if isinstance(mask, Mapping):
        unknown = sorted(set(mask) - set(names))
        if unknown:
            raise ValueError(f"unknown mask group(s) {unknown}; valid groups, in order: {names}")
        bits = [mask.get(name, 0) for name in names]
    else:
        bits = list(mask) if isinstance(mask, str) else list(mask)
        if len(bits) != len(names):
            raise ValueError(f"mask has {len(bits)} bits but the backbone has {len(names)} groups, in order: {names}")
    values = []
    for name, bit in zip(names, bits):
        if bit not in (0, 1, "0", "1", True, False):
            raise ValueError(f"mask value for group {name!r} must be 0 or 1; got {bit!r}")
        values.append(bit in (1, "1", True))
    return dict(zip(names, values))


@register_usage
class MaskTune(_SelectedParameters):
    """Train the module groups a binary mask selects (FairTune's search space, App. A.5).

    ``mask``: {group: 0/1} over ``backbone.module_groups()`` (missing groups are frozen), a bit
    string or a 0/1 list in group order. ``others``: whether parameters outside every group (patch
    embedding, position embedding, class token, final norm) train too — with ``others=True`` the
    all-ones mask is full fine-tuning, with the default ``False`` the all-zeros mask is linear readout.
    """

    name = "mask"
    defaults = {"mask": None, "others": False}

    def select(self, backbone, module):
        if self.params["mask"] is None:
            raise ValueError(f"usage 'mask' needs a 'mask'; groups, in order: {list(_module_groups(backbone))}")
        groups = _module_groups(backbone)
        mask = parse_mask(self.params["mask"], list(groups))
        self.mask = mask
        chosen = _names_with_prefixes(module, [p for name, on in mask.items() if on for p in groups[name]])
        if self.params["others"]:
            grouped = _names_with_prefixes(module, [p for prefixes in groups.values() for p in prefixes])
            chosen |= {name for name, _ in module.named_parameters()} - grouped
        return chosen


@register_usage
class LoRA(_SelectedParameters):
    """Low-rank adapters (LoRA, via ``peft``) on the backbone's linear layers; adapters and head train.

    ``target_modules="auto"``: for timm ViTs the attention projections ``attn.qkv`` and
    ``attn.proj``; otherwise every ``nn.Linear`` of the image tower outside ``nn.MultiheadAttention``
    (whose forward bypasses its ``out_proj`` module, so an adapter there would do nothing); for a CNN
    without linear layers, its ``nn.Conv2d`` layers. Or a list
    of module names/suffixes, or a regular expression, as ``peft.LoraConfig`` takes them. The adapters'
    B matrices start at zero, so the adapted backbone first computes exactly the pre-trained features.
    """

    name = "lora"
    defaults = {"r": 8, "alpha": 8, "dropout": 0.0, "target_modules": "auto"}

    def prepare(self, backbone):
        from peft import LoraConfig, inject_adapter_in_model

        targets = self.params["target_modules"]
        if targets == "auto":
            targets = _auto_lora_targets(backbone)
        config = LoraConfig(r=self.params["r"], lora_alpha=self.params["alpha"], lora_dropout=self.params["dropout"],
                            target_modules=targets, bias="none")
        self.target_modules = targets
        return inject_adapter_in_model(config, backbone.module)

    def select(self, backbone, module):
        return {name for name, _ in module.named_parameters() if ".lora_" in name}


_TIMM_ATTENTION = re.compile(r"(^|\.)blocks\.\d+\.attn\.qkv$")


def _auto_lora_targets(backbone) -> list[str]:
    """timm-style ViT blocks (timm, DINOv2, MedMAE, BiomedCLIP's trunk, SAM/LVM-Med's encoder): the
    attention projections; else the image tower's linear layers; a CNN without any (C2L and
    MoCo-CXR's ResNets): its convolutions (peft adapts ``nn.Conv2d`` with low-rank convolutions)."""
    module = backbone.module
    if any(_TIMM_ATTENTION.search(name) for name, _ in module.named_modules()):
        return ["attn.qkv", "attn.proj"]
    inside_attention = set()
    for name, child in module.named_modules():
        if isinstance(child, nn.MultiheadAttention):
            inside_attention |= {f"{name}.{sub}" for sub, _ in child.named_modules() if sub}
    for kind in (nn.Linear, nn.Conv2d):
        targets = [name for name, child in module.named_modules()
                   if isinstance(child, kind) and name not in inside_attention and _is_adaptable(module, f"{name}.weight")]
        if targets:
            return targets
    raise ValueError(f"backbone {backbone.name!r} has no linear or convolutional layers for LoRA; pass target_modules explicitly")
