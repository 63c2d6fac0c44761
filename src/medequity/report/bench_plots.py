"""Figures of the benchmark report (matplotlib, object-oriented API, no display).

Like :mod:`medequity.report.plots`, every function takes plain data (DataFrames, Series, arrays)
and returns a :class:`~matplotlib.figure.Figure`; :func:`medequity.report.plots.fig_to_data_uri`
turns it into an inline image. Methods keep one colour in every figure (:func:`method_colors`),
groups keep theirs (:func:`medequity.report.plots.group_colors`), overall values are dark grey.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import Bbox

from medequity.metrics.selection import pareto_front
from medequity.report.plots import NEUTRAL_COLOR, OVERALL_COLOR, _short, group_colors, new_figure

CHANCE_COLOR = "#999999"


def method_colors(methods: Sequence) -> dict[str, str]:
    """A colour per method, by position (the same palette as groups, so the report looks uniform)."""
    return group_colors(methods)


def _tidy_axes(ax, grid_axis: str = "y") -> None:
    ax.grid(axis=grid_axis, color="#e6e6e6", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=8.5)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


# -- critical-difference diagram ----------------------------------------------------------------------
def cliques(average_ranks: pd.Series, critical_difference: float) -> list[tuple[int, int]]:
    """Maximal runs ``(i, j)`` of rank-sorted methods whose average ranks differ by less than the CD.

    Methods ``i..j`` (positions in ascending rank order) are not significantly different from each
    other by the Nemenyi test (Demšar 2006); runs contained in a longer one are dropped.
    """
    ranks = np.sort(np.asarray(average_ranks, dtype=np.float64))
    spans = []
    for i in range(len(ranks)):
        j = i
        while j + 1 < len(ranks) and ranks[j + 1] - ranks[i] < critical_difference:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in spans):
            spans.append((i, j))
    return spans


def cd_diagram(average_ranks: pd.Series, critical_difference: float, *, title: str | None = None,
               colors: Mapping[str, str] | None = None) -> Figure:
    """Critical-difference diagram in Demšar's style (as MEDFAIR, FairDi Fig. 3–4, FairMedFM Fig. 15).

    A rank axis (1 = best, on the left), each method hung from its average rank, the CD drawn as a
    bar above the axis, and thick bars joining methods the Nemenyi test cannot tell apart.
    """
    ranks = pd.Series(average_ranks, dtype=np.float64).sort_values()
    names, values = [str(n) for n in ranks.index], ranks.to_numpy()
    k = len(values)
    colors = dict(colors) if colors is not None else {}
    groups = cliques(ranks, critical_difference)
    n_left = (k + 1) // 2
    row = 0.32
    clique_top = -0.22
    label_top = clique_top - 0.16 * max(len(groups), 1) - 0.12
    rows = max(n_left, k - n_left)
    bottom = label_top - row * (rows - 1) - 0.25
    fig = new_figure(7.6, 1.35 + 0.3 * rows + 0.12 * len(groups))
    ax = fig.add_subplot()
    ax.set_axis_off()

    # Rank r sits at x in [a, b] (axes fraction, via a blended transform on x); labels live outside.
    a, b = 0.27, 0.73
    def x_of(r: float) -> float:
        return a + (r - 1) / max(k - 1, 1) * (b - a)

    ax.set_xlim(0, 1)
    ax.set_ylim(bottom, 0.75)
    ax.plot([x_of(1), x_of(k)], [0, 0], color="#222222", linewidth=1.2)
    for r in range(1, k + 1):
        ax.plot([x_of(r)] * 2, [0, 0.07], color="#222222", linewidth=1)
        ax.text(x_of(r), 0.11, str(r), ha="center", va="bottom", fontsize=8.5)
    for half in np.arange(1.5, k, 1.0):
        ax.plot([x_of(half)] * 2, [0, 0.035], color="#222222", linewidth=0.7)

    # The CD bar: how far apart two average ranks must be to differ significantly.
    cd_end = min(1 + critical_difference, k)
    ax.plot([x_of(1), x_of(cd_end)], [0.5, 0.5], color=OVERALL_COLOR, linewidth=1.6)
    for end in (1, cd_end):
        ax.plot([x_of(end)] * 2, [0.45, 0.55], color=OVERALL_COLOR, linewidth=1.2)
    beyond = " (beyond the axis)" if 1 + critical_difference > k else ""
    ax.text((x_of(1) + x_of(cd_end)) / 2, 0.58, f"CD = {critical_difference:.2f}{beyond}", ha="center", va="bottom",
            fontsize=8.5)

    for g, (i, j) in enumerate(groups):
        y = clique_top - 0.16 * g
        ax.plot([x_of(values[i]) - 0.006, x_of(values[j]) + 0.006], [y, y], color="#111111", linewidth=3.2,
                solid_capstyle="round")

    for position, (name, value) in enumerate(zip(names, values)):
        if position < n_left:  # best methods hang to the left, best on top
            y, label_x, ha = label_top - row * position, a - 0.02, "right"
        else:  # the rest to the right, worst on top, so no lines cross
            y, label_x, ha = label_top - row * (k - 1 - position), b + 0.02, "left"
        color = colors.get(name, NEUTRAL_COLOR)
        ax.plot([x_of(value)] * 2, [0, y], color=color, linewidth=1.1)
        ax.plot([x_of(value), label_x], [y, y], color=color, linewidth=1.1)
        ax.plot([x_of(value)], [0], "o", color=color, markersize=4)
        text = f"{_short(name, 26)}  {value:.2f}" if ha == "right" else f"{value:.2f}  {_short(name, 26)}"
        ax.text(label_x + (-0.005 if ha == "right" else 0.005), y, text, ha=ha, va="center", fontsize=9)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


# -- fairness–utility trade-off -----------------------------------------------------------------------
def fairness_utility_front(fairness, utility, *, fairness_lower_is_better: bool = True) -> np.ndarray:
    """Boolean mask of the points no other point beats on both fairness and utility (higher utility).

    Uses :func:`medequity.metrics.selection.pareto_front`; a point with a NaN value is never on the front.
    """
    fairness = np.asarray(fairness, dtype=np.float64)
    utility = np.asarray(utility, dtype=np.float64)
    if fairness.shape != utility.shape:
        raise ValueError(f"fairness and utility differ in length: {fairness.shape} vs {utility.shape}")
    mask = np.zeros(fairness.shape, dtype=bool)
    finite = np.isfinite(fairness) & np.isfinite(utility)
    if finite.any():
        oriented = -fairness if fairness_lower_is_better else fairness
        mask[finite] = pareto_front(np.column_stack([oriented[finite], utility[finite]]))
    return mask


def _interval_error(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray | None:
    """Asymmetric error-bar lengths, 0 where there is no interval."""
    err = np.vstack([values - low, high - values])
    err = np.where(np.isfinite(err), err, 0.0).clip(min=0)
    return err if err.any() else None


def _ci(points: pd.DataFrame, column: str, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Row ``i``'s interval of ``column`` (NaN when the table has none)."""
    return tuple(np.array([float(points[f"{column}_{end}"].iloc[i]) if f"{column}_{end}" in points else np.nan])
                 for end in ("ci_low", "ci_high"))


def pareto_panel(ax, points: pd.DataFrame, *, x: str, x_label: str, x_lower_is_better: bool, y: str = "auc",
                 y_label: str = "AUC", colors: Mapping[str, str] | None = None,
                 title: str | None = None) -> list[tuple[float, float, str]]:
    """One fairness–utility panel: a point per method with CI whiskers, the Pareto front as a line.

    ``points``: one row per method with columns ``method``, ``x``, ``y`` and optionally
    ``<col>_ci_low`` / ``<col>_ci_high`` for both. Returns the method labels ``(x, y, text)``
    for :func:`place_labels`, which needs the final layout (:func:`pareto_figure` calls it).
    """
    colors = dict(colors) if colors is not None else method_colors(points["method"])
    xs, ys = points[x].to_numpy(np.float64), points[y].to_numpy(np.float64)
    front = fairness_utility_front(xs, ys, fairness_lower_is_better=x_lower_is_better)
    if front.sum() >= 1:
        order = np.argsort(xs[front])
        fx, fy = xs[front][order], ys[front][order]
        ax.plot(fx, fy, color="#888888", linestyle="-", linewidth=1.2, zorder=1, label="Pareto front")
    for i, method in enumerate(points["method"].astype(str)):
        if not (np.isfinite(xs[i]) and np.isfinite(ys[i])):
            continue
        color = colors.get(method, NEUTRAL_COLOR)
        xerr = _interval_error(np.array([xs[i]]), *_ci(points, x, i))
        yerr = _interval_error(np.array([ys[i]]), *_ci(points, y, i))
        ax.errorbar([xs[i]], [ys[i]], xerr=xerr, yerr=yerr, fmt="none", ecolor=color, elinewidth=0.9, alpha=0.45,
                    capsize=2, zorder=2)
        ax.plot([xs[i]], [ys[i]], marker="*" if front[i] else "o", markersize=12 if front[i] else 7, color=color,
                markeredgecolor="#222222" if front[i] else "white", markeredgewidth=0.7, linestyle="none", zorder=3)
    # Methods at (almost) the same place — within 2% of the axes, e.g. linear probes that barely
    # differ — share one label instead of overprinting; the labels are placed after layout
    # (pareto_figure calls place_labels), where they overlap neither each other nor the markers.
    ax.margins(x=0.15, y=0.12)  # room for the labels inside the axes
    ax.autoscale_view()
    span_x, span_y = np.ptp(ax.get_xlim()), np.ptp(ax.get_ylim())
    names = points["method"].astype(str).tolist()
    anchor: dict[int, int] = {}  # point -> the point whose label it joins
    for i in np.flatnonzero(np.isfinite(xs) & np.isfinite(ys)):
        anchor[i] = next((j for j in sorted(set(anchor.values())) if abs(xs[i] - xs[j]) <= 0.02 * span_x
                          and abs(ys[i] - ys[j]) <= 0.02 * span_y), i)
    labels = [(float(xs[i]), float(ys[i]), ", ".join(_short(names[j], 18) for j in sorted(anchor) if anchor[j] == i))
              for i in sorted(set(anchor.values()))]
    ax.set_xlabel(f"{x_label} ({'lower' if x_lower_is_better else 'higher'} is fairer)", fontsize=9)
    ax.set_ylabel(y_label, fontsize=9)
    if title:
        ax.set_title(title, fontsize=9.5)
    _tidy_axes(ax, "both")
    return labels


# Where a label may go relative to its point, in points: (dx, dy, horizontal, vertical alignment),
# nearest first; further rings repeat them at 2x and 3x the distance with a leader line.
_LABEL_SLOTS = ((5, 4, "left", "bottom"), (5, -4, "left", "top"), (-5, 4, "right", "bottom"),
                (-5, -4, "right", "top"), (0, 8, "center", "bottom"), (0, -8, "center", "top"),
                (8, 0, "left", "center"), (-8, 0, "right", "center"))


def place_labels(ax, labels: Sequence[tuple[float, float, str]], *, fontsize: float = 8,
                 marker_radius: float = 6.0) -> list:
    """Annotate points without overlaps (a greedy, adjustText-like placement on the drawn figure).

    ``labels``: ``(x, y, text)`` in data coordinates. Each label takes the first slot around its
    point (:data:`_LABEL_SLOTS`, then the same directions 2× to 5× as far, with a thin leader line)
    whose text box stays inside the axes and overlaps neither a label placed before nor any
    point's marker (a square of ``marker_radius`` points); when every slot collides, the one with
    the least overlapping area. Call it after the layout is final (the figure is drawn once here):
    the annotations are left out of the layout so that placing them cannot move the axes again.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    fig.draw_without_rendering()
    to_pixels = fig.dpi / 72.0
    axes_box = ax.get_window_extent(renderer)
    anchors = ax.transData.transform(np.array([(x, y) for x, y, _ in labels], dtype=np.float64).reshape(-1, 2))
    radius = marker_radius * to_pixels
    markers = [Bbox.from_extents(px - radius, py - radius, px + radius, py + radius) for px, py in anchors]
    placed: list[Bbox] = []
    annotations = []
    # Longest labels first: they have the fewest free slots in a crowded corner.
    order = sorted(range(len(labels)), key=lambda i: -len(labels[i][2]))
    for (x, y, text), anchor in ((labels[i], anchors[i]) for i in order):
        best, best_cost = None, np.inf
        for ring in (1, 2, 3, 4, 5):
            for dx, dy, ha, va in _LABEL_SLOTS:
                arrow = {"arrowstyle": "-", "color": "#999999", "linewidth": 0.6, "shrinkA": 0, "shrinkB": 3}
                note = ax.annotate(text, (x, y), xytext=(dx * ring, dy * ring), textcoords="offset points", ha=ha, va=va,
                                   fontsize=fontsize, color="#222222", zorder=4, annotation_clip=False,
                                   arrowprops=arrow if ring > 1 else None)
                note.set_in_layout(False)
                box = note.get_window_extent(renderer).padded(2.5)  # a margin: final extents shift by a pixel or two
                # covering another label is worse than touching a marker (the marker stays readable)
                cost = 10 * sum(_overlap(box, other) for other in placed)
                cost += sum(_overlap(box, m) for m, a in zip(markers, anchors) if not np.allclose(a, anchor))
                outside = box.width * box.height - _overlap(box, axes_box)
                cost += 50 * outside  # leaving the axes is much worse than touching a marker
                if cost < best_cost:
                    if best is not None:
                        best.remove()
                    best, best_cost, best_box = note, cost, box
                else:
                    note.remove()
                if best_cost == 0:
                    break
            if best_cost == 0:
                break
        placed.append(best_box)
        annotations.append(best)
    return annotations


def _overlap(a, b) -> float:
    """Area shared by two display-space boxes (0 when they are disjoint)."""
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return float(width * height) if width > 0 and height > 0 else 0.0


def pareto_figure(points: pd.DataFrame, panels: Sequence[tuple[str, str, bool]], columns: Sequence[str], *,
                  column: str = "usage", colors: Mapping[str, str] | None = None, title: str | None = None,
                  y: str = "auc", y_label: str = "AUC") -> Figure:
    """A grid of :func:`pareto_panel`: one row per ``(x column, x label, lower is better)`` in
    ``panels``, one column per value of ``points[column]`` listed in ``columns``; utility ``y``
    (the AUC; segmentation: the Dice)."""
    fig = new_figure(3.6 * len(columns) + 0.6, 3.3 * len(panels) + (0.4 if title else 0))
    axes = fig.subplots(len(panels), len(columns), squeeze=False)
    labels = {}
    for c, value in enumerate(columns):
        sub = points[points[column] == value]
        for r, (x, label, lower) in enumerate(panels):
            labels[r, c] = pareto_panel(axes[r, c], sub, x=x, x_label=label, x_lower_is_better=lower, y=y,
                                        y_label=y_label, colors=colors, title=f"{column} {value}" if r == 0 else None)
    handles = [Line2D([], [], color="#888888", label="Pareto front"),
               Line2D([], [], marker="*", color="#777777", markeredgecolor="#222222", markersize=10, linestyle="none",
                      label="on the front"),
               Line2D([], [], marker="o", color="#777777", linestyle="none", label="dominated")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10.5)
    fig.canvas.draw()  # the constrained layout settles first: labels are placed in final display space
    fig.set_layout_engine("none")  # and stays as it is (the labels are placed for this layout)
    for (r, c), panel_labels in labels.items():
        place_labels(axes[r, c], panel_labels)
    return fig


# -- per-group AUC (FairMedFM Fig. 2–5) and Dice (Fig. 7–9) ---------------------------------------------------
def group_auc_panel(ax, table: pd.DataFrame, *, methods: Sequence[str], groups: Sequence[str],
                    colors: Mapping[str, str], title: str | None = None, y_label: str = "AUC") -> None:
    """Methods on the x axis; per method a marker per group (dodged) with CI whiskers and the overall
    value as a dark bar. ``table``: columns ``method``, ``group`` ("overall" for the whole set),
    ``value``, ``ci_low``, ``ci_high``. A group without a value is written "undefined"."""
    index = table.set_index(["method", "group"])
    width = 0.7
    offsets = np.linspace(-width / 2, width / 2, len(groups) + 2)[1:-1] if groups else np.array([])
    for m, method in enumerate(methods):
        if (method, "overall") in index.index:
            overall = index.loc[(method, "overall")]
            ax.plot([m - width / 2, m + width / 2], [overall["value"]] * 2, color=OVERALL_COLOR, linewidth=2.2,
                    solid_capstyle="butt", zorder=2)
        for g, group in enumerate(groups):
            if (method, group) not in index.index:
                continue
            row = index.loc[(method, group)]
            value = float(row["value"])
            if not np.isfinite(value):
                ax.text(m + offsets[g], 0.5, "undefined", rotation=90, ha="center", va="bottom", fontsize=7,
                        style="italic", color="#8A1C1C")
                continue
            err = _interval_error(np.array([value]), np.array([float(row["ci_low"])]), np.array([float(row["ci_high"])]))
            ax.errorbar([m + offsets[g]], [value], yerr=err, fmt="o", color=colors.get(group, NEUTRAL_COLOR),
                        markersize=5.5, elinewidth=1.1, capsize=2.5, zorder=3)
    ax.set_xticks(range(len(methods)), [_short(m, 16) for m in methods], rotation=30 if len(methods) > 4 else 0,
                  ha="right" if len(methods) > 4 else "center")
    ax.set_xlim(-0.6, len(methods) - 0.4)
    ax.set_ylabel(y_label, fontsize=9)
    if title:
        ax.set_title(title, fontsize=9.5)
    _tidy_axes(ax, "y")


def group_auc_figure(panels: Sequence[dict], *, methods: Sequence[str], ncols: int, title: str | None = None,
                     y_label: str = "AUC") -> Figure:
    """A grid of :func:`group_auc_panel`; each panel dict has ``table``, ``groups``, ``title``. Each
    panel has its own group legend (attributes differ between panels). ``methods`` are the x-axis
    entries (for segmentation the prompt types, with ``y_label="Dice"``: FairMedFM Fig. 7–9)."""
    nrows = int(np.ceil(len(panels) / ncols))
    fig = new_figure(max(4.2, 0.55 * len(methods) + 2.2) * ncols + 1.3 * ncols, 3.3 * nrows + (0.4 if title else 0))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, panel in zip(axes, panels):
        colors = group_colors(panel["groups"])
        group_auc_panel(ax, panel["table"], methods=methods, groups=panel["groups"], colors=colors, title=panel["title"],
                        y_label=y_label)
        handles = [Line2D([], [], marker="o", color=colors[g], linestyle="none", label=_short(g, 18)) for g in panel["groups"]]
        handles.append(Line2D([], [], color=OVERALL_COLOR, linewidth=2.2, label="overall"))
        # Outside the axes (to the right): inside, it covered the lowest markers and their whiskers.
        ax.legend(handles=handles, fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
                  frameon=False)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10.5)
    return fig


# -- representation fairness ------------------------------------------------------------------------------
def probe_bars(table: pd.DataFrame, *, methods: Sequence[str], usages: Sequence[str], title: str | None = None) -> Figure:
    """Attribute-probe AUC per method (x) and usage (bars), with seed-range whiskers; 0.5 = chance.

    ``table``: columns ``method``, ``usage``, ``value`` (mean over seeds), ``low``, ``high``.
    """
    colors = group_colors(usages)
    fig = new_figure(max(4.6, 0.9 * len(methods) * max(1, len(usages)) * 0.6 + 2.0) + 1.6, 3.2)
    ax = fig.add_subplot()
    index = table.set_index(["method", "usage"])
    width = 0.8 / max(len(usages), 1)
    labelled: set[str] = set()
    for u, usage in enumerate(usages):
        for m, method in enumerate(methods):
            if (method, usage) not in index.index:
                continue
            row = index.loc[(method, usage)]
            x = m - 0.4 + width * (u + 0.5)
            value = float(row["value"])
            if not np.isfinite(value):
                ax.text(x, 0.02, "undefined", rotation=90, ha="center", va="bottom", fontsize=7, style="italic",
                        color="#8A1C1C")
                continue
            ax.bar(x, value, width=width * 0.92, color=colors[usage], alpha=0.9,
                   label=None if usage in labelled else usage)
            labelled.add(usage)
            err = _interval_error(np.array([value]), np.array([float(row["low"])]), np.array([float(row["high"])]))
            if err is not None:
                ax.errorbar([x], [value], yerr=err, fmt="none", ecolor="#111111", elinewidth=1, capsize=2.5)
    ax.axhline(0.5, color=CHANCE_COLOR, linestyle="--", linewidth=1.1, label="0.5 = no information")
    ax.set_ylim(0, 1.02)
    ax.set_xticks(range(len(methods)), [_short(m, 16) for m in methods], rotation=30 if len(methods) > 4 else 0,
                  ha="right" if len(methods) > 4 else "center")
    ax.set_xlim(-0.6, len(methods) - 0.4)
    ax.set_ylabel("probe AUC", fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)  # not over bars
    if title:
        ax.set_title(title, fontsize=9.5)
    _tidy_axes(ax, "y")
    return fig


def embedding_scatter(panels: Sequence[dict], *, groups: Sequence[str], ncols: int = 4, title: str | None = None) -> Figure:
    """2-D t-SNE/PCA of test features, one panel per run (dict: ``frame`` with ``x``, ``y``, ``group``
    and optionally ``label``; ``title``). Colour = group; circle = negative, triangle = positive."""
    colors = group_colors(groups)
    ncols = max(1, min(ncols, len(panels)))
    nrows = int(np.ceil(len(panels) / ncols))
    fig = new_figure(3.1 * ncols, 3.0 * nrows + 0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, panel in zip(axes, panels):
        frame = panel["frame"]
        has_label = "label" in frame.columns
        for group in groups:
            sub = frame[frame["group"].astype(str) == group]
            for label, marker in ((0, "o"), (1, "^")) if has_label else ((None, "o"),):
                part = sub if label is None else sub[sub["label"] == label]
                ax.scatter(part["x"], part["y"], s=10, marker=marker, color=colors[group], alpha=0.7, linewidths=0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(panel["title"], fontsize=8.5)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    handles = [Line2D([], [], marker="o", color=colors[g], linestyle="none", label=_short(g, 18)) for g in groups]
    handles += [Line2D([], [], marker="o", color="#777777", linestyle="none", label="negative"),
                Line2D([], [], marker="^", color="#777777", linestyle="none", label="positive")]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10.5)
    return fig
