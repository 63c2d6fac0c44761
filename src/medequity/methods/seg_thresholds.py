"""Post-hoc per-group logit thresholds for segmentation, chosen on validation (ours; the
segmentation analogue of group-specific thresholds, Hardt et al. 2016, review §2.2.3).

The model trains as ERM does (0.2·CE + 0.8·Dice per sample). After training, ``finalize`` picks
for each group ``g`` an offset per foreground class, ``b_g ∈ R^{C+1}`` (``b_{g,0} = 0``), and a
sample of group ``g`` is segmented as

    label(pixel) = argmax_k ( z_k(pixel) + b_{g,k} )

With one foreground class this is a threshold on the logit margin: foreground where
``z_1 − z_0 > −b_{g,1}``, i.e. where P(foreground) > σ(−b_{g,1}) (``b = 0``: the plain argmax).
Each group's offsets maximise that group's mean validation Dice (the per-sample hard Dice of
:func:`~medequity.training.segmentation.hard_dice_per_sample`, the trainer's validation score, at
the model's training resolution): a grid search over ``linspace(−max_offset, max_offset, steps)``
for each foreground class in turn, ``rounds`` passes of coordinate ascent when there are several
classes (one pass is exact for one class). Ties go to the offset closest to the current one (to 0
on the first pass), so a flat Dice curve leaves the argmax alone.

Details:

* a group with fewer than ``min_samples`` scored validation samples keeps offset 0 (logged in
  ``self.log["kept_zero"]``); so does a sample of unknown group (−1) at inference;
* the offsets are added at the model's resolution, before the logits are brought to the original
  size; bilinear (and trilinear) resizing has weights summing to 1, so a constant offset per
  channel commutes with it and the original-size argmax uses the same thresholds;
* the offsets live in ``self.extra["offsets"]`` (a buffer, saved with the model's checkpoint) and
  ``self.log["offsets"]`` (per group, per class), with each group's validation Dice before and
  after in ``self.log["val_dice"]``.

Segmentation only: for classification use ``threshold_optimizer``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from medequity.methods._segmentation import is_segmentation
from medequity.methods.base import Method, register_method
from medequity.training.segmentation import hard_dice_per_sample


class Offsets(nn.Module):
    """A (groups + 1, C + 1) table of logit offsets; the last row (unknown group) stays 0."""

    def __init__(self, n_groups: int, n_classes: int):
        super().__init__()
        self.register_buffer("table", torch.zeros(n_groups + 1, n_classes))

    def rows(self, groups: torch.Tensor) -> torch.Tensor:
        """Each sample's row: its group's, the last one for an unknown group (−1)."""
        n_groups = self.table.shape[0] - 1
        groups = groups.long().to(self.table.device)
        return torch.where((groups >= 0) & (groups < n_groups), groups, torch.full_like(groups, n_groups))


def shifted(logits: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``logits`` (B, K, *spatial) plus per-sample offsets (B, K) on every pixel."""
    return logits + offsets.to(logits).view(*offsets.shape, *([1] * (logits.ndim - 2)))


@register_method
class SegmentationThresholds(Method):
    """Per-group logit offsets (thresholds) chosen on validation to maximise each group's Dice."""

    name = "seg_thresholds"
    tasks = ("segmentation",)
    defaults = {"max_offset": 8.0, "steps": 33, "rounds": 2, "min_samples": 5, "batch_size": 32}
    needs_groups_at_inference = True

    def __init__(self, **params):
        super().__init__(**params)
        p = self.params
        if not float(p["max_offset"]) > 0:
            raise ValueError(f"max_offset must be > 0; got {p['max_offset']!r}")
        for key in ("steps", "rounds", "min_samples", "batch_size"):
            if not isinstance(p[key], (int, np.integer)) or p[key] < 1:
                raise ValueError(f"{key} must be a positive integer; got {p[key]!r}")
        self.group_names: tuple[str, ...] = ()

    def setup(self, model, train, config) -> None:
        if not is_segmentation(train):
            raise ValueError("seg_thresholds is a segmentation method (per-group logit offsets on label maps); for "
                             "classification use threshold_optimizer")
        n_classes = getattr(model, "n_classes", None)
        if n_classes is None:  # any model: one forward on one training item
            with torch.no_grad():
                x = train.items[0]["x"][None].to(next(model.parameters()).device)
                n_classes = model(x).shape[1]
        self.group_names = tuple(train.group_names)
        self.extra["offsets"] = Offsets(train.n_groups, int(n_classes))

    def logits(self, model, x, groups=None):
        logits = model(x)
        if groups is None:
            return logits
        offsets = self.extra["offsets"]
        return shifted(logits, offsets.table[offsets.rows(groups)])

    # --- fitting on validation ---------------------------------------------------------------------
    @torch.no_grad()
    def _validation_logits(self, model, val) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """The model's validation logits (no offsets), masks and groups, in memory (CPU)."""
        model.eval()
        device = next(model.parameters()).device
        loader = torch.utils.data.DataLoader(val.items, batch_size=int(self.params["batch_size"]), shuffle=False)
        logits, masks = [], []
        for batch in loader:
            logits.append(model(batch["x"].to(device)).float().cpu())
            masks.append(batch["y"])
        return torch.cat(logits), torch.cat(masks), np.asarray(val.groups)

    def fit_offsets(self, logits: torch.Tensor, masks: torch.Tensor, groups: np.ndarray) -> torch.Tensor:
        """The (groups + 1, K) offsets maximising each group's mean hard Dice (module doc)."""
        n_groups, n_classes = len(self.group_names), logits.shape[1]
        table = torch.zeros(n_groups + 1, n_classes)
        grid = torch.linspace(-float(self.params["max_offset"]), float(self.params["max_offset"]), int(self.params["steps"]))
        rounds = 1 if n_classes == 2 else int(self.params["rounds"])
        self.log["kept_zero"] = []
        for g in range(n_groups):
            rows = np.flatnonzero(groups == g)
            z, y = logits[rows], masks[rows]
            before = hard_dice_per_sample(z, y).numpy()
            if int(np.isfinite(before).sum()) < int(self.params["min_samples"]):
                self.log["kept_zero"].append(self.group_names[g])
                continue
            offsets = torch.zeros(n_classes)
            for _ in range(rounds):
                for k in range(1, n_classes):
                    values = []
                    for candidate in grid:
                        trial = offsets.clone()
                        trial[k] = candidate
                        dice = hard_dice_per_sample(shifted(z, trial.expand(len(rows), -1)), y).numpy()
                        values.append(float(np.nanmean(dice)) if np.isfinite(dice).any() else -math.inf)
                    best = max(values)
                    ties = [float(c) for c, v in zip(grid, values) if v >= best - 1e-12]
                    offsets[k] = min(ties, key=lambda c: abs(c - float(offsets[k])))
            table[g] = offsets
        return table

    def finalize(self, model, train, val, predict) -> None:
        logits, masks, groups = self._validation_logits(model, val)
        table = self.fit_offsets(logits, masks, groups)
        holder = self.extra["offsets"]
        holder.table.copy_(table.to(holder.table))
        self.log["offsets"] = [{"group": name, "offsets": [float(v) for v in table[g]]}
                               for g, name in enumerate(self.group_names)]
        self.log["val_dice"] = []
        for g, name in enumerate(self.group_names):
            rows = np.flatnonzero(groups == g)
            if rows.size == 0:
                continue
            before = hard_dice_per_sample(logits[rows], masks[rows]).numpy()
            after = hard_dice_per_sample(shifted(logits[rows], table[g].expand(rows.size, -1)), masks[rows]).numpy()
            self.log["val_dice"].append({"group": name, "before": float(np.nanmean(before)) if np.isfinite(before).any()
                                         else math.nan, "after": float(np.nanmean(after)) if np.isfinite(after).any() else math.nan})

    def state(self) -> dict:
        return {"offsets": self.log.get("offsets", [])}
