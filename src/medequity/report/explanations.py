"""Rendering of a method's explanations (:class:`~medequity.explain.adversarial_mask.MaskExplanation`):
``explanations.png`` (one row per image: image, mask |x̃ − x|, Ŷ on x, Ŷ on x̃, Ŝ on x̃),
``explanations.html`` (self-contained, images as data URIs) and ``explanations.json`` (the scores,
the selected samples and the method's per-epoch log), written atomically."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from medequity.explain.adversarial_mask import MaskExplanation
from medequity.report.audit_html import TEMPLATES
from medequity.report.plots import fig_to_data_uri
from medequity.utils.io import atomic_write_bytes, atomic_write_text

METHOD_TITLES = {"fair_diagnosis": "Fair Diagnosis", "faap": "FAAP"}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


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


def write_explanations(explanation: MaskExplanation, out_dir: str | Path, *, title: str = "",
                       settings: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``explanations.{png,json,html}`` into ``out_dir``; their paths by kind."""
    import jinja2
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    e = explanation
    fig = _grid_figure(e.images, e.mask, e.cam_y, e.cam_y_masked, e.cam_s, e.iou, e.pearson)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, facecolor="white")
    png_path = atomic_write_bytes(out / "explanations.png", buffer.getvalue())
    grid_uri = fig_to_data_uri(fig)  # closes the figure
    plt.close(fig)

    record: dict[str, Any] = {"method": e.method, **(settings or {}), "group_names": list(e.group_names), "seed": e.seed,
                              "top": e.top, "n_images": len(e.rows), "comparison": e.comparison,
                              "mean": {"iou": e.mean_iou, "pearson": e.mean_pearson}, "images": e.rows, "method_log": e.log}
    json_path = atomic_write_text(out / "explanations.json", json.dumps(record, indent=2))

    log_keys = [k for k, v in e.log.items() if isinstance(v, list) and v]
    n_epochs = max((len(e.log[k]) for k in log_keys), default=0)
    log_rows = [[_fmt(e.log[k][i]) if i < len(e.log[k]) else "" for k in log_keys] for i in range(n_epochs)]
    rows = [{**row, "pearson_text": _fmt(row["pearson"])} for row in e.rows]
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                                     undefined=jinja2.StrictUndefined)
    html = environment.get_template("explanations.html").render(
        method_title=METHOD_TITLES.get(e.method, e.method), title=title or e.method, n=len(rows), seed=e.seed,
        top_pct=int(round(100 * e.top)), mean_iou=_fmt(e.mean_iou), mean_pearson=_fmt(e.mean_pearson), grid_uri=grid_uri,
        rows=rows, log_keys=log_keys, log_rows=log_rows)
    html_path = atomic_write_text(out / "explanations.html", html)
    return {"html": html_path, "json": json_path, "png": png_path}
