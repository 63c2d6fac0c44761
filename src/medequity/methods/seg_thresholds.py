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
  after in ``self.log["val_dice"]``;
* validation is streamed: every coordinate-ascent pass re-runs the model over validation in
  batches of ``batch_size`` (default: the trainer's evaluation batch, at most the training batch
  size) and keeps per-group Dice sums, not
  logit maps — a few forward passes instead of a whole 3D split's logits in memory.

Segmentation only: for classification use ``threshold_optimizer``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from medequity.methods._segmentation import is_segmentation
from medequity.methods.base import Method, register_method
from medequity.training.segmentation import hard_dice_per_sample
from medequity.training.trainer import eval_batch_size

#: One validation batch: logits (B, K, *spatial) without offsets, masks (B, *spatial), groups (B,).
Chunk = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


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
    defaults = {"max_offset": 8.0, "steps": 33, "rounds": 2, "min_samples": 5, "batch_size": None}
    needs_groups_at_inference = True

    def __init__(self, **params):
        super().__init__(**params)
        p = self.params
        if not float(p["max_offset"]) > 0:
            raise ValueError(f"max_offset must be > 0; got {p['max_offset']!r}")
        for key in ("steps", "rounds", "min_samples", "batch_size"):
            if key == "batch_size" and p[key] is None:  # the trainer's evaluation batch (setup)
                continue
            if not isinstance(p[key], (int, np.integer)) or p[key] < 1:
                raise ValueError(f"{key} must be a positive integer; got {p[key]!r}")
        self.group_names: tuple[str, ...] = ()
        self.batch_size = 0  # validation batch size, set by setup

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
        self.batch_size = int(self.params["batch_size"] or eval_batch_size(model, config))
        self.extra["offsets"] = Offsets(train.n_groups, int(n_classes))

    def logits(self, model, x, groups=None):
        logits = model(x)
        if groups is None:
            return logits
        offsets = self.extra["offsets"]
        return shifted(logits, offsets.table[offsets.rows(groups)])

    # --- fitting on validation ---------------------------------------------------------------------
    def _validation_chunks(self, model, val) -> Callable[[], Iterator[Chunk]]:
        """A pass over validation: the model's logits (no offsets), masks and groups, one batch at a
        time. Each pass re-runs the model rather than keeping every logit map: a 3D validation split's
        logits do not fit in memory, and a pass costs a forward per batch."""
        device = next(model.parameters()).device
        groups = torch.as_tensor(np.asarray(val.groups))
        size = self.batch_size

        @torch.no_grad()
        def chunks() -> Iterator[Chunk]:
            model.eval()
            loader = torch.utils.data.DataLoader(val.items, batch_size=size, shuffle=False)
            for start, batch in zip(range(0, len(groups), size), loader):
                yield model(batch["x"].to(device)).float().cpu(), batch["y"], groups[start : start + size]
        return chunks

    def _group_dice(self, chunks: Callable[[], Iterator[Chunk]], table: torch.Tensor, n_groups: int,
                    trials: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
        """Each group's mean hard Dice for each trial (class ``k`` set to ``value`` in the group's current
        offsets; ``k = 0`` leaves them as they are), in one pass: (groups, trials), −inf where a group has
        no scored sample, and the number of scored samples. Per-sample Dice is summed as it comes, so memory
        holds one batch."""
        sums, counts = np.zeros((n_groups, len(trials))), np.zeros((n_groups, len(trials)))
        for z, y, g in chunks():
            known = (g >= 0) & (g < n_groups)
            if not bool(known.any()):
                continue
            z, y, g = z[known], y[known], g[known].long()
            for t, (k, value) in enumerate(trials):
                offsets = table[g].clone()
                if k:
                    offsets[:, k] = value
                dice = hard_dice_per_sample(shifted(z, offsets), y).numpy()
                scored = np.isfinite(dice)
                np.add.at(sums[:, t], g.numpy()[scored], dice[scored])
                np.add.at(counts[:, t], g.numpy()[scored], 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, sums / np.maximum(counts, 1), -math.inf), counts

    def fit_offsets(self, logits: torch.Tensor, masks: torch.Tensor, groups: np.ndarray) -> torch.Tensor:
        """The (groups + 1, K) offsets maximising each group's mean hard Dice (module doc), for logits in memory."""
        def chunks() -> Iterator[Chunk]:
            yield logits, masks, torch.as_tensor(np.asarray(groups))
        return self._fit(chunks, logits.shape[1])[0]

    def _fit(self, chunks: Callable[[], Iterator[Chunk]], n_classes: int) -> tuple[torch.Tensor, np.ndarray]:
        """Coordinate ascent over the foreground classes, all groups at once (a group's Dice depends on its
        own rows only, so this equals fitting each group alone). Returns the table and each group's Dice
        before (offsets 0)."""
        n_groups = len(self.group_names)
        table = torch.zeros(n_groups + 1, n_classes)
        grid = [float(v) for v in torch.linspace(-float(self.params["max_offset"]), float(self.params["max_offset"]),
                                                 int(self.params["steps"]))]
        rounds = 1 if n_classes == 2 else int(self.params["rounds"])
        before, counts = self._group_dice(chunks, table, n_groups, [(0, 0.0)])
        fitted = counts[:, 0] >= int(self.params["min_samples"])
        self.log["kept_zero"] = [self.group_names[g] for g in range(n_groups) if not fitted[g]]
        for _ in range(rounds):
            for k in range(1, n_classes):
                values, _ = self._group_dice(chunks, table, n_groups, [(k, c) for c in grid])
                for g in np.flatnonzero(fitted):
                    best = values[g].max()
                    ties = [c for c, v in zip(grid, values[g]) if v >= best - 1e-12]
                    table[g, k] = min(ties, key=lambda c: abs(c - float(table[g, k])))
        return table, before[:, 0]

    def finalize(self, model, train, val, predict) -> None:
        chunks = self._validation_chunks(model, val)
        n_classes = int(self.extra["offsets"].table.shape[1])
        table, before = self._fit(chunks, n_classes)
        holder = self.extra["offsets"]
        holder.table.copy_(table.to(holder.table))
        self.log["offsets"] = [{"group": name, "offsets": [float(v) for v in table[g]]}
                               for g, name in enumerate(self.group_names)]
        after, counts = self._group_dice(chunks, table, len(self.group_names), [(0, 0.0)])
        present = set(np.asarray(val.groups).tolist())
        self.log["val_dice"] = [{"group": name, "before": float(before[g]) if counts[g, 0] else math.nan,
                                 "after": float(after[g, 0]) if counts[g, 0] else math.nan}
                                for g, name in enumerate(self.group_names) if g in present]

    def state(self) -> dict:
        return {"offsets": self.log.get("offsets", [])}
