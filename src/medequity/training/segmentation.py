"""Segmentation in the shared training loop: the loss, validation scores and the validation summary.

A trainable segmentation model (the ``seg_decoder``, ``seg_lora`` and ``seg_ft`` usages) maps a
batch's ``"x"`` to logits ``(B, K, *spatial)`` over ``K = C + 1`` classes (background included,
softmax over them) and its training items carry the integer label mask as ``"y"`` (``(B,
*spatial)``, at the logits' resolution). That is all the trainer and the methods need:

* :meth:`medequity.methods.base.Method.per_sample_loss` sees an integer mask target and returns
  :func:`segmentation_per_sample_loss` — so ERM, resampling and any method written on per-sample
  losses train segmenters unchanged (group codes reach them through ``batch["group"]`` as in
  classification);
* the trainer scores validation samples with the model's ``validation_scores`` (per-sample hard
  Dice, :func:`hard_dice_per_sample`) and summarises them with its ``validation_summary``
  (:func:`segmentation_validation_summary`: Dice, worst-group Dice, ES-Dice), so checkpoint
  selection uses ``selection="worst_group_dice"`` (the segmentation task's default), ``"dice"`` or
  ``"es_dice"``.

The loss is FairSeg's (Tian et al., ICLR 2024, code as read in the project's SEGMENTATION.md):
``0.2·CE + 0.8·Dice`` with the Dice loss as coded there, ``1 − (2Σst + 1e-5) / (Σs² + Σt² + 1e-5)``
on softmax probabilities ``s`` and one-hot targets ``t``, summed over all ``C + 1`` classes
(background included). FairSeg pools the Dice sums over the whole batch
(:func:`pooled_dice_loss`); the per-sample form here pools over each sample's pixels only, so that
a method can weight or group samples (ours; ERM's mean of per-sample losses differs from FairSeg's
pooled batch loss by that choice).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

CE_WEIGHT = 0.2  # FairSeg's loss weights (0.2·CE + 0.8·Dice)
DICE_WEIGHT = 0.8
DICE_SMOOTH = 1e-5  # FairSeg's Dice smoothing (numerator and denominator)


def is_mask_target(y: torch.Tensor) -> bool:
    """True for a segmentation target: an integer label mask ``(B, *spatial)`` (not a (B,) label)."""
    return y.ndim >= 3 and not torch.is_floating_point(y)


def one_hot(target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``(B, *spatial)`` labels → ``(B, K, *spatial)`` float one-hot; a label ≥ K is an error."""
    if int(target.max()) >= n_classes or int(target.min()) < 0:
        raise ValueError(f"mask labels must be in [0, {n_classes - 1}] for a model with {n_classes} output channels; "
                         f"got labels {int(target.min())}..{int(target.max())}")
    return F.one_hot(target.long(), n_classes).movedim(-1, 1).float()


def dice_loss_terms(probs: torch.Tensor, onehot: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """FairSeg's coded Dice loss ``1 − (2Σst + ε)/(Σs² + Σt² + ε)`` per class, the sums over ``dims``."""
    intersect = (probs * onehot).sum(dim=tuple(dims))
    denominator = (probs * probs).sum(dim=tuple(dims)) + (onehot * onehot).sum(dim=tuple(dims))
    return 1 - (2 * intersect + DICE_SMOOTH) / (denominator + DICE_SMOOTH)


def per_sample_dice_loss(probs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """(B,) Dice loss of each sample (its pixels pooled), summed over the K classes."""
    spatial = list(range(2, probs.ndim))
    return dice_loss_terms(probs, onehot, spatial).sum(dim=1)


def pooled_dice_loss(probs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Scalar Dice loss with the sums pooled over every sample and pixel, summed over the K classes
    (FairSeg's ``DiceLoss`` as coded)."""
    dims = [0, *range(2, probs.ndim)]
    return dice_loss_terms(probs, onehot, dims).sum()


def segmentation_per_sample_loss(logits: torch.Tensor, target: torch.Tensor, *, ce_weight: float = CE_WEIGHT,
                                 dice_weight: float = DICE_WEIGHT) -> torch.Tensor:
    """(B,) ``ce_weight·CE + dice_weight·Dice`` per sample: the mean pixel cross-entropy and the
    per-sample Dice loss (FairSeg's weights and Dice formula; see the module doc)."""
    if logits.shape[0] != target.shape[0] or tuple(logits.shape[2:]) != tuple(target.shape[1:]):
        raise ValueError(f"logits {tuple(logits.shape)} and mask {tuple(target.shape)} do not match: the mask must be "
                         "(B, *spatial) at the logits' resolution")
    onehot = one_hot(target, logits.shape[1])  # checks the labels before the cross-entropy indexes with them
    ce = F.cross_entropy(logits.float(), target.long(), reduction="none").flatten(1).mean(dim=1)
    dice = per_sample_dice_loss(torch.softmax(logits.float(), dim=1), onehot)
    return ce_weight * ce + dice_weight * dice


@torch.no_grad()
def hard_dice_per_sample(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) Dice of the argmax label map, the mean over foreground classes present in the truth or
    the prediction; NaN for a sample with neither (nothing to score, as the metrics' default)."""
    pred = logits.argmax(dim=1)
    k = logits.shape[1]
    flat_pred, flat_true = pred.flatten(1), target.long().flatten(1)
    values = []
    for c in range(1, k):
        p, t = flat_pred == c, flat_true == c
        denominator = (p.sum(1) + t.sum(1)).float()
        dice = 2 * (p & t).sum(1).float() / denominator.clamp(min=1)
        values.append(torch.where(denominator > 0, dice, torch.full_like(dice, float("nan"))))
    if not values:
        raise ValueError("a segmentation model needs at least 2 output channels (background + one class)")
    return torch.nanmean(torch.stack(values, dim=1), dim=1)


def segmentation_validation_summary(scores: np.ndarray, groups: np.ndarray, group_names: Sequence[str]) -> dict[str, float]:
    """The trainer's view of a validation split from per-sample Dice: ``dice`` (mean over scored
    samples), ``dice_group{g}`` per group, ``worst_group_dice``, ``dice_gap`` and ``es_dice``
    (FairSeg's ES-Dice, overall / (1 + Σ_g |overall − D_g|)). Samples with a NaN Dice and groups
    without scored samples are left out; unknown groups (−1) count in ``dice`` only."""
    scores = np.asarray(scores, dtype=np.float64)
    groups = np.asarray(groups)
    scored = np.isfinite(scores)
    overall = float(scores[scored].mean()) if scored.any() else float("nan")
    out = {"dice": overall}
    present = []
    for g in range(len(group_names)):
        members = scored & (groups == g)
        value = float(scores[members].mean()) if members.any() else float("nan")
        out[f"dice_group{g}"] = value
        if members.any():
            present.append(value)
    values = np.asarray(present)
    if values.size:
        out["worst_group_dice"] = float(values.min())
        out["dice_gap"] = float(values.max() - values.min())
        out["es_dice"] = float(overall / (1.0 + np.abs(overall - values).sum()))  # one group: the overall Dice
    else:
        out.update(worst_group_dice=float("nan"), dice_gap=float("nan"), es_dice=float("nan"))
    return out


class SegmentationValidation:
    """Mixin of trainable segmentation models: how the trainer scores and summarises validation."""

    def validation_scores(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        """Per-sample hard Dice at the training resolution (the trainer's validation scores)."""
        return hard_dice_per_sample(logits, batch["y"])

    def validation_summary(self, data, scores: np.ndarray) -> dict[str, float]:
        return segmentation_validation_summary(scores, data.groups, data.group_names)
