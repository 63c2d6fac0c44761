"""Grad-CAM explanations of an adversarial-mask method (Fair Diagnosis §4.5, Fig. 4; FAAP).

On a few test images balanced over (group, label) cells and picked with a seed, we compute

* Grad-CAM of the frozen classifier's Ŷ on the original image x and on the masked image x̃ = perturb(x);
* Grad-CAM of the discriminator's Ŝ = d_Y(x̃, y) on the masked image (the logit of the true group);
* per image, the overlap of Ŷ(x̃) and Ŝ(x̃) (:func:`~medequity.explain.gradcam.cam_overlap`: IoU of
  the top-20% pixels and Pearson r) and the means over images — high overlap means the classifier
  still looks where the sensitive attribute is read, low overlap that they are separated.

The result is plain data (:class:`MaskExplanation`); :mod:`medequity.report.explanations` renders it.
Only image inputs (4-D x) are explained; feature inputs (linear probing) give None.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medequity.explain.gradcam import cam_overlap, classifier_cam, sensitive_cam

logger = logging.getLogger(__name__)

TOP = 0.2  # the hottest fraction of pixels compared by the IoU


@dataclass
class MaskExplanation:
    """Grad-CAM maps and overlap scores of an adversarial-mask method on a few test images."""

    method: str
    group_names: tuple[str, ...]
    seed: int
    images: np.ndarray  # (n, C, H, W) the inputs x
    mask: np.ndarray  # (n, H, W) |x̃ − x| summed over channels
    cam_y: np.ndarray  # Grad-CAM of Ŷ on x
    cam_y_masked: np.ndarray  # ... on x̃
    cam_s: np.ndarray  # Grad-CAM of Ŝ = d_Y(x̃, y) on x̃
    rows: list[dict[str, Any]]  # per image: sample_id, group, label, score, iou, pearson, shifts, mask_l1_mean
    mean_iou: float | None
    mean_pearson: float | None
    log: dict[str, list] = field(default_factory=dict)  # the method's per-epoch log
    top: float = TOP
    comparison: str = "Grad-CAM of Ŷ on x̃ vs Grad-CAM of Ŝ = d_Y(x̃, y) (true group's logit)"

    @property
    def iou(self) -> np.ndarray:
        return np.array([row["iou"] for row in self.rows], dtype=float)

    @property
    def pearson(self) -> np.ndarray:
        return np.array([np.nan if row["pearson"] is None else row["pearson"] for row in self.rows], dtype=float)


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _json_log(log: dict) -> dict[str, list]:
    out = {}
    for key, values in (log or {}).items():
        try:
            out[key] = [_finite(v) for v in np.asarray(values, dtype=float).ravel()]
        except (TypeError, ValueError):
            out[key] = [str(v) for v in values] if isinstance(values, (list, tuple)) else str(values)
    return out


def select_balanced(labels: np.ndarray, groups: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Up to ``n`` indices, round-robin over the (known group, label) cells, each cell shuffled by ``seed``."""
    rng = np.random.default_rng(seed)
    labels, groups = np.asarray(labels), np.asarray(groups)
    cells = []
    for g in np.unique(groups[groups >= 0]):
        for y in np.unique(labels):
            members = np.flatnonzero((groups == g) & (labels == y))
            if len(members):
                cells.append(list(rng.permutation(members)))
    chosen: list[int] = []
    while len(chosen) < n and any(cells):
        for cell in cells:
            if cell and len(chosen) < n:
                chosen.append(int(cell.pop(0)))
    return np.asarray(sorted(chosen), dtype=np.int64)


def explain_adversarial_mask(model, method, data, *, n_images: int = 8, seed: int = 0) -> MaskExplanation | None:
    """The explanation of ``method`` (with ``perturb``/``sensitive_logits``) in front of ``model`` on
    ``data`` (a SplitData); None, with a logged reason, for feature inputs or no known group."""
    extra = getattr(method, "extra", None)
    generator = extra["generator"] if extra is not None and "generator" in extra else None
    if generator is None or generator.__class__.__name__ == "MLPMaskGenerator":
        logger.warning("%s explanations skipped: Grad-CAM needs image inputs (4-D x); this run trained on features", method.name)
        return None
    index = select_balanced(data.labels, data.groups, n_images, seed=seed)
    if len(index) == 0:
        logger.warning("%s explanations skipped: no test image with a known group", method.name)
        return None
    x = torch.stack([data.items[int(i)]["x"] for i in index]).float()
    if x.dim() != 4:
        logger.warning("%s explanations skipped: Grad-CAM needs image inputs (4-D x); got shape %s", method.name, tuple(x.shape))
        return None
    device = next(model.parameters()).device
    x = x.to(device)
    y = torch.as_tensor(data.labels[index], dtype=torch.float32, device=device)
    groups = torch.as_tensor(data.groups[index], dtype=torch.long, device=device)

    was_training = model.training, method.extra.training
    try:
        model.eval()
        method.extra.eval()
        with torch.no_grad():
            x_tilde = method.perturb(x)
            probability = torch.sigmoid(method.logits(model, x)).view(-1).cpu().numpy()
        cam_y = classifier_cam(model, x)  # the deployed classifier on the original image
        cam_y_masked = classifier_cam(model, x, method=method)  # ... on x̃ (mask applied inside)
        cam_s = sensitive_cam(model, method, x, y, groups=groups)  # d_Y on x̃, true group's logit
    finally:
        model.train(was_training[0])
        method.extra.train(was_training[1])
    mask = (x_tilde - x).abs().sum(dim=1).detach().cpu().numpy()
    overlap = cam_overlap(cam_y_masked, cam_s, top=TOP)
    shift = cam_overlap(cam_y, cam_y_masked, top=TOP)
    iou, pearson = np.asarray(overlap["iou"], dtype=float), np.asarray(overlap["pearson"], dtype=float)
    sample_ids = data.table["sample_id"].astype(str).to_numpy()[index]
    rows = [{"sample_id": str(sample_ids[k]), "group": data.group_names[int(data.groups[i])], "label": int(data.labels[i]),
             "score": _finite(probability[k]), "iou": float(iou[k]), "pearson": _finite(pearson[k]),
             "iou_y_shift": float(np.asarray(shift["iou"])[k]), "pearson_y_shift": _finite(np.asarray(shift["pearson"])[k]),
             "mask_l1_mean": float(mask[k].mean())}
            for k, i in enumerate(index)]
    return MaskExplanation(
        method=method.name, group_names=tuple(data.group_names), seed=seed, images=x.detach().cpu().numpy(), mask=mask,
        cam_y=cam_y, cam_y_masked=cam_y_masked, cam_s=cam_s, rows=rows, mean_iou=_finite(np.mean(iou)),
        mean_pearson=_finite(np.nanmean(pearson)) if np.isfinite(pearson).any() else None, log=_json_log(method.log))
