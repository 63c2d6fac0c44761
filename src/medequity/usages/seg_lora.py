"""``seg_lora``: the SAMed recipe (Zhang & Liu 2023) that FairSeg (Tian et al., ICLR 2024) trains and
fine-tunes with FEBS: LoRA of rank 4 on the query and value projections of every image-encoder
attention block, the rest of the encoder frozen, the prompt encoder and mask decoder trained,
no prompts, ``C + 1`` softmax output channels (:class:`~medequity.usages._segmentation.MulticlassMaskHead`),
loss ``0.2·CE + 0.8·Dice`` (FairSeg), AdamW with a linear warm-up then poly decay.

Where each value comes from:

* rank 4 on q and v of every block, prompt-free C + 1 outputs, 0.2·CE + 0.8·Dice: FairSeg's
  published settings (SAMed's recipe);
* ``train_defaults`` — AdamW, lr 0.005, weight decay 0.1, 250 warm-up mini-batches, poly power
  0.9 — are SAMed's training-script defaults, ours to change per dataset (FairSeg fine-tunes with
  FEBS at lr 5e-4 for 10 epochs, stopping at 5); the poly decay here runs over the steps after the
  warm-up;
* LoRA's ``A`` starts Kaiming-uniform and ``B`` at zero, no ``alpha / r`` scaling (SAMed's);
* images reach the encoder with the segmenter's recorded preprocessing profile (SAM: RGB, SAM's
  mean/std; FairSeg feeds [0, 1] images with mean 0, std 1 — ours: the profile the weights expect).

``peft`` is not used: its LoRA wraps whole ``nn.Linear`` modules, and SAM computes q, k and v in one
fused ``attn.qkv`` linear layer, so "q and v only" is not a peft target; :class:`LoRAQKV` adds the
two low-rank updates to the q and v slices of that layer's output, as SAMed does. The encoder runs
every step (no cache: its LoRA weights train). 2D images only (volumes: ``seg_ft``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from medequity.models.segmenter import Segmenter
from medequity.usages._segmentation import (
    SCORING_DEFAULTS,
    MulticlassMaskHead,
    TrainedSegmenter,
    n_output_classes,
    sam_training_target,
    training_split,
)
from medequity.usages.base import Usage, UsageContext, register_usage


class LoRAQKV(nn.Module):
    """A fused ``qkv`` linear layer (output ``[q | k | v]``, each ``dim`` wide) plus rank-``r``
    updates ``B_q A_q x`` on q and ``B_v A_v x`` on v (SAMed's ``_LoRA_qkv``); k is unchanged and
    the wrapped layer is frozen."""

    def __init__(self, qkv: nn.Linear, rank: int):
        super().__init__()
        self.qkv, self.dim = qkv, qkv.in_features
        for p in self.qkv.parameters():
            p.requires_grad_(False)
        self.a_q, self.b_q = nn.Linear(self.dim, rank, bias=False), nn.Linear(rank, self.dim, bias=False)
        self.a_v, self.b_v = nn.Linear(self.dim, rank, bias=False), nn.Linear(rank, self.dim, bias=False)
        for a, b in ((self.a_q, self.b_q), (self.a_v, self.b_v)):
            nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
            nn.init.zeros_(b.weight)  # the wrapped model is unchanged at the start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        zeros = torch.zeros(*qkv.shape[:-1], self.dim, dtype=qkv.dtype, device=qkv.device)
        return qkv + torch.cat([self.b_q(self.a_q(x)), zeros, self.b_v(self.a_v(x))], dim=-1)


def add_lora_qv(encoder: nn.Module, rank: int) -> list[str]:
    """Freeze ``encoder`` and wrap every fused attention ``qkv`` linear layer (output 3 × input) with
    :class:`LoRAQKV`; the wrapped layers' names, in order. An error when there is none."""
    for p in encoder.parameters():
        p.requires_grad_(False)
    targets = [(name, module) for name, module in encoder.named_modules()
               if name.endswith("qkv") and isinstance(module, nn.Linear) and module.out_features == 3 * module.in_features]
    if not targets:
        raise ValueError("seg_lora found no fused attention qkv layer (out = 3 × in) in the image encoder: it supports "
                         "ViT SAM-family encoders (sam_*, medsam, sam_med2d, ft_sam)")
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(encoder.get_submodule(parent_name) if parent_name else encoder, child, LoRAQKV(module, rank))
    return [name for name, _ in targets]


class LoRASam(TrainedSegmenter):
    """A SAM-family encoder with LoRA on q and v plus the prompt-free multi-class head:
    ``forward(images)`` (preprocessed ``(B, 3, S, S)``) → logits ``(B, C + 1, 4S/patch, 4S/patch)``."""

    usage = "seg_lora"

    def __init__(self, segmenter: Segmenter, n_classes: int, params: dict[str, Any]):
        super().__init__(n_classes, params)
        if not hasattr(segmenter.module, "image_encoder"):
            raise ValueError(f"seg_lora needs a SAM-family segmenter with an image encoder; got {segmenter.name!r}")
        self.head = MulticlassMaskHead(segmenter.module, n_classes)  # copies made before LoRA is added
        self.lora_layers = add_lora_qv(segmenter.module.image_encoder, int(params["rank"]))
        self.image_encoder = segmenter.module.image_encoder
        self._segmenter = segmenter

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.image_encoder(images))

    def original_logits(self, index: int, item: dict, x: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        geometry = self._segmenter.profile.geometry(np.asarray(item["mask"]).shape[:2])
        return self._segmenter.upscale(self(x[None]) if logits is None else logits, geometry)[0]

    def record(self) -> dict[str, Any]:
        return {**super().record(), "segmenter": self._segmenter.name, "profile": self._segmenter.profile.to_dict(),
                "lora": {"rank": int(self.params["rank"]), "targets": "q and v", "layers": len(self.lora_layers)}}


@register_usage
class SegmentLoRA(Usage):
    """``seg_lora``: SAMed — LoRA (rank 4) on q and v of every encoder block, prompt-free C + 1 outputs."""

    name = "seg_lora"
    defaults = {**SCORING_DEFAULTS, "rank": 4}
    train_defaults = {"optimizer": "adamw", "lr": 0.005, "weight_decay": 0.1, "scheduler": "poly", "warmup_steps": 250,
                      "power": 0.9}

    def build(self, backbone: Segmenter, data: dict, context: UsageContext):
        if not backbone.promptable or backbone.config.get("spatial_dims") == 3:
            raise ValueError(f"seg_lora needs a 2D SAM-family segmenter; got {backbone.name!r} (MONAI networks: seg_ft)")
        if int(self.params["rank"]) < 1:
            raise ValueError(f"rank must be a positive integer; got {self.params['rank']!r}")
        n_classes = n_output_classes(data["train"], self.params["n_classes"])
        low_res = int(backbone.config.get("low_res_size", 4 * backbone.embedding_shape()[-1]))
        model = LoRASam(backbone, n_classes, self.params)

        def prepare(i: int, item: dict) -> tuple[torch.Tensor, torch.Tensor]:
            return backbone.profile.prepare(item["image"])[0], sam_training_target(backbone, item["mask"], low_res)

        return model, {name: training_split(split, prepare, "+sam_input") for name, split in data.items()}
