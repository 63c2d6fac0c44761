"""Segmenters: promptable foundation models (SAM family) and trainable networks (MONAI), by name.

Every segmenter family lives in its own module and registers a factory in :data:`SEGMENTERS`
(``models/sam.py``, ``models/mobile_sam.py``, ...), like the backbone families do in
:mod:`medequity.models.registry`. A factory returns a :class:`Segmenter`: the network plus its
:class:`PreprocessProfile`, recorded with every result (FairMedFM's code fed SAM BGR images and gave
MedSAM SAM's mean/std — a profile per family makes that impossible to do silently).

The contract a promptable 2D segmenter fulfils, so that the image encoder runs once per image and
every prompt type, seed and class decodes from the same (cacheable) embedding:

* :meth:`Segmenter.encode` — preprocessed images ``(B, 3, S, S)`` → embeddings ``(B, C, h, w)``;
* :meth:`Segmenter.decode` — one image's embedding ``(C, h, w)`` and ``P`` prompts (points in
  model-input ``(x, y)`` pixel coordinates with labels, and/or boxes ``(x0, y0, x1, y1)``) → mask
  logits ``(P, K, h', w')`` at the decoder's resolution and predicted IoUs ``(P, K)`` (``K = 3``
  with multi-mask output, else 1);
* :meth:`Segmenter.upscale` — logits back to the original image size (Dice is measured there, as
  the FairMedFM paper says, not at the resized size its code used). Threshold: logit > 0.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medequity.models.checkpoint import load_weights
from medequity.registry import Registry

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)  # RGB, 0-255 scale (segment-anything's Sam defaults)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class Geometry:
    """Where an original image sits in the model's square input: resized by ``scale`` to
    ``resized_hw`` (top-left aligned), padded to ``input_size``."""

    original_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    input_size: int

    @property
    def scale_xy(self) -> tuple[float, float]:
        return self.resized_hw[1] / self.original_hw[1], self.resized_hw[0] / self.original_hw[0]

    def points_to_input(self, xy: np.ndarray) -> np.ndarray:
        """(…, 2) (x, y) in original pixels → model-input pixels (pixel centres map to centres)."""
        sx, sy = self.scale_xy
        xy = np.asarray(xy, dtype=np.float64)
        return np.stack([(xy[..., 0] + 0.5) * sx - 0.5, (xy[..., 1] + 0.5) * sy - 0.5], axis=-1)

    def boxes_to_input(self, boxes: np.ndarray) -> np.ndarray:
        """(…, 4) (x0, y0, x1, y1) inclusive pixel boxes → model-input coordinates."""
        boxes = np.asarray(boxes, dtype=np.float64)
        corners = self.points_to_input(boxes.reshape(*boxes.shape[:-1], 2, 2))
        return corners.reshape(boxes.shape)


@dataclass(frozen=True)
class PreprocessProfile:
    """How a family wants its images: channel order RGB always; then either per-image min–max to
    [0, 1] (MedSAM) or (x − mean) / std on the 0–255 scale (SAM); the longest side resized to
    ``input_size`` and the rest padded (``pad=True``, SAM) or both sides resized to a square
    (``pad=False``, SAM-Med2D at 256)."""

    name: str
    input_size: int
    mean: tuple[float, float, float] | None = SAM_PIXEL_MEAN
    std: tuple[float, float, float] | None = SAM_PIXEL_STD
    minmax: bool = False
    pad: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "input_size": self.input_size, "mean": self.mean, "std": self.std,
                "minmax": self.minmax, "pad": self.pad, "channels": "RGB"}

    def geometry(self, original_hw: tuple[int, int]) -> Geometry:
        h, w = int(original_hw[0]), int(original_hw[1])
        if not self.pad:
            return Geometry((h, w), (self.input_size, self.input_size), self.input_size)
        scale = self.input_size / max(h, w)
        return Geometry((h, w), (int(h * scale + 0.5), int(w * scale + 0.5)), self.input_size)

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, Geometry]:
        """An image (H, W) grey or (H, W, 3) RGB, any numeric type → ``(3, S, S)`` float32 input."""
        array = np.asarray(image)
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=-1)
        if array.ndim != 3 or array.shape[-1] not in (1, 3):
            raise ValueError(f"{self.name} takes (H, W) or (H, W, 3) images; got shape {array.shape}")
        if array.shape[-1] == 1:
            array = np.repeat(array, 3, axis=-1)
        geometry = self.geometry(array.shape[:2])
        x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1)[None]
        x = F.interpolate(x, size=geometry.resized_hw, mode="bilinear", align_corners=False, antialias=True)[0]
        if self.minmax:
            low, high = float(x.min()), float(x.max())
            x = (x - low) / max(high - low, 1e-8)
        elif self.mean is not None and self.std is not None:
            x = (x - torch.tensor(self.mean).view(3, 1, 1)) / torch.tensor(self.std).view(3, 1, 1)
        if self.pad:
            x = F.pad(x, (0, self.input_size - geometry.resized_hw[1], 0, self.input_size - geometry.resized_hw[0]))
        return x, geometry


SAM_PROFILE = PreprocessProfile("sam", 1024)
MEDSAM_PROFILE = PreprocessProfile("medsam", 1024, mean=None, std=None, minmax=True)


@dataclass
class Segmenter:
    """A segmentation network and what it needs. ``module`` holds the weights (its state dict has
    the official checkpoint's key names); the callables implement the contract of the module doc."""

    name: str
    module: nn.Module
    profile: PreprocessProfile
    promptable: bool = True
    config: dict[str, Any] = field(default_factory=dict)  # how it was created (cache keys, records)
    encode_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    decode_fn: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None

    def embedding_shape(self) -> tuple[int, ...]:
        """(C, h, w) of one image's embedding: from ``config["embedding_shape"]`` when the family
        states it, else measured once per configuration (one encode of a blank input)."""
        if "embedding_shape" in self.config:
            return tuple(int(n) for n in self.config["embedding_shape"])
        key = json.dumps({"name": self.name, "config": self.config}, sort_keys=True, default=str)
        if key not in _EMBEDDING_SHAPES:
            size = self.profile.input_size
            _EMBEDDING_SHAPES[key] = tuple(self.encode(torch.zeros(1, 3, size, size)).shape[1:])
        return _EMBEDDING_SHAPES[key]

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        if self.encode_fn is None:
            raise TypeError(f"segmenter {self.name!r} has no image encoder to cache")
        return self.encode_fn(images)

    @torch.no_grad()
    def decode(self, embedding: torch.Tensor, *, points: torch.Tensor | None = None,
               point_labels: torch.Tensor | None = None, boxes: torch.Tensor | None = None,
               multimask: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        if self.decode_fn is None:
            raise TypeError(f"segmenter {self.name!r} is not promptable")
        if points is None and boxes is None:
            raise ValueError("decode needs point and/or box prompts")
        return self.decode_fn(embedding, points=points, point_labels=point_labels, boxes=boxes, multimask=multimask)

    def upscale(self, logits: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        """Decoder logits (P, K, h', w') → (P, K, H, W) at the original size: to the input size,
        the padding cropped, then to the original size (bilinear, as SAM's postprocess_masks)."""
        x = F.interpolate(logits.float(), size=(geometry.input_size, geometry.input_size), mode="bilinear", align_corners=False)
        x = x[..., : geometry.resized_hw[0], : geometry.resized_hw[1]]
        return F.interpolate(x, size=geometry.original_hw, mode="bilinear", align_corners=False)


_EMBEDDING_SHAPES: dict[str, tuple[int, ...]] = {}  # measured embedding shapes, by segmenter configuration

SEGMENTERS: Registry[Segmenter] = Registry("segmenter")
register_segmenter = SEGMENTERS.register


def create_segmenter(name: str, *, checkpoint: str | Path | None = None, **options: Any) -> Segmenter:
    """A registered segmenter with local weights (safetensors or ``weights_only`` torch file,
    official key names) or random ones; nothing is downloaded."""
    segmenter = SEGMENTERS.create(name, **options)
    if checkpoint is not None:
        report = load_weights(segmenter.module, checkpoint)
        segmenter.config["checkpoint"] = str(checkpoint)
        segmenter.config["unexpected_keys"] = list(report.unexpected)[:20]
    return segmenter
