"""The Fair Diagnosis explanation report: Grad-CAM maps of Ŷ and Ŝ and their overlap (spec "Fair Diagnosis").

For a trained Fair Diagnosis / FAAP run (:class:`medequity.experiment.RunResult`), on a few test
images balanced over (group, label) cells and picked with the run's seed, we compute

* Grad-CAM of the frozen classifier's Ŷ on the original image x and on the masked image x̃ = perturb(x);
* Grad-CAM of the discriminator's Ŝ = d_Y(x̃, y) on the masked image (the logit of the true group);
* per image, the overlap of Ŷ(x̃) and Ŝ(x̃) (:func:`medequity.explain.cam_overlap`: IoU of the top-20%
  pixels and Pearson r) and the means over images — high overlap means the classifier still
  looks where the sensitive attribute is read, low overlap that they are separated (paper Fig. 4).

Written next to the run, atomically: ``explanations.png`` (one row per image: image, mask |x̃ − x|,
Ŷ on x, Ŷ on x̃, Ŝ on x̃), ``explanations.html`` (self-contained, images as data URIs) and
``explanations.json`` (the scores, the selected samples and the method's per-epoch log).
Only image inputs (4-D x) are explained; feature inputs (linear probing) give None.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medequity.explain.gradcam import cam_overlap, classifier_cam, sensitive_cam

logger = logging.getLogger(__name__)

TOP = 0.2  # the hottest fraction of pixels compared by the IoU

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Fair Diagnosis explanations: {{ title }}</title>
<style>body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f3f3f3}img{max-width:100%}</style>
</head><body>
<h1>Grad-CAM of Ŷ (classifier) and Ŝ (discriminator)</h1>
<p>{{ title }}. {{ n }} test images balanced over group × label (seed {{ seed }}).
Overlap of Ŷ and Ŝ on the masked image x̃: IoU of the top {{ top_pct }}% pixels and Pearson r.
High overlap: the classifier looks where the sensitive attribute is read; low: separated.</p>
<h2>Mean overlap</h2>
<table><tr><th>IoU</th><th>Pearson r</th></tr>
<tr><td class="mean-iou">{{ mean_iou }}</td><td class="mean-pearson">{{ mean_pearson }}</td></tr></table>
<h2>Maps</h2>
<p>Rows: image, mask |x̃ − x|, Grad-CAM Ŷ on x, Grad-CAM Ŷ on x̃, Grad-CAM Ŝ on x̃.</p>
<img alt="Grad-CAM grid" src="{{ grid_uri }}">
<h2>Per image</h2>
<table><tr><th>#</th><th>sample</th><th>group</th><th>label</th><th>IoU</th><th>Pearson r</th>
<th>IoU Ŷ(x) vs Ŷ(x̃)</th></tr>
{% for row in rows %}<tr><td>{{ loop.index }}</td><td>{{ row.sample_id }}</td><td>{{ row.group }}</td><td>{{ row.label }}</td>
<td>{{ "%.3f"|format(row.iou) }}</td><td>{{ row.pearson_text }}</td><td>{{ "%.3f"|format(row.iou_y_shift) }}</td></tr>
{% endfor %}</table>
<h2>Training log (adversarial epochs)</h2>
{% if log_rows %}<table><tr><th>epoch</th>{% for key in log_keys %}<th>{{ key }}</th>{% endfor %}</tr>
{% for row in log_rows %}<tr><td>{{ loop.index }}</td>{% for value in row %}<td>{{ value }}</td>{% endfor %}</tr>
{% endfor %}</table>{% else %}<p>No per-epoch log.</p>{% endif %}
</body></html>
"""


def is_adversarial_mask_method(method) -> bool:
    """Duck typing: a Fair Diagnosis / FAAP-like method (it masks inputs and predicts Ŝ)."""
    return method is not None and callable(getattr(method, "perturb", None)) and callable(getattr(method, "sensitive_logits", None))


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


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


def _grid_figure(images: np.ndarray, mask: np.ndarray, cam_y: np.ndarray, cam_y_masked: np.ndarray, cam_s: np.ndarray,
                 iou: np.ndarray, pearson: np.ndarray):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    images = images.transpose(0, 2, 3, 1)
    if images.shape[-1] == 1:
        images = images[..., 0]
    elif images.shape[-1] != 3:
        images = images.mean(axis=-1)
    n = len(images)
    titles = ("image", "mask |x̃ − x|", "Grad-CAM Ŷ (x)", "Grad-CAM Ŷ (x̃)", "Grad-CAM Ŝ (x̃)")
    fig, axes = plt.subplots(n, 5, figsize=(11, 2.3 * n), squeeze=False)
    mask_top = max(float(mask.max()), 1e-12)
    for i in range(n):
        img = images[i]
        img = (img - img.min()) / max(float(img.max() - img.min()), 1e-12)
        cmap = "gray" if img.ndim == 2 else None
        for j, ax in enumerate(axes[i]):
            if j == 1:
                ax.imshow(mask[i], cmap="magma", vmin=0, vmax=mask_top)
            else:
                ax.imshow(img, cmap=cmap)
                cam = (None, None, cam_y[i], cam_y_masked[i], cam_s[i])[j]
                if cam is not None:
                    ax.imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            title = titles[j]
            if j == 4:
                title += f"\nIoU {iou[i]:.2f}, r {pearson[i]:.2f}"
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    return fig


def explain_fair_diagnosis(result, out_dir: str | Path, n_images: int = 8) -> dict[str, Path] | None:
    """Write the explanation files; their paths (``html``, ``json``, ``png``), or None for feature inputs."""
    import jinja2

    from medequity.report.plots import fig_to_data_uri
    from medequity.utils.io import atomic_write_bytes, atomic_write_text

    method, model, spec = result.method, result.model, result.spec
    if not is_adversarial_mask_method(method):
        raise ValueError(f"method {getattr(method, 'name', method)!r} has no perturb/sensitive_logits: not Fair Diagnosis/FAAP")
    if model is None:
        raise ValueError("the run result carries no trained model")
    extra = getattr(method, "extra", None)
    generator = extra["generator"] if extra is not None and "generator" in extra else None
    if generator is None or generator.__class__.__name__ == "MLPMaskGenerator":
        logger.warning("Fair Diagnosis explanations skipped: Grad-CAM needs image inputs (4-D x); this run trained on features")
        return None
    data = getattr(result, "test_data", None)
    if data is None:
        from medequity.experiment import rebuild_split_data

        data = rebuild_split_data(spec)
    index = select_balanced(data.labels, data.groups, n_images, seed=spec.seed)
    if len(index) == 0:
        logger.warning("Fair Diagnosis explanations skipped: no test image with a known group")
        return None
    x = torch.stack([data.items[int(i)]["x"] for i in index]).float()
    if x.dim() != 4:
        logger.warning("Fair Diagnosis explanations skipped: Grad-CAM needs image inputs (4-D x); got shape %s", tuple(x.shape))
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
    mean_iou = _finite(np.mean(iou))
    mean_pearson = _finite(np.nanmean(pearson)) if np.isfinite(pearson).any() else None

    sample_ids = data.table["sample_id"].astype(str).to_numpy()[index]
    group_names = data.group_names
    rows = [{"sample_id": str(sample_ids[k]), "group": group_names[int(data.groups[i])], "label": int(data.labels[i]),
             "score": _finite(probability[k]), "iou": float(iou[k]), "pearson": _finite(pearson[k]),
             "pearson_text": _fmt(_finite(pearson[k])), "iou_y_shift": float(np.asarray(shift["iou"])[k]),
             "pearson_y_shift": _finite(np.asarray(shift["pearson"])[k]), "mask_l1_mean": float(mask[k].mean())}
            for k, i in enumerate(index)]
    log = _json_log(result.method_log or getattr(method, "log", {}))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig = _grid_figure(x.detach().cpu().numpy(), mask, cam_y, cam_y_masked, cam_s, iou, pearson)
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, facecolor="white")
    png_path = atomic_write_bytes(out / "explanations.png", buffer.getvalue())
    grid_uri = fig_to_data_uri(fig)  # closes the figure
    import matplotlib.pyplot as plt

    plt.close(fig)

    record: dict[str, Any] = {
        "method": getattr(method, "name", spec.method), "attribute": spec.attribute, "group_names": list(group_names),
        "seed": spec.seed, "top": TOP, "n_images": len(index),
        "comparison": "Grad-CAM of Ŷ on x̃ vs Grad-CAM of Ŝ = d_Y(x̃, y) (true group's logit)",
        "mean": {"iou": mean_iou, "pearson": mean_pearson},
        "images": [{k: v for k, v in row.items() if k != "pearson_text"} for row in rows],
        "method_log": log,
    }
    json_path = atomic_write_text(out / "explanations.json", json.dumps(record, indent=2))

    log_keys = [k for k, v in log.items() if isinstance(v, list) and v]
    n_epochs = max((len(log[k]) for k in log_keys), default=0)
    log_rows = [[_fmt(log[k][e]) if e < len(log[k]) else "" for k in log_keys] for e in range(n_epochs)]
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    html = environment.from_string(_TEMPLATE).render(
        title=f"{record['method']} ({spec.usage}, {spec.model}) on {spec.dataset}, attribute {spec.attribute}",
        n=len(index), seed=spec.seed, top_pct=int(round(100 * TOP)), mean_iou=_fmt(mean_iou), mean_pearson=_fmt(mean_pearson),
        grid_uri=grid_uri, rows=rows, log_keys=log_keys, log_rows=log_rows)
    html_path = atomic_write_text(out / "explanations.html", html)
    return {"html": html_path, "json": json_path, "png": png_path}


def write_fair_diagnosis_explanations(result, out_dir: str | Path, n_images: int = 8) -> Path | None:
    """Write ``explanations.{html,json,png}`` for a Fair Diagnosis / FAAP run; the HTML's path, or
    None (with a logged message) when the run's inputs are features rather than images."""
    paths = explain_fair_diagnosis(result, out_dir, n_images)
    return None if paths is None else paths["html"]
