"""What the trained segmentation usages share (``seg_decoder``, ``seg_lora``, ``seg_ft``).

* :class:`TrainedSegmenter` — the base of their models: logits ``(B, C + 1, *spatial)`` for the
  shared trainer (validation by per-sample Dice, :mod:`medequity.training.segmentation`) and
  :meth:`TrainedSegmenter.segment`, the task's predictions table: the argmax label map brought back
  to the original image size and scored there per (sample, foreground class), with the zero-shot
  usage's metrics and row layout (:func:`~medequity.usages.seg_zero_shot.class_scores`);
* :func:`training_split` — a split's training view: items ``{"x", "y", "group", "index"}`` with the
  model input and the label mask at the logits' resolution (``"y"``), the original split kept in
  ``extra["source"]`` for scoring at the original size;
* :class:`MulticlassMaskHead` — SAMed's prompt-free head for SAM-family segmenters: the prompt
  encoder's no-prompt embeddings and a mask decoder with ``C + 1`` mask tokens, all returned.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medequity.training.data import SplitData
from medequity.training.segmentation import SegmentationValidation
from medequity.usages.seg_zero_shot import class_scores, with_cdr_error

#: the options every trained segmentation usage has (scoring at the original size)
SCORING_DEFAULTS: dict[str, Any] = {
    "n_classes": None,  # C + 1 output channels; None = the dataset's class names (background first)
    "nsd_tolerance": 2.0,  # NSD tolerance in the units of ``spacing``
    "spacing": None,  # pixel/voxel spacing for HD95 and NSD; None = 1 per axis
    "cdr": "auto",  # fundus cup-to-disc ratio error; auto: when the classes are background, rim, cup
}


def n_output_classes(data: SplitData, requested: int | None) -> int:
    """C + 1: the usage's ``n_classes`` or the number of the dataset's class names (background first)."""
    if requested is not None:
        if int(requested) < 2:
            raise ValueError(f"n_classes must be >= 2 (background and at least one class); got {requested}")
        return int(requested)
    classes = list(data.extra.get("classes", []))
    if len(classes) < 2:
        raise ValueError("the dataset names no segmentation classes (info['classes']): give the usage parameter "
                         "n_classes (C + 1, background included)")
    return len(classes)


def resize_mask(mask: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """An integer label mask ``(*spatial)`` resized by nearest neighbour to ``size``."""
    return F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()


class _TrainingItems(torch.utils.data.Dataset):
    """``{"x", "y", "group", "index"}`` of a segmentation split from ``prepare(i, item) -> (x, y)``."""

    def __init__(self, source: SplitData, prepare: Callable[[int, dict], tuple[torch.Tensor, torch.Tensor]]):
        self.source, self.prepare = source, prepare

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict:
        x, y = self.prepare(i, self.source.items[i])
        return {"x": x, "y": y, "group": torch.tensor(int(self.source.groups[i])), "index": i}


def training_split(source: SplitData, prepare: Callable[[int, dict], tuple[torch.Tensor, torch.Tensor]],
                   suffix: str) -> SplitData:
    """The training view of a segmentation split (see the module doc)."""
    view = source.with_items(_TrainingItems(source, prepare), suffix)
    view.extra["source"] = source
    return view


class TrainedSegmenter(SegmentationValidation, nn.Module):
    """Base of the trained segmentation models. Subclasses define ``forward(x)`` → logits and
    :meth:`original_logits` (one sample's logits at its original size)."""

    usage: str = "base"

    def __init__(self, n_classes: int, params: dict[str, Any]):
        super().__init__()
        self.n_classes = int(n_classes)
        self.params = dict(params)

    def original_logits(self, index: int, item: dict, x: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        """(K, *original spatial) logits of sample ``index`` (``item``: its original image and mask;
        ``x``: its model input from the training view; ``logits``: the model-resolution logits
        ``(1, K, *spatial)`` when a method computed them, else ``self(x[None])``)."""
        raise NotImplementedError

    def record(self) -> dict[str, Any]:
        """What defines the predictions (saved with the run)."""
        params = {k: v for k, v in self.params.items() if k not in ("batch_size", "n_classes")}
        return {**params, "usage": self.usage, "rule": "argmax over C + 1 classes", "n_classes": self.n_classes,
                "loss": "0.2·CE + 0.8·Dice (FairSeg)"}

    @torch.no_grad()
    def segment(self, data: SplitData, *, seed: int = 0, prompt: str | None = None,
                inference: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                ) -> Iterator[dict[str, Any]]:
        """One row per (sample, foreground class): Dice, IoU, HD95 and NSD of the argmax label map at
        the original size, areas; a class absent from the truth is a ``skipped`` row (its predicted
        area recorded), as in zero-shot runs. ``seed`` and ``prompt`` are not used (no prompts).
        ``inference(model, x, groups)``: the trained method's logits for a batch (e.g. InD's
        per-group decoders, per-group logit offsets); default: the model's own forward."""
        del seed, prompt
        source = data.extra.get("source")
        if source is None:
            raise ValueError("segment() takes a split built by the usage (its training view)")
        self.eval()
        device = next(self.parameters()).device
        fundus = list(source.extra.get("classes", []))[:3] == ["background", "rim", "cup"]
        cdr = self.params["cdr"] if self.params["cdr"] != "auto" else fundus
        for i in range(len(source)):
            item = source.items[i]
            x = data.items[i]["x"].to(device)
            logits = None if inference is None else inference(self, x[None], torch.tensor([int(source.groups[i])], device=device))
            predicted = self.original_logits(i, item, x, logits).argmax(dim=0).cpu().numpy()
            mask = np.asarray(item["mask"])
            rows = []
            for cls in range(1, self.n_classes):
                truth, pred = mask == cls, predicted == cls
                row: dict[str, Any] = {"index": i, "sample_id": item["sample_id"], "class": cls, "prompt": "none",
                                       "true_area": int(truth.sum()), "pred_area": int(pred.sum())}
                if not truth.any():
                    rows.append({**row, "skipped": True, "dice": np.nan, "iou": np.nan, "hd95": np.nan, "nsd": np.nan})
                    continue
                rows.append({**row, "skipped": False, **class_scores(pred, truth, spacing=self.params["spacing"],
                                                                     nsd_tolerance=float(self.params["nsd_tolerance"]))})
            if cdr and mask.ndim == 2:
                rows = with_cdr_error(rows, predicted, mask)
            yield from rows


class MulticlassMaskHead(nn.Module):
    """SAMed's prompt-free multi-class head on a SAM-family model (Zhang & Liu 2023, used by
    FairSeg): the prompt encoder with no prompt (its no-mask dense embedding and positional
    encoding) and the mask decoder with ``n_outputs = C + 1`` mask tokens, every token's mask
    returned (SAM returns 1 or 3 of its 4). The prompt encoder and decoder are copies of the
    segmenter's (the original stays untouched, so its embedding cache key does not change).

    Initialisation (ours; SAMed starts the tokens it adds from scratch): foreground class ``c``
    starts from SAM's mask token ``(c − 1) mod 4`` and its hyper-network MLP — class 1 from token 0,
    SAM's single-mask output (``multimask_output=False``); the background channel starts as a copy
    of token 0 whose MLP's last layer is zero, so its logit is exactly 0 everywhere (a mask is the
    MLP's output times the upscaled embedding, no bias). Softmax is unchanged by adding one map to
    every channel, so a zero background logit loses nothing (the reference class of multinomial
    logistic regression) and it is trained like the others. At the start the background is then the
    complement of the foreground: with one class, P(foreground) = sigmoid(class-1 logit) and the
    argmax is SAM's rule, logit > 0. Starting the background from token 0 itself, as before, made
    it a second foreground detector: the two channels then competed on nearly equal logits.
    """

    def __init__(self, sam: nn.Module, n_outputs: int):
        super().__init__()
        if not (hasattr(sam, "prompt_encoder") and hasattr(sam, "mask_decoder")):
            raise ValueError("this usage needs a SAM-family segmenter (a prompt encoder and a mask decoder)")
        self.prompt_encoder = copy.deepcopy(sam.prompt_encoder)
        decoder = copy.deepcopy(sam.mask_decoder)
        old_tokens, old_mlps = decoder.mask_tokens.weight.detach(), decoder.output_hypernetworks_mlps
        source = [0] + [c % decoder.num_mask_tokens for c in range(n_outputs - 1)]  # background, classes 1..C
        decoder.mask_tokens = nn.Embedding(n_outputs, old_tokens.shape[1])
        decoder.mask_tokens.weight.data.copy_(old_tokens[source])
        decoder.output_hypernetworks_mlps = nn.ModuleList([copy.deepcopy(old_mlps[i]) for i in source])
        last = decoder.output_hypernetworks_mlps[0].layers[-1]  # the background's: logit 0 at the start
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        decoder.num_mask_tokens = n_outputs
        self.mask_decoder = decoder
        for p in self.parameters():
            p.requires_grad_(True)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) image embeddings → (B, C + 1, 4h, 4w) logits."""
        sparse, dense = self.prompt_encoder(points=None, boxes=None, masks=None)  # one empty prompt, batch 1
        # The batch-1 tokens attend to every image's embedding by broadcasting (as SAMed's batched call).
        masks, _ = self.mask_decoder.predict_masks(image_embeddings=embeddings, image_pe=self.prompt_encoder.get_dense_pe(),
                                                   sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense)
        return masks


def sam_training_target(segmenter, mask: np.ndarray, low_res: int) -> torch.Tensor:
    """A 2D label mask in a SAM-family model's decoder frame: placed like the image (resized with the
    profile's geometry, padded), then nearest-resized to the decoder's ``low_res`` square."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"SAM-family usages segment 2D images; got a mask of shape {mask.shape} (3D volumes: seg_ft)")
    geometry = segmenter.profile.geometry(mask.shape)
    placed = resize_mask(torch.as_tensor(mask), geometry.resized_hw)
    size = geometry.input_size
    placed = F.pad(placed, (0, size - geometry.resized_hw[1], 0, size - geometry.resized_hw[0]))
    return resize_mask(placed, (low_res, low_res))
