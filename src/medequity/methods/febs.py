"""FEBS — Fair Error-Bound Scaling (Tian et al., "FairSeg", ICLR 2024), for segmentation usages.

On every training batch, each demographic group's Dice loss ``L_g`` (FairSeg's coded Dice loss,
the sums pooled over the group's samples and pixels, summed over the ``C + 1`` classes; see
:mod:`medequity.training.segmentation`) gives the group a weight

    w_g = tanh((min_g' L_g' / L_g)^γ)          (γ = ``gamma``, 1 in FairSeg's runs)

computed without gradient (FairSeg's choice, kept: the weights are constants of the step). The
weights enter the loss ``ce_weight·CE + dice_weight·Dice`` (0.2 / 0.8, FairSeg's) in one of two
named ways (``mode``):

* ``"paper"`` — the paper's description: the weights scale the groups' Dice losses,
  ``Dice = Σ_g (n_g / n) · w_g · L_g`` (``n_g`` the group's samples in the batch);
* ``"coded"`` — FairSeg's code: each sample's softmax probabilities are multiplied by its group's
  weight *inside* the Dice loss, ``Dice = DiceLoss(w_{g(i)} · s_i, t_i)`` pooled over the batch —
  the probabilities are scaled, not the loss.

The cross-entropy term is not weighted in either mode (as in FairSeg's code).

Fixes of the coded form (each tested in ``tests/methods/test_febs.py``):

* the minimum runs over the groups *present in the batch*; FairSeg's ran over every group slot,
  where an absent group's loss is 0, which made every weight tanh(0) = 0 (no Dice gradient);
* a sample of unknown group (−1) keeps weight 1 and takes no part in the minimum; FairSeg indexed
  its group list with −1, which wrapped to the last group;
* ``L_g`` and the minimum are smoothed by ``1e-8`` so a group with zero loss gives weights
  ``tanh(1)`` to itself instead of 0/0 (ours).

Direction: ``w_g`` is largest (tanh 1 ≈ 0.76) for the group with the *smallest* loss and smaller
for worse groups, so in both forms the worse group's share of the Dice gradient shrinks relative
to plain Dice; ``tests/methods/test_febs.py`` measures the gradient-norm ratio worse/better for
each mode and γ. ``self.log["weights"]`` has each epoch's mean weight per group.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from medequity.methods.base import Method, register_method
from medequity.training.segmentation import (
    CE_WEIGHT,
    DICE_WEIGHT,
    is_mask_target,
    one_hot,
    pooled_dice_loss,
)

MODES = ("paper", "coded")
EPS = 1e-8


@register_method
class FEBS(Method):
    """Fair Error-Bound Scaling of the Dice loss per group (FairSeg); ``mode`` "paper" or "coded"."""

    name = "febs"
    tasks = ("segmentation",)
    defaults = {"gamma": 1.0, "mode": "paper", "ce_weight": CE_WEIGHT, "dice_weight": DICE_WEIGHT}

    def __init__(self, **params):
        super().__init__(**params)
        if self.params["mode"] not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {self.params['mode']!r}")
        if not float(self.params["gamma"]) > 0:
            raise ValueError(f"gamma must be > 0; got {self.params['gamma']!r}")
        self.n_groups = 0
        self._steps: list[np.ndarray] = []

    def setup(self, model, train, config) -> None:
        self.n_groups = train.n_groups
        self.log.setdefault("groups", list(train.group_names))
        self.log.setdefault("weights", [])
        self._steps = []

    @torch.no_grad()
    def group_weights(self, probs: torch.Tensor, onehot: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """(G,) weights ``tanh((min L / L_g)^γ)`` over the known groups present in the batch; NaN for
        the groups absent from it."""
        weights = torch.full((self.n_groups,), float("nan"), device=probs.device)
        losses = {}
        for g in range(self.n_groups):
            members = groups == g
            if bool(members.any()):
                losses[g] = pooled_dice_loss(probs[members], onehot[members])
        if losses:
            smallest = min(losses.values())
            for g, loss in losses.items():
                weights[g] = torch.tanh(((smallest + EPS) / (loss + EPS)) ** float(self.params["gamma"]))
        return weights

    def sample_weights(self, group_weights: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """(B,) each sample's group weight; 1 for an unknown group (−1), never the last group's."""
        known = (groups >= 0) & (groups < self.n_groups)
        safe = torch.where(known, groups, torch.zeros_like(groups))
        return torch.where(known, group_weights[safe], torch.ones_like(group_weights[safe]))

    def loss(self, model, batch: dict) -> torch.Tensor:
        target, groups = batch["y"], batch["group"].long()
        if not is_mask_target(target):
            raise ValueError("FEBS is a segmentation method: it needs a segmentation usage (seg_decoder, seg_lora, "
                             "seg_ft) whose batches carry label masks")
        logits = self.logits(model, batch["x"], batch["group"]).float()
        return self.febs_loss(logits, target, groups)

    def febs_loss(self, logits: torch.Tensor, target: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """``ce_weight·CE + dice_weight·Dice`` with the FEBS-weighted Dice of ``mode`` (module doc)."""
        probs = torch.softmax(logits, dim=1)
        onehot = one_hot(target, logits.shape[1])
        weights = self.group_weights(probs.detach(), onehot, groups)
        per_sample = self.sample_weights(weights, groups)
        if self.params["mode"] == "coded":
            scale = per_sample.view(-1, *([1] * (probs.ndim - 1)))
            dice = pooled_dice_loss(probs * scale, onehot)
        else:
            dice = logits.new_zeros(())
            known = (groups >= 0) & (groups < self.n_groups)
            parts = [(groups == g, weights[g]) for g in range(self.n_groups) if bool((groups == g).any())]
            if bool((~known).any()):
                parts.append((~known, logits.new_ones(())))
            for members, weight in parts:
                dice = dice + members.float().mean() * weight * pooled_dice_loss(probs[members], onehot[members])
        if torch.is_grad_enabled():  # a training step (not a no-grad evaluation): log its weights
            self._steps.append(weights.cpu().numpy())
        ce = F.cross_entropy(logits, target.long())
        return float(self.params["ce_weight"]) * ce + float(self.params["dice_weight"]) * dice

    def epoch_metrics(self, steps):
        columns = super().epoch_metrics(steps)
        if self._steps:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a group absent from every batch: NaN
                mean = np.nanmean(np.stack(self._steps), axis=0)
            self.log["weights"].append([float(v) for v in mean])
            columns.update({f"febs_w_group{g}": float(v) for g, v in enumerate(mean)})
        self._steps = []
        return columns
