"""What the segmentation forms of the methods share: telling a segmentation split from a
classification one, a trained segmenter's *decoder* (the part InD copies per group and FairDi's
teachers and student replace), the encoder features in front of it, and decoders trained on
cached features.

The decoder of each trainable segmentation usage (:mod:`medequity.usages`):

* ``seg_decoder`` and ``seg_lora``: ``head`` — SAMed's prompt encoder + mask decoder with ``C + 1``
  mask tokens (its input: the image embedding; for ``seg_decoder`` the cached embedding itself);
* ``seg_ft`` with SwinUNETR: ``network.out``, the output block (1×1 convolution on the last
  decoder stage);
* ``seg_ft`` with a MONAI UNet: ``network.model.<last>``, the last up-sampling block (a transposed
  convolution from the top skip connection's channels to ``C + 1`` at full resolution) — the only
  decoder stage a UNet's nested skip connections let one take out whole, so per-group decoders of a
  UNet are per-group top up-sampling blocks over one shared encoder–decoder trunk.

The features are the model's output with the decoder replaced by ``nn.Identity`` for the call
(:func:`encode`), so the model's own forward (preprocessing, skip connections) is reused as it is.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from medequity.training.data import SplitData
from medequity.training.segmentation import SegmentationValidation, is_mask_target


def is_segmentation(data: SplitData) -> bool:
    """True for a segmentation split: the view says so (``extra["task"]``) or its items carry
    integer label masks as ``y`` (reads one item when the view does not say)."""
    if data.extra.get("task") == "segmentation":
        return True
    if len(data) == 0:
        return False
    y = data.items[0]["y"]
    return isinstance(y, torch.Tensor) and is_mask_target(y[None])


def decoder_path(model: nn.Module) -> str:
    """The dotted name of ``model``'s decoder module (module doc); a clear error for other models."""
    head = getattr(model, "head", None)
    if isinstance(head, nn.Module) and hasattr(model, "n_classes"):
        return "head"
    network = getattr(model, "network", None)
    if isinstance(network, nn.Module):
        if isinstance(getattr(network, "out", None), nn.Module):
            return "network.out"
        sequence = getattr(network, "model", None)
        if isinstance(sequence, nn.Sequential) and len(sequence) > 0:
            return f"network.model.{len(sequence) - 1}"
    raise ValueError(f"{type(model).__name__} has no decoder this method can copy per group: the segmentation forms of "
                     "InD and FairDi need a seg_decoder or seg_lora model (head) or a seg_ft MONAI UNet / SwinUNETR")


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_name, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


@contextlib.contextmanager
def decoder_removed(model: nn.Module, path: str) -> Iterator[None]:
    """Within the block, ``model(x)`` returns the features its decoder would have received."""
    decoder = model.get_submodule(path)
    _set_submodule(model, path, nn.Identity())
    try:
        yield
    finally:
        _set_submodule(model, path, decoder)


def encode(model: nn.Module, x: torch.Tensor, path: str) -> torch.Tensor:
    """The decoder's input for a batch: the model run with its decoder taken out."""
    with decoder_removed(model, path):
        return model(x)


def decoder_copies(model: nn.Module, path: str, n: int) -> nn.ModuleList:
    """``n`` trainable copies of the model's decoder (each starts where the model's does)."""
    decoder = model.get_submodule(path)
    copies = nn.ModuleList([copy.deepcopy(decoder) for _ in range(n)])
    for p in copies.parameters():
        p.requires_grad_(True)
    return copies


def routed_logits(decoders: nn.ModuleList, features: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Each sample decoded by its own group's decoder; a sample of unknown group (−1) by the mean
    of every decoder's logits. Only the decoders of the groups present run."""
    groups = groups.long().to(features.device)
    out: torch.Tensor | None = None
    for g in torch.unique(groups).tolist():
        rows = groups == g
        part = decoders[g](features[rows]) if g >= 0 else torch.stack([d(features[rows]) for d in decoders]).mean(dim=0)
        if out is None:
            out = part.new_zeros((len(groups), *part.shape[1:]))
        out[rows] = part
    if out is None:
        raise ValueError("an empty batch has no logits")
    return out


class DecoderOnFeatures(SegmentationValidation, nn.Module):
    """A decoder trained by itself on cached encoder features (FairDi's teachers and student):
    ``forward(features)`` → logits, scored on validation by per-sample Dice like the full model."""

    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.decoder(features)


class FeatureItems(torch.utils.data.Dataset):
    """In-memory ``{"x": features, "y": mask, "group", "index"}`` items."""

    def __init__(self, features: torch.Tensor, masks: torch.Tensor, groups: np.ndarray):
        self.features, self.masks = features, masks
        self.groups = torch.as_tensor(np.asarray(groups), dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.features[i], "y": self.masks[i], "group": self.groups[i], "index": i}


@torch.no_grad()
def feature_split(model: nn.Module, path: str, data: SplitData, *, batch_size: int, device: torch.device) -> SplitData:
    """``data`` with its inputs replaced by the frozen encoder's features, computed once and held
    in memory (the masks kept as targets), for training decoders alone."""
    model.eval()
    loader = torch.utils.data.DataLoader(data.items, batch_size=batch_size, shuffle=False)
    features, masks = [], []
    for batch in loader:
        features.append(encode(model, batch["x"].to(device), path).detach().cpu())
        masks.append(batch["y"])
    if not features:
        raise ValueError("a split without samples has no features")
    return data.with_items(FeatureItems(torch.cat(features), torch.cat(masks), data.groups), "+decoder-features")
