"""``seg_ft``: a MONAI segmentation network (``monai_unet``, ``swin_unetr``) trained end to end, 2D or
3D — from scratch (random weights) or fine-tuned (``model_options.checkpoint``: a local file in the
network's key layout, recorded) — through the shared trainer with FairSeg's ``0.2·CE + 0.8·Dice``.

Input (ours): each image or volume is min–max scaled to [0, 1] (the networks' recorded profile),
brought to the network's channel count (RGB averaged to grey for one input channel, grey repeated
for three) and resized to the recorded ``roi_size`` (bilinear / trilinear; the mask by nearest
neighbour), so every batch has one shape. Predictions: the logits at ``roi_size`` resized back to
the original size, argmax over the ``C + 1`` classes, scored there per sample (per volume for 3D).
The network's ``out_channels`` must be ``C + 1``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medequity.models.segmenter import Segmenter
from medequity.usages._segmentation import SCORING_DEFAULTS, TrainedSegmenter, n_output_classes, resize_mask, training_split
from medequity.usages.base import Usage, UsageContext, register_usage


def network_input(image: np.ndarray, spatial_dims: int, in_channels: int) -> torch.Tensor:
    """``(in_channels, *spatial)`` float input at the original size, min–max scaled to [0, 1]."""
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == spatial_dims + 1 and array.shape[-1] in (1, 3):  # channels last (H, W, 3)
        x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(array, -1, 0)))
    elif array.ndim == spatial_dims:
        x = torch.from_numpy(np.ascontiguousarray(array))[None]
    else:
        raise ValueError(f"a {spatial_dims}D network takes images with {spatial_dims} spatial axes (and optional channels "
                         f"last); got shape {array.shape}")
    if x.shape[0] != in_channels:
        if in_channels == 1:
            x = x.mean(dim=0, keepdim=True)
        elif x.shape[0] == 1:
            x = x.repeat(in_channels, *([1] * spatial_dims))
        else:
            raise ValueError(f"the network takes {in_channels} input channels; the images have {x.shape[0]}")
    low, high = float(x.min()), float(x.max())
    return (x - low) / max(high - low, 1e-8)


class MonaiTrained(TrainedSegmenter):
    """A MONAI network trained by the shared trainer: ``forward(x)`` at ``roi_size`` → logits."""

    usage = "seg_ft"

    def __init__(self, segmenter: Segmenter, n_classes: int, params: dict[str, Any]):
        super().__init__(n_classes, params)
        self.network = segmenter.module
        self.name = segmenter.name
        self.spatial_dims = int(segmenter.config["spatial_dims"])
        self.in_channels = int(segmenter.config["in_channels"])
        self.roi = tuple(int(s) for s in segmenter.config["roi_size"])
        self.config = dict(segmenter.config)
        for p in self.network.parameters():
            p.requires_grad_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def resized_input(self, image: np.ndarray) -> torch.Tensor:
        x = network_input(image, self.spatial_dims, self.in_channels)
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        return F.interpolate(x[None], size=self.roi, mode=mode, align_corners=False)[0]

    def original_logits(self, index: int, item: dict, x: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        size = tuple(np.asarray(item["mask"]).shape)
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        logits = self(x[None]) if logits is None else logits
        return F.interpolate(logits.float(), size=size, mode=mode, align_corners=False)[0]

    def record(self) -> dict[str, Any]:
        return {**super().record(), "segmenter": self.name, "spatial_dims": self.spatial_dims, "roi_size": list(self.roi),
                "input": "min-max [0, 1], resized to roi_size", "init": self.config.get("checkpoint", "random (from scratch)")}


@register_usage
class SegmentFineTune(Usage):
    """``seg_ft``: a MONAI network (UNet, SwinUNETR), 2D or 3D, every weight trained."""

    name = "seg_ft"
    defaults = dict(SCORING_DEFAULTS)

    def build(self, backbone: Segmenter, data: dict, context: UsageContext):
        if backbone.promptable or backbone.config.get("family") != "monai":
            raise ValueError(f"seg_ft trains MONAI networks (monai_unet, swin_unetr); got {backbone.name!r} "
                             "(SAM-family models: seg_decoder or seg_lora)")
        n_classes = n_output_classes(data["train"], self.params["n_classes"])
        out_channels = int(backbone.config["out_channels"])
        if out_channels != n_classes:
            raise ValueError(f"{backbone.name} has out_channels={out_channels} but the data have {n_classes} classes "
                             f"(background included): set model_options.out_channels to {n_classes}")
        model = MonaiTrained(backbone, n_classes, self.params)

        def prepare(i: int, item: dict) -> tuple[torch.Tensor, torch.Tensor]:
            mask = torch.as_tensor(np.asarray(item["mask"]))
            if mask.ndim != model.spatial_dims:
                raise ValueError(f"sample {item['sample_id']!r}: a {model.spatial_dims}D network got a mask of shape "
                                 f"{tuple(mask.shape)} (set model_options.spatial_dims)")
            return model.resized_input(item["image"]), resize_mask(mask, model.roi)

        return model, {name: training_split(split, prepare, "+roi") for name, split in data.items()}
