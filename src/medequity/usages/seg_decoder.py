"""``seg_decoder``: a frozen SAM-family image encoder with cached embeddings, the prompt encoder and
mask decoder trained (the linear-probe analogue for segmentation, FairMedFM §3.2 / issue 11).

The image encoder runs once per (weights, data, preprocessing): the embeddings come from the cache
zero-shot segmentation fills (:func:`~medequity.usages.seg_zero_shot.cached_embeddings`, same key),
so decoder training after a ``seg_zs`` run encodes nothing, and no epoch re-encodes
(``benchmarks/seg_decoder_cached_vs_reencode.py`` measures the difference). The head is SAMed's
prompt-free multi-class head (:class:`~medequity.usages._segmentation.MulticlassMaskHead`): ``C + 1``
softmax channels at the decoder's resolution (4 × the embedding grid), trained through the shared
trainer with FairSeg's loss ``0.2·CE + 0.8·Dice`` (the methods' per-sample segmentation loss; FEBS
its own). Masks are scored at the original image size (the logits upscaled with the profile's
geometry, argmax over the classes).

Values: the loss weights and the Dice formula are FairSeg's; prompt-free decoding with ``C + 1``
outputs is SAMed's (used by FairSeg); training the decoder on cached embeddings of a frozen encoder
and the token initialisation are ours. 2D images only (volumes: ``seg_ft``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medequity.models.segmenter import Segmenter
from medequity.training.data import SplitData
from medequity.usages._segmentation import (
    SCORING_DEFAULTS,
    MulticlassMaskHead,
    TrainedSegmenter,
    n_output_classes,
    sam_training_target,
    training_split,
)
from medequity.usages.base import Usage, UsageContext, register_usage
from medequity.usages.seg_zero_shot import cached_embeddings, encoder_fingerprint


class DecoderOnEmbeddings(TrainedSegmenter):
    """Prompt encoder + mask decoder on cached image embeddings: ``forward(embeddings)`` → logits."""

    usage = "seg_decoder"
    encoded: int = 0  # images run through the encoder when the usage was built (0 on a warm cache)

    def __init__(self, segmenter: Segmenter, n_classes: int, params: dict[str, Any]):
        super().__init__(n_classes, params)
        self.head = MulticlassMaskHead(segmenter.module, n_classes)
        self._segmenter = segmenter  # for its preprocessing geometry and upscaling (not a submodule: not trained)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.head(embeddings)

    def original_logits(self, index: int, item: dict, x: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        geometry = self._segmenter.profile.geometry(np.asarray(item["mask"]).shape[:2])
        return self._segmenter.upscale(self(x[None]) if logits is None else logits, geometry)[0]

    def record(self) -> dict[str, Any]:
        return {**super().record(), "segmenter": self._segmenter.name, "profile": self._segmenter.profile.to_dict(),
                "encoder": "frozen, embeddings cached"}


def embedding_splits(segmenter: Segmenter, data: dict[str, SplitData], context: UsageContext, batch_size: int,
                     low_res: int) -> tuple[dict[str, SplitData], int]:
    """Each split as (cached embedding, decoder-frame mask) training items; the images encoded."""
    out, encoded = {}, 0
    fingerprint = encoder_fingerprint(segmenter)  # the weights hashed once for every split's cache key
    for name, split in data.items():
        embeddings, from_cache = cached_embeddings(segmenter, split, cache_dir=context.cache_dir, batch_size=batch_size,
                                                   device=context.device, progress=context.progress,
                                                   fingerprint=fingerprint)
        encoded += 0 if from_cache else len(split)

        def prepare(i: int, item: dict, embeddings=embeddings) -> tuple[torch.Tensor, torch.Tensor]:
            x = torch.from_numpy(np.array(embeddings[i], dtype=np.float32))
            return x, sam_training_target(segmenter, item["mask"], low_res)

        out[name] = training_split(split, prepare, "+embeddings")
    return out, encoded


@register_usage
class SegmentDecoder(Usage):
    """``seg_decoder``: frozen encoder (embeddings cached), prompt encoder + mask decoder trained."""

    name = "seg_decoder"
    defaults = {**SCORING_DEFAULTS, "batch_size": 4}  # batch_size: images per encoder batch (caching)

    def build(self, backbone: Segmenter, data: dict, context: UsageContext):
        if not backbone.promptable or backbone.config.get("spatial_dims") == 3:
            raise ValueError(f"seg_decoder needs a 2D SAM-family segmenter; got {backbone.name!r} (MONAI networks: seg_ft)")
        n_classes = n_output_classes(data["train"], self.params["n_classes"])
        # embeddings first: the cache key hashes the segmenter's module before anything is trained
        low_res = int(backbone.config.get("low_res_size", 4 * backbone.embedding_shape()[-1]))
        splits, encoded = embedding_splits(backbone, data, context, int(self.params["batch_size"]), low_res)
        for p in backbone.module.parameters():
            p.requires_grad_(False)
        model = DecoderOnEmbeddings(backbone, n_classes, self.params)
        model.encoded = encoded
        return model, splits
