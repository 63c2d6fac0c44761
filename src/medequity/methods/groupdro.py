"""GroupDRO — Sagawa, Koh, Hashimoto & Liang, "Distributionally robust neural networks for group
shifts", ICLR 2020, Algorithm 1 with the group adjustment of their eq. (5).

Groups are the cells (sensitive attribute × label), ``g = 2·a + y``. On every *training* batch:

    ℓ̃_g = ℓ_g + C / √n_g                      (ℓ_g: mean BCE of the batch's samples in g,
                                                n_g: g's training-set count, C = ``adjustment``)
    q_g ← q_g · exp(η · ℓ̃_g),  q ← q / Σ q     (η = ``step_size``; ℓ̃ detached)
    loss = Σ_g q_g · ℓ̃_g

Defaults: ``step_size`` η = 0.01 (Sagawa et al.'s ``robust_step_size``; FairMedFM does not state
one), ``adjustment`` C = 1 (FairMedFM D.1.3, "Group adjustments: 1"; Sagawa et al. tune C ∈ [0, 5],
C = 0 is plain GroupDRO). q starts uniform.

Details that differ from public code, on purpose:

* q changes only in :meth:`loss` called with the model in train mode, i.e. on training batches —
  MEDFAIR also updated it on validation batches.
* A group absent from the batch is neither updated (factor 1) nor in the loss (a batch says nothing
  about it; adding its adjustment to a zero loss would raise its weight for being absent).
* Samples whose sensitive attribute is missing (group -1): ``missing_attribute="group"`` (default)
  makes "unknown" one more attribute value, so (unknown, y) are DRO groups too and no sample is
  discarded; ``missing_attribute="drop"`` leaves them out of the loss. With no such samples in
  training both agree. (This parameter was called ``unknown``, with values ``cell``/``drop``; the
  old name is refused with an error that gives the new one.)

Segmentation (a split whose targets are label masks, e.g. ``seg_decoder``): there is no
per-sample label to cross with, so the DRO groups are the sensitive attribute's values alone,
``g = a`` (FairSeg's groups), and ℓ_g is the mean of the per-sample segmentation loss
(0.2·CE + 0.8·Dice, :meth:`~medequity.methods.base.Method.per_sample_loss`) over the batch's samples
in g. The update, the adjustment and ``missing_attribute`` are unchanged.

``self.log["q"]`` has q after every epoch (one list per epoch, ordered as ``self.log["groups"]``).
"""

from __future__ import annotations

import numpy as np
import torch

from medequity.methods._segmentation import is_segmentation
from medequity.methods.base import Method, register_method


@register_method
class GroupDRO(Method):
    """Online worst-group reweighting (Sagawa et al. 2020) over sensitive attribute × label."""

    name = "groupdro"
    tasks = ("classification", "segmentation")
    defaults = {"step_size": 0.01, "adjustment": 1.0, "missing_attribute": "group"}
    #: Earlier parameter names -> current ones (spec validation names the new one).
    renamed = {"unknown": "missing_attribute"}

    def __init__(self, **params):
        if "unknown" in params:
            value = {"cell": "group"}.get(params["unknown"], params["unknown"])
            raise ValueError(f"groupdro's parameter 'unknown' is now called 'missing_attribute' (what to do with "
                             f"samples whose sensitive attribute is missing): write missing_attribute={value!r}")
        super().__init__(**params)
        if self.params["missing_attribute"] not in ("group", "drop"):
            raise ValueError("groupdro's missing_attribute must be 'group' (samples with a missing attribute form "
                             f"their own group) or 'drop' (left out of the loss); got {self.params['missing_attribute']!r}")
        if not float(self.params["step_size"]) >= 0:
            raise ValueError("step_size must be >= 0")
        if not float(self.params["adjustment"]) >= 0:
            raise ValueError("adjustment must be >= 0")
        self.q: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None
        self.n_attr = 0  # attribute values used as DRO groups (known groups, plus one for unknown)
        self.by_label = True  # groups are attribute × label (classification); attribute alone (segmentation)

    # --- groups ------------------------------------------------------------------------------------
    def group_index(self, groups: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """DRO group of each sample (2·a + y; a for segmentation); -1 where the sample takes no part."""
        a = groups.long()
        if self.params["missing_attribute"] == "group":
            a = torch.where(a < 0, torch.full_like(a, self.n_attr - 1), a)
        if not self.by_label:
            return a.clamp(min=-1)
        if y is None or y.ndim != 1:
            raise ValueError("GroupDRO was set up on a classification split (groups = attribute × label) but got targets "
                             f"of shape {None if y is None else tuple(y.shape)}: one 0/1 label per sample is needed")
        index = 2 * a + (y > 0.5).long()
        return torch.where(a < 0, torch.full_like(index, -1), index)

    def setup(self, model, train, config) -> None:
        groups = np.asarray(train.groups, dtype=np.int64)
        has_unknown = bool((groups < 0).any()) and self.params["missing_attribute"] == "group"
        self.n_attr = train.n_groups + int(has_unknown)
        self.by_label = not is_segmentation(train)
        names = list(train.group_names) + (["unknown"] if has_unknown else [])
        self.group_names = [f"{name}|y={y}" for name in names for y in (0, 1)] if self.by_label else names
        labels = torch.as_tensor(np.asarray(train.labels), dtype=torch.float32) if self.by_label else None
        index = self.group_index(torch.as_tensor(groups), labels)
        n_groups = len(self.group_names)
        counts = torch.bincount(index[index >= 0], minlength=n_groups).double()
        self.counts = counts
        self.q = torch.full((n_groups,), 1.0 / n_groups, dtype=torch.double)
        self.log["groups"] = self.group_names
        self.log["group_counts"] = counts.long().tolist()
        self.log["q"] = []

    # --- loss --------------------------------------------------------------------------------------
    def group_losses(self, per_sample: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean loss per DRO group, bool mask of groups present in the batch)."""
        n_groups = len(self.q)
        valid = index >= 0
        sums = torch.zeros(n_groups, dtype=per_sample.dtype, device=per_sample.device)
        sums = sums.index_add(0, index[valid], per_sample[valid])
        counts = torch.bincount(index[valid], minlength=n_groups).to(per_sample.device)
        present = counts > 0
        return sums / counts.clamp(min=1).to(per_sample.dtype), present

    def robust_loss(self, per_sample: torch.Tensor, index: torch.Tensor, *, update: bool) -> torch.Tensor:
        losses, present = self.group_losses(per_sample, index)
        adjust = self.params["adjustment"] / torch.sqrt(self.counts.clamp(min=1)).to(losses)
        adjusted = (losses + adjust) * present.to(losses)
        if update:
            # absent groups have adjusted = 0, so their factor is exp(0) = 1
            q = self.q * torch.exp(self.params["step_size"] * adjusted.detach().double().cpu())
            self.q = q / q.sum()
        return (self.q.to(losses) * adjusted).sum()

    def loss(self, model, batch: dict) -> torch.Tensor:
        if self.q is None:
            raise RuntimeError("GroupDRO.setup must run before loss (the trainer calls it)")
        logits = self.logits(model, batch["x"], batch["group"])
        per_sample = self.per_sample_loss(logits, batch["y"])
        index = self.group_index(batch["group"], batch["y"] if self.by_label else None)
        if not bool((index >= 0).any()):
            return per_sample.sum() * 0.0
        return self.robust_loss(per_sample, index, update=model.training)

    def on_epoch_end(self, model, epoch: int, val_scores, summary) -> None:
        self.log["q"].append([float(v) for v in self.q])

    def state(self) -> dict:
        return {"q": None if self.q is None else self.q.tolist(), "groups": getattr(self, "group_names", [])}
