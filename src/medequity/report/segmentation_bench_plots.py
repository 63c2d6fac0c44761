"""Figures of a segmentation benchmark's report that classification has no counterpart for.

Like :mod:`medequity.report.bench_plots`, each function takes plain data and returns a
:class:`~matplotlib.figure.Figure`: the distribution of per-sample test Dice in each group per
setting (boxes, every sample drawn over them), and a gallery of overlays — per group the best,
median and worst test case, ground-truth contour against predicted contour.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from medequity.report.plots import _short, group_colors, new_figure

TRUTH_COLOR = "#1B9E77"  # ground-truth contour
PRED_COLOR = "#D95F02"  # predicted contour


def _tail(text: str, width: int = 16) -> str:
    """The end of a sample id (ids share their prefix: the dataset's name)."""
    return text if len(text) <= width else "…" + text[-(width - 1):]


def dice_distribution_figure(frame: pd.DataFrame, *, settings: Sequence[str], groups: Sequence[str],
                             title: str | None = None, y_label: str = "Dice per test sample") -> Figure:
    """Per setting (x axis, ``frame["setting"]``), a box per group of the per-sample values
    (``frame["value"]``, ``frame["group"]``) with every sample drawn as a dot over it: the whole
    distribution behind a group mean — a group can lose its mean to a few failures or to a shift of
    every case. The number of samples per group is in the legend."""
    fig = new_figure(max(4.8, 1.1 * len(settings) * max(1, len(groups)) ** 0.5 + 2.4), 3.6 + (0.4 if title else 0))
    ax = fig.subplots()
    colors = group_colors(list(groups))
    width = 0.8 / max(1, len(groups))
    rng = np.random.default_rng(0)  # jitter of the dots only
    counts: dict[str, int] = {}
    for s, setting in enumerate(settings):
        for g, group in enumerate(groups):
            values = frame.loc[(frame.setting == setting) & (frame.group == group), "value"].to_numpy(np.float64)
            values = values[np.isfinite(values)]
            counts[group] = max(counts.get(group, 0), len(values))
            if len(values) == 0:
                continue
            position = s - 0.4 + width * (g + 0.5)
            box = ax.boxplot([values], positions=[position], widths=width * 0.8, patch_artist=True, showfliers=False,
                             medianprops={"color": "#222222", "linewidth": 1.2})
            for patch in box["boxes"]:
                patch.set(facecolor=colors[group], alpha=0.35, edgecolor=colors[group])
            ax.scatter(position + rng.uniform(-width * 0.25, width * 0.25, len(values)), values, s=7,
                       color=colors[group], alpha=0.8, linewidths=0, zorder=3)
    ax.set_xticks(range(len(settings)), [_short(s, 22) for s in settings], rotation=30 if len(settings) > 3 else 0,
                  ha="right" if len(settings) > 3 else "center", fontsize=8.5)
    ax.set_xlim(-0.6, len(settings) - 0.4)
    ax.set_ylabel(y_label, fontsize=9)
    ax.grid(axis="y", color="#e6e6e6", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    handles = [Patch(facecolor=colors[g], alpha=0.6, label=f"{_short(g, 18)} (n = {counts.get(g, 0)})") for g in groups]
    ax.legend(handles=handles, fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10.5)
    return fig


def gallery_figure(cases: Sequence[dict], *, groups: Sequence[str], columns: Sequence[str] = ("best", "median", "worst"),
                   title: str | None = None) -> Figure:
    """One row per group, one column per case (best/median/worst test Dice): the image with the
    ground-truth contour (green) and the predicted contour (orange). Each case dict holds
    ``group``, ``case``, ``dice``, ``image`` (H×W or H×W×3, uint8), ``truth`` and ``pred`` (label
    maps), ``sample_id`` and ``slice`` (−1 for a 2D image)."""
    fig = new_figure(2.1 * len(columns) + 0.3, 2.2 * max(1, len(groups)) + (0.6 if title else 0.3))
    axes = fig.subplots(max(1, len(groups)), len(columns), squeeze=False)
    by_key = {(c["group"], c["case"]): c for c in cases}
    for r, group in enumerate(groups):
        for k, column in enumerate(columns):
            ax = axes[r, k]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if k == 0:
                ax.set_ylabel(_short(group, 16), fontsize=9)
            case = by_key.get((group, column))
            if case is None:
                ax.set_title(f"{column}: —", fontsize=8)
                continue
            image = case["image"]
            ax.imshow(image, cmap=None if image.ndim == 3 else "gray", interpolation="nearest")
            for mask, color in ((case["truth"], TRUTH_COLOR), (case["pred"], PRED_COLOR)):
                foreground = (np.asarray(mask) > 0).astype(float)
                if foreground.any() and not foreground.all():
                    ax.contour(foreground, levels=[0.5], colors=[color], linewidths=1.2)
            where = f", slice {case['slice']}" if int(case.get("slice", -1)) >= 0 else ""
            ax.set_title(f"{column}: Dice {case['dice']:.2f}\n{_tail(str(case['sample_id']))}{where}", fontsize=7.5)
    handles = [Line2D([], [], color=TRUTH_COLOR, label="ground truth"), Line2D([], [], color=PRED_COLOR, label="prediction")]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
