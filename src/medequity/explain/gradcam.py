"""Grad-CAM (Selvaraju et al., ICCV 2017) and the Ŷ-vs-Ŝ overlap of Fair Diagnosis §4.5 / Fig. 4.

Grad-CAM of a scalar score y^c at a conv layer with activations A^k (B, K, h, w):

    α_k = mean_{i,j} ∂y^c/∂A^k_ij            (eq. 1 of Selvaraju et al.: global-average-pooled gradients)
    L^c = ReLU(Σ_k α_k A^k)                   (eq. 2), upsampled bilinearly to the input size.

Hook-based, so it works for any layer of any model: pass the layer (a module or its dotted name)
and a function from the input batch to scores. Fair Diagnosis applies it at the last conv layer of
f_θ for Ŷ and "on d_Y" for Ŝ; with our default ``discriminator="encoder"`` d_Y reads f_θ(x̃), so
both maps live on the same layer and are directly comparable.

Overlap score: the paper shows the maps and says they "highly overlap" (vanilla) or are
"clearly separated" (Fair Diagnosis) but defines no number. We report two:

* ``iou`` — intersection over union of each map's top-``top`` fraction of pixels (default the
  hottest 20%): 1 for maps with the same hot region, 0 for disjoint hot regions;
* ``pearson`` — the Pearson correlation of the two maps over pixels (1 identical, ≤ 0 unrelated or
  complementary; NaN when a map is constant).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def resolve_layer(model: nn.Module, layer: nn.Module | str | None) -> nn.Module:
    """The layer to explain: a module, a dotted name in ``model``, or None for :func:`default_layer`."""
    if layer is None:
        return default_layer(model)
    if isinstance(layer, str):
        return model.get_submodule(layer)
    return layer


def default_layer(model: nn.Module) -> nn.Module:
    """The last conv block: the small CNN's ``features`` (its output is the last block after ReLU),
    a ResNet-like ``layer4``, else the last ``nn.Conv2d`` of the model."""
    backbone = getattr(model, "backbone", model)
    features = getattr(backbone, "features", None)
    if isinstance(features, nn.Sequential):
        return features
    if isinstance(getattr(backbone, "layer4", None), nn.Module):
        return backbone.layer4
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("the model has no Conv2d layer; pass layer= explicitly")
    return convs[-1]


def grad_cam(score_fn: Callable[[torch.Tensor], torch.Tensor], layer: nn.Module, x: torch.Tensor, *,
             target: int | torch.Tensor | None = None, normalize: bool = True) -> np.ndarray:
    """Grad-CAM maps (B, H, W) for the inputs ``x`` (B, C, H, W).

    ``score_fn(x)`` returns one logit per sample (B,) — explained as is (the positive class of a
    binary model) — or class logits (B, K): ``target`` picks the class (an int, or one per sample);
    None = each sample's arg-max. ``layer`` must be used by ``score_fn``. Maps are upsampled to
    (H, W) and, with ``normalize``, scaled to [0, 1] per image (an all-zero map stays zero).
    """
    store: dict[str, torch.Tensor] = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        store["a"] = output

    handle = layer.register_forward_hook(keep)
    try:
        x = x.detach().clone().requires_grad_(True)  # so the graph reaches the layer even if all weights are frozen
        with torch.enable_grad():
            out = score_fn(x)
            if out.dim() == 2:
                if target is None:
                    index = out.argmax(dim=1)
                elif isinstance(target, int):
                    index = torch.full((len(out),), target, dtype=torch.long, device=out.device)
                else:
                    index = torch.as_tensor(target, device=out.device).long().view(-1)
                out = out.gather(1, index[:, None]).squeeze(1)
            if "a" not in store:
                raise ValueError("the layer was not called by score_fn")
            activations = store["a"]
            out.sum().backward()  # samples are independent (eval mode), so one pass gives every gradient
            grads = activations.grad
    finally:
        handle.remove()
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activations).sum(dim=1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    if normalize:
        top = cam.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
        cam = cam / top
    return cam.cpu().numpy()


def classifier_cam(model: nn.Module, x: torch.Tensor, *, method=None, layer: nn.Module | str | None = None) -> np.ndarray:
    """Grad-CAM of Ŷ (the positive-class logit) at ``layer`` of the classifier (default: last conv block).
    With a Fair Diagnosis / FAAP ``method`` the mask is applied first, as at inference."""
    model.eval()
    fn = (lambda inputs: method.logits(model, inputs)) if method is not None else model
    return grad_cam(fn, resolve_layer(model, layer), x)


def sensitive_cam(model: nn.Module, method, x: torch.Tensor, y: torch.Tensor, *, groups: torch.Tensor | None = None,
                  layer: nn.Module | str | None = None, apply_mask: bool = True) -> np.ndarray:
    """Grad-CAM of Ŝ = d_Y(x̃, y): the logit of each sample's true group (``groups``; -1 or None →
    d_Y's predicted group). ``layer`` defaults to the classifier's last conv block (d_Y reads f_θ)
    or, for ``discriminator="image"``, the discriminator trunk's last conv layer."""
    model.eval()
    method.extra.eval()
    if layer is None and method.params.get("discriminator") == "image":
        layer = [m for m in method.extra["discriminator"].trunk.modules() if isinstance(m, nn.Conv2d)][-1]
    layer = resolve_layer(model, layer)

    def score(inputs):
        x_tilde = method.perturb(inputs) if apply_mask else inputs
        return method.sensitive_logits(model, x_tilde, y)

    target = None
    if groups is not None:
        with torch.no_grad():
            predicted = score(x).argmax(dim=1)
        groups = torch.as_tensor(groups).long()
        target = torch.where(groups >= 0, groups, predicted)
    return grad_cam(score, layer, x, target=target)


def cam_overlap(a, b, *, top: float = 0.2) -> dict[str, float | np.ndarray]:
    """Overlap of two Grad-CAM maps (H, W) — or batches (B, H, W), giving one value per pair.

    ``iou``: |T_a ∩ T_b| / |T_a ∪ T_b| where T is the set of the ``top`` fraction hottest pixels
    (ties at the cut all included); ``pearson``: correlation of the maps over pixels."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {a.shape} vs {b.shape}")
    if not 0 < top <= 1:
        raise ValueError("top must be in (0, 1]")
    single = a.ndim == 2
    a2, b2 = a.reshape(1 if single else len(a), -1), b.reshape(1 if single else len(b), -1)
    k = max(1, int(round(top * a2.shape[1])))

    def hot(m):
        cut = -np.partition(-m, k - 1, axis=1)[:, k - 1:k]  # the k-th largest value per map
        return m >= cut

    ha, hb = hot(a2), hot(b2)
    iou = (ha & hb).sum(1) / np.maximum((ha | hb).sum(1), 1)
    ca, cb = a2 - a2.mean(1, keepdims=True), b2 - b2.mean(1, keepdims=True)
    denom = np.sqrt((ca**2).sum(1) * (cb**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        pearson = np.where(denom > 0, (ca * cb).sum(1) / np.where(denom > 0, denom, 1), np.nan)
    if single:
        return {"iou": float(iou[0]), "pearson": float(pearson[0])}
    return {"iou": iou, "pearson": pearson}


def plot_cams(images, cam_y, cam_s, *, titles: tuple[str, str, str] = ("image", "Grad-CAM Ŷ", "Grad-CAM Ŝ"),
              overlap: bool = True, top: float = 0.2):
    """A matplotlib figure, one row per image: the image, its Ŷ map and its Ŝ map (over the image).

    ``images`` (B, C, H, W) or (B, H, W) in any (e.g. normalised) range: each is min–max scaled for
    display. With ``overlap`` the Ŝ panel's title carries the IoU and Pearson scores."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    images = images.detach().cpu().numpy() if torch.is_tensor(images) else np.asarray(images)
    cam_y, cam_s = np.asarray(cam_y), np.asarray(cam_s)
    if images.ndim == 4:
        images = images.transpose(0, 2, 3, 1)
        if images.shape[-1] == 1:
            images = images[..., 0]
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False)
    for i in range(n):
        img = images[i]
        img = (img - img.min()) / max(float(img.max() - img.min()), 1e-12)
        cmap = "gray" if img.ndim == 2 else None
        for j, (ax, cam) in enumerate(zip(axes[i], (None, cam_y[i], cam_s[i]))):
            ax.imshow(img, cmap=cmap)
            if cam is not None:
                ax.imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            title = titles[j]
            if j == 2 and overlap:
                score = cam_overlap(cam_y[i], cam_s[i], top=top)
                title += f"\nIoU {score['iou']:.2f}, r {score['pearson']:.2f}"
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    return fig
